"""Kill driver: every stage of the pipeline SIGKILLed at seeded moments, what it left checked, then rerun.

    campaign = Campaign(root_b, env_b, reference=root_a, seed=0)
    results = campaign.run()            # one StageResult per stage instance, in the order they ran
    lock_differences(root_a, root_b)    # every dvc.lock hash of run A vs run B

Which instances are killed: every stage of dvc.yaml without a ``foreach``/``matrix``, every long stage
(:data:`WATCH`), and of each ``foreach``/``matrix`` stage one instance drawn with the seed (they share their code and
differ in params; ``every_instance=True``, or ``ALIGNPIPE_KILL_ALL=1`` in the test, kills every instance). The
other instances run uninterrupted, consecutive ones in one ``dvc repro --single-item`` call.

For each killed stage instance, in DVC's topological order (dvc.yaml order among independent stages), with its
upstream already complete and one Prefect server shared by the whole campaign (PREFECT_API_URL):

1. ``dvc repro --single-item <stage>`` is started in its own process group and the whole group (dvc and the
   stage's Python process) is SIGKILLed at each of the stage's moments: a seeded fraction of the stage's duration
   in run A, and, for the long stages (:data:`WATCH`), the moment its first checkpoint or cache flush appears in
   the work dir;
2. after each kill, every declared out and metric of the stage is absent or byte-identical to run A's, and
   ``dvc status`` may report the stage up to date only when all of them equal run A's; the rwlock entries DVC
   left for the dead process are kept for the report; a kill that tore ``.dvc/tmp/rwlock`` (DVC rewrites it in
   place) is repaired as ``make repro`` repairs it (:func:`alignpipe_ops.dvcstate.repair_rwlock`) and counted,
   and so is a kill that tore ``dvc.lock`` while DVC rewrote it (:func:`~alignpipe_ops.dvcstate.repair_lockfile`
   puts back the copy the stage took as it started; the CI run of the commit before it met one, an empty dvc.lock),
   and a kill during DVC's autostage that left ``.git/index.lock`` (``dvcstate.repair_git_index_lock``);
3. ``dvc repro <stage>`` runs to completion; the stage's run records (``alignpipe_ops.runlog``) show what it
   reused.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alignpipe_ops.dvcstate import repair_git_index_lock, repair_lockfile, repair_rwlock

# Long stages: the work-dir file whose appearance means "first checkpoint / cache flush done" (relative to the
# work dir, a glob), and what kind of progress it is. The kill right after it exercises resuming.
WATCH: dict[str, tuple[str, str]] = {
    "base": ("checkpoint", "base/*/checkpoint-*/trainer_state.json"),
    "sft": ("checkpoint", "sft/*/checkpoint-*/trainer_state.json"),
    "synthesize": ("checkpoint", "synthesize-lion/*/round_*/student_checkpoints/checkpoint-*/trainer_state.json"),
    "align@dpo_full": ("checkpoint", "align/*/checkpoint-*/trainer_state.json"),
    "evaluate@sft": ("store", "evaluate/*/responses.jsonl"),
}
TIMED_KILLS = 2  # seeded moments per killed stage (a long stage is also killed after its first checkpoint)
# A seeded moment is a fraction in [0.05, 0.85) of the stage's expected duration (dvc included): later ones mostly
# miss a stage that ran a little faster than in run A; every one costs its time again in the rerun.
FRACTIONS = (0.05, 0.85)
DVC_OVERHEAD_S = 3.0  # `dvc repro <stage>` before and after the command (status of the upstream, commit)


def tree_digest(path: Path) -> str | dict[str, str] | None:
    """sha256 of a file, {relative path: sha256} of a directory, None when absent."""
    if path.is_file():
        return hashlib.sha256(path.read_bytes()).hexdigest()
    if path.is_dir():
        return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(path.rglob("*")) if p.is_file()}
    return None


def stage_order(root: Path) -> list[tuple[str, list[str]]]:
    """(stage instance, its declared outs/metrics/plots) in the order DVC may run them, from DVC's own graph."""
    import networkx as nx
    from dvc.repo import Repo

    text = (root / "dvc.yaml").read_text(encoding="utf-8")
    with contextlib.chdir(root), Repo(".") as repo:  # stage addresses are relative to the working directory
        graph = repo.index.graph  # edge: stage -> a stage it depends on
        stages = {s.addressing: s for s in graph.nodes}
        order = list(nx.lexicographical_topological_sort(
            graph.reverse(), key=lambda s: (text.find(f"\n  {s.addressing.split('@')[0]}:"), s.addressing)))
        return [(s.addressing, [str(o.def_path) for o in stages[s.addressing].outs]) for s in order]


