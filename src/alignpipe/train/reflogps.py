"""Per-token log-probs of preference pairs under the reference (SFT) model, and the store that keeps them.

    from alignpipe.train import reflogps
    ids, records = reflogps.compute(params, rows, "data/sft", scratch)     # one forward of the SFT model
    reflogps.write_store(path, ids, records, config)                       # ref_logps.safetensors
    ref = reflogps.load_ref_logps("data/reflogps")
    ref.pair("content-0007-L3-p0")   # {"prompt_ids", "chosen_ids", "chosen_logps", "chosen_sum", ...}

DPO's reference term log π_ref(y|x) depends only on the frozen SFT model and the pair, so the reflogps stage
(:mod:`alignpipe.stages.reflogps`) computes it once and every ``align@<variant>`` reads it (TRL recomputes it in
each run, and with PEFT on every step). Values are stored per token because later methods (BMC, ALLO) weight
tokens individually.

Tokens come from TRL's own path: a :class:`~trl.DPOTrainer` is built on the pairs with the same DPOConfig
tokenization settings as training (chat template, ``max_length``, truncation, collator), and its
``reference_logps`` hook is where the reference forward runs, exactly as TRL's ``compute_ref_log_probs``
does (fused LM head, ``fused_lm_head=True``) but keeping every token.

Store format (:func:`write_store` / :func:`load_ref_logps`): ragged sequences flattened, with ``<part>_offsets``
of length n_pairs + 1; parts ``prompt``, ``chosen``, ``rejected``: ``<part>_ids`` int64, ``chosen_logps`` /
``rejected_logps`` float32 per response token, ``chosen_sum`` / ``rejected_sum`` float32 as TRL sums them;
metadata (one key, ``alignpipe``, a JSON object): ``ids`` and ``config``. :data:`BRIDGED_STORE` holds the same for
BMC's (bridged, rejected) pairs: per-token values are what BMC's reference weights need (w_t from the reference's
own probabilities), so no reference model runs during any BMC variant.
"""

from __future__ import annotations

import contextlib
import hashlib
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from torch.utils.data import DataLoader

from alignpipe.config import Params
from alignpipe.models import load_model
from alignpipe.train.dpo import dpo_config, split_tokens
from alignpipe.train.trl_ext import HookedDPOTrainer
from alignpipe.utils.io import DataError, read_jsonl, sha256_file
from alignpipe.utils.store import PairStore, load_tensors, save_tensors

STORE = "ref_logps.safetensors"
BRIDGED_STORE = "ref_logps_bridged.safetensors"  # BMC: chosen = the pseudo-winning (bridged) response
PARTS = ("prompt", "chosen", "rejected")


def weights_sha256(model_dir: str | Path) -> str:
    """One digest of a model directory's safetensors weight files (names and contents, sorted)."""
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        what = "directory has no *.safetensors weights" if Path(model_dir).is_dir() else "model directory not found"
        raise DataError(f"{model_dir}: {what} (expected a model saved by the stage that writes it; run that stage)")
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name}:{sha256_file(f)}\n".encode())
    return h.hexdigest()


class RefLogps(PairStore):
    """Stored reference log-probs; :meth:`pair` returns one pair's tokens and values."""

    @cached_property
    def _offsets(self) -> dict[str, list[int]]:
        return {p: self.tensors[f"{p}_offsets"].tolist() for p in PARTS}

    def pair(self, pair_id: str) -> dict[str, Any]:
        """``{"<part>_ids": list[int], "<response>_logps": Tensor, "<response>_sum": float}``; parts are
        prompt/chosen/rejected, responses chosen/rejected."""
        i = self.position(pair_id, "reflogps")
        out: dict[str, Any] = {}
        for part in PARTS:
            lo, hi = self._offsets[part][i], self._offsets[part][i + 1]
            out[f"{part}_ids"] = self.tensors[f"{part}_ids"][lo:hi].tolist()
            if part != "prompt":
                out[f"{part}_logps"] = self.tensors[f"{part}_logps"][lo:hi]
                out[f"{part}_sum"] = float(self.tensors[f"{part}_sum"][i])
        return out


def load_ref_logps(directory: str | Path, store: str = STORE) -> RefLogps:
    """Load ``directory/<store>`` (default ``ref_logps.safetensors``; checks offsets, tokens and values agree)."""
    path = Path(directory) / store
    tensors, meta = load_tensors(path, "reference log-probs not found (run the reflogps stage)")
    ref = RefLogps(path=path, ids=meta.get("ids", []), tensors=tensors, config=meta.get("config", {}))
    for part in PARTS:
        ref.check_part(part, () if part == "prompt" else ("logps",))
    return ref


