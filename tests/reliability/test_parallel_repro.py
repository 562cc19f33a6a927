"""Two stages at a time (alignpipe_ops.repro, what `make repro` runs): killed while both train, then rerun.

Run A (tests/conftest.py `tiny_run`) is itself a two-at-a-time run, and the kill campaign (test_kill_resume.py)
compares every hash of its dvc.lock with run B, driven one stage at a time: that is the proof that the concurrent
run gives a sequential run's bytes. Here a copy of run A loses the outputs of two independent training stages;
the scheduler starts both side by side, the whole process group is SIGKILLed once each has written a checkpoint,
and a second scheduler run finishes them: both resume from their checkpoints, and every dvc.lock hash equals run
A's. Also the scheduler's plan itself (upstream, what starts, the order) and its refusal of a bad --jobs.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import killer  # tests/reliability/killer.py (pyproject: pytest pythonpath)

from alignpipe_ops import runlog
from alignpipe_ops.dvcstate import repair

pytestmark = [pytest.mark.fault, pytest.mark.slow]

STAGES = ("align@dpo_full", "align@lora_all")  # independent: both read sft / preferences / reflogps only


def _complete_checkpoints(work: Path) -> set[Path]:
    """The align runs with a whole checkpoint before their last step (a final checkpoint means the stage is about to
    finish: killed then, it may already have completed, and there is nothing left to resume)."""
    found = set()
    for marker in work.glob("align/*/checkpoint-*/trainer_state.json"):
        try:
            state = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if state.get("global_step", 0) < state.get("max_steps", 0):
            found.add(marker.parent.parent)
    return found


@pytest.fixture(scope="module")
def copy_of_a(tiny_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel") / "copy"
    shutil.copytree(tiny_run.root, root, symlinks=True)
    env = {**tiny_run.env, "ALIGNPIPE_WORK_DIR": str(root / ".cache/alignpipe"), "PYTHONPATH": str(root / "src")}
    return root, env


def test_plan_waits_for_upstream_and_starts_only_what_changed(copy_of_a):
    from alignpipe_ops.repro import needed, plan, priority

    root, _ = copy_of_a
    cwd = os.getcwd()
    os.chdir(root)
    try:
        steps = plan(".", [])
    finally:
        os.chdir(cwd)
    by_name = {s.name: s for s in steps}
    assert by_name["align@dpo_full"].upstream == {"sft", "preferences", "reflogps"}
    assert by_name["evaluate_align@dpo_full"].upstream == {"align@dpo_full", "world"}
    assert needed(steps) == set(), "run A is complete: nothing should start"
    for step in steps:  # one stale stage: it and everything downstream of it start, nothing else
        step.changed = step.name == "rewards"
    downstream = {"rewards", "report"} | {s.name for s in steps if s.name.startswith(("align_allo@", "evaluate_allo@"))}
    assert needed(steps) == downstream
    order = priority(steps)
    assert order.index("neurons") < order.index("align@dpo_full")  # the longer chain first
    assert all(order.index(u) < order.index(s.name) for s in steps for u in s.upstream)


def test_bad_jobs_is_refused(copy_of_a):
    root, env = copy_of_a
    proc = subprocess.run([sys.executable, "-m", "alignpipe_ops.repro", "--jobs", "0"], cwd=root, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "--jobs: 0 is not allowed; give a number of stages at a time, 1 or more")


def test_killed_while_two_stages_train_resumes_both_to_run_a_bytes(copy_of_a, tiny_run):
    from flows.server import start_server, stop_server

    root, env = copy_of_a
    work = root / ".cache/alignpipe"
    for stage in STAGES:
        shutil.rmtree(root / "data/align" / stage.split("@")[1])
    shutil.rmtree(work / "align", ignore_errors=True)
    server, api = start_server(cwd=root)
    env = {**env, "PREFECT_API_URL": api}
    cmd = [sys.executable, "-m", "alignpipe_ops.repro", "--jobs", "2"]
    try:
        with open(root / "parallel-kill.log", "wb") as log:
            proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            deadline = time.time() + 900
            while proc.poll() is None and time.time() < deadline and len(_complete_checkpoints(work)) < 2:
                time.sleep(0.02)
            killed_at = time.time()
            alive = proc.poll() is None
            os.killpg(proc.pid, signal.SIGKILL)  # the scheduler, both dvc processes and both stage commands
            proc.wait()
        text = (root / "parallel-kill.log").read_text(errors="replace")
        assert alive, f"the scheduler ended before both stages had a checkpoint:\n{text[-3000:]}"
        ckpts = _complete_checkpoints(work)
        assert len(ckpts) == 2, (ckpts, text[-3000:])
        assert all(f"Running stage '{s}'" in text for s in STAGES), text[-3000:]
        time.sleep(1)  # dvc's children die a moment after the group is killed
        print("\nrepairs after the kill:", repair(root))
        rerun = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=1200)
    finally:
        stop_server(server)
    assert rerun.returncode == 0, rerun.stdout[-4000:] + rerun.stderr[-2000:]
    assert "| 5 of 52 stage instances to check or run" in rerun.stdout  # the two, their evaluations, the report
    assert killer.lock_differences(root, tiny_run.root) == []
    for stage in STAGES:
        records = [r for r in runlog.read(stage, work / "runs") if r["event"] == "train" and r["time"] > killed_at]
        assert records, f"{stage}: no training after the kill"
        assert records[0]["resumed_from_step"] > 0, records[0]
        assert records[0]["steps_run"] == records[0]["max_steps"] - records[0]["resumed_from_step"]
    status = subprocess.run(["dvc", "status", "--json"], cwd=root, env=env, capture_output=True, text=True)
    assert json.loads(status.stdout) == {}, status.stdout
