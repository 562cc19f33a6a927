"""The ``align@<variant>`` stage: DPO of the SFT model on the preference pairs, one variant per stage.

Run it (normally through ``python -m flows.align --variant global`` / ``dvc repro align@global``)::

    from alignpipe.config import load_params
    from alignpipe.stages import align
    align.run(load_params("params.yaml"), "global", prefs_dir="data/preferences", reflogps_dir="data/reflogps")

Variants (``align.variants``, Hierarchical Alignment, arXiv 2510.12044): ``dpo_full`` trains every weight;
LoRA variants adapt ``align.lora.target_modules`` in all layers (``lora_all``) or in one third of the decoder
(``local``/``mid``/``global``, see :mod:`alignpipe.methods.hierarchical`). All use TRL's sigmoid DPO with the reference
log-probs stored by the reflogps stage (:mod:`alignpipe.train.dpo`): no reference model runs or is copied.
BMC variants (arXiv 2506.09329): ``pairs: bridged`` trains on the preferences stage's pseudo-winning responses
(``dpo_bc``), ``token_weights: bmc`` uses BMC's token-weighted loss (:mod:`alignpipe.methods.bmc.trainer`,
``dpo_mc``), both together ``dpo_bmc``, and ``global_bmc`` is that on the global LoRA block. ALLO variants (an
``allo:`` section) train in two masked stages (:mod:`alignpipe.methods.allo.train`).

Outputs (``data/align/<variant>/``): ``model/`` (LoRA: ``adapter_config.json`` + ``adapter_model.safetensors``
for ``PeftModel.from_pretrained(sft_model, ...)``; dpo_full: the full model in safetensors; both with the
tokenizer), ``metrics.json``, ``log.csv`` (step, loss, reward accuracy, margin) and ``config.json``.
Checkpoints go to ``work_dir("align", config)``; a rerun after an interruption resumes from the newest one.

Multi-GPU: with ``align.accelerate_config`` set (e.g. ``configs/accelerate/zero3.yaml``), :func:`run` re-executes
this module under ``accelerate launch --config_file <file>`` (:func:`launch_command`); every rank runs :func:`run`
in its own process, and the parent returns the metrics the main rank wrote.

Steps of :func:`run`: resolve the variant (:func:`get_variant`, once) -> :func:`stage_config` ->
:func:`~alignpipe.train.prepare.prepare` -> :func:`fit` (:func:`build_trainer` + :func:`~alignpipe.train.loop.train`,
or ALLO's two stages) -> :func:`save`.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from alignpipe.config import ConfigError, Params, VariantSection, validate_params
from alignpipe.methods.allo.train import allo_inputs, fit as allo_fit
from alignpipe.methods.bmc.trainer import BMCDPOTrainer
from alignpipe.methods.hierarchical import check_target_modules, lora_config, num_layers, resolve_layers
from alignpipe.models.training import LogLastStep, sort_peft_sets
from alignpipe.train.dpo import StoredRefDPOTrainer, dpo_config, trainer_kwargs
from alignpipe.train.loop import log_csv, train
from alignpipe.train.heldout import heldout_metrics
from alignpipe.train.prefix import FrozenPrefix
from alignpipe.train.prepare import Prepared, prepare
from alignpipe.train.reflogps import BRIDGED_STORE, STORE, RefLogps, has_bridged, load_ref_logps
from alignpipe.utils.io import DataError, atomic_dir, dumps, one_line, sha256_file, work_dir
from alignpipe.utils.seed import seed_everything

logger = logging.getLogger(__name__)


def get_variant(params: Params, name: str) -> VariantSection:
    """``params.align.variants[name]``; an unknown name fails listing the known ones."""
    return params.align.variant(name)


def ref_store(section: VariantSection) -> str:
    """The reflogps store a variant reads: the bridged pairs' for BMC bridging, else the original pairs'."""
    return BRIDGED_STORE if section.pairs == "bridged" else STORE


def check_bridged(variant: str, section: VariantSection, prefs_dir: str | Path) -> bool:
    """Whether the variant trains on BMC's bridged pairs; fails when the pair file has none."""
    if section.pairs != "bridged":
        return False
    if not has_bridged(prefs_dir):
        raise ConfigError(f"align variant {variant!r} trains on bridged pairs, but {Path(prefs_dir) / 'pairs.jsonl'} "
                          "has no 'bridged' column: set preferences.bridging.enabled: true and rerun preferences")
    return True