def dvc_up_to_date(root: Path, stage: str) -> bool:
    """What ``dvc status <stage>`` says (in-process: a `dvc` process per check would cost seconds).

    DVC's warnings (the stale rwlock entries it drops on the way) are not printed: the kill logs have them."""
    import logging

    from dvc.repo import Repo

    dvc_log = logging.getLogger("dvc")
    level = dvc_log.level
    dvc_log.setLevel(logging.ERROR)
    try:
        with contextlib.chdir(root), Repo(".") as repo:
            return stage not in repo.status(targets=[stage])
    finally:
        dvc_log.setLevel(level)


def rwlock_entries(root: Path) -> list[dict[str, Any]]:
    path = root / ".dvc" / "tmp" / "rwlock"
    if not path.is_file():
        return []
    lock = json.loads(path.read_text(encoding="utf-8") or "{}")
    entries = [{"mode": "write", "path": p, **info} for p, info in lock.get("write", {}).items()]
    entries += [{"mode": "read", "path": p, **info} for p, infos in lock.get("read", {}).items() for info in infos]
    return entries


def lock_hashes(root: Path) -> dict[str, Any]:
    """Every hash and param value in ``dvc.lock``: {"<stage> dep|out <path>": md5, "<stage> params ...": value}."""
    lock = yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8"))
    flat: dict[str, Any] = {}
    for stage, body in lock["stages"].items():
        for kind in ("deps", "outs"):
            for entry in body.get(kind, []):
                flat[f"{stage} {kind[:-1]} {entry['path']}"] = entry.get("md5") or entry.get("hash")
        for file, values in (body.get("params") or {}).items():
            flat[f"{stage} params {file}"] = values
    return flat


def lock_differences(root_a: Path, root_b: Path) -> list[str]:
    """The dvc.lock entries that differ between two runs (missing on one side included), sorted."""
    a, b = lock_hashes(root_a), lock_hashes(root_b)
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


@dataclass
class Kill:
    stage: str
    moment: str  # "t=<s>s" (a seeded fraction of run A's duration) or "after <first checkpoint file>"
    landed: bool  # the process group was alive when killed (False: the stage had already finished)
    at_s: float  # seconds after `dvc repro` started
    killed_at: float  # epoch seconds (run records after it belong to later runs)
    outputs: dict[str, str]  # declared path -> "absent" | "equal" | "differs"
    up_to_date: bool
    stale_locks: list[dict[str, Any]]
    partials: list[str]  # hidden temp siblings (.name.partial/.old) left under data/
    progress: dict[str, Any] = field(default_factory=dict)  # what the work dir held at the kill (watched kills)
    rwlock_repaired: str | None = None  # the kill tore .dvc/tmp/rwlock: what repair_rwlock did
    lock_repaired: str | None = None  # the kill tore dvc.lock: what repair_lockfile did
    index_repaired: str | None = None  # the kill left .git/index.lock (DVC's autostage): what was removed


@dataclass
class StageResult:
    stage: str
    kills: list[Kill]
    rerun_s: float
    rerun_rc: int
    rerun_log: str


