"""The LLM-judge part of FollowBench: prompts, a judge protocol, parsing of judge outputs, one retry.

Usage::

    template = load_template()                                        # prompts/judge_v1.yaml
    prompt = build_prompt(template, "style", path, answer)            # path: [level 0, ..., level L]
    results = judge_all(judge, [prompt, ...], [L, ...], template)     # judge: list[str] -> list[str]

A judge is any callable ``judge(prompts: list[str]) -> list[str]`` (one output per prompt, same order): the LLM
roles interface, a local transformers model (``stage.model_judge``), or a deterministic function in tests. The
official script calls it at temperature 0; the backend decides how.

Parsing follows the official ``paring_discriminative_generation``: strip backticks and whitespace, take the last
line; at level 1 it holds if 'YES' is in that line, fails if 'NO' is; at level L > 1 the first ``[...]`` span of
that line must be a literal list of exactly L elements, each 'YES' (holds) or one of 'NO', 'PARTIAL', 'MAYBE',
'UNKNOWN', 'N/A' (fails). Anything else is unparseable. The official script then counts -1 for the instruction,
silently lowering the score; here an unparseable output is asked again (``retries`` times, with a format
reminder appended so a cached or deterministic backend is not simply asked the identical request), then counted
as unparseable and reported separately, never scored.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import yaml

PROMPTS = Path(__file__).with_name("prompts")
DEFAULT_TEMPLATE = PROMPTS / "judge_v1.yaml"
TEMPLATE_KEYS = ("version", "kinds", "one", "many", "step_first", "step_next", "retry")
FAILING = ("NO", "PARTIAL", "MAYBE", "UNKNOWN", "N/A")


class JudgeFn(Protocol):
    """A judge backend: one raw text output per prompt, in order."""

    def __call__(self, prompts: list[str]) -> list[str]: ...


def load_template(path: str | Path = DEFAULT_TEMPLATE) -> dict[str, Any]:
    """Read and check a judge prompt template file (YAML with the keys of ``prompts/judge_v1.yaml``).

    Raises:
        ValueError: the file is missing a key or a category phrase.
    """
    path = Path(path)
    template = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing = [k for k in TEMPLATE_KEYS if not isinstance(template, dict) or k not in template]
    if missing:
        raise ValueError(f"{path}: judge template lacks key(s) {missing}")
    kinds = [c for c in ("content", "situation", "style", "format", "mixed") if c not in template["kinds"]]
    if kinds:
        raise ValueError(f"{path}: judge template 'kinds' lacks categories {kinds}")
    return template


def build_prompt(template: dict[str, Any], category: str, path: Sequence[str], answer: str) -> str:
    """The judge prompt for the answer to ``path[-1]``.

    Args:
        template: from :func:`load_template`.
        category: the record's category (picks the constraint phrase).
        path: the group's instructions from the initial one (level 0) to the judged one (level L), L + 1 items.
        answer: the evaluated model's response to ``path[-1]``.
    """
    level = len(path) - 1
    if level < 1:
        raise ValueError(f"an evolution path needs the initial instruction and at least one level, got {len(path)}")
    kind = template["kinds"][category]
    if level == 1:
        return template["one"].format(kind=kind, initial=path[0], final=path[1], answer=answer)
    steps = template["step_first"].format(instruction=path[1])
    steps += "".join(template["step_next"].format(i=i, instruction=path[i]) for i in range(2, level + 1))
    return template["many"].format(kind=kind, level=level, initial=path[0], steps=steps, answer=answer)


def retry_prompt(template: dict[str, Any], prompt: str, level: int) -> str:
    """The prompt asked again after an unparseable output: the original plus the format reminder."""
    example = "[" + ", ".join(["'YES'"] * (level - 1) + ["'NO'"]) + "]"
    return prompt + template["retry"].format(level=level, example=example)


def parse_output(text: str, level: int) -> list[bool] | None:
    """Per-constraint verdicts from a judge output, or None when it cannot be parsed (official rules)."""
    last = text.strip("`").strip().split("\n")[-1]
    if level == 1:
        if "YES" in last:
            return [True]
        if "NO" in last:
            return [False]
        return None
    found = re.search(r"\[.*\]", last)
    if found is None:
        return None
    try:
        items = ast.literal_eval(found.group())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    if not isinstance(items, list) or len(items) != level:
        return None
    if any(not isinstance(x, str) or (x != "YES" and x not in FAILING) for x in items):
        return None
    return [x == "YES" for x in items]


def judge_all(
    judge: JudgeFn, prompts: Sequence[str], levels: Sequence[int], template: dict[str, Any], retries: int = 1
) -> list[dict[str, Any]]:
    """Ask the judge about every prompt; ask again (up to ``retries`` times) where the output cannot be parsed.

    Returns:
        One ``{"verdicts": list[bool] | None, "raw": [output of each attempt], "attempts": n}`` per prompt;
        ``verdicts`` is None when no attempt could be parsed.

    Raises:
        RuntimeError: the judge returned a different number of outputs than prompts.
    """
    if len(prompts) != len(levels):
        raise ValueError(f"{len(prompts)} prompts but {len(levels)} levels")
    results: list[dict[str, Any]] = [{"verdicts": None, "raw": [], "attempts": 0} for _ in prompts]
    todo = list(range(len(prompts)))
    for attempt in range(retries + 1):
        if not todo:
            break
        asked = [prompts[i] if attempt == 0 else retry_prompt(template, prompts[i], levels[i]) for i in todo]
        outputs = judge(asked)
        if len(outputs) != len(asked):
            raise RuntimeError(f"the judge returned {len(outputs)} outputs for {len(asked)} prompts")
        for i, out in zip(todo, outputs, strict=True):
            results[i]["raw"].append(out)
            results[i]["attempts"] += 1
            results[i]["verdicts"] = parse_output(out, levels[i])
        todo = [i for i in todo if results[i]["verdicts"] is None]
    return results
