"""DPO step time of each align variant against TRL's stock configuration, side by side in one run.

    python bench/dpo_step.py                       # 12 layers, hidden 128, 8 pairs of 48+48 tokens, 1 thread
    python bench/dpo_step.py --layers 6 --batch 16 --threads 2
    python bench/dpo_step.py --model data/base/model --batch 4 --prompt-len 64 --response-len 64 \
        --variants stock global global+prefix   # a real model directory (e.g. SmolLM2 converted by `base`)

Every variant trains the same tiny Llama (built here, fixed seed) on the same batch (the dataset is exactly one
batch, so every step sees it): ``dpo_full``, ``lora_all``, ``local``, ``mid``, ``global`` as the align stage
builds them (:func:`alignpipe.stages.align.build_trainer`: stored reference log-probs, activation checkpointing
off) and ``stock``: TRL's defaults for LoRA DPO (all-layer LoRA, activation checkpointing on, reference
recomputed each step by running the model with the adapter disabled). ``mid`` and ``global`` run with
``align.prefix_reuse`` off; ``mid+prefix`` and ``global+prefix`` with it on, the align stage's default
(:mod:`alignpipe.train.prefix`: the hidden states entering the block are computed once per sequence, so every
step after the first starts at the block). A step is one optimizer step
(forward, backward, clip, AdamW), timed by a callback; the table shows the median over ``--steps`` steps after
``--warmup`` steps, pooled over ``--repeats`` rounds that visit the variants in turn, in a rotated order (so
load drift on a shared machine hits all of them alike). It also checks that stock and shared-reference
all-layer LoRA give the same first-step loss (same math: the stored reference equals the recomputed one) to 1e-5.

Threads default to 1: on a shared 2-core machine, OpenMP threads that spin-wait on busy cores make every op
tens of times slower and the timings meaningless.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402
from transformers.trainer_callback import PrinterCallback, ProgressCallback  # noqa: E402

VARIANTS = ("stock", "dpo_full", "lora_all", "local", "mid", "global", "mid+prefix", "global+prefix")


def build_tokenizer(vocab: int):
    """Word-level tokenizer: word ``w<i>`` is exactly one token, so sequence lengths are exact."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    from alignpipe.models.tokenizer import SPECIAL_TOKENS, wrap_tokenizer

    words = [*SPECIAL_TOKENS, "[UNK]", *(f"w{i}" for i in range(vocab - len(SPECIAL_TOKENS) - 1))]
    backend = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return wrap_tokenizer(backend)


def reflogps_pairs(directory: Path) -> list[dict]:
    """The stored pairs' token lists (to report the sequence length the steps ran on)."""
    from alignpipe.train.reflogps import load_ref_logps

    store = load_ref_logps(directory)
    return [store.pair(i) for i in store.ids]


def build_pairs(n: int, prompt_len: int, response_len: int, vocab: int, seed: int) -> list[dict]:
    rng = random.Random(seed)

    def text(k: int) -> str:
        return " ".join(f"w{rng.randrange(vocab - 10)}" for _ in range(k))

    return [{"id": f"b{i}", "prompt": [{"role": "user", "content": text(prompt_len)}],
             "chosen": [{"role": "assistant", "content": text(response_len)}],
             "rejected": [{"role": "assistant", "content": text(response_len)}]} for i in range(n)]


class StepTimer(TrainerCallback):
    """Wall and process-CPU time of each optimizer step (forward + backward + clip + optimizer)."""

    def __init__(self):
        self.times: list[float] = []
        self.cpu: list[float] = []
        self._t0 = self._c0 = 0.0

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.times.append(time.perf_counter() - self._t0)
        self.cpu.append(time.process_time() - self._c0)


def first_loss(trainer) -> float:
    """DPO loss of the untrained policy on the dataset's (only) batch, through the trainer's own loss."""
    rows = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    keys = ("prompt_ids", "chosen_ids", "rejected_ids", "ref_chosen_logps", "ref_rejected_logps")
    batch = trainer.data_collator([{k: r[k] for k in keys if k in r} for r in rows])
    trainer.model.train()
    with torch.no_grad():
        return float(trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch)))


