"""How far can a small judge be trusted? A model judges FollowBench's rule-scored instructions with the official
judge prompt, and its verdicts are compared with the official rules' verdicts on the same responses.

    python bench/judge_agreement.py --model data/base/model                       # hf role, 120 instructions
    python bench/judge_agreement.py --model data/base/model --n 350 --backend openai \\
        --base-url http://127.0.0.1:8000/v1                                          # behind `transformers serve`

Steps: a seeded subset of ``--n`` rule-scored instructions (levels 1-5; the categories the official judge prompt
covers, i.e. not 'example', whose groups are all rule-scored) of the official data
(``--source``, default ``../shared/data/followbench``); ``--responder`` (default: the same model) answers each
greedily with its chat template; the official rules give each response its verdict (the instruction is followed
or not); the judge (``roles.judge`` on the ``hf`` or ``openai`` backend, temperature 0) is asked the official judge
prompt for the same response (one retry on an unparseable output, as the pipeline does), and its instruction
verdict is "every constraint YES". Printed: n, the unparseable rate, accuracy of the parseable verdicts against the
rules with a Wilson 95% interval, Cohen's κ with a bootstrap 95% interval, the confusion matrix, and each side's
pass rate. Responses and judge outputs are cached under the work dir, so a rerun (or another backend on the same
model) only pays for what changed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def kappa(a: list[bool], b: list[bool]) -> float:
    """Cohen's κ of two binary raters (nan when chance agreement is 1)."""
    n = len(a)
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pa, pb = sum(a) / n, sum(b) / n
    pe = pa * pb + (1 - pa) * (1 - pb)
    return (po - pe) / (1 - pe) if pe < 1 else math.nan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="the judge's model directory (or GGUF spec)")
    parser.add_argument("--responder", default=None, help="the model that answers (default: --model)")
    parser.add_argument("--source", default=str(REPO.parent / "shared" / "data" / "followbench"))
    parser.add_argument("--n", type=int, default=120, help="rule-scored instructions (seeded subset; 0 = all)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="responder's budget")
    parser.add_argument("--judge-tokens", type=int, default=64, help="judge's budget")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--backend", choices=("hf", "openai"), default="hf")
    parser.add_argument("--base-url", default=None, help="openai backend: the server's /v1 URL")
    parser.add_argument("--served-name", default=None, help="openai backend: the served model's name (default --model)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", default=".cache/alignpipe/bench/judge_agreement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None, help="also write the figures (and every row) to this JSON file")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO / "src"))
    from alignpipe.config import ModelSection, validate_params
    from alignpipe.evaluate.followbench.data import evolution_paths, load_followbench
    from alignpipe.evaluate.followbench.judge import DEFAULT_TEMPLATE, build_prompt, judge_all, load_template
    from alignpipe.evaluate.followbench.rules import rule_group
    from alignpipe.evaluate.followbench.score import score
    from alignpipe.evaluate.responder import chat_model
    from alignpipe.llm import build_roles
    from alignpipe.utils.cache import cached_map

    records = load_followbench(args.source)
    paths = evolution_paths(records)
    template = load_template(DEFAULT_TEMPLATE)
    # the official judge prompt has no phrase for 'example' (every example group is rule-scored): those are left out
    ruled = [r for r in records if r["level"] >= 1 and rule_group(r) is not None and r["category"] in template["kinds"]]
    if args.n and args.n < len(ruled):
        ruled = sorted(random.Random(args.seed).sample(ruled, args.n), key=lambda r: r["id"])
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    responder = args.responder or args.model
    t0 = time.perf_counter()
    respond = chat_model(responder, ModelSection(), args.max_new_tokens, args.batch_size)
    tag = "".join(c if c.isalnum() else "_" for c in f"{responder}_{args.max_new_tokens}")[-120:]
    responses = cached_map(respond, [r["instruction"] for r in ruled], work / f"responses_{tag}.jsonl", 32)
    t_gen = time.perf_counter() - t0
    rows = score(ruled, responses, None, load_template(DEFAULT_TEMPLATE), all_records=records)
    rule_ok = [bool(row["verdicts"][0]) for row in rows]

    spec = {"backend": args.backend, "model": args.served_name or args.model, "temperature": 0.0,
            "max_tokens": args.judge_tokens, "batch_size": args.batch_size}
    if args.backend == "openai":
        spec.update(base_url=args.base_url, concurrency=4, deadline_s=3600)
    roles = build_roles(validate_params({"roles": {"judge": spec}}).roles, seed=args.seed, cache_dir=work / "llm")

    def judge(prompts: list[str]) -> list[str]:
        comps = roles.judge.complete("followbench_judge.v1", [{"prompt": p} for p in prompts], temperature=0.0,
                                     max_tokens=args.judge_tokens)
        return [c.text for c in comps]

    prompts = [build_prompt(template, r["category"], paths[r["id"]], resp) for r, resp in zip(ruled, responses)]
    t1 = time.perf_counter()
    results = judge_all(judge, prompts, [r["level"] for r in ruled], template, retries=1)
    t_judge = time.perf_counter() - t1

    parsed = [(ok, all(res["verdicts"])) for ok, res in zip(rule_ok, results) if res["verdicts"] is not None]
    n, m = len(ruled), len(parsed)
    agree = sum(a == b for a, b in parsed)
    acc_lo, acc_hi = wilson(agree, m)
    rules_side, judge_side = [a for a, _ in parsed], [b for _, b in parsed]
    k = kappa(rules_side, judge_side) if m else math.nan
    rng = random.Random(args.seed)
    boots = []
    for _ in range(2000):
        sample = [parsed[rng.randrange(m)] for _ in range(m)] if m else []
        value = kappa([a for a, _ in sample], [b for _, b in sample]) if sample else math.nan
        if not math.isnan(value):
            boots.append(value)
    boots.sort()
    k_lo, k_hi = (boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]) if boots else (math.nan,) * 2
    confusion = {f"rules {'pass' if a else 'fail'} / judge {'pass' if b else 'fail'}":
                 sum(1 for x, y in parsed if (x, y) == (a, b)) for a in (True, False) for b in (True, False)}
    unparseable = n - m
    print(f"\nJudge agreement with the official rules: judge {args.model} ({args.backend}), responder {responder}, "
          f"FollowBench rule-scored instructions (levels 1-5), seed {args.seed}")
    print("| n | unparseable | accuracy (95% CI) | Cohen's κ (95% CI) | rules pass rate | judge pass rate |")
    print("|---:|---:|---|---|---:|---:|")
    print(f"| {n} | {unparseable} ({unparseable / n:.1%}) | {agree / m:.3f} ({acc_lo:.3f}-{acc_hi:.3f}) "
          f"| {k:.3f} ({k_lo:.3f}-{k_hi:.3f}) | {sum(rules_side) / m:.3f} | {sum(judge_side) / m:.3f} |"
          if m else f"| {n} | {unparseable} (100%) | – | – | – | – |")
    print("confusion (parseable):", confusion)
    print(f"time: responses {t_gen:.0f} s, judging {t_judge:.0f} s; judge role: {roles.metrics()['judge']}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "n": n, "unparseable": unparseable, "accuracy": agree / m if m else None, "accuracy_ci": [acc_lo, acc_hi],
            "kappa": k, "kappa_ci": [k_lo, k_hi], "confusion": confusion,
            "rows": [{"id": r["id"], "rules": ok, "judge": res["verdicts"], "raw": res["raw"]}
                     for r, ok, res in zip(ruled, rule_ok, results)]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
