"""How long the whole pipeline takes: a fresh `make repro` per stage and in total, the slowest stages first.

    python bench/repro.py                          # fresh copy, default params, 2 stages at a time (make repro)
    python bench/repro.py --jobs 1 --jobs 2        # one run each, one after the other, and their ratio
    python bench/repro.py --profile tiny --jobs 1 --jobs 2 --runs 3   # the tiny profile, medians of 3
    python bench/repro.py --from .                 # the table of the runs already in this checkout (no run)

Each run copies the repo's tracked and untracked, non-ignored files into a fresh directory (a git repo, no data,
no caches; `--profile` applies profiles/<name>.yaml), starts a Prefect server and runs what `make repro` runs
(`python -m alignpipe_ops.repro --jobs N`; `--jobs 1` is a plain `dvc repro`) with make repro's environment,
then a second, no-op run. Printed per run: wall time, the no-op rerun's wall time, CPU time of all processes,
how many cores were busy on average (CPU time / wall), the largest resident set of any process, and the stage
instances by wall time (from the stages' run records: process start to flow end, `.cache/alignpipe/runs/`;
`--top` rows). With several `--jobs`, the ratio of median wall times to the first.

The stages' own times include waiting for the CPU when two run side by side on a busy machine: compare runs made
on the same machine in one invocation. Run from the repo root with the project's venv; it takes as long as the
pipeline does (the default DAG: most of an hour on 2 cores), so it is a benchmark, never a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ENV = {  # what the Makefile exports for make repro
    "DVC_NO_ANALYTICS": "1", "DO_NOT_TRACK": "1", "HF_HUB_OFFLINE": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296",
}


def copy_repo(dst: Path, profile: str | None) -> None:
    """The checkout into ``dst`` (alignpipe_ops.copyrepo), with profiles/<profile>.yaml applied to its params."""
    sys.path.insert(0, str(REPO / "src"))
    from alignpipe.profile import apply_profile
    from alignpipe_ops.copyrepo import copy_repo as copy_checkout

    def with_profile(root: Path) -> None:
        params = apply_profile(profile, root / "params.yaml", root / "profiles")
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

    copy_checkout(REPO, dst, message="bench copy", edit=with_profile if profile else None)


def stage_times(root: Path) -> dict[str, float]:
    """Wall seconds of each stage instance's last completed run, from its run records and timings."""
    times = {}
    for path in sorted((root / ".cache/alignpipe/runs").glob("*.jsonl")):
        runs: dict[str, list[dict]] = {}
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            runs.setdefault(row["run"], []).append(row)
        for rows in reversed(list(runs.values())):
            start = next((r for r in rows if r["event"] == "start"), None)
            end = next((r for r in rows if r["event"] == "end" and r.get("status") == "completed"), None)
            if start and end:
                timing = root / ".cache/alignpipe/timings" / f"{start['stage']}.json"
                before = json.loads(timing.read_text())["process_to_flow_s"] if timing.is_file() else 0.0
                times[start["stage"]] = end["time"] - start["time"] + before
                break
    return times


def run_once(jobs: int, profile: str | None, keep: Path | None) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"repro-j{jobs}-", dir=keep))
    root = tmp / "repo"
    root.mkdir()
    copy_repo(root, profile)
    env = {**os.environ, **ENV, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "ALIGNPIPE_WORK_DIR": str(root / ".cache/alignpipe"), "PYTHONPATH": str(root / "src")}
    env.pop("PREFECT_API_URL", None)
    pipeline = ["dvc", "repro"] if jobs == 1 else [sys.executable, "-m", "alignpipe_ops.repro", "--jobs", str(jobs)]
    cmd = [sys.executable, "-m", "flows.server", "--", *pipeline]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(tmp / "repro.log", "wb") as log:
        rc = subprocess.call(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc != 0:
        raise SystemExit(f"the run with --jobs {jobs} failed (exit status {rc}); its log: {tmp / 'repro.log'}")
    t1 = time.perf_counter()
    noop = subprocess.run(pipeline, cwd=root, env=env, capture_output=True)
    noop_s = time.perf_counter() - t1
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = {"jobs": jobs, "wall_s": wall, "noop_s": noop_s, "noop_rc": noop.returncode, "cpu_s": cpu,
              "busy_cores": cpu / wall, "max_rss_gb": after.ru_maxrss / 2**20, "stages": stage_times(root),
              "dir": str(root)}
    if keep is None:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def print_run(result: dict, top: int) -> None:
    stages = result["stages"]
    total = sum(stages.values())
    print(f"\n--jobs {result.get('jobs', '?')}: wall {result['wall_s']:.0f} s" if "wall_s" in result else
          f"\nrun records in {result['dir']}:")
    if "wall_s" in result:
        print(f"  no-op rerun {result['noop_s']:.1f} s (exit status {result['noop_rc']}); CPU {result['cpu_s']:.0f} s,"
              f" {result['busy_cores']:.2f} cores busy on average; largest process {result['max_rss_gb']:.2f} GB")
    print(f"  {len(stages)} stage instances, {total:.0f} s of stage time in all")
    print("\n| stage | s | share |\n|---|---:|---:|")
    for name, seconds in sorted(stages.items(), key=lambda kv: -kv[1])[:top]:
        print(f"| {name} | {seconds:.0f} | {seconds / total:.0%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, action="append", help="stages at a time (repeatable; default 2)")
    parser.add_argument("--runs", type=int, default=1, help="runs per --jobs value (median wall time)")
    parser.add_argument("--profile", default=None, help="apply profiles/<name>.yaml (e.g. tiny)")
    parser.add_argument("--top", type=int, default=15, help="stage rows to print per run")
    parser.add_argument("--keep", type=Path, default=None, help="keep the copies under this directory")
    parser.add_argument("--from", dest="existing", type=Path, default=None,
                        help="print the stage table of an existing checkout's run records and exit")
    opts = parser.parse_args()
    if opts.existing is not None:
        print_run({"stages": stage_times(opts.existing.resolve()), "dir": str(opts.existing)}, opts.top)
        return
    jobs = opts.jobs or [2]
    if any(j < 1 for j in jobs) or opts.runs < 1:
        raise SystemExit("--jobs and --runs take numbers of 1 or more")
    results: dict[int, list[dict]] = {}
    for _ in range(opts.runs):  # interleaved, so a change in the machine's load hits every setting alike
        for j in jobs:
            result = run_once(j, opts.profile, opts.keep)
            results.setdefault(j, []).append(result)
            print_run(result, opts.top)
    if len(jobs) > 1:
        base = statistics.median(r["wall_s"] for r in results[jobs[0]])
        print(f"\n| --jobs | median wall s | ratio to --jobs {jobs[0]} | runs |\n|---:|---:|---:|---:|")
        for j in jobs:
            med = statistics.median(r["wall_s"] for r in results[j])
            print(f"| {j} | {med:.0f} | {med / base:.2f} | {len(results[j])} |")


if __name__ == "__main__":
    main()
