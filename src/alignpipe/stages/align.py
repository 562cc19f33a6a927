"""The ``align@<variant>`` stage: DPO of the SFT model on the preference pairs, one variant per stage.

Run it (normally through ``python -m flows.align --variant global`` / ``dvc repro align@global``)::

    from alignpipe.config import load_params
    from alignpipe.stages import align
    align.run(load_params("params.yaml"), "global", prefs_dir="data/preferences", reflogps_dir="data/reflogps")
    # or, from a shell (the same thing; also what `accelerate launch` re-executes on every rank):
    python -m alignpipe.stages.align --variant global --params params.yaml

Variants (``align.variants``, Hierarchical Alignment, arXiv 2510.12044): ``dpo_full`` trains every weight;
LoRA variants adapt ``align.lora.target_modules`` in all layers (``lora_all``) or in one third of the decoder
(``local``/``mid``/``global``, see :mod:`alignpipe.methods.hierarchical`). All use TRL's sigmoid DPO with the reference
log-probs stored by the reflogps stage (:mod:`alignpipe.train.dpo`): no reference model runs or is copied.
BMC variants (arXiv 2506.09329): ``pairs: bridged`` trains on the preferences stage's pseudo-winning responses
(``dpo_bc``), ``token_weights: bmc`` uses BMC's token-weighted loss (:mod:`alignpipe.methods.bmc.trainer`,
``dpo_mc``), both together ``dpo_bmc``, and ``global_bmc`` is that on the global LoRA block.

Outputs (``data/align/<variant>/``): ``model/`` (LoRA: ``adapter_config.json`` + ``adapter_model.safetensors``
for ``PeftModel.from_pretrained(sft_model, ...)``; dpo_full: the full model in safetensors; both with the
tokenizer), ``metrics.json``, ``log.csv`` (step, loss, reward accuracy, margin) and ``config.json``.
Checkpoints go to ``work_dir("align", config)``; a rerun after an interruption resumes from the newest one.

Multi-GPU: set ``align.accelerate_config`` (e.g. ``configs/accelerate/zero3.yaml``) and call
:func:`run_or_launch`: it re-executes this module under ``accelerate launch --config_file <file>``.

Steps (each callable as a Prefect task): :func:`prepare` -> :func:`build_trainer` -> :func:`train` -> :func:`save`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from alignpipe.config import ConfigError, Params, VariantSection, load_params
from alignpipe.models.training import LogLastStep, count_parameters, resume_train, sort_peft_sets
from alignpipe.methods.hierarchical import lora_config, num_layers, resolve_layers
from alignpipe.methods.bmc.trainer import BMCDPOTrainer
from alignpipe.train.dpo import StoredRefDPOTrainer, dpo_config, trainer_kwargs
from alignpipe.train.pairs import read_pairs
from alignpipe.train.reflogps import BRIDGED_STORE, STORE, RefLogps, has_bridged, load_ref_logps, weights_sha256
from alignpipe.utils.io import DataError, atomic_dir, dumps, sha256_file, work_dir
from alignpipe.utils.seed import seed_everything

logger = logging.getLogger(__name__)

LOG_FIELDS = (("step", "step"), ("loss", "loss"), ("reward_accuracy", "rewards/accuracies"),
              ("reward_margin", "rewards/margins"))


def get_variant(params: Params, name: str) -> VariantSection:
    """``params.align.variants[name]``; an unknown name fails listing the known ones."""
    if name not in params.align.variants:
        known = sorted(params.align.variants)
        raise ConfigError(f"unknown align variant {name!r}; params.yaml align.variants has {known}")
    return params.align.variants[name]


def ref_store(section: VariantSection) -> str:
    """The reflogps store a variant reads: the bridged pairs' for BMC bridging, else the original pairs'."""
    return BRIDGED_STORE if section.pairs == "bridged" else STORE


def stage_config(params: Params, variant: str, prefs_dir: str | Path, reflogps_dir: str | Path,
                 sft_dir: str | Path, neurons_dir: str | Path = "data/neurons",
                 rewards_dir: str | Path = "data/rewards") -> dict[str, Any]:
    """What this variant's result depends on (``config.json``; also keys the checkpoint directory)."""
    section = get_variant(params, variant)
    config = _stage_config(params, variant, prefs_dir, reflogps_dir, sft_dir)
    if section.allo is not None:  # ALLO variants also read the neuron masks and the token weights
        from alignpipe.methods.allo.train import allo_inputs

        config["allo"] = section.allo.model_dump()
        config["inputs"].update(allo_inputs(params, section.allo, neurons_dir, rewards_dir))
    return config


