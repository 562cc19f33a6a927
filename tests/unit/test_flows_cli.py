"""A stage run with bad params exits non-zero with one line naming the key, before Prefect starts."""

import subprocess
import sys


def test_bad_params_fail_fast_naming_the_key(tmp_path, repo_root):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nworld:\n  n_entitis: 3\n")
    proc = subprocess.run(
        [sys.executable, "-m", "flows.world", "--params", str(bad)],
        cwd=repo_root, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "unknown key 'world.n_entitis' (did you mean 'n_entities'?)" in proc.stderr
    assert "Beginning flow run" not in proc.stdout + proc.stderr  # no Prefect work was started


def test_missing_model_dir_names_the_path(tmp_path, repo_root):
    proc = subprocess.run(
        [sys.executable, "-m", "flows.evaluate", "--name", "x", "--model-dir", str(tmp_path / "nope"),
         "--world-dir", str(tmp_path / "world")],
        cwd=repo_root, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2
    assert str(tmp_path / "world") in proc.stderr or str(tmp_path / "nope") in proc.stderr
