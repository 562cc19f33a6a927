"""Safetensors files that carry the pipeline's metadata, and per-pair stores built on them.

Usage::

    save_tensors(path, {"x": tensor}, {"config": config, "ids": ids})
    tensors, meta = load_tensors(path, "not found (run the reflogps stage)")

The metadata goes under ONE key (``alignpipe``, JSON with sorted keys): safetensors keeps metadata in a hash map
whose key order varies from process to process, so several keys would make the file's bytes (and DVC's hash)
differ between identical runs. Files are made world-readable like the stages' other outputs (safetensors creates
them owner-only).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from alignpipe.utils.io import DataError

META_KEY = "alignpipe"


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    """Write ``tensors`` with ``meta`` as the one metadata entry."""
    from safetensors.torch import save_file

    save_file(tensors, str(path), metadata={META_KEY: json.dumps(meta, sort_keys=True)})
    os.chmod(path, 0o644)


def load_tensors(path: str | Path, missing: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, meta)`` of a file written by :func:`save_tensors`; a missing file fails with ``path: missing``."""
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {missing}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get(META_KEY, "{}"))
        return load_file(str(path)), meta
    except (SafetensorError, ValueError) as err:  # a cut-off or garbled file (ValueError: its metadata's JSON)
        raise DataError(f"{path}: corrupt or truncated tensor file ({' '.join(str(err).split())}); rerun the stage "
                        "that writes it") from None


@dataclass
class PairStore:
    """Ragged per-pair tensors (``<part>_offsets`` over the pairs ``ids``) and the config that made them."""

    path: Path
    ids: list[str]
    tensors: dict[str, torch.Tensor]
    config: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def index(self) -> dict[str, int]:
        return {pair_id: i for i, pair_id in enumerate(self.ids)}

    def position(self, pair_id: str, rerun: str) -> int:
        """The pair's row; an unknown pair fails naming the store and the stage to ``rerun``."""
        i = self.index.get(pair_id)
        if i is None:
            raise DataError(f"pair {pair_id!r}: not in {self.path} (rerun the {rerun} stage)")
        return i

    def check_part(self, part: str, values: tuple[str, ...]) -> None:
        """``<part>_offsets`` must cover every pair and end at the length of ``<part>_ids`` and of each value."""
        off, n = self.tensors[f"{part}_offsets"], len(self.tensors[f"{part}_ids"])
        if len(off) != len(self.ids) + 1 or int(off[-1]) != n:
            raise DataError(f"{self.path}: {part} offsets do not match {len(self.ids)} pairs (file is corrupt)")
        if any(self.tensors[f"{part}_{v}"].shape[0] != n for v in values):
            raise DataError(f"{self.path}: {part} values and token ids differ in length (file is corrupt)")