def _with_malloc_settings() -> None:
    """Re-run this process with the glibc settings `make repro` uses (they are read at process start): without
    them every step faults in its large buffers again, which adds a fixed cost per step and hides ratios."""
    if os.environ.get("MALLOC_MMAP_THRESHOLD_") is None and __name__ == "__main__":
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> int:
    _with_malloc_settings()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8, help="preference pairs per step")
    parser.add_argument("--prompt-len", type=int, default=48)
    parser.add_argument("--response-len", type=int, default=48)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=None, help="a model directory to train instead of a Llama built here "
                        "(its own tokenizer; the words of the pairs then take a few tokens each)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS,
                        help="variants to time (stock and lora_all are always included: the ratios and the check)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)
    warnings.filterwarnings("ignore")
    work = Path(tempfile.mkdtemp(prefix="dpo_bench_"))
    os.environ["ALIGNPIPE_WORK_DIR"] = str(work / "cache")
    try:
        return measure(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path) -> int:
    """Build the model and the shared reference under ``work``, time every variant, print the table."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from alignpipe.config import ArchitectureSection, validate_params
    from alignpipe.models.pretrain import build_model
    from alignpipe.models.training import pipeline_args
    from alignpipe.stages import reflogps
    from alignpipe.stages import align
    from alignpipe.methods.hierarchical import layer_blocks, lora_config

    from alignpipe.models.load import load_model

    tok = build_tokenizer(args.vocab) if args.model is None else load_model(args.model)[1]
    heads = max(1, args.hidden // 32)
    arch = ArchitectureSection(hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                               num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=heads,
                               max_position_embeddings=1024)
    n_steps = args.warmup + args.steps
    trainer_cfg = {"per_device_train_batch_size": args.batch, "max_steps": n_steps, "logging_steps": 1_000_000,
                   "save_steps": 1_000_000, "lr_scheduler_type": "constant", "warmup_steps": 0}
    import yaml

    variants = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())["align"]["variants"]
    align_cfg = {"max_length": 4096, "trainer": trainer_cfg, "heldout_fraction": 0.0, "variants": variants}
    params = validate_params({"seed": 0, "align": {**align_cfg, "prefix_reuse": False}})
    with_prefix = validate_params({"seed": 0, "align": {**align_cfg, "prefix_reuse": True}})
    sft, prefs = work / "sft", work / "prefs"
    if args.model is None:
        build_model(arch, tok, seed=0).save_pretrained(sft / "model")
        tok.save_pretrained(sft / "model")
    else:
        sft.mkdir(parents=True)
        (sft / "model").symlink_to(Path(args.model).resolve())
    prefs.mkdir()
    pairs = build_pairs(args.batch, args.prompt_len, args.response_len, args.vocab, seed=0)
    (prefs / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    reflogps.run(params, prefs, sft, work / "reflogps")  # the shared reference, computed once

    def make(variant: str, timer: StepTimer):
        rows, _, ref, model, tokenizer, _ = align.prepare(params, prefs, work / "reflogps", sft)
        out = work / "ckpt" / variant
        if variant != "stock":  # "<v>+prefix": the align stage's default, frozen-prefix reuse on
            name, reuse = variant.removesuffix("+prefix"), variant.endswith("+prefix")
            return align.build_trainer(with_prefix if reuse else params, name, align.get_variant(params, name),
                                       model, tokenizer, rows, ref, out, callbacks=[timer])
        owned = pipeline_args(out, params.seed)
        stock_args = DPOConfig(**{**trainer_cfg, "learning_rate": 1e-3, **owned, "max_length": 4096})
        assert stock_args.gradient_checkpointing and not stock_args.precompute_ref_log_probs  # TRL's defaults
        return DPOTrainer(model=model, args=stock_args, train_dataset=Dataset.from_list(rows),
                          processing_class=tokenizer, peft_config=lora_config(params.align.lora, None),
                          callbacks=[timer])

    chosen = tuple(v for v in VARIANTS if v in {*args.variants, "stock", "lora_all"})
    times: dict[str, list[float]] = {v: [] for v in chosen}
    cpu: dict[str, list[float]] = {v: [] for v in chosen}
    losses: dict[str, float] = {}
    trained: dict[str, float] = {}
    params_count: dict[str, int] = {}
    for r in range(args.repeats):
        # Rotate the visiting order each round so no variant always runs first or last (allocator and cache
        # state, background load), and start each one from a collected heap.
        shift = r * len(chosen) // args.repeats
        for variant in chosen[shift:] + chosen[:shift]:
            gc.collect()
            timer = StepTimer()
            trainer = make(variant, timer)
            for cb in (PrinterCallback, ProgressCallback):  # keep the table readable
                trainer.remove_callback(cb)
            if variant not in losses:
                losses[variant] = first_loss(trainer)
                params_count[variant] = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
            trainer.train()
            if variant not in trained:
                trained[variant] = first_loss(trainer)
            times[variant].extend(timer.times[args.warmup:])
            cpu[variant].extend(timer.cpu[args.warmup:])

    import json as _json

    config = _json.loads((sft / "model" / "config.json").read_text())
    n_layers = config["num_hidden_layers"]
    blocks = layer_blocks(n_layers)
    layers = {"stock": "all", "dpo_full": "all (full)", "lora_all": "all",
              **{b: f"{blocks[b][0]}-{blocks[b][-1]}" for b in blocks},
              **{f"{b}+prefix": f"{blocks[b][0]}-{blocks[b][-1]}" for b in blocks}}
    med = {v: statistics.median(times[v]) for v in chosen}
    med_cpu = {v: statistics.median(cpu[v]) for v in chosen}
    lengths = [len(r["prompt_ids"]) + len(r["chosen_ids"]) for r in (reflogps_pairs(work / "reflogps"))]
    what = args.model or "Llama built here"
    print(f"\nDPO step time: {what}: {n_layers} layers, hidden {config['hidden_size']}, vocab {config['vocab_size']}, "
          f"{args.batch} pairs x ~{statistics.median(lengths):.0f} tokens, {args.threads} thread(s), torch "
          f"{torch.__version__}, {len(times['stock'])} timed steps per variant")
    print(f"| {'variant':<13} | {'layers':<10} | {'trainable':>9} | {'wall ms':>8} | {'vs stock':>8} "
          f"| {'cpu ms':>8} | {'vs stock':>8} |")
    print(f"|{'-' * 15}|{'-' * 12}|{'-' * 11}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    for v in chosen:
        print(f"| {v:<13} | {layers[v]:<10} | {params_count[v]:>9,} | {med[v] * 1e3:>8.1f} | "
              f"{med[v] / med['stock']:>7.2f}x | {med_cpu[v] * 1e3:>8.1f} | {med_cpu[v] / med_cpu['stock']:>7.2f}x |")
    # Untrained, LoRA's zero B makes policy = reference (loss ln 2); after the timed steps the adapters differ
    # from the reference, so the second comparison exercises the reference term and the gradients too.
    diffs = {}
    for label, table in (("first step", losses), (f"after {n_steps} steps", trained)):
        diffs[label] = abs(table["stock"] - table["lora_all"])
        print(f"{label:>16} loss: stock {table['stock']:.7f}  lora_all (stored ref) {table['lora_all']:.7f}  "
              f"|diff| {diffs[label]:.1e} -> {'OK' if diffs[label] <= 1e-5 else 'MISMATCH'} (tolerance 1e-5)")
    diff = max(diffs.values())
    for name, limit in (("lora_all", 0.8), ("global", 0.5), ("mid+prefix", 0.5), ("global+prefix", 0.25)):
        if name in med:
            ratio = med[name] / med["stock"]
            print(f"target {name} <= {limit}x stock: {ratio:.2f}x {'met' if ratio <= limit else 'NOT met'}")
    for block in ("mid", "global"):
        if block in med and f"{block}+prefix" in med:
            print(f"frozen-prefix reuse: {block}+prefix / {block}: {med[f'{block}+prefix'] / med[block]:.2f}x")
    return 0 if diff <= 1e-5 else 1


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
    sys.exit(main())
