"""Safetensors files with one metadata key, and the per-pair store checks."""

import pytest
import torch

from alignpipe.utils.io import DataError
from alignpipe.utils.store import PairStore, load_tensors, save_tensors


def _tensors():
    return {"a_offsets": torch.tensor([0, 2, 5]), "a_ids": torch.arange(5), "a_logps": torch.zeros(5)}


def test_save_and_load_round_trip_with_stable_bytes(tmp_path):
    meta = {"ids": ["p0", "p1"], "config": {"b": 1, "a": [2, 3]}}
    save_tensors(tmp_path / "x.safetensors", _tensors(), meta)
    save_tensors(tmp_path / "y.safetensors", _tensors(), dict(reversed(list(meta.items()))))
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "y.safetensors").read_bytes()
    assert (tmp_path / "x.safetensors").stat().st_mode & 0o777 == 0o644
    tensors, loaded = load_tensors(tmp_path / "x.safetensors", "not here")
    assert loaded == meta and torch.equal(tensors["a_ids"], torch.arange(5))
    with pytest.raises(DataError, match=r"missing.safetensors: not here \(run it\)"):
        load_tensors(tmp_path / "missing.safetensors", "not here (run it)")


def test_pair_store_positions_and_corruption(tmp_path):
    store = PairStore(tmp_path / "s", ["p0", "p1"], _tensors())
    store.check_part("a", ("logps",))
    assert store.position("p1", "x") == 1
    with pytest.raises(DataError, match=r"pair 'p9': not in .*s \(rerun the x stage\)"):
        store.position("p9", "x")
    bad = PairStore(tmp_path / "s", ["p0", "p1", "p2"], _tensors())
    with pytest.raises(DataError, match="a offsets do not match 3 pairs"):
        bad.check_part("a", ())
    short = PairStore(tmp_path / "s", ["p0", "p1"], {**_tensors(), "a_logps": torch.zeros(4)})
    with pytest.raises(DataError, match="a values and token ids differ in length"):
        short.check_part("a", ("logps",))


def test_a_truncated_store_fails_naming_the_file(tmp_path):
    path = tmp_path / "ref_logps.safetensors"
    save_tensors(path, {"x": torch.arange(1000, dtype=torch.float32)}, {"ids": ["a"]})
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DataError) as caught:
        load_tensors(path, "file not found")
    assert str(caught.value) == (f"{path}: corrupt or truncated tensor file (Error while deserializing header: "
                                 "incomplete metadata, file not fully covered); rerun the stage that writes it")
