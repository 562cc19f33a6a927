"""ALLO costs: masked-optimizer step time against AdamW, mask computation against one DPO epoch, neurons-stage memory.

    python bench/allo.py                            # 12 layers, hidden 128, CPU, 1 thread
    python bench/allo.py --layers 24 --hidden 1024 --device cuda --pairs 256   # on a GPU

Three measurements on a Llama built here (fixed seed; no downloads):

1. **Optimizer**: median time of ``optimizer.step()`` (random gradients already in place) and of a whole training
   step (forward + backward of the LM loss on one batch + step) for ``torch.optim.AdamW`` (foreach, torch's
   default), :class:`~alignpipe.methods.allo.masked.MaskedAdamW` with a 10% mask, and MaskedAdamW without masks. Target:
   masked / AdamW within 1.15x for the whole step.
2. **Masks vs one DPO epoch**: the time of one epoch of full-parameter DPO (TRL DPOTrainer with the stored
   reference, as the align stage runs it) on ``--pairs`` synthetic pairs, against the time to turn scores into
   masks (|Δθ|, exact global threshold by bisection, official pooled threshold) for two ratios.
3. **Peak memory** of the mask computation (process max RSS; CUDA max allocated on a GPU), and the size of the
   model's weights, for scale. The neurons stage's own peak RSS is measured with ``/usr/bin/time -v`` (README).

Threads default to 1 (a shared 2-core machine makes spin-waiting OpenMP threads meaningless to time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dpo_step import build_pairs, build_tokenizer  # noqa: E402


def build_model(args: argparse.Namespace, tokenizer):
    from alignpipe.config import ArchitectureSection
    from alignpipe.models.pretrain import build_model as build

    heads = max(1, args.hidden // 64)
    arch = ArchitectureSection(hidden_size=args.hidden, intermediate_size=args.hidden * 3,
                               num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=heads,
                               max_position_embeddings=512)
    return build(arch, tokenizer, seed=0).to(args.device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_optimizers(args, model, tokenizer) -> dict:
    from alignpipe.methods.allo.neurons import global_masks
    from alignpipe.methods.allo.masked import MaskedAdamW

    g = torch.Generator().manual_seed(1)
    scores = {n: torch.rand(p.shape, generator=g) for n, p in model.named_parameters()}
    masks = {n: m.to(args.device) for n, m in global_masks(scores, 10.0)[0].items()}
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(5, tokenizer.vocab_size, (args.batch, args.prompt_len + args.response_len), generator=g)
    ids = ids.to(args.device)
    makers = {
        "adamw": lambda: torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0),
        "masked_10pct": lambda: MaskedAdamW.for_model(model, masks, lr=1e-4),
        "masked_none": lambda: MaskedAdamW.for_model(model, None, lr=1e-4),
    }
    samples: dict[str, dict[str, list[float]]] = {k: {"opt": [], "step": []} for k in makers}
    for rep in range(args.repeats):
        order = list(makers)[rep % 3:] + list(makers)[:rep % 3]
        for name in order:
            with torch.no_grad():
                for n, p in model.named_parameters():
                    p.copy_(start[n])
            opt = makers[name]()
            for i in range(args.warmup + args.steps):
                sync(args.device)
                t0 = time.perf_counter()
                loss = model(input_ids=ids, labels=ids).loss
                loss.backward()
                sync(args.device)
                t1 = time.perf_counter()
                opt.step()
                sync(args.device)
                t2 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                if i >= args.warmup:
                    samples[name]["opt"].append(t2 - t1)
                    samples[name]["step"].append(t2 - t0)
            del opt
    out = {name: {k: statistics.median(v) for k, v in s.items()} for name, s in samples.items()}
    for name in ("masked_10pct", "masked_none"):
        out[name]["opt_ratio_vs_adamw"] = out[name]["opt"] / out["adamw"]["opt"]
        out[name]["step_ratio_vs_adamw"] = out[name]["step"] / out["adamw"]["step"]
    return out


def time_masks_vs_epoch(args, model, tokenizer, work: Path) -> dict:
    from datasets import Dataset

    from alignpipe.config import validate_params
    from alignpipe.methods.allo.neurons import global_masks, weight_delta
    from alignpipe.stages import reflogps as reflogps_stage
    from alignpipe.train import reflogps
    from alignpipe.train.dpo import StoredRefDPOTrainer, dpo_config
    from alignpipe.train.pairs import read_pairs

    rows = build_pairs(args.pairs, args.prompt_len, args.response_len, tokenizer.vocab_size, seed=3)
    prefs = work / "preferences"
    prefs.mkdir(parents=True)
    with open(prefs / "pairs.jsonl", "w") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in rows)
    sft = work / "sft" / "model"
    model.save_pretrained(sft)
    tokenizer.save_pretrained(sft)
    trainer = {"per_device_train_batch_size": args.batch, "max_steps": -1, "num_train_epochs": 1,
               "logging_steps": 1000, "save_steps": 100000, "precompute_ref_batch_size": args.batch}
    params = validate_params({"seed": 1, "align": {"max_length": args.prompt_len + args.response_len + 8,
                                                   "trainer": trainer}})
    os.environ["ALIGNPIPE_WORK_DIR"] = str(work / "_work")
    reflogps_stage.run(params, prefs, work / "sft", work / "reflogps")
    ref = reflogps.load_ref_logps(work / "reflogps")
    pairs, _ = read_pairs(prefs / "pairs.jsonl")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    dpo = StoredRefDPOTrainer(model=model, args=dpo_config(params, None, work / "dpo"),
                              train_dataset=Dataset.from_list(pairs), processing_class=tokenizer, ref_logps=ref)
    sync(args.device)
    t0 = time.perf_counter()
    dpo.train()
    sync(args.device)
    epoch = time.perf_counter() - t0
    after = {n: p.detach() for n, p in model.named_parameters()}
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    timings = {}
    for method in ("exact", "official"):
        sync(args.device)
        t0 = time.perf_counter()
        scores = weight_delta(before, after)
        for ratio in (5.0, 10.0):
            global_masks(scores, ratio, method)
        sync(args.device)
        timings[method] = time.perf_counter() - t0
    out = {"dpo_epoch_s": epoch, "dpo_steps": int(dpo.state.global_step), "pairs": len(pairs),
           **{f"masks_{m}_s": t for m, t in timings.items()},
           **{f"masks_{m}_over_epoch": t / epoch for m, t in timings.items()},
           "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if args.device.startswith("cuda"):
        out["cuda_peak_masks_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=48)
    parser.add_argument("--response-len", type=int, default=48)
    parser.add_argument("--pairs", type=int, default=64, help="pairs in the DPO epoch")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    from alignpipe.utils.env import apply_offline_env

    apply_offline_env()
    tokenizer = build_tokenizer(args.vocab)
    model = build_model(args, tokenizer)
    n_params = sum(p.numel() for p in model.parameters())
    result = {"device": args.device, "params": n_params, "layers": args.layers, "hidden": args.hidden,
              "optimizer": time_optimizers(args, model, tokenizer)}
    with tempfile.TemporaryDirectory() as tmp:
        result["masks"] = time_masks_vs_epoch(args, build_model(args, tokenizer), tokenizer, Path(tmp))
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
