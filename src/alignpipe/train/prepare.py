"""Preference pairs, their stored reference log-probs and the SFT model: a DPO trainer's inputs, checked.

Usage::

    from alignpipe.train.prepare import prepare
    rows, dropped, ref, model, tokenizer, heldout = prepare(params, "data/preferences", "data/reflogps", "data/sft")
    # BMC bridging variants train on the (bridged, rejected) pairs and their own reference store:
    rows, dropped, ref, model, tokenizer, heldout = prepare(params, prefs_dir, reflogps_dir, sft_dir, bridged=True)

``rows`` are the training pairs: the pairs of the prompts held out (``align.heldout_fraction``,
:mod:`alignpipe.train.heldout`) are not among them; ``heldout`` lists those pairs' ids (of the original
(chosen, rejected) pairs, the same for every variant).

Used by the ``align`` stage (every variant) and the ``neurons`` stage (its warm-up DPO). The stored reference is
checked against the SFT weights, the pair file and ``align.max_length`` it was computed from: a stale store fails
here, before any model trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple

from alignpipe.config import Params
from alignpipe.models import load_model
from alignpipe.train.heldout import split_heldout
from alignpipe.train.pairs import read_pairs
from alignpipe.train.reflogps import BRIDGED_STORE, STORE, RefLogps, load_ref_logps, weights_sha256
from alignpipe.utils.io import DataError, sha256_file


def check_reference(ref: RefLogps, sft_dir: str | Path, prefs_dir: str | Path, max_length: int) -> None:
    """Fail early when the stored reference was computed from another SFT model, pair file or max_length."""
    cfg = ref.config
    problems = []
    if cfg.get("model_sha256") != weights_sha256(Path(sft_dir) / "model"):
        problems.append(f"SFT model {Path(sft_dir) / 'model'} changed")
    if cfg.get("pairs_sha256") != sha256_file(Path(prefs_dir) / "pairs.jsonl"):
        problems.append(f"{Path(prefs_dir) / 'pairs.jsonl'} changed")
    if cfg.get("max_length") != max_length:
        problems.append(f"max_length {cfg.get('max_length')} != align.max_length {max_length}")
    if problems:
        raise DataError(f"{ref.path}: stale reference log-probs ({'; '.join(problems)}); rerun the reflogps stage")


class Prepared(NamedTuple):
    rows: list[dict[str, Any]]  # the training pairs
    dropped: dict[str, int]  # pairs dropped, by reason
    ref: RefLogps  # the reference store of ``rows``
    model: Any
    tokenizer: Any
    heldout: list[str]  # ids of the held-out (chosen, rejected) pairs


def heldout_ids(params: Params, prefs_dir: str | Path) -> tuple[list[dict[str, Any]], list[str]]:
    """``(original pairs, ids of the held-out ones)`` of ``prefs_dir/pairs.jsonl`` under ``align.heldout_fraction``."""
    rows, _ = read_pairs(Path(prefs_dir) / "pairs.jsonl")
    _, held = split_heldout(rows, params.align.heldout_fraction, params.seed, str(Path(prefs_dir) / "pairs.jsonl"))
    return rows, [r["id"] for r in held]


def prepare(params: Params, prefs_dir: str | Path, reflogps_dir: str | Path, sft_dir: str | Path, *,
            bridged: bool = False) -> Prepared:
    """Load the pairs, the stored reference (checked against its inputs) and the SFT model (right padding).

    ``bridged`` picks the pairs: (bridged, rejected) with the bridged reference store for a BMC bridging variant,
    else (chosen, rejected) with the original store.

    Returns:
        :class:`Prepared`: the training pairs (held-out prompts left out), the dropped ones counted by reason, the
        reference store, the SFT model and its tokenizer, and the held-out pairs' ids.
    """
    rows, dropped = read_pairs(Path(prefs_dir) / "pairs.jsonl", chosen_field="bridged" if bridged else "chosen")
    _, held = heldout_ids(params, prefs_dir)
    held_set = set(held)
    rows = [r for r in rows if r["id"] not in held_set]
    if not rows:
        raise DataError(f"{Path(prefs_dir) / 'pairs.jsonl'}: no training pair left outside the held-out prompts "
                        f"(align.heldout_fraction = {params.align.heldout_fraction}); lower it or add pairs")
    ref = load_ref_logps(reflogps_dir, BRIDGED_STORE if bridged else STORE)
    check_reference(ref, sft_dir, prefs_dir, params.align.max_length)
    model, tokenizer = load_model(Path(sft_dir) / "model", params.model, padding_side="right")
    return Prepared(rows, dropped, ref, model, tokenizer, held)
