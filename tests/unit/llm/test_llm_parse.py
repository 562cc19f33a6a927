"""Parsers of role outputs (unparseable -> None) and the versioned prompt templates."""

from __future__ import annotations

import pytest

from alignpipe.llm import parse
from alignpipe.llm.prompts import fields_of, render


@pytest.mark.parametrize("text, expected", [
    ("Evaluation evidence: fine.\nScore of the Assistant 1: 8\nScore of the Assistant 2: 6.5", (8.0, 6.5)),
    ("blah\nScore of the Assistant 1: 10/10\nScore of the Assistant 2: 3.", (10.0, 3.0)),
    ("Score of the Assistant 1: 7\nScore of the Assistant 2: 7\n\n", (7.0, 7.0)),
    ("Score of the Assistant 1: seven\nScore of the Assistant 2: 7", None),    # not a number
    ("Score of the Assistant 1: 11\nScore of the Assistant 2: 7", None),       # out of 1..10
    ("Score of the Assistant 2: 7\nScore of the Assistant 1: 7", None),        # wrong order (Lion's parse_score)
    ("8 6", None),
    ("", None),
])  # fmt: skip
def test_referee_scores(text, expected):
    assert parse.referee_scores(text) == expected


def test_judge_scores():
    assert parse.judge_scores("Fluency: 9\n**Factuality**: 4.5\ncoherence: 10") == {
        "fluency": 9.0, "factuality": 4.5, "coherence": 10.0}
    assert parse.judge_scores("Fluency: 9\nFactuality: 4") is None
    assert parse.judge_scores("Fluency: 0\nFactuality: 4\nCoherence: 5") is None
    assert parse.judge_scores("Fluency: good\nFactuality: 4\nCoherence: 5") is None


def test_verdicts_and_text():
    assert parse.verdicts("1. YES\n2. no\n3) Yes.", 3) == [True, False, True]
    assert parse.verdicts("YES\nNO", 3) is None
    assert parse.verdicts("", 0) == []
    assert parse.text("  \n ") is None and parse.text(" hi ") == "hi"
    assert parse.instruction("#Created Instruction#: Describe Quenth.") == "Describe Quenth."
    assert parse.instruction("#Created Instruction#:") is None


def test_render_fills_fields_and_keeps_braces_in_values():
    msgs = render("webr_wr_refine.v1", {"web": "a {web} b", "request": "Q?", "answer": "A."})
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "[Provided Information]\na {web} b\n\n\n[Question]\nQ?\n\n\n[Answer]\nA." in msgs[1]["content"]
    assert msgs[0]["content"] == "You are a helpful assistant."
    assert not any(line.startswith("# ") for m in msgs for line in m["content"].splitlines())


def test_template_errors_name_the_template():
    assert fields_of("referee_compare.v1") == {"instruction", "answer_1", "answer_2"}
    with pytest.raises(ValueError, match=r"'webr_persona.v1' needs fields \['web'\]"):
        render("webr_persona.v1", {})
    with pytest.raises(ValueError, match="'nope.v1' not found"):
        render("nope.v1", {})
    with pytest.raises(ValueError, match="expected '<name>.v<version>'"):
        render("webr_persona", {"web": "x"})