class Campaign:
    """Run B: the pipeline of ``root`` (a fresh tiny-profile copy), stage by stage, killed and rerun."""

    def __init__(self, root: Path, env: dict[str, str], reference: Path, seed: int = 0,
                 stages: list[str] | None = None, every_instance: bool = False):
        self.root, self.reference, self.seed, self.only = Path(root), Path(reference), seed, stages
        self.every_instance = every_instance
        self.env = dict(env)
        self.work = Path(self.env["ALIGNPIPE_WORK_DIR"])
        self.logs = self.root / ".kill-logs"
        self.logs.mkdir(exist_ok=True)
        self._reference: dict[str, Any] = {}
        self.done: list[str] = []  # stages completed here, in order

    # -- one `dvc repro` --------------------------------------------------------------------------------------
    def _start(self, stage: str, tag: str, *more: str) -> tuple[subprocess.Popen, Path]:
        log = self.logs / f"{stage}.{tag}.log"
        with open(log, "wb") as fh:
            # --single-item: the upstream is complete (checked when it ran), so dvc skips re-checking it.
            proc = subprocess.Popen(["dvc", "repro", "--single-item", stage, *more], cwd=self.root, env=self.env,
                                    stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        return proc, log

    @staticmethod
    def _kill_group(proc: subprocess.Popen) -> bool:
        alive = proc.poll() is None
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # dvc and the stage command it runs share this group
        except ProcessLookupError:
            pass
        proc.wait()
        deadline = time.time() + 10
        while time.time() < deadline and _live_members(proc.pid):  # dvc's children die a moment later
            time.sleep(0.05)
        return alive

    @staticmethod
    def _timing(root: Path, stage: str) -> dict[str, float] | None:
        path = root / ".cache/alignpipe/timings" / f"{stage}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def _duration(self, stage: str) -> float:
        """The stage's duration in run A, scaled by how much slower or faster this machine runs now than then
        (the ratio of process start-up times, import and Prefect, of the last few stages run here: it does not
        depend on how much work a resumed run skipped)."""
        timing = self._timing(self.reference, stage)
        total = timing["total_s"] if timing else 10.0
        pairs = [(self._timing(self.reference, s), self._timing(self.root, s)) for s in self.done[-5:]]
        pairs = [(a["process_to_flow_s"], b["process_to_flow_s"]) for a, b in pairs if a and b]
        scale = sum(b for _, b in pairs) / sum(a for a, _ in pairs) if pairs else 1.0
        return total * scale + DVC_OVERHEAD_S

    # -- the moments ------------------------------------------------------------------------------------------
    def _moments(self, stage: str) -> list[tuple[str, float | None]]:
        rng = random.Random(f"{self.seed}:{stage}")
        timed = [("timed", round(rng.uniform(*FRACTIONS) * self._duration(stage), 2)) for _ in range(TIMED_KILLS)]
        # The watched kill first, while the stage has done nothing yet, so its checkpoint / store is new.
        return ([("watch", None)] if stage in WATCH else []) + timed

    def _watched(self, pattern: str) -> dict[Path, int]:
        return {p: _progress_size(p) for p in self.work.glob(pattern)}

    def _wait_watch(self, proc: subprocess.Popen, stage: str, timeout: float) -> Path | None:
        kind, pattern = WATCH[stage]
        before = self._watched(pattern)
        deadline = time.time() + timeout
        while proc.poll() is None and time.time() < deadline:
            for path, size in self._watched(pattern).items():
                if size > before.get(path, 0):
                    return path
            time.sleep(0.02)
        return None

    # -- checks after a kill ----------------------------------------------------------------------------------
    def _check(self, stage: str, outs: list[str]) -> tuple[dict[str, str], bool, list[str]]:
        states = {}
        for rel in outs:
            mine = tree_digest(self.root / rel)
            if rel not in self._reference:
                self._reference[rel] = tree_digest(self.reference / rel)
            states[rel] = "absent" if mine is None else ("equal" if mine == self._reference[rel] else "differs")
        partials = sorted(p.relative_to(self.root).as_posix() for p in (self.root / "data").rglob(".*")
                          if p.name.endswith((".partial", ".old")))
        return states, dvc_up_to_date(self.root, stage), partials

    def _progress(self, stage: str, found: Path | None) -> dict[str, Any]:
        if found is None:
            return {}
        kind, _ = WATCH[stage]
        if kind == "store":
            return {"store": str(found), "stored": _progress_size(found)}
        ckpt_dir = found.parent.parent
        steps = [int(p.parent.name.split("-")[1]) for p in ckpt_dir.glob("checkpoint-*/trainer_state.json")]
        phases = sorted(p.relative_to(ckpt_dir.parent.parent).as_posix()
                        for p in ckpt_dir.parent.parent.glob("round_*/*") if p.name != "student_checkpoints"
                        and not p.name.startswith(".")) if stage == "synthesize" else []
        return {"checkpoint_dir": str(ckpt_dir), "checkpoint_step": max(steps, default=0), "phases_done": phases}

    # -- the campaign -----------------------------------------------------------------------------------------
    def run_stage(self, stage: str, outs: list[str]) -> StageResult:
        kills = []
        for i, (kind, delay) in enumerate(self._moments(stage)):
            proc, _ = self._start(stage, f"kill{i}")
            start = time.time()
            found = None
            if kind == "watch":
                found = self._wait_watch(proc, stage, timeout=3 * self._duration(stage) + 60)
                moment = f"after {found.relative_to(self.work)}" if found else "watched file never appeared"
            else:
                while proc.poll() is None and time.time() - start < delay:
                    time.sleep(0.02)
                moment = f"t={delay}s"
            landed = self._kill_group(proc)
            killed_at = time.time()
            repaired = repair_rwlock(self.root)  # before dvc status below, which a torn rwlock would stop
            lock_repaired = repair_lockfile(self.root)  # and a torn dvc.lock too
            index_repaired = repair_git_index_lock(self.root, min_age_s=0)  # the group is dead: no writer left
            outputs, up_to_date, partials = self._check(stage, outs)
            kills.append(Kill(stage, moment, landed, round(killed_at - start, 2), killed_at, outputs, up_to_date,
                              rwlock_entries(self.root), partials, self._progress(stage, found), repaired,
                              lock_repaired, index_repaired))
        proc, log = self._start(stage, "rerun")
        start = time.time()
        rc = proc.wait(timeout=1800)
        return StageResult(stage, kills, round(time.time() - start, 2), rc, log.read_text(errors="replace"))

    def run(self) -> list[StageResult]:
        from flows.server import start_server, stop_server

        server, api = start_server(cwd=self.root)
        self.env["PREFECT_API_URL"] = api
        order = [(stage, outs) for stage, outs in stage_order(self.root) if not self.only or stage in self.only]
        killed = self.killed([stage for stage, _ in order])
        results: list[StageResult] = []
        quiet: list[str] = []  # consecutive instances run uninterrupted, in one dvc call
        try:
            for stage, outs in order:
                if stage not in killed:
                    quiet.append(stage)
                    continue
                if quiet and not self._run_quiet(quiet, results):
                    break
                quiet = []
                result = self.run_stage(stage, outs)
                results.append(result)
                self.done.append(stage)
                if result.rerun_rc != 0:
                    break  # later stages need this one's outputs
            else:
                if quiet:
                    self._run_quiet(quiet, results)
        finally:
            stop_server(server)
        return results

    def killed(self, stages: list[str]) -> set[str]:
        """The instances to kill: see the module docstring."""
        if self.every_instance:
            return set(stages)
        groups: dict[str, list[str]] = {}
        for stage in stages:
            groups.setdefault(stage.split("@")[0], []).append(stage)
        chosen = {random.Random(f"{self.seed}:{name}").choice(sorted(group)) for name, group in groups.items()}
        return chosen | (set(WATCH) & set(stages))

    def _run_quiet(self, stages: list[str], results: list[StageResult]) -> bool:
        proc, log = self._start(stages[0], "run", *stages[1:])
        start = time.time()
        rc = proc.wait(timeout=1800)
        seconds, text = round(time.time() - start, 2), log.read_text(errors="replace")
        results.extend(StageResult(stage, [], seconds, rc, text) for stage in stages)
        self.done.extend(stages)
        return rc == 0


def torn_lock_recovery(root: Path, env: dict[str, str]) -> dict[str, Any]:
    """A kill while DVC rewrites dvc.lock (DVC writes it in place, not through a temp file) leaves it torn.

    Simulated by cutting the file in half; then the README's recovery: `git checkout dvc.lock` (the index's copy,
    which DVC's autostage, on in .dvc/config, updates after every dvc command) and `dvc repro`.
    """
    lock = root / "dvc.lock"
    text = lock.read_text(encoding="utf-8")
    lock.write_text(text[: len(text) // 2], encoding="utf-8")
    broken = subprocess.run(["dvc", "status"], cwd=root, env=env, capture_output=True, text=True)
    subprocess.run(["git", "checkout", "--", "dvc.lock"], cwd=root, check=True, capture_output=True)
    start = time.time()
    repro = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True, timeout=1800)
    return {"broken_rc": broken.returncode, "broken_output": broken.stdout + broken.stderr,
            "repro_rc": repro.returncode, "repro_output": repro.stdout + repro.stderr,
            "repro_s": round(time.time() - start, 2)}


def _live_members(pgid: int) -> list[int]:
    """Processes of the group that are not zombies (an orphaned zombie waits for a reaper that may never come)."""
    import psutil

    live = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                live.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return live


def _progress_size(path: Path) -> int:
    """A checkpoint marker counts once it is whole (transformers writes trainer_state.json last, in place: a kill
    while it is half written leaves an incomplete checkpoint, which the rerun rightly discards and trains again;
    the CI run of 1f149e3 met that); a JSONL store by its complete lines."""
    if path.suffix == ".jsonl":
        try:
            return path.read_bytes().count(b"\n")
        except FileNotFoundError:
            return 0
    try:
        json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0
    return 1