def _check_bridged(variant: str, section: VariantSection, prefs_dir: str | Path) -> bool:
    """Whether the variant trains on BMC's bridged pairs; fails when the pair file has none."""
    if section.pairs != "bridged":
        return False
    if not has_bridged(prefs_dir):
        raise ConfigError(f"align variant {variant!r} trains on bridged pairs, but {Path(prefs_dir) / 'pairs.jsonl'} "
                          "has no 'bridged' column: set preferences.bridging.enabled: true and rerun preferences")
    return True


def _stage_config(params: Params, variant: str, prefs_dir: str | Path, reflogps_dir: str | Path,
                  sft_dir: str | Path) -> dict[str, Any]:
    section = get_variant(params, variant)
    _check_bridged(variant, section, prefs_dir)  # before digesting the bridged reference store it needs
    bmc = {"pairs": section.pairs, "token_weights": section.token_weights}
    if section.token_weights == "bmc":
        bmc["bmc"] = {"delta": params.align.bmc.delta, "autojunk": params.align.bmc.autojunk}
    return {
        "seed": params.seed,
        "model": params.model.model_dump(),
        "variant": variant,
        "peft": section.peft,
        "block": section.block,
        "layers": section.layers,
        "lora": params.align.lora.model_dump() if section.peft == "lora" else None,
        "max_length": params.align.max_length,
        "trainer_resolved": trainer_kwargs(params, section),
        "inputs": {
            "sft_model": str(Path(sft_dir) / "model"),
            "pairs_sha256": sha256_file(Path(prefs_dir) / "pairs.jsonl"),
            "reflogps_sha256": sha256_file(Path(reflogps_dir) / ref_store(section)),
        },
        **({} if section.pairs == "original" and section.token_weights == "none" else bmc),
    }


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


def prepare(params: Params, prefs_dir: str | Path, reflogps_dir: str | Path, sft_dir: str | Path,
            variant: str | None = None):
    """Step 1: load the pairs, the stored reference (checked against its inputs) and the SFT model.

    ``variant`` picks the pairs: (bridged, rejected) for a BMC bridging variant (``pairs: bridged``), else
    (chosen, rejected); None means the original pairs.

    Returns:
        ``(rows, dropped, ref, model, tokenizer)``.
    """
    from alignpipe.models import load_model

    bridged = variant is not None and _check_bridged(variant, get_variant(params, variant), prefs_dir)
    rows, dropped = read_pairs(Path(prefs_dir) / "pairs.jsonl", chosen_field="bridged" if bridged else "chosen")
    ref = load_ref_logps(reflogps_dir, BRIDGED_STORE if bridged else STORE)
    check_reference(ref, sft_dir, prefs_dir, params.align.max_length)
    model, tokenizer = load_model(Path(sft_dir) / "model", params.model, padding_side="right")
    return rows, dropped, ref, model, tokenizer


def build_trainer(params: Params, variant: str, model: Any, tokenizer: Any, rows: list[dict], ref: RefLogps,
                  output_dir: str | Path, callbacks: list | None = None) -> StoredRefDPOTrainer:
    """Step 2: the DPO trainer for ``variant``: LoRA restricted to the variant's layers, or full-parameter."""
    from datasets import Dataset

    section = get_variant(params, variant)
    layers = resolve_layers(section, num_layers(model), name=variant)
    peft_config = lora_config(params.align.lora, layers) if section.peft == "lora" else None
    bmc: dict[str, Any] = {}
    trainer_cls = StoredRefDPOTrainer
    if section.token_weights == "bmc":  # BMC modeling: token-weighted policy and reference log-probs
        trainer_cls = BMCDPOTrainer
        bmc = {"delta": params.align.bmc.delta, "autojunk": params.align.bmc.autojunk}
    with warnings.catch_warnings():
        # peft probes the deprecated alias `is_gradient_checkpointing` when wrapping; nothing to act on.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        trainer = trainer_cls(
            model=model,
            args=dpo_config(params, section, output_dir),
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=[LogLastStep(), *(callbacks or [])],
            ref_logps=ref,
            **bmc,
        )
    _guard_backward(trainer, layers)
    return trainer


