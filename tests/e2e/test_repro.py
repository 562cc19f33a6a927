"""End to end: `dvc repro` of the tiny profile in a temporary copy of the repo, through a Prefect server
(the session's `tiny_run` fixture, tests/conftest.py, shared with the kill tests in tests/reliability).

Checks that every output and metric dvc.yaml declares exists, that `dvc status` is clean afterwards (so a
second `dvc repro` is a no-op), and that `dvc metrics show` reads every metrics file.
"""

import json
import subprocess

import pytest

pytestmark = pytest.mark.slow


def _declared(repo) -> tuple[list[str], list[str]]:
    """Every output and metrics file of every stage instance, as DVC itself resolves dvc.yaml (foreach over params)."""
    from dvc.repo import Repo

    outs, metrics = [], []
    with Repo(str(repo)) as dvc:
        for stage in dvc.index.stages:
            for out in stage.outs:
                (metrics if out.metric else outs).append(out.def_path)
    return outs, metrics


def test_every_declared_output_exists(tiny_run):
    repo = tiny_run.root
    outs, metrics = _declared(repo)
    assert len({p.split("/")[1] for p in outs}) >= 14 and any(p.startswith("data/evaluate/mix_") for p in metrics)
    missing = [p for p in outs + metrics if not (repo / p).exists()]
    assert not missing, f"declared but not produced: {missing}"
    for m in metrics:
        data = json.loads((repo / m).read_text())
        assert data, f"{m} is empty"
    report = (repo / "data/report/README.md").read_text()
    assert "SFT" in report and "Base" in report
    bmc = (repo / "data/report/bmc.md").read_text()  # BMC: bridged pairs and the BMC table
    assert all(f"| {row} |" in bmc for row in ("DPO", "DPO-BC", "DPO-MC", "DPO-BMC", "Global+BMC"))
    sources = (repo / "data/report/datasources.md").read_text()  # data-source table: sft_mix@* + evaluate_mix@*
    assert all(f"| {row} |" in sources for row in ("Seed only", "+ Lion", "+ WebR", "+ Lion + WebR"))
    assert json.loads((repo / "data/sft_mix/seed/metrics.json").read_text())["reused"] == "data/sft"
    first_pair = json.loads((repo / "data/preferences/pairs.jsonl").read_text().splitlines()[0])
    assert first_pair["bridged"][0]["role"] == "assistant"


def test_status_clean_and_metrics_readable(tiny_run):
    repo, env = tiny_run.root, tiny_run.env
    status = subprocess.run(["dvc", "status", "--json"], cwd=repo, env=env, capture_output=True, text=True)
    assert status.returncode == 0 and json.loads(status.stdout) == {}, status.stdout
    shown = subprocess.run(["dvc", "metrics", "show", "--json"], cwd=repo, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    for m in ("data/evaluate/sft/metrics.json", "data/evaluate/base/metrics.json", "data/sft/metrics.json"):
        assert m in text
