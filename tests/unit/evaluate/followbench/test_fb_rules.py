"""Rule verdicts on responses built from the official data: gold answers and corrupted copies, checked by hand.

Every expected verdict below was worked out by hand from the official rules (code/rule_based_evaluation.py)
and agrees with them; comments say why where it is not obvious.
"""

from __future__ import annotations

import ast

import pytest

from alignpipe.evaluate.followbench.rules import RULE_SOURCES, rule_group, rule_verdict


def _levels(by_id, gid: str, response: str, mode: str = "compat") -> list[bool]:
    return [rule_verdict(by_id[f"{gid}-L{lv}"], response, mode) for lv in range(1, 6)]


def test_rule_groups_cover_the_official_split(fb_records):
    scored = [r for r in fb_records if r["level"] > 0]
    ruled = [r for r in scored if rule_group(r) is not None]
    # 200 example + 60 content (E2E 25, CONLL 25, WIKIEVENTS 10) + 40 situation + 10 format + 40 mixed
    assert (len(scored), len(ruled)) == (820, 350)
    assert {rule_group(r) for r in ruled} == {"example", "format_22", "format_30", *RULE_SOURCES}
    assert all(rule_group(r) == "example" for r in scored if r["category"] == "example")  # also its xsum/samsum


def test_gold_targets_pass(fb_records):
    for r in fb_records:
        group = rule_group(r)
        if r["level"] == 0 or group in (None, "example") or not r["target"]:
            continue
        gold = ast.literal_eval(r["target"])[0] if group == "CONLL2003" else r["target"]
        assert rule_verdict(r, gold), r["id"]


def test_exact_match_groups(by_id):
    e2e = by_id["content-14-L1"]
    assert e2e["target"] == "name[The Phoenix], eatType[pub]"
    assert rule_verdict(e2e, "name[The Phoenix], eatType[pub]")
    assert not rule_verdict(e2e, "name[The Phoenix], eatType[pub] ")  # a trailing space breaks exact match
    assert not rule_verdict(e2e, "Name[The Phoenix], eatType[pub]")
    edit = by_id["mixed-3-L5"]
    assert rule_verdict(edit, "pples loved eting i.")
    assert not rule_verdict(edit, "pples loved eting i")
    assert not rule_verdict(by_id["mixed-3-L1"], "Apples love eating I")


def test_wikievents_lines(by_id):
    rec = by_id["content-19-L1"]
    lines = rec["target"].split("\n")
    assert rule_verdict(rec, "\n".join(lines[:2]))
    assert rule_verdict(rec, lines[3] + "\n" + lines[0])  # any order, any subset
    assert not rule_verdict(rec, lines[0] + "\nmembers died at Kabul place from <arg4> medical issue")
    assert not rule_verdict(rec, lines[0] + "\n")  # the empty last line is not a target line
    assert not rule_verdict(rec, "")


def test_conll_membership_and_fixed_mode(by_id):
    rec = by_id["content-21-L5"]
    assert rec["target"] == "['Bonn']"
    assert rule_verdict(rec, "Bonn")
    assert not rule_verdict(rec, "Bonn.")  # compat: exact membership
    assert not rule_verdict(rec, " Bonn\n")
    assert rule_verdict(rec, "Bonn.", "fixed") and rule_verdict(rec, " 'Bonn'\n", "fixed")
    assert not rule_verdict(rec, "Berlin", "fixed")
    assert rule_verdict(by_id["content-21-L1"], "Britain")


def test_last_answer_groups(by_id):
    logical = by_id["situation-1-L1"]
    assert logical["target"] == "(A)"
    assert rule_verdict(logical, "Let me think. The answer is (A).")
    assert not rule_verdict(logical, "(A) looks right, but no: (B)")  # the LAST (X) counts
    assert not rule_verdict(logical, "A")
    time_rec = by_id["situation-6-L2"]
    target = time_rec["target"]
    assert target == "01/09/1938"
    assert rule_verdict(time_rec, f"Christmas Eve 1937 is 12/24/1937, so the date is {target}.")
    assert not rule_verdict(time_rec, f"{target}, or maybe 12/24/1937")
    assert not rule_verdict(time_rec, "1/9/1938")
    money = by_id["situation-8-L2"]
    assert money["target"] == "$28"
    assert rule_verdict(money, "She earns $12 an hour, so $28 in total.")
    assert not rule_verdict(money, "$28, no wait, $30")
    assert not rule_verdict(money, "28 dollars")
    space = by_id["situation-7-L1"]
    assert rule_verdict(space, f"He is on the {space['target']} now.")
    assert not rule_verdict(space, "He is on floor 20.")


def test_example_templates(by_id, fb_records):
    rec = by_id["example-1-L1"]
    assert rec["target"].endswith("{{'AI assistant': '{answer}'}}")
    assert rule_verdict(rec, rec["answer"])
    assert rule_verdict(rec, "{'AI assistant': 'Anything at all'}")
    assert not rule_verdict(rec, rec["answer"] + "\n")
    assert not rule_verdict(rec, "Legal Anywhere.com")  # the template's wrapper is missing
    assert not rule_verdict(rec, "Sure! " + rec["answer"])
    # '.*' does not cross newlines in compat mode (official); fixed mode matches with re.DOTALL.
    assert not rule_verdict(rec, "{'AI assistant': 'line one\nline two'}")
    assert rule_verdict(rec, "{'AI assistant': 'line one\nline two'}", "fixed")
    failing = [r["id"] for r in fb_records if r["category"] == "example" and not rule_verdict(r, r["answer"])]
    assert len(failing) == 5  # gold answers with a newline inside the answer slot
    assert all(rule_verdict(by_id[i], by_id[i]["answer"], "fixed") for i in failing)


