"""The align@variant stage: outputs, what training may touch, a single forward per step, resuming, launching."""

import csv
import json
import re

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from alignpipe.config import ConfigError
from alignpipe.stages import align


def test_global_variant_outputs_and_loadable_adapter(store, sft_dir, params, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    prefs, ref_dir = store
    out = tmp_path / "align" / "global"
    metrics = align.run(params, "global", prefs, ref_dir, sft_dir, out)
    assert {p.name for p in out.iterdir()} == {"model", "metrics.json", "log.csv", "config.json"}
    files = {p.name for p in (out / "model").iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    assert metrics["adapted_layers"] == [4, 5] and metrics["steps"] == 4 and metrics["n_pairs"] == 16
    assert json.loads((out / "metrics.json").read_text()) == metrics
    for key in ("final_loss", "rewards/accuracies", "rewards/margins", "trainable_params"):
        assert metrics[key] is not None
    with open(out / "log.csv") as fh:
        log = list(csv.DictReader(fh))
    assert list(log[0]) == ["step", "loss", "reward_accuracy", "reward_margin"] and log[-1]["step"] == "4"
    assert json.loads((out / "model" / "adapter_config.json").read_text())["layers_to_transform"] == [4, 5]
    base = AutoModelForCausalLM.from_pretrained(sft_dir / "model")
    peft_model = PeftModel.from_pretrained(base, out / "model")
    pattern = re.compile(r"layers\.(\d+)\..*lora_")
    layers = {int(m.group(1)) for n, _ in peft_model.named_parameters() if (m := pattern.search(n))}
    assert layers == {4, 5}


def test_only_lora_on_chosen_layers_changes(store, sft_dir, params, tmp_path):
    prefs, ref_dir = store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    trainer = align.build_trainer(params, "mid", align.get_variant(params, "mid"), model, tok,
                                  rows, ref, tmp_path / "ckpt")
    lora_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_" in n}
    align.train(trainer)
    sft = load_file(str(sft_dir / "model" / "model.safetensors"))
    after = {n.replace("base_model.model.", "", 1).replace(".base_layer", ""): p
             for n, p in trainer.model.named_parameters() if "lora_" not in n}
    assert set(after) == set(sft)
    assert all(torch.equal(after[n], sft[n]) for n in sft)  # base weights, every layer: bit-identical
    changed = {int(re.search(r"layers\.(\d+)\.", n).group(1)) for n, p in trainer.model.named_parameters()
               if "lora_" in n and not torch.equal(p, lora_before[n])}
    assert changed == {2, 3}  # every adapted layer moved, no other layer carries an adapter


def test_reference_never_runs(store, sft_dir, params, tmp_path):
    """One model forward per step (TRL's PEFT default runs a second one with the adapter disabled)."""
    prefs, ref_dir = store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    trainer = align.build_trainer(params, "lora_all", align.get_variant(params, "lora_all"), model, tok,
                                  rows, ref, tmp_path / "ckpt")
    calls = []
    trainer.model.get_input_embeddings().register_forward_hook(lambda *a: calls.append(1))
    trainer.args.max_steps = 2
    trainer.train()
    assert trainer.ref_model is None and len(calls) == 2


def test_dpo_full_saves_full_model(store, sft_dir, params, tmp_path):
    prefs, ref_dir = store
    out = tmp_path / "full"
    metrics = align.run(params, "dpo_full", prefs, ref_dir, sft_dir, out)
    assert (out / "model" / "model.safetensors").is_file() and not (out / "model" / "adapter_config.json").exists()
    assert metrics["trainable_params"] == metrics["total_params"]
    trained = load_file(str(out / "model" / "model.safetensors"))
    sft = load_file(str(sft_dir / "model" / "model.safetensors"))
    assert any(not torch.equal(trained[k], sft[k]) for k in sft)


class CrashAt(TrainerCallback):
    def __init__(self, step):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise KeyboardInterrupt(f"simulated crash at step {self.step}")


class FirstStep(TrainerCallback):
    def __init__(self):
        self.first = None

    def on_step_begin(self, args, state, control, **kwargs):
        if self.first is None:
            self.first = state.global_step


def test_resume_after_interruption(store, sft_dir, params, tmp_path, monkeypatch):
    prefs, ref_dir = store
    out = tmp_path / "global"
    with pytest.raises(KeyboardInterrupt):
        align.run(params, "global", prefs, ref_dir, sft_dir, out, callbacks=[CrashAt(3)])  # checkpoint-2 saved
    assert not out.exists()  # no complete-looking output
    seen = FirstStep()
    resumed = align.run(params, "global", prefs, ref_dir, sft_dir, out, callbacks=[seen])
    assert seen.first == 2 and resumed["steps"] == 4
    with open(out / "log.csv") as fh:
        assert [r["step"] for r in csv.DictReader(fh)] == ["1", "2", "3", "4"]  # the curve spans the whole run
    # Data order and RNG state come back with the checkpoint: the result is that of an uninterrupted run.
    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "fresh-work"))
    straight = align.run(params, "global", prefs, ref_dir, sft_dir, tmp_path / "straight")
    assert straight == resumed
    for name in ("model/adapter_model.safetensors", "log.csv"):
        assert (out / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()


def test_rerun_after_complete_training_adds_no_step(store, sft_dir, helpers, tmp_path):
    """A budget ending mid-epoch (3 of 4 steps) leaves a final checkpoint; a rerun must not train past it."""
    params = helpers.make_params(trainer={"max_steps": 3})
    prefs, ref_dir = store
    first = align.run(params, "global", prefs, ref_dir, sft_dir, tmp_path / "a")
    again = align.run(params, "global", prefs, ref_dir, sft_dir, tmp_path / "b")  # same work dir: resumes
    assert first["steps"] == again["steps"] == 3 and first == again
    for name in ("model/adapter_model.safetensors", "log.csv", "metrics.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_unknown_variant_lists_known(params):
    with pytest.raises(ConfigError, match=r"unknown align variant 'glob'.*'global'.*'lora_all'"):
        align.get_variant(params, "glob")


def _requires_grad_by_layer(trainer):
    """Run one training step; return {layer index: whether its output was part of the autograd graph}."""
    flags = {}

    def record(i):
        def hook(module, args, out):
            flags.setdefault(i, (out[0] if isinstance(out, tuple) else out).requires_grad)

        return hook

    for i, layer in enumerate(trainer.model.get_base_model().model.layers):
        layer.register_forward_hook(record(i))
    trainer.args.max_steps = 1
    trainer.train()
    return flags


@pytest.mark.parametrize("checkpointing", [False, True])
def test_backward_stops_at_lowest_adapted_layer(store, sft_dir, helpers, tmp_path, checkpointing):
    """Layers below the block are outside the graph, with checkpointing off (default) and non-reentrant on."""
    params = helpers.make_params(trainer={"gradient_checkpointing": checkpointing})
    prefs, ref_dir = store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    trainer = align.build_trainer(params, "global", align.get_variant(params, "global"), model, tok,
                                  rows, ref, tmp_path / "ckpt")
    assert trainer.args.activation_checkpointing is checkpointing
    assert _requires_grad_by_layer(trainer) == {0: False, 1: False, 2: False, 3: False, 4: True, 5: True}


def test_reentrant_checkpointing_with_block_lora_is_refused(store, sft_dir, helpers, tmp_path):
    params = helpers.make_params(trainer={"gradient_checkpointing": True,
                                          "gradient_checkpointing_kwargs": {"use_reentrant": True}})
    prefs, ref_dir = store
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, ref_dir, sft_dir)
    with pytest.raises(ConfigError, match="reentrant.*frozen layers below layer 4"):
        align.build_trainer(params, "global", align.get_variant(params, "global"), model, tok, rows, ref,
                            tmp_path / "ckpt")


def test_accelerate_launch_command():
    cmd = align.launch_command("work/launch.json", "configs/accelerate/ddp.yaml")
    assert cmd[1:] == ["-m", "accelerate.commands.launch", "--config_file", "configs/accelerate/ddp.yaml", "-m",
                       "alignpipe.stages.align", "work/launch.json"]


def test_run_with_a_missing_accelerate_config_fails(helpers, tmp_path):
    params = helpers.make_params(accelerate_config=str(tmp_path / "missing.yaml"))
    with pytest.raises(ConfigError, match="accelerate_config.*not found"):
        align.run(params, "global")
    with pytest.raises(ConfigError, match="unknown align variant 'glob'"):  # the variant is resolved first
        align.run(params, "glob")


def test_run_under_accelerate_launch_matches_the_in_process_run(store, sft_dir, helpers, tmp_path, monkeypatch):
    """With align.accelerate_config set, run() trains under `accelerate launch` (one CPU process here): the launched
    rank writes what the in-process run writes, and run() returns the metrics it wrote."""
    prefs, ref_dir = store
    accelerate_config = tmp_path / "cpu.yaml"
    accelerate_config.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nmixed_precision: 'no'\n"
                                 "num_machines: 1\nnum_processes: 1\nuse_cpu: true\n")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the launched process: one thread, as this one
    launched = align.run(helpers.make_params(accelerate_config=str(accelerate_config)), "global", prefs, ref_dir,
                         sft_dir, tmp_path / "launched")
    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "fresh-work"))
    here = align.run(helpers.make_params(), "global", prefs, ref_dir, sft_dir, tmp_path / "here")
    assert launched == here
    for name in ("model/adapter_model.safetensors", "log.csv", "metrics.json", "config.json"):
        assert (tmp_path / "launched" / name).read_bytes() == (tmp_path / "here" / name).read_bytes()


def test_accelerate_configs_and_paper_profile(repo_root):
    import yaml

    from alignpipe.config import validate_params
    from alignpipe.profile import apply_profile

    kinds = {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}
    for name, kind in kinds.items():
        cfg = yaml.safe_load((repo_root / "configs" / "accelerate" / f"{name}.yaml").read_text())
        assert cfg["distributed_type"] == kind and cfg["mixed_precision"] == "bf16"
    merged = apply_profile("paper", repo_root / "params.yaml", repo_root / "profiles")
    params = validate_params(merged)
    assert params.model.name_or_path in ("meta-llama/Llama-3.1-8B-Instruct", "Qwen/Qwen1.5-7B-Chat")
    assert {"dpo_full", "lora_all", "local", "mid", "global"} <= set(params.align.variants)
    for name in ("dpo_bc", "dpo_mc", "dpo_bmc"):  # BMC's full-parameter rows at dpo_full's learning rate
        bmc = params.align.variants[name]
        assert bmc.peft == "none" and bmc.trainer["learning_rate"] == 5.0e-6 and bmc.is_bmc
    assert params.align.variants["dpo_full"].peft == "none" and params.align.trainer["beta"] == 0.1
    assert (repo_root / params.align.accelerate_config).is_file()
