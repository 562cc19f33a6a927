"""Fixtures for the FollowBench tests: the official sample (skipped when absent) and a deterministic judge.

``lexical_judge`` is a stand-in judge that is a real function of the prompt: it reads the evolution path and the
answer back out of the official prompt, and says YES to added constraint i when the answer contains a word that
instruction i added (a word of 4+ letters absent from instruction i-1). Answers containing ``GARBLE`` get an
unparseable reply on the first request (well-formed once the retry reminder is appended); answers containing
``ALWAYS-GARBLE`` get unparseable replies every time.
"""

from __future__ import annotations

import re

import pytest

from alignpipe.evaluate.followbench.data import load_followbench

STEP = re.compile(r"#Initial Instruction(?: \+ (\d+) constraints?)?#\n(.*?)\n\n(?=#)", re.DOTALL)
ANSWER = re.compile(r"#Answer of Initial Instruction \+ \d+ constraints?#\n(.*)\n\n#System#", re.DOTALL)


def _words(text: str) -> set[str]:
    return {w.lower() for w in re.findall(r"[A-Za-z]{4,}", text)}


def parse_prompt(prompt: str) -> tuple[list[str], str]:
    """(evolution path, answer) read back from an official judge prompt."""
    path = [m.group(2) for m in STEP.finditer(prompt.split("#Answer of Initial Instruction")[0] + "#")]
    return path, ANSWER.search(prompt).group(1)


def lexical_verdicts(prompt: str) -> list[bool]:
    path, answer = parse_prompt(prompt)
    said = _words(answer)
    return [bool((_words(path[i]) - _words(path[i - 1])) & said) for i in range(1, len(path))]


def lexical_judge(prompts: list[str]) -> list[str]:
    out = []
    for prompt in prompts:
        _, answer = parse_prompt(prompt)
        retry = "Reply format reminder" in prompt
        if "ALWAYS-GARBLE" in answer or ("GARBLE" in answer and not retry):
            out.append("The answer seems fine to me.\nYES or NO? Hard to say")
            continue
        labels = ["YES" if v else "NO" for v in lexical_verdicts(prompt)]
        out.append("1) The constraints are identified.\n2) Checked each one.\n" + repr(labels))
    return out


@pytest.fixture
def fb_dir(shared_data):
    path = shared_data / "followbench"
    if not path.is_dir():
        pytest.skip(f"FollowBench sample not found at {path}")
    return path


@pytest.fixture
def fb_records(fb_dir):
    return load_followbench(fb_dir)


@pytest.fixture
def by_id(fb_records):
    return {r["id"]: r for r in fb_records}


@pytest.fixture
def judge_fn():
    """The lexical judge (see the module docstring), as the ``judge(prompts) -> outputs`` protocol."""
    return lexical_judge


@pytest.fixture
def lexical():
    """``prompt -> per-constraint verdicts`` of the lexical judge (to check what the pipeline parsed)."""
    return lexical_verdicts
