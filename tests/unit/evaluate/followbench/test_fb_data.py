"""Loading and validating the official FollowBench files (errors name the file and the record index)."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from alignpipe.config import CATEGORIES
from alignpipe.evaluate.followbench.data import evolution_paths, load_followbench, select_groups, validate
from alignpipe.utils.io import DataError


def test_official_sample_loads(fb_records):
    assert len(fb_records) == 944
    scored = Counter(r["category"] for r in fb_records if r["level"] > 0)
    assert scored == {"content": 125, "situation": 110, "style": 150, "format": 150, "example": 200, "mixed": 85}
    mixed = [r for r in fb_records if r["group_id"] == "mixed-1"]
    assert [r["category"] for r in mixed] == ["mixed"] * 6
    assert mixed[2]["constraint_kinds"] == "format, content" and mixed[2]["id"] == "mixed-1-L2"


def test_evolution_paths(fb_records):
    paths = evolution_paths(fb_records)
    style3 = [r["instruction"] for r in fb_records if r["group_id"] == "style-1"][:4]
    assert paths["style-1-L3"] == style3
    assert len(paths["example-2-L4"]) == 4  # example groups start at level 1


def _group(cat: str, gid: int, levels=range(6)) -> list[dict]:
    return [
        {"example_id": gid, "category": cat, "source": "s", "level": lv, "instruction": f"i{lv}", "target": ""}
        for lv in levels
    ]


def _write(tmp_path, cat: str, records) -> None:
    (tmp_path / f"{cat}_constraints.json").write_text(json.dumps(records), encoding="utf-8")


@pytest.mark.parametrize(
    ("records", "message"),
    [
        (_group("style", 1)[:3] + [{"example_id": 1}], r"style_constraints.json\[3\]: missing field 'category'"),
        ([{**r, "level": str(r["level"])} for r in _group("style", 1)], r"\[0\]: field 'level' = '0' is not a int"),
        (_group("style", 1)[:4] + _group("style", 1)[5:], r"\[4\]: group 1 has level 5 where level 4 was expected"),
        (_group("style", 1)[:5] + _group("style", 2), r"\[4\]: group 1 ends at level 4, not 5"),
        (_group("style", 1) + _group("style", 2) + _group("style", 1), r"\[12\]: group 1 appears again"),
        ([{**r, "category": "format"} if r["level"] == 2 else r for r in _group("style", 1)],
         r"\[2\]: category 'format' in the file of category 'style'"),
        ([{**r, "instruction": " "} if r["level"] == 3 else r for r in _group("style", 1)],
         r"\[3\]: empty instruction"),
        ([], r"style_constraints.json: no record"),
    ],
)
def test_validation_errors(tmp_path, records, message):
    _write(tmp_path, "style", records)
    with pytest.raises(DataError, match=message):
        load_followbench(tmp_path, ["style"])


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match=r"content_constraints.json: FollowBench file not found"):
        load_followbench(tmp_path, ["content"])
    (tmp_path / "content_constraints.json").write_text('[{"example_id": 1,\n oops}]', encoding="utf-8")
    with pytest.raises(DataError, match=r"content_constraints.json line 2: not valid JSON"):
        load_followbench(tmp_path, ["content"])
    _write(tmp_path, "content", {"not": "a list"})
    with pytest.raises(DataError, match="expected a JSON array"):
        load_followbench(tmp_path, ["content"])
    with pytest.raises(DataError, match="unknown FollowBench category 'tone'"):
        load_followbench(tmp_path, ["tone"])


def test_mixed_and_example_rules():
    mixed = _group("mixed", 1)
    mixed = [{**r, "category": ", ".join(["format"] * r["level"])} if r["level"] else r for r in mixed]
    assert [r["constraint_kinds"] for r in validate(mixed, "mixed", "m")][:3] == ["mixed", "format", "format, format"]
    bad = [{**r, "category": "format"} if r["level"] == 2 else r for r in mixed]  # 1 kind listed at level 2
    with pytest.raises(DataError, match=r"m\[2\]: category 'format'"):
        validate(bad, "mixed", "m")
    example = [{**r, "answer": "a"} for r in _group("example", 1, range(1, 6))]
    assert len(validate(example, "example", "e")) == 5
    with pytest.raises(DataError, match=r"e\[0\]: level 0 outside 1-5"):
        validate([{**r, "answer": "a"} for r in _group("example", 1)], "example", "e")
    with pytest.raises(DataError, match=r"e\[0\]: an example-constraint record needs a string 'answer'"):
        validate(_group("example", 1, range(1, 6)), "example", "e")


def test_select_groups_is_seeded_and_whole(fb_records):
    a = select_groups(fb_records, 3, np.random.default_rng(5))
    b = select_groups(fb_records, 3, np.random.default_rng(5))
    assert a == b
    groups = Counter(r["category"] for r in a if r["level"] == 1)
    assert groups == {c: 3 for c in CATEGORIES}
    per_group = Counter(r["group_id"] for r in a)
    assert all(n == (5 if g.startswith("example") else 6) for g, n in per_group.items())
    assert select_groups(fb_records, None, np.random.default_rng(0)) == fb_records


def test_hub_layout_through_datasets(fb_dir, tmp_path, monkeypatch):
    """The hub path (``datasets.load_dataset`` on ``data_en/<file>``), run offline on a local copy of that layout."""
    from alignpipe.evaluate.followbench import data

    (tmp_path / "data_en").mkdir()
    for cat in ("style", "example"):
        (tmp_path / "data_en" / f"{cat}_constraints.json").symlink_to(fb_dir / f"{cat}_constraints.json")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))
    for cat in ("style", "example"):
        rows, where = data._read_hub(str(tmp_path), cat, None)
        assert where.endswith(f"data_en/{cat}_constraints.json")
        assert validate(rows, cat, where) == load_followbench(fb_dir, [cat])
