"""Opt-in: the project's rules, judge prompts and parser against the official FollowBench code itself.

Set ``FOLLOWBENCH_OFFICIAL_CODE`` to the ``code/`` folder of a YJiangcm/FollowBench checkout (commit 6278f4c was
used) to run it; the official code is imported from there, never copied into the project. It compares, on the
shared sample, the verdicts of every rule-scored instruction on gold answers and corrupted copies, every judge
prompt, and the parsing of a set of well-formed and malformed judge outputs.
"""

from __future__ import annotations

import ast
import importlib
import logging
import os
import random
from pathlib import Path

import pytest

from alignpipe.evaluate.followbench.data import evolution_paths
from alignpipe.evaluate.followbench.judge import build_prompt, load_template, parse_output
from alignpipe.evaluate.followbench.rules import rule_group, rule_verdict

OFFICIAL = os.environ.get("FOLLOWBENCH_OFFICIAL_CODE")
pytestmark = pytest.mark.skipif(
    not OFFICIAL or not (Path(OFFICIAL) / "rule_based_evaluation.py").is_file(),
    reason="set FOLLOWBENCH_OFFICIAL_CODE to the code/ folder of a YJiangcm/FollowBench checkout",
)


@pytest.fixture
def official(monkeypatch):
    monkeypatch.syspath_prepend(OFFICIAL)
    return importlib.import_module("rule_based_evaluation"), importlib.import_module("gpt4_based_evaluation")


def _variants(text: str, rng: random.Random) -> list[str]:
    ops = [lambda s: s + " ", str.upper, lambda s: s[:-1], lambda s: "Answer: " + s, lambda s: s + "\n" + s,
           str.lower, lambda s: f"The answer is {s}.", lambda s: ""]
    return [text] + [rng.choice(ops)(text) for _ in range(4)]


def test_rule_verdicts_equal_official(official, fb_records):
    rules, _ = official
    rng = random.Random(0)
    n = 0
    for r in fb_records:
        group = rule_group(r)
        if r["level"] == 0 or group is None:
            continue
        if group == "example":
            bases = [r["answer"]]
        elif group == "CONLL2003":
            bases = ast.literal_eval(r["target"])[:2]
        elif r["target"]:
            bases = [r["target"], f"So it is {r['target']}", "(A) then (B) on 12/29/1937 for $14"]
        else:  # summarization / format groups have no target: the instruction's own sentences as stand-ins
            bases = [r["instruction"][-160:], r["instruction"][:60].lower()]
        for response in [v for b in bases for v in _variants(b, rng)]:
            if group == "example":
                expected = rules.check_match(r["target"].replace("{instruction}\n", ""), response)
            elif group.startswith("format_"):
                expected = rules.rule_evaluation_format(response, r["example_id"], r["level"])
            else:
                expected = getattr(rules, f"rule_evaluation_{group}")(response, r["target"], r["level"])
            assert rule_verdict(r, response) == bool(expected), (r["id"], response[:80])
            n += 1
    assert n > 1500


def test_judge_prompts_and_parser_equal_official(official, fb_records):
    _, judge = official
    template, paths = load_template(), evolution_paths(fb_records)
    judged = [r for r in fb_records if r["level"] > 0 and rule_group(r) is None]
    assert len(judged) == 470
    for r in judged:
        ours = build_prompt(template, r["category"], paths[r["id"]], "An {answer}.")
        assert ours == getattr(judge, f"{r['category']}_evaluation_prompt")(paths[r["id"]], "An {answer}.")
    logging.disable(logging.CRITICAL)
    try:
        for text in ["['YES', 'NO', 'YES']", "x\n['YES','YES']", "```\n['NO']\n```", "YES", "NO", "maybe", "[YES]",
                     "['YES', 'PARTIAL']", "['YES', 'FOO']", "[1, 0]", "", "```python\n['YES', 'NO']\n```"]:
            for level in range(1, 6):
                hard, soft = judge.paring_discriminative_generation(text, level)
                parsed = parse_output(text, level)
                assert ((-1, -1) if parsed is None else (int(all(parsed)), sum(parsed) / level)) == (hard, soft)
    finally:
        logging.disable(logging.NOTSET)
