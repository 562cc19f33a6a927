"""End to end: `dvc repro` of the tiny profile in a temporary copy of the repo, through a Prefect server
(the session's `tiny_run` fixture, tests/conftest.py, shared with the kill tests in tests/reliability).

Checks that every output and metric dvc.yaml declares exists, that `dvc status` is clean afterwards (so a
second `dvc repro` is a no-op), and that `dvc metrics show` reads every metrics file.
"""

import json
import subprocess
import sys

import pytest

from alignpipe_ops.browser import browse

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
    sources = (repo / "data/report/mixtures.md").read_text()  # data-source table: sft_mix@* + evaluate_mix@*
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


def _files(root, rel):
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / rel).rglob("*")) if p.is_file()}


def test_a_rejected_input_under_dvc_repro_keeps_the_stages_earlier_outputs(tiny_run, tmp_path):
    """DVC deletes a stage's outputs before it runs the command, unless they are `persist`: every output in
    dvc.yaml is, and each stage replaces its directory atomically itself, so a params typo or a truncated input
    rejected by the stage leaves data/sft as it was (model, metrics.json and log.csv alike) under `dvc repro`."""
    import os
    import shutil

    import yaml

    root = tmp_path / "copy"
    shutil.copytree(tiny_run.root, root, symlinks=True)
    env = {**tiny_run.env, "ALIGNPIPE_WORK_DIR": str(root / ".cache/alignpipe"), "PYTHONPATH": str(root / "src")}
    before = _files(root, "data/sft")
    assert {"data/sft/metrics.json", "data/sft/log.csv", "data/sft/config.json"} <= set(before)
    params = yaml.safe_load((root / "params.yaml").read_text())
    good = (root / "params.yaml").read_text()

    params["sft"]["max_lenght"] = 64  # a typo of sft.max_length
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = subprocess.run(["dvc", "repro", "sft"], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0
    assert "unknown key 'sft.max_lenght' (did you mean 'max_length'?)" in proc.stderr, \
        proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert _files(root, "data/sft") == before

    (root / "params.yaml").write_text(good)
    data = root / "data/world/sft.jsonl"
    os.chmod(data, 0o644)
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])  # cut mid-record
    proc = subprocess.run(["dvc", "repro", "--single-item", "sft"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode != 0
    assert "error in stage 'sft': " in proc.stderr and "data/world/sft.jsonl line " in proc.stderr, \
        proc.stderr[-3000:]
    assert _files(root, "data/sft") == before


def test_plots_and_the_report_page_render_offline(tiny_run, tmp_path):
    """`dvc plots show` with the offline template (alignpipe_ops.plots) and the report's index.html, each opened in
    a headless Chromium (alignpipe_ops.browser) that records every request: every chart drawn, nothing fetched."""
    repo, env = tiny_run.root, tiny_run.env
    subprocess.run([sys.executable, "-m", "alignpipe_ops.plots"], cwd=repo, env=env, check=True, capture_output=True)
    shown = subprocess.run(["dvc", "plots", "show", "-o", str(tmp_path / "plots")], cwd=repo, env=env,
                           capture_output=True, text=True)
    assert shown.returncode == 0 and "failed to load" not in shown.stdout + shown.stderr, shown.stdout + shown.stderr
    page = tmp_path / "plots" / "index.html"
    embeds = page.read_text(encoding="utf-8").count("vegaEmbed(")
    assert embeds >= 10  # the stages' loss / level curves and the pipeline-wide views
    _, got = browse(page, count=(".vega-embed", ".vega-embed canvas, .vega-embed svg", "img"), wait_s=2)
    assert got["loaded"] and got["external"] == [], got["external"]  # the PNG plots: files beside the page
    assert got["local_files"] and all(u.startswith((tmp_path / "plots").as_uri()) for u in got["local_files"])
    assert got["counts"][".vega-embed"] == embeds  # every vega plot was drawn by the inlined library
    assert got["counts"][".vega-embed canvas, .vega-embed svg"] >= embeds and got["counts"]["img"] >= 1

    _, report = browse(repo / "data/report/index.html", count=("table", "img"), wait_s=2)
    assert report["loaded"] and report["external"] == [] and report["local_files"] == []  # self-contained
    assert report["counts"]["img"] >= 1
    assert report["counts"]["table"] >= 8  # the report's tables, on one page


def test_push_then_pull_in_a_fresh_clone_restores_every_artifact(tiny_run, tmp_path):
    """A colleague's view: the run's repo pushes to a DVC remote; a fresh git clone pulls; `dvc status` is clean
    with nothing recomputed, and every file under data/ (models, metrics, training logs, plots data, the report)
    is there, byte for byte."""
    import shutil

    a, b, store = tmp_path / "a", tmp_path / "b", tmp_path / "store"
    shutil.copytree(tiny_run.root, a, symlinks=True, ignore=shutil.ignore_patterns(".cache"))
    env = {**tiny_run.env, "ALIGNPIPE_WORK_DIR": str(a / ".cache/alignpipe"), "PYTHONPATH": str(a / "src"),
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}

    def run(*cmd, cwd):
        proc = subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"{cmd}: {proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        return proc.stdout

    run("dvc", "remote", "add", "-d", "store", str(store), cwd=a)
    run("git", "add", "-A", cwd=a)
    run("git", "commit", "-qm", "the run", cwd=a)
    assert run("git", "status", "--porcelain", cwd=a) == ""
    run("dvc", "push", cwd=a)
    run("git", "clone", "-q", str(a), str(b), cwd=tmp_path)
    env.update(ALIGNPIPE_WORK_DIR=str(b / ".cache/alignpipe"), PYTHONPATH=str(b / "src"))
    run("dvc", "pull", cwd=b)
    assert json.loads(run("dvc", "status", "--json", cwd=b)) == {}
    want, got = _files(a, "data"), _files(b, "data")
    assert got == want, sorted(set(want) ^ set(got))[:10] or [k for k in want if want[k] != got.get(k)][:10]
    for rel in ("report/README.md", "report/index.html", "sft/metrics.json", "sft/log.csv", "evaluate/sft/metrics.json"):
        assert f"data/{rel}" in got, rel
