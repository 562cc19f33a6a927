"""Profiles are tried as DVC experiments (`dvc exp run -S`): params.yaml and `git status` stay as they were."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from alignpipe.config import ConfigError, load_params, read_yaml
from alignpipe.profile import apply_profile, load_profile, main, overrides

GIT_ENV = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, check=True, capture_output=True, text=True,
                          env={**os.environ, **GIT_ENV}).stdout


@pytest.mark.parametrize("name", ["tiny", "paper"])
def test_overrides_give_the_merged_profile(repo_root, tmp_path, name):
    """DVC's -S (Hydra overrides on params.yaml) yields exactly the deep merge apply_profile validates."""
    from dvc.utils.hydra import apply_overrides

    shutil.copy(repo_root / "params.yaml", tmp_path / "params.yaml")
    apply_overrides(tmp_path / "params.yaml", overrides(load_profile(name, repo_root / "profiles")))
    merged = read_yaml((tmp_path / "params.yaml").read_text())
    assert merged == apply_profile(name, repo_root / "params.yaml", repo_root / "profiles")
    load_params(tmp_path / "params.yaml")  # DVC writes 1e-05 style floats: still numbers


def test_trying_a_profile_leaves_params_and_git_status_unchanged(repo_root, tmp_path, monkeypatch):
    """`python -m alignpipe.profile tiny` runs a temporary DVC experiment; the workspace keeps its params.yaml."""
    root = tmp_path / "repo"
    (root / "profiles").mkdir(parents=True)
    shutil.copy(repo_root / "params.yaml", root / "params.yaml")
    shutil.copy(repo_root / "profiles" / "tiny.yaml", root / "profiles" / "tiny.yaml")
    (root / "dvc.yaml").write_text(  # a one-line stage that records the value it ran with
        "stages:\n  show:\n    cmd: python -c \"import yaml; print(yaml.safe_load(open('params.yaml'))['world']"
        "['n_entities'])\" > n.txt\n    params: [world.n_entities]\n    outs: [n.txt]\n")
    _git(root, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=root, check=True)
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "init")
    before = (root / "params.yaml").read_bytes()

    monkeypatch.chdir(root)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert main(["tiny"]) == 0

    assert (root / "params.yaml").read_bytes() == before
    assert _git(root, "status", "--porcelain") == ""
    shown = json.loads(subprocess.run([sys.executable, "-m", "dvc", "exp", "show", "--json"], cwd=root, check=True,
                                      capture_output=True, text=True).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    values = [run["data"]["params"]["params.yaml"]["data"]["world"]["n_entities"]
              for exp in exps for run in exp["revs"]]
    assert values == [12]  # the experiment ran with the tiny profile's value; the workspace keeps 48
    assert read_yaml(before.decode())["world"]["n_entities"] == 48


def test_profile_never_writes_the_params_file(repo_root, tmp_path, capsys):
    params = tmp_path / "params.yaml"
    shutil.copy(repo_root / "params.yaml", params)
    args = ["tiny", "--params", str(params), "--profiles-dir", str(repo_root / "profiles")]
    assert main([*args, "--out", str(params)]) == 2
    assert "profiles never rewrite the params file" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "tiny.yaml")]) == 0
    assert read_yaml((tmp_path / "tiny.yaml").read_text())["world"]["n_entities"] == 12
    assert main([*args, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("dvc exp run --temp -S ++world.n_entities=12 ")
    with pytest.raises(ConfigError, match="profile 'nope' not found"):
        load_profile("nope", repo_root / "profiles")