def stage_config(params: Params, variant: str, section: VariantSection, prefs_dir: str | Path,
                 reflogps_dir: str | Path, sft_dir: str | Path, neurons_dir: str | Path = "data/neurons",
                 rewards_dir: str | Path = "data/rewards") -> dict[str, Any]:
    """What this variant's result depends on (``config.json``; also keys the checkpoint directory).

    ``section`` is the resolved ``align.variants[variant]``; a bridging variant must have passed
    :func:`check_bridged` (the bridged reference store is digested here).
    """
    bmc = {"pairs": section.pairs, "token_weights": section.token_weights}
    if section.token_weights == "bmc":
        bmc["bmc"] = {"delta": params.align.bmc.delta, "autojunk": params.align.bmc.autojunk}
    config = {
        "seed": params.seed,
        "model": params.model.model_dump(),
        "variant": variant,
        "peft": section.peft,
        "block": section.block,
        "layers": section.layers,
        "lora": params.align.lora.model_dump() if section.peft == "lora" else None,
        "max_length": params.align.max_length,
        "heldout_fraction": params.align.heldout_fraction,
        "prefix_reuse": params.align.prefix_reuse,
        "trainer_resolved": trainer_kwargs(params, section),
        "inputs": {
            "sft_model": str(Path(sft_dir) / "model"),
            "pairs_sha256": sha256_file(Path(prefs_dir) / "pairs.jsonl"),
            "reflogps_sha256": sha256_file(Path(reflogps_dir) / ref_store(section)),
        },
        **({} if section.pairs == "original" and section.token_weights == "none" else bmc),
    }
    if section.allo is not None:  # ALLO variants also read the neuron masks and the token weights
        config["allo"] = section.allo.model_dump()
        config["inputs"].update(allo_inputs(params, section.allo, neurons_dir, rewards_dir))
    return config


def build_trainer(params: Params, variant: str, section: VariantSection, model: Any, tokenizer: Any,
                  rows: list[dict], ref: RefLogps, output_dir: str | Path,
                  callbacks: list | None = None) -> StoredRefDPOTrainer:
    """The DPO trainer for ``variant`` (its resolved ``section``): LoRA restricted to the variant's layers, or
    full-parameter; BMC's token-weighted trainer for ``token_weights: bmc``."""
    from datasets import Dataset

    layers = resolve_layers(section, num_layers(model), name=variant)
    if section.peft == "lora":  # peft drops an entry that matches nothing as long as another one matches
        check_target_modules(model, params.align.lora.target_modules, "align.lora.target_modules")
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
    if params.align.prefix_reuse and revisits_pairs(trainer):
        prefix = FrozenPrefix.install_if_frozen(trainer.model)  # Mid/Global-Align: start at the block's bottom
        if prefix is not None:
            trainer.add_callback(LogPrefixReuse(prefix))
            logger.info("align@%s: frozen-prefix reuse from layer %d (layers below run once per sequence)",
                        variant, prefix.first)
    return trainer


def revisits_pairs(trainer: Any) -> bool:
    """Whether training sees some pair more than once (more optimizer steps' worth of pairs than the data set has):
    only then does a cached frozen prefix get reused (a first visit costs what the full forward costs)."""
    args = trainer.args
    n = len(trainer.train_dataset)
    per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * max(1, args.world_size)
    seen = args.max_steps * per_step if args.max_steps > 0 else args.num_train_epochs * n
    return seen > n


class LogPrefixReuse(TrainerCallback):
    """Log the frozen-prefix cache's hits and misses at the end of training (the log, never metrics.json: a
    resumed run starts with an empty cache, so the counts depend on the run's history)."""

    def __init__(self, prefix: FrozenPrefix):
        self.prefix = prefix

    def on_train_end(self, args, state, control, **kwargs):
        logger.info("frozen-prefix reuse: %s", self.prefix.stats())


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


def save(trainer: StoredRefDPOTrainer, out_dir: str | Path, metrics: dict[str, Any], config: dict[str, Any]) -> Path:
    """Write ``out_dir/{model/, metrics.json, log.csv, config.json}`` atomically.

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
        (tmp / "log.csv").write_text(log_csv(log), encoding="utf-8")
    return Path(out_dir)


def fit(params: Params, variant: str, section: VariantSection, prepared: tuple, config: dict[str, Any],
        callbacks: list | None = None) -> tuple[Any, dict[str, Any]]:
    """Build the trainer on ``prepare``'s output and train (ALLO variants: both ALLO stages); (trainer, metrics)."""
    rows, dropped, ref, model, tokenizer, _ = prepared
    if section.allo is not None:
        return allo_fit(params, variant, section, prepared, config, callbacks)
    trainer = build_trainer(params, variant, section, model, tokenizer, rows, ref, work_dir("align", config),
                            callbacks)
    layers = resolve_layers(section, num_layers(model), name=variant)
    reuse = next((cb.prefix.first for cb in trainer.callback_handler.callbacks if isinstance(cb, LogPrefixReuse)),
                 None)
    metrics = {"variant": variant, "peft": section.peft, "n_layers": num_layers(model),
               "prefix_reuse_from": reuse,
               "adapted_layers": layers if layers is not None else list(range(num_layers(model))),
               "dropped_pairs": dropped, **train(trainer)}
    return trainer, metrics