def _drop_input_grad_hooks(model: Any) -> int:
    """Remove ``enable_input_require_grads`` hooks (embedding output forced to require grad); returns how many."""
    found = [m for m in model.modules() if getattr(m, "_require_grads_hooks", None)]
    for module in found:
        module.disable_input_require_grads()
    return len(found)


class StopBackwardBelowAdapters(TrainerCallback):
    """Keep the backward from walking through the frozen layers below the lowest adapted one.

    With activation checkpointing on, TRL (at init, for PEFT) and transformers (when ``train`` enables it) call
    ``enable_input_require_grads``: the embedding output then requires grad, so autograd records and
    differentiates every layer, and Global-Align costs as much as all-layer LoRA. Reentrant checkpointing
    needs that (a checkpointed block whose inputs need no grad returns outputs that need none, dropping its
    LoRA grads); non-reentrant checkpointing, transformers 5's default, does not. So for block-restricted LoRA
    with non-reentrant checkpointing the hooks are removed after init and again when training begins.
    """

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is not None and _drop_input_grad_hooks(model):
            logger.info("removed enable_input_require_grads hooks: backward stops at the lowest adapted layer")


def _guard_backward(trainer: StoredRefDPOTrainer, layers: list[int] | None) -> None:
    if layers is None or not trainer.args.activation_checkpointing:
        return  # all layers adapted (or full DPO): the backward must reach the bottom anyway
    if (trainer.args.activation_checkpointing_kwargs or {}).get("use_reentrant"):
        raise ConfigError(
            f"reentrant activation checkpointing makes the backward run through the frozen layers below layer "
            f"{min(layers)} (block-restricted LoRA then saves nothing); drop use_reentrant or checkpointing"
        )
    _drop_input_grad_hooks(trainer.model)
    trainer.add_callback(StopBackwardBelowAdapters())


def train(trainer: StoredRefDPOTrainer) -> dict[str, Any]:
    """Step 3: train, resuming from the newest complete checkpoint in ``args.output_dir``; returns metrics.

    ``initial_loss`` is the mean over the first logging window, ``final_loss`` and the reward statistics are
    those of the last one (TRL averages its metrics between logs).
    """
    resume_train(trainer, trainer.args.output_dir, "DPO")
    history = [e for e in trainer.state.log_history if "loss" in e]
    model = trainer.model
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    last = history[-1] if history else {}
    return {
        "steps": int(trainer.state.global_step),
        "n_pairs": len(trainer.train_dataset),
        "trainable_params": trainable,
        "total_params": count_parameters(model),
        "initial_loss": history[0]["loss"] if history else None,
        "final_loss": last.get("loss"),
        **{k: last.get(k) for k in ("rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected")},
        **{k: last[k] for k in ("bmc/modified_frac", "bmc/weight_mean") if k in last},
        "log": [{name: e.get(key) for name, key in LOG_FIELDS} for e in history],
    }