SUMMARIES = [  # (group id, response, verdicts at levels 1-5)
    ("mixed-14", "two people killed in bomb attack in philippines", [1, 1, 1, 1, 1]),
    ("mixed-14", "two people killed in bus bomb attack philippines", [1, 1, 1, 0, 0]),  # 'bus'
    ("mixed-14", "Two people killed in bomb attack in philippines", [1, 1, 0, 0, 0]),  # not lowercase
    ("mixed-14", "two people killed in a bomb attack.", [0, 0, 0, 0, 0]),  # 7 words
    ("mixed-13", "Kim plans to do her stuff tomorrow.", [1, 1, 1, 1, 1]),
    ("mixed-13", "Kim has stuff to do, maybe tomorrow.", [1, 1, 1, 1, 0]),  # two punctuation marks
    ("mixed-13", "Kim procrastinated on her stuff today.", [1, 1, 1, 0, 0]),
    ("mixed-12", "Teams are working on a clean-up operation after floods hit the Borders", [1, 1, 1, 1, 1]),
    ("mixed-12", "The flood operation in Newton Stewart is ongoing.", [1, 1, 0, 0, 0]),
    ("mixed-12", "Flood clean-up is continuing in the Borders.", [1, 1, 1, 1, 0]),  # no 'operation'
    ("mixed-15", "We locate factual associations in mid-layer feed-forward activations.", [1, 1, 1, 1, 1]),
    ("mixed-15", "We show that GPT stores facts in transformer activations.", [1, 1, 1, 1, 0]),
    ("mixed-15", "ROME edits facts in GPT.", [1, 1, 0, 0, 0]),  # does not start with 'We'
    ("mixed-11", "Daniel Radcliffe turns 18 and gains access to a Potter fortune. The young actor says he will "
     "not waste money on cars. He has made several films beyond Harry Potter.", [1, 1, 1, 1, 1]),
    ("mixed-11", "Radcliffe turns 18. The actor is rich and lavish. He has starred in films.", [1, 1, 0, 0, 0]),
    ("mixed-11", "Potter star Radcliffe is 18. The lavish actor keeps his money. Radcliffe has made films.",
     [1, 1, 1, 0, 0]),  # 'lavish' in sentence 2
]


@pytest.mark.parametrize(("gid", "response", "expected"), SUMMARIES)
def test_summarization_level_cumulative(by_id, gid, response, expected):
    assert by_id[f"{gid}-L1"]["source"] in ("gigaword", "samsum", "xsum", "arxiv", "cnn_dailymail")
    assert _levels(by_id, gid, response) == [bool(x) for x in expected]


NUMBERED = (
    "1. Dust the table with a soft cloth every few days so that grit does not scratch the finish and the wood "
    "keeps its natural glow for years.\n\n2. Wipe spills at once with a damp cloth and dry the surface well because "
    "standing water can leave white rings and warp the boards over time.\n\n3. Apply a good furniture wax or polish "
    "every few months to protect the wood from moisture and to bring back the shine of the original finish."
)


def test_format_22_quirks(by_id):
    # compat: the "1." markers are sentences of one word, so ">20 words per sentence" (level 3+) fails.
    assert _levels(by_id, "format-22", NUMBERED) == [True, True, False, False, False]
    closing = NUMBERED + "\n\nThose are suggestions"
    assert _levels(by_id, "format-22", closing) == [False] * 5  # 4 parts; and "Those are suggestions" has 3 words
    plain = NUMBERED.replace("1. ", "").replace("2. ", "").replace("3. ", "")
    assert _levels(by_id, "format-22", plain) == [True, True, True, False, False]  # no number markers
    assert _levels(by_id, "format-22", NUMBERED, "fixed") == [True, True, True, True, False]
    assert _levels(by_id, "format-22", closing, "fixed") == [False, False, False, False, True]
    assert _levels(by_id, "format-22", plain, "fixed") == [True, True, True, False, False]


def test_format_30_check_order(by_id):
    # '**' marker, 10-15 words per sentence, no '-ly', but not five '**N. keyword:' points.
    speech = (
        "**Growth** brings new firms and jobs to every state in our nation. **Exports** open new markets for our "
        "farms and our many businesses."
    )
    # compat applies the checks in code order, where the five-points check comes second.
    assert _levels(by_id, "format-30", speech) == [True, False, False, False, False]
    # fixed: in the order the levels add them, the five-points (keyword then detail) check comes last.
    assert _levels(by_id, "format-30", speech, "fixed") == [True, True, True, True, False]
    assert _levels(by_id, "format-30", "No markers at all in this speech about innovation and growth.") == [False] * 5


def test_not_rule_scored_and_bad_mode(by_id):
    judged = by_id["style-1-L1"]
    assert rule_group(judged) is None
    with pytest.raises(ValueError, match="not scored by rules"):
        rule_verdict(judged, "x")
    with pytest.raises(ValueError, match="rule mode 'strict'"):
        rule_verdict(by_id["content-14-L1"], "x", "strict")