def heldout(trainer: Any, prepared: Prepared, reflogps_dir: str | Path, bridged: bool) -> dict[str, Any]:
    """The trained policy on the held-out (chosen, rejected) pairs (:mod:`alignpipe.train.heldout`): the same pairs
    and the original reference store for every variant (a bridging variant trained on its bridged store)."""
    ref = load_ref_logps(reflogps_dir, STORE) if bridged else prepared.ref
    model = trainer.accelerator.unwrap_model(trainer.model)
    pad = prepared.tokenizer.pad_token_id if prepared.tokenizer.pad_token_id is not None else 0
    result = heldout_metrics(model, ref, prepared.heldout, trainer.args.beta,
                             batch_size=trainer.args.per_device_eval_batch_size, pad_id=pad)
    if result["after"] is not None:
        logger.info("held-out pairs (%d): reward accuracy %.3f (p %.3g), margin %.4f, log-prob accuracy %.3f -> %.3f",
                    result["n_pairs"], result["after"]["reward_accuracy"], result["after"]["reward_accuracy_p"],
                    result["after"]["reward_margin"], result["before"]["logp_accuracy"],
                    result["after"]["logp_accuracy"])
    return result


def run(params: Params, variant: str, prefs_dir: str | Path = "data/preferences",
        reflogps_dir: str | Path = "data/reflogps", sft_dir: str | Path = "data/sft",
        out_dir: str | Path | None = None, callbacks: list | None = None, neurons_dir: str | Path = "data/neurons",
        rewards_dir: str | Path = "data/rewards") -> dict[str, Any]:
    """Run the whole stage for one variant; returns the metrics written to ``metrics.json``.

    ``out_dir`` defaults to ``data/align/<variant>``; ``neurons_dir`` / ``rewards_dir`` are read by ALLO variants
    only (masks, token weights). With ``align.accelerate_config`` set, training runs under ``accelerate launch``
    (:func:`_launch`; ``callbacks`` then do not apply: they cannot cross into the launched processes).
    """
    seed_everything(params.seed)
    section = get_variant(params, variant)  # the one place the name is resolved: unknown fails before any work
    out_dir = Path(out_dir or f"data/align/{variant}")
    dirs = {"prefs_dir": prefs_dir, "reflogps_dir": reflogps_dir, "sft_dir": sft_dir, "out_dir": out_dir,
            "neurons_dir": neurons_dir, "rewards_dir": rewards_dir}
    if params.align.accelerate_config:
        return _launch(params, variant, **dirs)
    bridged = check_bridged(variant, section, prefs_dir)  # before digesting the bridged reference store it needs
    config = stage_config(params, variant, section, prefs_dir, reflogps_dir, sft_dir, neurons_dir, rewards_dir)
    logger.info("align@%s config: %s", variant, one_line(config))
    prepared = prepare(params, prefs_dir, reflogps_dir, sft_dir, bridged=bridged)
    trainer, metrics = fit(params, variant, section, prepared, config, callbacks)
    metrics["heldout"] = heldout(trainer, prepared, reflogps_dir, bridged)
    save(trainer, out_dir, metrics, config)
    metrics.pop("log", None)
    logger.info("align@%s metrics: %s", variant, one_line(metrics))
    return metrics


def launch_command(spec: str | Path, accelerate_config: str | Path) -> list[str]:
    """``accelerate launch --config_file <cfg> -m alignpipe.stages.align <spec>``: one training process per device.

    ``spec`` is the JSON file :func:`_launch` writes: the params each rank validates and the keyword arguments of
    its :func:`run`.
    """
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(accelerate_config),
            "-m", "alignpipe.stages.align", str(spec)]


def _launch(params: Params, variant: str, **dirs: str | Path) -> dict[str, Any]:
    """Train ``variant`` under ``accelerate launch --config_file <align.accelerate_config>``; return its metrics.

    The validated params go to the ranks in a JSON spec under the stage's work directory, with
    ``align.accelerate_config`` cleared (each rank is already launched, so its :func:`run` trains in-process).
    The metrics come back through ``out_dir/metrics.json``.
    """
    cfg = params.align.accelerate_config
    if not Path(cfg).is_file():
        raise ConfigError(f"align.accelerate_config = {cfg!r}: file not found")
    rank_params = params.model_copy(update={"align": params.align.model_copy(update={"accelerate_config": None})})
    spec = {"params": rank_params.model_dump(mode="json"), "variant": variant,
            "kwargs": {key: str(value) for key, value in dirs.items()}}
    path = work_dir("align", spec) / "launch.json"
    path.write_text(dumps(spec), encoding="utf-8")
    cmd = launch_command(path, cfg)
    logger.info("launching: %s", " ".join(cmd))
    subprocess.run(cmd, check=True)
    return json.loads((Path(dirs["out_dir"]) / "metrics.json").read_text(encoding="utf-8"))


def _run_launched(spec_file: str) -> int:
    """One rank under ``accelerate launch``: :func:`run` on the spec :func:`_launch` wrote; 2 on a bad input."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    spec = json.loads(Path(spec_file).read_text(encoding="utf-8"))
    try:
        run(validate_params(spec["params"], spec_file), spec["variant"], **spec["kwargs"])
    except (ConfigError, DataError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # what `accelerate launch` runs on every rank (launch_command)
    sys.exit(_run_launched(sys.argv[1]))
