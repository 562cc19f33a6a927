"""The judge prompt (official structure), parsing of judge outputs, and the retry of unparseable ones."""

from __future__ import annotations

import pytest

from alignpipe.evaluate.followbench.judge import build_prompt, judge_all, load_template, parse_output, retry_prompt


@pytest.fixture
def template():
    return load_template()


def test_level3_prompt_exact(template):
    path = ["Write a poem.", "Write a poem about the sea.", "Write a poem about the sea in 4 lines.",
            "Write a poem about the sea in 4 lines, in a sad tone."]
    expected = (
        "Given an initial instruction, we add one style constraint per time and obtain the final instruction with 3 "
        "additional constraints.\n\n"
        "#Initial Instruction#\nWrite a poem.\n\n"
        "#Initial Instruction + 1 constraint#\nWrite a poem about the sea.\n\n"
        "#Initial Instruction + 2 constraints#\nWrite a poem about the sea in 4 lines.\n\n"
        "#Initial Instruction + 3 constraints#\nWrite a poem about the sea in 4 lines, in a sad tone.\n\n"
        "#Answer of Initial Instruction + 3 constraints#\nThe grey sea {weeps}.\n\n"
        "#System#\n1) Please identify all 3 added constraints.\n2) For the 3 added constraints, discriminate if the "
        "#Answer of Initial Instruction + 3 constraints# satisfies each constraint.\n3) In the final line, only "
        "output a Python LIST with 3 elements ('YES' or 'NO') indicating whether the answer satisfies each "
        "constraint."
    )
    assert build_prompt(template, "style", path, "The grey sea {weeps}.") == expected


def test_level3_prompt_on_official_record(template, fb_records):
    path = [r["instruction"] for r in fb_records if r["group_id"] == "situation-12"][:4]
    prompt = build_prompt(template, "situation", path, "ANSWER")
    assert prompt.startswith(
        "Given an initial instruction, we add one situation constraint (information to describe a specific "
        "situation/background) per time and obtain the final instruction with 3 additional constraints."
    )
    positions = [prompt.index(f"#Initial Instruction#\n{path[0]}\n\n")]
    positions += [prompt.index(f"#Initial Instruction + {i} constraint{'s' if i > 1 else ''}#\n{path[i]}\n\n")
                  for i in range(1, 4)]
    positions.append(prompt.index("#Answer of Initial Instruction + 3 constraints#\nANSWER\n\n#System#"))
    assert positions == sorted(positions)
    assert prompt.endswith("only output a Python LIST with 3 elements ('YES' or 'NO') indicating whether the answer "
                           "satisfies each constraint.")


def test_level1_prompt_and_mixed_phrase(template):
    prompt = build_prompt(template, "mixed", ["Tell a story.", "Tell a story in 3 sentences."], "Once.")
    assert prompt.startswith("Given an initial instruction, we add one constraint and obtain the final instruction "
                             "with 1 additional constraint.\n\n#Initial Instruction#\nTell a story.\n\n")
    answer = "#Answer of Initial Instruction + 1 constraint#\nOnce.\n\n#System#\n1) Please identify the 1 added"
    assert answer in prompt
    with pytest.raises(ValueError, match="at least one level"):
        build_prompt(template, "style", ["only the initial"], "x")


@pytest.mark.parametrize(
    ("text", "level", "expected"),
    [
        ("Constraint 1 holds.\nConstraint 2 fails.\n['YES', 'NO']", 2, [True, False]),
        ("```\n['YES', 'YES', 'NO']\n```", 3, [True, True, False]),
        ('Final: ["NO", "MAYBE", "PARTIAL", "YES"] ', 4, [False, False, False, True]),
        ("['YES', 'N/A', 'UNKNOWN', 'YES', 'YES']", 5, [True, False, False, True, True]),
        ("['YES']", 1, [True]),
        ("The answer misses it.\nNO", 1, [False]),
        ("YES, mostly", 1, [True]),  # level 1: 'YES' anywhere in the last line (official rule)
    ],
)
def test_parse_well_formed(text, level, expected):
    assert parse_output(text, level) == expected


@pytest.mark.parametrize(
    ("text", "level"),
    [
        ("['YES', 'NO']\nI hope this helps.", 2),  # the list is not on the last line
        ("['YES', 'NO', 'YES']", 2),  # wrong length
        ("[YES, NO]", 2),  # not a Python literal
        ("['YES', 'FINE']", 2),  # unknown label
        ("[1, 0]", 2),
        ("Both constraints are satisfied.", 2),
        ("", 3),
        ("Satisfied.", 1),
        ("['yes']", 1),  # case matters, as in the official parser
        ("```\n['YES', 'NO']\n```\n", 2),  # a trailing newline keeps the closing fence on the last line
    ],
)
def test_parse_malformed(text, level):
    assert parse_output(text, level) is None


def test_judge_all_retries_once_then_reports(template):
    calls = []

    def judge(prompts):
        calls.append(list(prompts))
        out = []
        for p in prompts:
            retry = "Reply format reminder" in p
            if "bad-forever" in p or ("bad-once" in p and not retry):
                out.append("I think it is fine.")
            else:
                out.append("['YES', 'NO']")
        return out

    results = judge_all(judge, ["p good", "p bad-once", "p bad-forever"], [2, 2, 2], template, retries=1)
    assert [r["verdicts"] for r in results] == [[True, False], [True, False], None]
    assert [r["attempts"] for r in results] == [1, 2, 2]
    assert results[2]["raw"] == ["I think it is fine.", "I think it is fine."]
    assert len(calls) == 2 and len(calls[1]) == 2  # only the unparseable ones are asked again
    assert calls[1][0] == retry_prompt(template, "p bad-once", 2) and calls[1][0].startswith("p bad-once\n\n")
    assert "['YES', 'NO']" in calls[1][0]  # the reminder shows a 2-element example
    no_retry = judge_all(judge, ["p bad-once"], [2], template, retries=0)
    assert no_retry[0]["verdicts"] is None and no_retry[0]["attempts"] == 1


def test_judge_all_checks_output_count(template):
    with pytest.raises(RuntimeError, match="1 outputs for 2 prompts"):
        judge_all(lambda prompts: ["['YES']"], ["a", "b"], [1, 1], template)


def test_lexical_judge_is_a_function_of_the_prompt(template, judge_fn, lexical):
    path = ["Describe a cat.", "Describe a cat in French.", "Describe a cat in French with humour."]
    good = build_prompt(template, "style", path, "Un chat, French style, full of humour.")
    half = build_prompt(template, "style", path, "A French cat.")
    assert lexical(good) == [True, True] and lexical(half) == [True, False]
    assert [parse_output(o, 2) for o in judge_fn([good, half])] == [[True, True], [True, False]]


def test_template_file_checked(tmp_path):
    bad = tmp_path / "judge.yaml"
    bad.write_text("version: x\nkinds: {content: c}\n", encoding="utf-8")
    with pytest.raises(ValueError, match="lacks key"):
        load_template(bad)
