"""How fast each stage says no to a params mistake: wall time of ``python -m flows.<stage>`` on a params file with
one typo, from process start to exit status 2, per stage (median of ``--runs``; target ≤ 2 s, issue 18).

    python bench/stage_start.py              # every stage, 5 runs each
    python bench/stage_start.py --runs 3 sft align

The params file is the repo's ``params.yaml`` with ``sft.max_lenght`` added (a typo of ``max_length``); every stage
validates the whole file before it imports Prefect, torch or its trainers, so the time is Python's start, the
project's light imports and the validation. Run from the repo root with the project's venv.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
ARGS = {"align": ["--variant", "dpo_full"], "evaluate": ["--name", "sft", "--model-dir", "data/sft/model"],
        "sft_mix": ["--name", "seed"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("stages", nargs="*")
    opts = parser.parse_args()
    stages = opts.stages or sorted(p.stem for p in (REPO / "flows").glob("*.py")
                                   if not p.stem.startswith("_") and p.stem != "server")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sft"]["max_lenght"] = 64
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)])}
    env.pop("PREFECT_API_URL", None)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bad = Path(tmp) / "params.yaml"
        bad.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
        for stage in stages:
            times = []
            for _ in range(opts.runs):
                start = time.perf_counter()
                proc = subprocess.run([sys.executable, "-m", f"flows.{stage}", "--params", str(bad),
                                       *ARGS.get(stage, [])], cwd=REPO, env=env, capture_output=True, text=True)
                times.append(time.perf_counter() - start)
                last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
                if proc.returncode != 2 or "max_lenght" not in last:
                    sys.exit(f"{stage}: expected exit 2 naming sft.max_lenght, got {proc.returncode}: {last}")
            rows.append((stage, statistics.median(times), max(times)))
    print(f"params typo -> exit 2, {opts.runs} runs per stage (seconds)\n")
    print("| stage | median | max |\n|---|---:|---:|")
    for stage, med, worst in rows:
        print(f"| {stage} | {med:.2f} | {worst:.2f} |")
    print(f"\nslowest median: {max(r[1] for r in rows):.2f} s (target <= 2 s)")


if __name__ == "__main__":
    main()
