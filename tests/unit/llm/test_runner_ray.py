"""roles.runner kind 'ray' (prefect-ray, an optional extra): without the package, params fail when read, naming the
key and the install command, before any stage work."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignpipe.config import RAY_INSTALL, ConfigError, validate_params

RAY_INSTALLED = importlib.util.find_spec("prefect_ray") is not None
ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(RAY_INSTALLED, reason="prefect-ray is installed here: the missing-package error cannot happen")
def test_ray_without_prefect_ray_fails_at_config_with_the_install_command():
    with pytest.raises(ConfigError) as err:
        validate_params({"roles": {"runner": {"kind": "ray"}}})
    msg = str(err.value)
    assert "roles.runner" in msg and "'ray'" in msg and "prefect-ray" in msg
    assert RAY_INSTALL in msg and ".[ray]" in msg


@pytest.mark.skipif(RAY_INSTALLED, reason="prefect-ray is installed here: the missing-package error cannot happen")
def test_ray_without_prefect_ray_fails_a_stage_before_work(tmp_path):
    """`python -m flows.synthesize` exits 2 with one line naming the key; nothing is written under data/."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"roles": {"runner": {"kind": "ray"}}}))
    env = {"PYTHONPATH": f"{ROOT / 'src'}:{ROOT}", "PATH": "/usr/bin:/bin", "ALIGNPIPE_WORK_DIR": str(tmp_path / "w"),
           "PREFECT_HOME": str(tmp_path / "prefect")}
    proc = subprocess.run([sys.executable, "-m", "flows.synthesize", "--params", str(params)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error in stage 'synthesize'" in proc.stderr and "roles.runner" in proc.stderr
    assert RAY_INSTALL in proc.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.skipif(not RAY_INSTALLED, reason="prefect-ray not installed (optional extra: " + RAY_INSTALL + ")")
def test_ray_runner_is_built_when_installed():
    from flows._common import task_runner

    runner = task_runner(validate_params({"roles": {"runner": {"kind": "ray", "workers": 2}}}))
    assert type(runner).__name__ == "RayTaskRunner"


def test_address_needs_a_cluster_runner():
    with pytest.raises(ConfigError, match="address needs kind: dask or ray"):
        validate_params({"roles": {"runner": {"kind": "thread", "address": "tcp://x:8786"}}})


def test_pyproject_pins_the_ray_extra_exactly_and_not_in_the_default_install():
    text = (ROOT / "pyproject.toml").read_text()
    import tomllib

    project = tomllib.loads(text)["project"]
    ray = project["optional-dependencies"]["ray"]
    assert ray and all("==" in spec for spec in ray)
    assert any(spec.startswith("prefect-ray==") for spec in ray)
    assert not any("ray" in dep.split("==")[0] for dep in project["dependencies"])
    assert ".[test]" in (ROOT / "Makefile").read_text() and ".[ray]" not in (ROOT / "Makefile").read_text()