def _log_csv(log: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([name for name, _ in LOG_FIELDS])
    for row in log:
        writer.writerow([row["step"], *(f"{row[n]:.6f}" if row[n] is not None else "" for n, _ in LOG_FIELDS[1:])])
    return buf.getvalue()


def save(trainer: StoredRefDPOTrainer, out_dir: str | Path, metrics: dict[str, Any], config: dict[str, Any]) -> Path:
    """Step 4: write ``out_dir/{model/, metrics.json, log.csv, config.json}`` atomically.

    ``trainer.save_model`` runs on every rank (ZeRO-3/FSDP gather the weights collectively) into a staging
    directory next to the checkpoints; the main process then moves it into the atomic output.
    """
    staging = Path(trainer.args.output_dir) / "final-model"
    sort_peft_sets(trainer.accelerator.unwrap_model(trainer.model))  # adapter_config.json in a stable order
    trainer.save_model(str(staging))  # adapter only for a PeftModel; full safetensors otherwise; + tokenizer
    if not trainer.accelerator.is_main_process:
        return Path(out_dir)
    (staging / "training_args.bin").unlink(missing_ok=True)  # a pickle; config.json records the arguments
    metrics = dict(metrics)
    log = metrics.pop("log", [])
    with atomic_dir(out_dir) as tmp:
        shutil.move(str(staging), tmp / "model")
        (tmp / "metrics.json").write_text(dumps(metrics), encoding="utf-8")
        (tmp / "config.json").write_text(dumps(config), encoding="utf-8")
        (tmp / "log.csv").write_text(_log_csv(log), encoding="utf-8")
    return Path(out_dir)


def fit(params: Params, variant: str, prepared: tuple, config: dict[str, Any],
        callbacks: list | None = None) -> tuple[StoredRefDPOTrainer, dict[str, Any]]:
    """Steps 2-3 for one variant: build the trainer on ``prepare``'s output, train; returns (trainer, metrics)."""
    rows, dropped, ref, model, tokenizer = prepared
    section = get_variant(params, variant)
    if section.allo is not None:
        from alignpipe.methods.allo import train as allo

        return allo.fit(params, variant, prepared, config, callbacks)
    trainer = build_trainer(params, variant, model, tokenizer, rows, ref, work_dir("align", config), callbacks)
    layers = resolve_layers(section, num_layers(model), name=variant)
    metrics = {"variant": variant, "peft": section.peft, "n_layers": num_layers(model),
               "adapted_layers": layers if layers is not None else list(range(num_layers(model))),
               "dropped_pairs": dropped, **train(trainer)}
    return trainer, metrics


def run(params: Params, variant: str, prefs_dir: str | Path = "data/preferences",
        reflogps_dir: str | Path = "data/reflogps", sft_dir: str | Path = "data/sft",
        out_dir: str | Path | None = None, callbacks: list | None = None, neurons_dir: str | Path = "data/neurons",
        rewards_dir: str | Path = "data/rewards") -> dict[str, Any]:
    """Run the whole stage for one variant; returns the metrics written to ``metrics.json``.

    ``neurons_dir`` / ``rewards_dir`` are read by ALLO variants only (masks, token weights).
    """
    seed_everything(params.seed)
    section = get_variant(params, variant)
    out_dir = Path(out_dir or f"data/align/{variant}")
    config = stage_config(params, variant, prefs_dir, reflogps_dir, sft_dir, neurons_dir, rewards_dir)
    logger.info("align@%s config: %s", variant, dumps(config).strip())
    trainer, metrics = fit(params, variant, prepare(params, prefs_dir, reflogps_dir, sft_dir, variant), config,
                           callbacks)
    save(trainer, out_dir, metrics, config)
    metrics.pop("log", None)
    logger.info("align@%s metrics: %s", variant, dumps(metrics).strip())
    return metrics


def launch_command(params_path: str | Path, variant: str, accelerate_config: str | Path,
                   **dirs: str | Path) -> list[str]:
    """``accelerate launch --config_file <cfg> -m alignpipe.stages.align ...``: one training process per device."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
           "-m", "alignpipe.stages.align", "--params", str(params_path), "--variant", variant]
    for key, value in dirs.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    return cmd


def run_or_launch(params: Params, variant: str, params_path: str | Path = "params.yaml", **dirs: Any) -> dict | None:
    """:func:`run` in this process, or under ``accelerate launch`` when ``align.accelerate_config`` is set.

    Under accelerate the metrics come back through ``out_dir/metrics.json`` (returned here for convenience).
    """
    cfg = params.align.accelerate_config
    if not cfg:
        return run(params, variant, **dirs)
    if not Path(cfg).is_file():
        raise ConfigError(f"align.accelerate_config = {cfg!r}: file not found")
    cmd = launch_command(params_path, variant, cfg, **dirs)
    logger.info("launching: %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    out_dir = Path(dirs.get("out_dir") or f"data/align/{variant}")
    return json.loads((out_dir / "metrics.json").read_text(encoding="utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alignpipe.stages.align", description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", required=True)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--prefs-dir", default="data/preferences")
    parser.add_argument("--reflogps-dir", default="data/reflogps")
    parser.add_argument("--sft-dir", default="data/sft")
    parser.add_argument("--out-dir", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        run(load_params(args.params), args.variant, args.prefs_dir, args.reflogps_dir, args.sft_dir, args.out_dir)
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
