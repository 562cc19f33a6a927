"""A bad pairs file fails (malformed) or is dropped with a count (no signal), never silently."""

import json

import pytest

from alignpipe.train.pairs import read_pairs
from alignpipe.utils.io import DataError


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _pair(i, chosen="Good answer.", rejected="bad.", **extra):
    return {"id": f"p{i}", "prompt": [{"role": "user", "content": "Q?"}],
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}], **extra}


def test_reads_trl_fields_only(tmp_path):
    rows, dropped = read_pairs(_write(tmp_path / "pairs.jsonl", [_pair(0, score=1.0), _pair(1)]))
    assert [r["id"] for r in rows] == ["p0", "p1"] and dropped == {}
    assert set(rows[0]) == {"id", "prompt", "chosen", "rejected"}


def test_missing_field_fails_with_line(tmp_path):
    bad = _pair(1)
    del bad["rejected"]
    with pytest.raises(DataError, match=r"line 2: missing field 'rejected'"):
        read_pairs(_write(tmp_path / "pairs.jsonl", [_pair(0), bad]))


def test_malformed_message_fails_naming_pair(tmp_path):
    bad = _pair(1)
    bad["chosen"] = [{"role": "user", "content": "x"}]
    with pytest.raises(DataError, match=r"id 'p1'.*chosen\[0\] has role 'user'"):
        read_pairs(_write(tmp_path / "pairs.jsonl", [_pair(0), bad]))


def test_duplicate_id_fails(tmp_path):
    with pytest.raises(DataError, match="duplicate id"):
        read_pairs(_write(tmp_path / "pairs.jsonl", [_pair(0), _pair(0)]))


def test_empty_and_identical_are_dropped_and_counted(tmp_path, caplog):
    rows = [_pair(0), _pair(1, chosen="  "), _pair(2, chosen="same", rejected="same "), _pair(3, rejected="")]
    kept, dropped = read_pairs(_write(tmp_path / "pairs.jsonl", rows))
    assert [r["id"] for r in kept] == ["p0"]
    assert dropped == {"empty_response": 2, "identical": 1}
    assert "dropped 3 of 4 pairs" in caplog.text


def test_nothing_usable_fails(tmp_path):
    with pytest.raises(DataError, match="no usable pair"):
        read_pairs(_write(tmp_path / "pairs.jsonl", [_pair(0, chosen="x", rejected="x")]))
