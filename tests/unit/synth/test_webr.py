"""WebR pieces: page loading, sectioning, the 2:2:1:1 split, refusal filter, MinHash-LSH dedup, row format."""

from __future__ import annotations

import json
import random

import pytest

from alignpipe.config import WebRSection
from alignpipe.methods import webr
from alignpipe.utils.io import DataError


def test_load_pages_json_and_jsonl(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([{"webpage": "one"}, {"webpage": "two", "id": "x"}]))
    (tmp_path / "b.jsonl").write_text('{"webpage": "one"}\n\n{"webpage": "two"}\n')
    assert webr.load_pages(tmp_path / "a.json") == [{"id": "page-00000", "webpage": "one"},
                                                   {"id": "x", "webpage": "two"}]
    assert [p["webpage"] for p in webr.load_pages(tmp_path / "b.jsonl")] == ["one", "two"]


@pytest.mark.parametrize("name, text, where", [
    ("bad.json", json.dumps([{"webpage": "ok"}, {"text": "no page"}]), r"bad.json record 1: missing field 'webpage'"),
    ("bad.jsonl", '{"webpage": "ok"}\n{"webpage": ""}\n', r"bad.jsonl line 2: field 'webpage' is empty"),
    ("broken.jsonl", '{"webpage": "ok"}\n{"webpage": \n', r"broken.jsonl line 2: not valid JSON"),
    ("list.json", json.dumps([{"webpage": "ok"}, "just text"]), r"list.json record 1: .*got str"),
])  # fmt: skip
def test_malformed_page_files_name_the_record(tmp_path, name, text, where):
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError, match=where):
        webr.load_pages(tmp_path / name)


def test_section_keeps_a_prefix_or_everything():
    page = "## Title\n\nFirst part.\n\n# Second part.\n\nThird part."
    assert webr.section(page, random.Random(0), prob=0.0) == ("Title\n\nFirst part.\n\nSecond part.\n\nThird part.",
                                                             4, 4)
    kept = {webr.section(page, random.Random(s), prob=1.0)[1] for s in range(60)}
    assert kept == {1, 2, 3, 4}  # randint(1, n): any prefix, the whole page included (the authors' range)
    assert webr.section("one block only", random.Random(0), prob=1.0) == ("one block only", 1, 1)


def _pages(n):
    return [{"id": f"p{i}", "webpage": f"Title {i}\n\nBody of page {i} with words."} for i in range(n)]


@pytest.mark.parametrize("n, expected", [
    (12, [4, 4, 2, 2]), (6, [2, 2, 1, 1]), (7, [2, 3, 1, 1]), (600, [200, 200, 100, 100]),
])  # fmt: skip
def test_split_is_wi_wr_two_to_one_each_half_all_and_part(n, expected):
    plans = webr.plan_pages(_pages(n), WebRSection(), seed=3)
    assert [sum(p.type == t for p in plans) for t in webr.TYPES] == expected
    assert sorted(p.page_id for p in plans) == sorted(f"p{i}" for i in range(n))
    for p in plans:
        assert p.word in webr.WORDS[p.type[:2]] and p.len_limit in (50, 100, 150, 200)
    assert webr.plan_pages(_pages(n), WebRSection(), seed=3) == plans  # seeded
    no_part = webr.plan_pages(_pages(n), WebRSection(part=False), seed=3)
    assert {p.type for p in no_part} == {"WI_all", "WR_all"}


def test_minhash_dedup_removes_near_duplicates_keeping_the_first():
    base = "please summarize the article about the harbor town in three short bullet points for my readers"
    near = base.replace("three", "four")  # Jaccard 15/17 = 0.88 > 0.7
    half = "please summarize the article about the harbor town"  # 8/16 = 0.5 < 0.7
    other = "write a poem on autumn leaves falling over a quiet lake at dawn"
    assert webr.minhash_duplicates([base, other, near, half], threshold=0.7, num_perm=128) == {2}
    assert webr.minhash_duplicates([base, base, base]) == {1, 2}
    assert webr.minhash_duplicates([]) == set()


def test_refusal_filter():
    assert webr.is_refusal("q", "I'm sorry, I cannot help.") and webr.is_refusal("q", "I apologize, but no.")
    assert webr.is_refusal("", "fine") and webr.is_refusal("q", "") and webr.is_refusal(None, "x")
    assert not webr.is_refusal("q", "Sorry to hear that; here is the answer.")


def _item(pid, kind, request, response, web=None, first=True):
    plan = webr.Plan(pid, kind, web or f"page {pid}", 1, 1, "request", 50, first)
    return {"plan": plan, "persona": "A writer.", "request": request, "response": response}


def test_build_rows_filters_dedups_and_formats():
    items = [
        _item("a", "WI_all", "Make a list of the facts in this harbor text", "- fact", first=True),
        _item("b", "WI_part", "Retell the middle section about the old bridge", "Retold.", first=False),
        _item("c", "WI_all", "Make a list of the facts in this harbor text", "- again"),  # duplicate request
        _item("d", "WI_all", "Shorten the text to two lines", "I'm sorry, I can't."),  # refusal
        _item("e", "WR_all", "What is the harbor like?", "Here is the improved answer:\n\nThe harbor is deep."),
        _item("f", "WR_part", "Who built the bridge?", "Masons built it.", web="page a"),  # page already used by WI
    ]
    rows, extra = webr.build_rows(items, WebRSection(), seed=1)
    s = extra["stats"]
    assert s["refusals_removed"] == {"WI": 1, "WR": 0} and s["duplicates_removed"] == {"WI": 1, "WR": 0}
    assert s["same_page_removed"] == 1 and s["final"] == {"WI_all": 1, "WI_part": 1, "WR_all": 1}
    assert [r["prompt_id"] for r in rows] == ["web_data_0", "web_data_1", "web_data_2"]
    by_user = {r["messages"][0]["content"]: r["messages"][1]["content"] for r in rows}
    assert by_user["Make a list of the facts in this harbor text\n\npage a"] == "- fact"  # request + page
    assert by_user["page b\n\nRetell the middle section about the old bridge"] == "Retold."  # page + request
    assert by_user["What is the harbor like?"] == "The harbor is deep."  # announcement paragraph dropped
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] and set(r) == {"prompt_id", "messages"}
               for r in rows)
    capped, _ = webr.build_rows(items, WebRSection(max_rows=3), seed=1)
    assert len(capped) == 3  # 3 // 3 * 2 = 2 WI rows + 1 WR row
    no_dedup, extra2 = webr.build_rows(items, WebRSection(dedup=False), seed=1)
    assert extra2["stats"]["duplicates_removed"] == {"WI": 0, "WR": 0} and len(no_dedup) == 4