class PerTokenRefTrainer(HookedDPOTrainer):
    """DPOTrainer that runs TRL's dataset preparation, then keeps per-token reference log-probs in its hook.

    Built with ``precompute_ref_log_probs=True`` and no PEFT, TRL keeps no reference copy and calls
    :meth:`reference_logps` once from ``__init__`` with the tokenized dataset; nothing is trained.
    """

    records: list[dict[str, Any]]

    def reference_logps(self, dataset: Any, name: str, batch_size: int) -> Any:
        self.records = compute_records(self.model, dataset, self.data_collator, batch_size, self.accelerator)
        return dataset


def compute_records(model: Any, dataset: Any, collator: Any, batch_size: int, accelerator: Any = None) -> list[dict]:
    """Per-pair reference tokens and per-token log-probs over TRL's tokenized ``dataset``, in dataset order.

    Mirrors ``DPOTrainer.compute_ref_log_probs`` (labels = completion tokens, ``fused_lm_head=True``, so the
    model must carry TRL's fused LM head, which DPOTrainer adds) but keeps each token's value.
    """
    loader = DataLoader(dataset.select_columns(["prompt_ids", "chosen_ids", "rejected_ids"]),
                        batch_size=batch_size, collate_fn=collator, shuffle=False)
    full = list(zip(dataset["chosen_ids"], dataset["rejected_ids"]))
    device = next(model.parameters()).device
    records: list[dict[str, Any]] = []
    model.eval()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        comp = batch["completion_mask"]
        labels = batch["input_ids"].masked_fill(comp == 0, -100)
        autocast = accelerator.autocast() if accelerator is not None else contextlib.nullcontext()
        with torch.no_grad(), autocast:
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=labels,
                        use_cache=False, fused_lm_head=True)
        per_token = out.log_probs[:, -(comp.size(1) - 1):].float().cpu()
        sums = per_token.sum(dim=1)  # TRL's reduction: the whole padded row (zeros outside the completion)
        batch = {k: v.cpu() for k, v in batch.items()}
        half = comp.size(0) // 2  # rows are [chosen..., rejected...]
        for j in range(half):
            rec: dict[str, Any] = {}
            for part, row in (("chosen", j), ("rejected", half + j)):
                prompt, tokens = split_tokens(batch["input_ids"][row], batch["attention_mask"][row],
                                              batch["completion_mask"][row])
                rec.setdefault("prompt_ids", prompt)  # the same prompt heads both rows
                rec[f"{part}_ids"] = tokens
                # log_probs[t] scores token t+1, so the completion tokens' values sit under completion_mask[1:].
                rec[f"{part}_logps"] = per_token[row][batch["completion_mask"][row, 1:].bool()]
                rec[f"{part}_sum"] = float(sums[row])
                if len(rec[f"{part}_logps"]) != len(tokens):
                    raise RuntimeError(f"pair {len(records)}: {part} log-probs and tokens differ in length")
            chosen_full, rejected_full = full[len(records)]
            kept = (len(rec["chosen_ids"]), len(rec["rejected_ids"]))
            rec["truncated"] = kept != (len(chosen_full), len(rejected_full))
            records.append(rec)
    return records


def compute(params: Params, rows: list[dict[str, Any]], sft_dir: str | Path,
            scratch: Path) -> tuple[list[str], list[dict]]:
    """Tokenize ``rows`` through DPOTrainer and run the SFT model once; returns (ids, records) in order.

    Pairs whose prompt alone exceeds ``max_length`` are dropped by TRL: ``ids`` may be shorter than ``rows``.
    """
    model, tokenizer = load_model(Path(sft_dir) / "model", params.model, padding_side="right")
    args = dpo_config(params, None, scratch)
    trainer = PerTokenRefTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                                 processing_class=tokenizer)
    ids = list(trainer.train_dataset["id"])
    return ids, trainer.records


def _tensors(records: list[dict]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    for part in PARTS:
        seqs = [r[f"{part}_ids"] for r in records]
        lengths = torch.tensor([0] + [len(s) for s in seqs], dtype=torch.int64)
        tensors[f"{part}_offsets"] = torch.cumsum(lengths, 0)
        tensors[f"{part}_ids"] = torch.tensor([t for s in seqs for t in s], dtype=torch.int64)
        if part != "prompt":
            values = [r[f"{part}_logps"] for r in records]
            tensors[f"{part}_logps"] = torch.cat(values).to(torch.float32) if values else torch.zeros(0)
            tensors[f"{part}_sum"] = torch.tensor([r[f"{part}_sum"] for r in records], dtype=torch.float32)
    return tensors


def write_store(path: str | Path, ids: list[str], records: list[dict], config: dict) -> None:
    """Write ``records`` (from :func:`compute`, in ``ids`` order) as one store that :func:`load_ref_logps` reads."""
    save_tensors(Path(path), _tensors(records), {"config": config, "ids": ids})


def has_bridged(prefs_dir: str | Path) -> bool:
    """Whether the pair file carries BMC's ``bridged`` column (its first record decides)."""
    return "bridged" in read_jsonl(Path(prefs_dir) / "pairs.jsonl")[0]  # a bad file fails naming its line
