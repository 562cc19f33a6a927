"""``dvc repro`` on several cores: independent stages of the DAG run side by side, each one still run by DVC.

    python -m alignpipe_ops.repro --jobs 2                 # the whole pipeline, two stages at a time
    python -m alignpipe_ops.repro --jobs 2 evaluate@sft    # a target and what it needs
    python -m alignpipe_ops.repro --dry                    # the plan: which stage waits for which

DVC runs the stages of one ``dvc repro`` one after another (3.67 has no ``--jobs`` for repro), and every stage here
pins one torch thread, so a plain ``dvc repro`` leaves all cores but one idle. This scheduler asks DVC for the same
plan ``dvc repro`` would follow (``dvc.repo.reproduce.plan_repro`` over the active graph: dvc.yaml, foreach
instances, frozen stages cut off) and starts every stage instance with ``dvc --wait-for-lock repro --single-item
<stage>`` in its own process as soon as every upstream instance of the plan has finished, at most ``--jobs`` at a
time. Each child is an ordinary ``dvc repro``: it decides itself whether its stage changed (after its upstream has
been recorded), runs the command, hashes the outputs and writes its record in ``dvc.lock``. DVC makes that safe
between processes: a child holds the repo lock (``.dvc/tmp/lock``) only while it checks and records, releases it
while the command runs (``dvc/stage/run.py``: ``unlocked_repo``), and the rwlock (``.dvc/tmp/rwlock``) keeps a
stage from writing a path another running stage reads or writes; ``--wait-for-lock`` makes a child wait for the
repo lock instead of failing. ``dvc.lock`` is read and rewritten under that lock (``modify_yaml``), so no record is
lost; only the order of new entries in a fresh ``dvc.lock`` follows the order stages finished.

What is skipped without starting a process: a stage ``dvc status`` calls unchanged whose upstream in the plan
starts nothing (exactly the stages ``dvc repro`` would skip at once). Everything else is started and may still
say "didn't change, skipping" once its upstream is recorded (an upstream that reran to the same bytes).

Outputs are those of a sequential ``dvc repro``: each stage is a function of its dependencies (the tests compare
every hash in ``dvc.lock`` with a sequential run, tests/reliability/test_kill_resume.py). A failure stops new starts
(``--keep-going``: only the failed stage's downstream is skipped), lets the running stages finish and exits 1.
SIGINT / SIGTERM reach the children (one process group) and the scheduler waits for them: an interrupted stage
resumes on the next run, as under ``dvc repro``. Each line a child prints is prefixed with its stage.

After a crash, ``python -m alignpipe_ops.dvcstate`` (or ``make repro``) repairs DVC's lock files as before; with
several stages running, the copy of ``dvc.lock`` a stage takes as it starts can be older than the last write, and
a torn ``dvc.lock`` is then restored only when that is safe (the repair checks; stages whose record is lost rerun).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Step:
    """One stage instance of the plan: its DVC address and the addresses of its upstream instances in the plan."""

    name: str
    upstream: set[str]
    changed: bool
    state: str = "waiting"  # waiting | running | done | skipped | failed | blocked
    proc: subprocess.Popen | None = None
    started: float = 0.0
    seconds: float = 0.0
    reader: threading.Thread | None = field(default=None, repr=False)


def plan(root: str, targets: list[str]) -> list[Step]:
    """The stage instances ``dvc repro <targets>`` would visit, in its order, with their upstream instances and
    whether ``dvc status`` calls each one changed now."""
    from dvc.repo import Repo
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

    with Repo(root) as repo:
        stages = collect_stages(repo, targets or ["dvc.yaml"])
        graph = get_active_graph(repo.index.graph)
        order = plan_repro(graph, stages)
        names = {stage: stage.addressing for stage in order}
        status = repo.status(targets=[names[s] for s in order])
        # graph edges point from a stage to the stages it depends on (dvc.repo.graph.build_graph)
        return [Step(names[s], {names[u] for u in graph.successors(s) if u in names}, names[s] in status)
                for s in order]


def needed(steps: list[Step]) -> set[str]:
    """Stage instances that must be started: changed now, or downstream of one that is started."""
    start: set[str] = set()
    for step in steps:  # plan order: every upstream instance comes before its downstream
        if step.changed or step.upstream & start:
            start.add(step.name)
    return start


def priority(steps: list[Step]) -> list[str]:
    """The order to start ready stages in: the longest chain of stages still downstream first (the critical path
    of the DAG, counted in stages: neurons -> rewards -> align_allo before the align variants), then plan order."""
    below: dict[str, set[str]] = {s.name: set() for s in steps}
    for step in steps:
        for up in step.upstream:
            below[up].add(step.name)
    chain: dict[str, int] = {}
    for step in reversed(steps):  # reverse plan order: every downstream instance before its upstream
        chain[step.name] = 1 + max((chain[d] for d in below[step.name]), default=0)
    rank = {s.name: i for i, s in enumerate(steps)}
    return sorted(rank, key=lambda n: (-chain[n], rank[n]))


def _pump(step: Step, width: int, out) -> None:
    assert step.proc is not None and step.proc.stdout is not None
    for line in iter(step.proc.stdout.readline, b""):
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        out.write(f"{step.name:>{width}} | {text}\n")
        out.flush()


class Scheduler:
    def __init__(self, steps: list[Step], jobs: int, keep_going: bool, root: str, out=sys.stdout, command=None):
        self.command = command or (lambda name: ["dvc", "--wait-for-lock", "repro", "--single-item", name])
        self.steps = {s.name: s for s in steps}
        self.order = priority(steps)
        self.jobs, self.keep_going, self.root, self.out = jobs, keep_going, root, out
        self.width = min(20, max((len(n) for n in self.order), default=0))  # longer names overflow
        self.stop = False  # a failure without --keep-going, or a signal: start nothing more

    def _say(self, text: str) -> None:
        self.out.write(f"{'repro':>{self.width}} | {text}\n")
        self.out.flush()

    def _downstream(self, name: str) -> set[str]:
        found, todo = set(), [name]
        while todo:
            cur = todo.pop()
            for step in self.steps.values():
                if cur in step.upstream and step.name not in found:
                    found.add(step.name)
                    todo.append(step.name)
        return found

    def _start(self, step: Step) -> None:
        step.proc = subprocess.Popen(self.command(step.name), cwd=self.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        step.state, step.started = "running", time.monotonic()
        step.reader = threading.Thread(target=_pump, args=(step, self.width, self.out), daemon=True)
        step.reader.start()

    def _finish(self, step: Step, rc: int) -> None:
        assert step.reader is not None
        step.reader.join()
        step.seconds = time.monotonic() - step.started
        if rc == 0:
            step.state = "done"
            return
        step.state = "failed"
        self._say(f"{step.name} failed (exit status {rc})")
        for name in self._downstream(step.name):
            if self.steps[name].state == "waiting":
                self.steps[name].state = "blocked"
        if not self.keep_going:
            self.stop = True

    def interrupt(self, signum: int) -> None:
        """Pass a signal on to the running children and start nothing more."""
        self.stop = True
        for step in self.steps.values():
            if step.state == "running" and step.proc is not None and step.proc.poll() is None:
                step.proc.send_signal(signum)

    def run(self, start: set[str]) -> int:
        for name in self.order:
            if name not in start:
                self.steps[name].state = "skipped"
        while True:
            running = [s for s in self.steps.values() if s.state == "running"]
            for step in running:
                rc = step.proc.poll() if step.proc is not None else 0
                if rc is not None:
                    self._finish(step, rc)
            running = [s for s in self.steps.values() if s.state == "running"]
            if not self.stop:
                for name in self.order:
                    if len(running) >= self.jobs:
                        break
                    step = self.steps[name]
                    if step.state == "waiting" and all(
                            self.steps[u].state in ("done", "skipped") for u in step.upstream):
                        self._start(step)
                        running.append(step)
            if not running:
                break
            time.sleep(0.2)
        failed = [s.name for s in self.steps.values() if s.state == "failed"]
        left = [s.name for s in self.steps.values() if s.state in ("waiting", "blocked")]
        ran = [s for s in self.steps.values() if s.state in ("done", "failed")]
        if ran:  # what to look at first when the run is slow
            slow = sorted(ran, key=lambda s: -s.seconds)[:5]
            self._say("slowest: " + ", ".join(f"{s.name} {s.seconds:.0f} s" for s in slow))
        if failed or left:
            self._say(f"failed: {', '.join(failed) or 'none'}; not run: {', '.join(left) or 'none'}")
            return 1
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alignpipe_ops.repro", description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help="stages or dvc.yaml files, as for dvc repro (default: all)")
    parser.add_argument("-j", "--jobs", type=int, default=2, help="stages at a time (default 2)")
    parser.add_argument("-k", "--keep-going", action="store_true",
                        help="after a failure, go on with the stages that do not depend on it")
    parser.add_argument("--dry", action="store_true", help="print the plan (stage: what it waits for) and exit")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        print(f"--jobs: {args.jobs} is not allowed; give a number of stages at a time, 1 or more", file=sys.stderr)
        return 2
    root = "."
    steps = plan(root, args.targets)
    start = needed(steps)
    if args.dry:
        for step in steps:
            mark = "run" if step.name in start else "up to date"
            print(f"{step.name}: {mark}; after {', '.join(sorted(step.upstream)) or 'nothing'}")
        return 0
    sched = Scheduler(steps, args.jobs, args.keep_going, root)
    t0 = time.monotonic()
    sched._say(f"{len(start)} of {len(steps)} stage instances to check or run, {args.jobs} at a time")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: sched.interrupt(signum))
    rc = sched.run(start)
    sched._say(f"{time.monotonic() - t0:.0f} s wall")
    if sched.stop and rc == 0:
        rc = 130
    return rc


if __name__ == "__main__":
    sys.exit(main())
