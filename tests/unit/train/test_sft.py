"""SFT (alignpipe.train.sft) and the sft stage: completion-only labels, outputs, data validation, mixtures and
resuming (tiny model, a few rows)."""

import csv
import json

import pytest
import torch
from transformers import TrainerCallback

from alignpipe.config import ArchitectureSection, TokenizerSection, validate_params
from alignpipe.models import load_model
from alignpipe.models.save import save
from alignpipe.stages import sft as stage
from alignpipe.train import sft
from alignpipe.utils.io import DataError

ANSWERS = ["Velmora is a harbor town with a market.", "- Quenth has a tower.\n- It is old.",
           "arlis lies near the river.", "Dorvan was founded long ago. Thank you."]


def make_rows(n, prefix="r"):
    return [{"id": f"{prefix}{i}",
             "prompt": [{"role": "user", "content": f"Describe item {i}. Use the word 'harbor'."}],
             "completion": [{"role": "assistant", "content": ANSWERS[i % len(ANSWERS)]}],
             "level": i % 3}  # extra fields are allowed and ignored
            for i in range(n)]


def write_rows(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A tiny untrained base model directory (2 layers, hidden 32) with the pipeline tokenizer."""
    from alignpipe.models.pretrain import build_model
    from alignpipe.models.tokenizer import train_tokenizer

    root = tmp_path_factory.mktemp("base")
    texts = [r["prompt"][0]["content"] + " " + r["completion"][0]["content"] for r in make_rows(8)]
    tok = train_tokenizer(texts, TokenizerSection(vocab_size=300, min_frequency=1))
    arch = ArchitectureSection(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               num_key_value_heads=2, max_position_embeddings=128)
    save(build_model(arch, tok, seed=0), tok, root, {"steps": 0}, {})
    return root


@pytest.fixture
def params():
    trainer = {"max_steps": 4, "per_device_train_batch_size": 4, "logging_steps": 1, "save_steps": 2,
               "learning_rate": 5e-3, "disable_tqdm": True}
    return validate_params({"seed": 5, "sft": {"max_length": 64, "trainer": trainer}})


@pytest.fixture
def world_dir(tmp_path):
    write_rows(tmp_path / "world" / "sft.jsonl", make_rows(12))
    return tmp_path / "world"


def test_labels_mask_the_prompt_and_keep_the_completion_and_eos(params, base_dir, world_dir, tmp_path):
    model, tok = load_model(base_dir / "model", padding_side="right")
    data = sft.load_sft_data([world_dir / "sft.jsonl"])
    trainer = sft.build_trainer(params, model, tok, data, tmp_path / "ckpt")
    rows = make_rows(12)
    examples = [trainer.train_dataset[i] for i in range(3)]  # dataset order = file order (no shuffle_dataset)
    batch = trainer.data_collator(examples)
    for row, (ex, src) in enumerate(zip(examples, rows)):
        ids = ex["input_ids"]
        n_prompt = len(tok.apply_chat_template(src["prompt"], add_generation_prompt=True, tokenize=True,
                                               return_dict=True)["input_ids"])
        labels = batch["labels"][row].tolist()
        assert labels[:n_prompt] == [-100] * n_prompt  # prompt masked
        assert labels[n_prompt:len(ids)] == ids[n_prompt:]  # completion trained
        assert ids[-1] == tok.eos_token_id and labels[len(ids) - 1] == tok.eos_token_id  # learns to stop
        assert all(x == -100 for x in labels[len(ids):])  # padding masked
        assert tok.decode(ids[n_prompt:], skip_special_tokens=True) == src["completion"][0]["content"]


def test_run_trains_and_writes_outputs(params, base_dir, world_dir, tmp_path):
    out = tmp_path / "sft"
    metrics = stage.run(params, world_dir, base_dir, out)
    assert {p.name for p in out.iterdir()} == {"model", "metrics.json", "log.csv", "config.json"}
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["steps"] == 4 and metrics["n_examples"] == 12 and metrics["final_loss"] > 0
    assert 0 <= metrics["mean_token_accuracy"] <= 1
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4] and float(rows[-1]["loss"]) < float(rows[0]["loss"])
    assert json.loads((out / "config.json").read_text())["sft"]["max_length"] == 64
    files = {p.name for p in (out / "model").iterdir()}
    assert "model.safetensors" in files and not any(f.endswith((".bin", ".pt", ".pth")) for f in files)
    tuned, _ = load_model(out / "model")
    base, _ = load_model(base_dir / "model")
    changed = [n for (n, a), b in zip(base.state_dict().items(), tuned.state_dict().values()) if not torch.equal(a, b)]
    assert len(changed) == len(base.state_dict())  # every parameter was trained


def test_data_files_mixture(params, base_dir, tmp_path):
    a = write_rows(tmp_path / "a.jsonl", make_rows(5, "a"))
    b = write_rows(tmp_path / "b.jsonl", make_rows(7, "b"))
    metrics = sft.fine_tune(params, [a, b], base_dir, tmp_path / "sft")
    assert metrics["n_examples"] == 12
    assert json.loads((tmp_path / "sft" / "config.json").read_text())["data_files"] == [str(a), str(b)]


def test_stage_data_follow_sft_data_in_order(tmp_path):
    """`sft.data` names the sources; the stage trains on their files, concatenated in that order."""
    params = validate_params({"sft": {"data": ["webr", "seed", "lion"]}})
    assert stage.data_files(params, tmp_path / "w", tmp_path / "s") == [
        tmp_path / "s" / "sft_webr.jsonl", tmp_path / "w" / "sft.jsonl", tmp_path / "s" / "sft_lion.jsonl"]


@pytest.mark.parametrize("mutate, message", [
    (lambda r: r.pop("completion"), "line 2: missing field 'completion'"),
    (lambda r: r.update(prompt="plain text"), "line 2: field 'prompt' is str, expected list"),
    (lambda r: r.update(completion=[{"role": "user", "content": "x"}]), "completion\\[0\\] has role 'user'"),
    (lambda r: r.update(prompt=[{"role": "user"}]), "prompt\\[0\\] must be"),
    (lambda r: r.update(prompt=[]), "'prompt' is an empty list"),
])
def test_bad_rows_fail_naming_file_and_place(tmp_path, mutate, message):
    rows = make_rows(3)
    mutate(rows[1])
    path = write_rows(tmp_path / "sft.jsonl", rows)
    with pytest.raises(DataError, match=message) as err:
        sft.load_sft_data([path])
    assert str(path) in str(err.value)


class _Crash(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == 5:
            raise KeyboardInterrupt("simulated kill")


def test_interrupted_sft_resumes_exactly_across_epochs(params, base_dir, world_dir, tmp_path):
    """12 rows / batch 4 = 3 steps per epoch: the crash (after step 5) and the resume fall in epoch 2, where
    the length-grouped order must come from (seed, epoch), not from the RNG state at resume time."""
    params.sft.trainer = {**params.sft.trainer, "max_steps": 8}
    data = sft.load_sft_data([world_dir / "sft.jsonl"])

    def trainer(ckpt, callbacks=None):
        model, tok = load_model(base_dir / "model", padding_side="right")
        return sft.build_trainer(params, model, tok, data, ckpt, callbacks=callbacks)

    ref = trainer(tmp_path / "ref")
    ref_metrics = sft.train(ref, tmp_path / "ref")
    assert isinstance(ref._get_train_sampler(), sft.EpochSeededLengthSampler)
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        sft.train(trainer(ckpt, callbacks=[_Crash()]), ckpt)
    resumed = trainer(ckpt)
    metrics = sft.train(resumed, ckpt)
    assert metrics["steps"] == 8 and [r["step"] for r in metrics["log"]] == list(range(1, 9))
    assert [(r["step"], r["loss"]) for r in metrics["log"]] == [(r["step"], r["loss"]) for r in ref_metrics["log"]]
    for (name, a), b in zip(ref.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_rerun_of_a_finished_sft_trains_no_step(params, base_dir, world_dir, tmp_path):
    """12 rows / batch 4 = 3 steps per epoch and a budget of 4 steps: the final checkpoint is mid-epoch, and
    resuming from it must not train a step past the budget (transformers 5.23 would run step 5)."""
    data = sft.load_sft_data([world_dir / "sft.jsonl"])

    def trainer():
        model, tok = load_model(base_dir / "model", padding_side="right")
        return sft.build_trainer(params, model, tok, data, tmp_path / "ckpt")

    first = trainer()
    done = sft.train(first, tmp_path / "ckpt")
    again = trainer()
    rerun = sft.train(again, tmp_path / "ckpt")
    assert done["steps"] == rerun["steps"] == 4 and rerun["log"] == done["log"]
    for (name, a), b in zip(first.model.state_dict().items(), again.model.state_dict().values()):
        assert torch.equal(a, b), name
