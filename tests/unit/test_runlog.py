"""Run records (alignpipe_ops.runlog) and what the resumable stores write to them after a SIGKILL."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from alignpipe.utils import events
from alignpipe.utils.cache import cached_map
from alignpipe_ops import runlog

REPO = Path(__file__).resolve().parents[2]


def test_records_are_filed_by_dvc_stage_and_grouped_by_run(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("DVC_STAGE", "align@local")
    row = runlog.record("train", resumed_from_step=3)
    assert row["stage"] == "align@local" and row["run"] == runlog.RUN_ID and row["pid"] == os.getpid()
    with open(tmp_path / "runs" / "align@local.jsonl", "a") as fh:  # another run, then a kill mid-write
        fh.write(json.dumps({"run": "other", "event": "start"}) + "\n" + '{"run": "other", "ev')
    runlog.record("end")
    assert [[r["event"] for r in run] for run in runlog.runs("align@local")] == [["train", "end"], ["start"]]
    monkeypatch.delenv("DVC_STAGE")
    monkeypatch.setattr(runlog, "_stage", None)  # restored after the test
    assert runlog.record("x")["stage"] == "adhoc"
    runlog.set_stage("sft")
    assert runlog.record("x")["stage"] == "sft"


def test_library_events_reach_the_run_record_only_through_the_installed_sink(tmp_path, monkeypatch):
    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path))
    monkeypatch.setenv("DVC_STAGE", "sft")
    runlog.install()  # tests/conftest.py installed it already: a second install must not store events twice
    events.record("train", what="SFT", resumed_from_step=4)
    (row,) = runlog.read("sft")
    assert (row["event"], row["what"], row["resumed_from_step"], row["run"]) == ("train", "SFT", 4, runlog.RUN_ID)
    events.unsubscribe(runlog._sink)
    try:
        events.record("train", what="dropped")  # no sink: the library's event goes nowhere
    finally:
        runlog.install()
    events.record("cache", total=3)
    assert [r["event"] for r in runlog.read("sft")] == ["train", "cache"]


# Stores outputs of `fn` for 10 prompts, 4 at a time, and SIGKILLs itself while computing the third chunk.
_VICTIM = """
import os, signal, sys
from alignpipe.utils.cache import cached_map

def fn(prompts):
    if "p8" in prompts:
        os.kill(os.getpid(), signal.SIGKILL)
    return [p.upper() for p in prompts]

cached_map(fn, [f"p{i}" for i in range(10)], sys.argv[1], chunk=4)
"""


@pytest.mark.fault
def test_cached_map_after_a_sigkill_computes_only_what_was_not_stored(tmp_path, monkeypatch):
    store = tmp_path / "work" / "responses.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "ALIGNPIPE_WORK_DIR": str(tmp_path / "work")}
    proc = subprocess.run([sys.executable, "-c", _VICTIM, str(store)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert len(store.read_text().splitlines()) == 8  # two chunks flushed before the kill

    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "work"))
    asked = []

    def fn(prompts):
        asked.extend(prompts)
        return [p.upper() for p in prompts]

    prompts = [f"p{i}" for i in range(10)]
    assert cached_map(fn, prompts, store, chunk=4) == [p.upper() for p in prompts]
    assert asked == ["p8", "p9"]  # nothing stored before the kill is asked again
    (rec,) = [r for r in runlog.read("adhoc", tmp_path / "work" / "runs") if r["event"] == "cache"]
    assert (rec["total"], rec["reused"], rec["computed"], rec["store"]) == (10, 8, 2, str(store))
