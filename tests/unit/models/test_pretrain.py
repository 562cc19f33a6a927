"""Build + pretrain: model shape, packing, loss goes down, saved dir loads, resume after a crash, base stage."""

import json

import pytest
import torch
from transformers import TrainerCallback

from alignpipe.config import BaseSection
from alignpipe.models import pretrain as pt
from alignpipe.stages import base as stage
from alignpipe.models.training import last_checkpoint
from alignpipe.utils.io import DataError


def test_build_model_uses_tokenizer_ids_and_seed(arch, tokenizer):
    a, b = pt.build_model(arch, tokenizer, seed=1), pt.build_model(arch, tokenizer, seed=1)
    cfg = a.config
    assert cfg.vocab_size == len(tokenizer) and cfg.num_hidden_layers == 2 and cfg.hidden_size == 32
    assert (cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id) == (
        tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert a.generation_config.eos_token_id == tokenizer.eos_token_id
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_pack_corpus_blocks_and_split(corpus, tokenizer):
    blocks = pt.pack_corpus(corpus, tokenizer, 32)
    assert blocks and all(len(b) == 32 for b in blocks)
    flat = [t for b in blocks for t in b]
    assert flat[0] == tokenizer.bos_token_id and tokenizer.eos_token_id in flat
    # Chat-formatted documents keep their role tokens.
    assert tokenizer.convert_tokens_to_ids("<|assistant|>") in flat
    train, held = pt.split_blocks(blocks, seed=0)
    assert len(held) >= 1 and len(train) + len(held) == len(blocks)
    assert pt.split_blocks(blocks, seed=0) == (train, held)
    with pytest.raises(DataError, match="fewer than 2 blocks"):
        pt.pack_corpus(["tiny"], tokenizer, 32)


def _run(arch, tokenizer, corpus, ckpt, callbacks=None, max_steps=12):
    model = pt.build_model(arch, tokenizer, seed=0)
    section = BaseSection(block_size=32, trainer={"max_steps": max_steps, "save_steps": 4, "logging_steps": 2,
                                                  "per_device_train_batch_size": 4, "disable_tqdm": True})
    blocks = pt.pack_corpus(corpus, tokenizer, 32)
    return model, pt.pretrain(model, tokenizer, blocks, section, seed=0, checkpoint_dir=ckpt, callbacks=callbacks)


class _Crash(TrainerCallback):
    """Simulates a kill after step `at` (checkpoints before it are complete)."""

    def __init__(self, at):
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt("simulated kill")


class _FirstStep(TrainerCallback):
    def __init__(self):
        self.first = None

    def on_step_end(self, args, state, control, **kwargs):
        if self.first is None:
            self.first = state.global_step


def test_loss_decreases_and_curve_reaches_last_step(arch, tokenizer, corpus, tmp_path):
    _, result = _run(arch, tokenizer, corpus, tmp_path / "ckpt")
    losses = [row["loss"] for row in result.log]
    assert result.steps == 12 and [row["step"] for row in result.log] == [2, 4, 6, 8, 10, 12]
    assert losses[-1] < losses[0] - 0.5
    assert result.final_loss == losses[-1] and 1 < result.eval_perplexity < len(tokenizer)


def test_interrupted_run_resumes_from_checkpoint_and_matches(arch, tokenizer, corpus, tmp_path):
    """Bit-equal: Trainer restores model, optimizer, scheduler, RNG states and the data order on resume."""
    ref_model, ref = _run(arch, tokenizer, corpus, tmp_path / "ref")
    ckpt = tmp_path / "ckpt"
    with pytest.raises(KeyboardInterrupt):
        _run(arch, tokenizer, corpus, ckpt, callbacks=[_Crash(at=10)])
    assert last_checkpoint(ckpt).endswith("checkpoint-8")
    (ckpt / "checkpoint-9").mkdir()  # a checkpoint cut short while saving: ignored and removed
    first = _FirstStep()
    model, resumed = _run(arch, tokenizer, corpus, ckpt, callbacks=[first])
    assert first.first == 9 and resumed.steps == 12
    assert not (ckpt / "checkpoint-9").exists()
    assert resumed.log == ref.log  # log_history is restored, so the curve covers the whole run
    for (name, a), b in zip(ref_model.state_dict().items(), model.state_dict().values()):
        assert torch.equal(a, b), name


def test_base_stage_outputs_load_and_are_byte_identical(helpers, world_dir, tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    params = helpers.make_params()
    metrics = stage.run(params, world_dir, tmp_path / "base")
    out = tmp_path / "base"
    assert {p.name for p in out.iterdir()} == {"model", "metrics.json", "config.json", "log.csv"}
    files = {p.name for p in (out / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pth", ".pkl")) for f in files)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["steps"] == 12 and metrics["vocab_size"] <= 300 and metrics["n_params"] > 10_000
    assert {"final_loss", "eval_perplexity"} <= set(metrics) and "log" not in metrics
    assert (out / "log.csv").read_text().splitlines()[0] == "step,loss"
    config = json.loads((out / "config.json").read_text())
    assert config["base"]["block_size"] == 32 and config["seed"] == params.seed

    model = AutoModelForCausalLM.from_pretrained(out / "model", use_safetensors=True)
    tok = AutoTokenizer.from_pretrained(out / "model")
    assert model.config.vocab_size == len(tok) and tok.chat_template and tok.pad_token == "<|pad|>"

    # A fresh run (new checkpoint dir: no resuming) writes the same bytes.
    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "other_work"))
    stage.run(params, world_dir, tmp_path / "again")
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        assert path.read_bytes() == (tmp_path / "again" / path.relative_to(out)).read_bytes(), path.name


def test_base_stage_resolves_a_given_model(helpers, base_dir, tmp_path):
    params = helpers.make_params(model={"name_or_path": str(base_dir / "model")})
    metrics = stage.run(params, tmp_path / "no_world_needed", tmp_path / "base")
    assert metrics["source"] == str(base_dir / "model") and metrics["steps"] == 0
    assert (tmp_path / "base" / "model" / "model.safetensors").is_file()
    assert "base" not in json.loads((tmp_path / "base" / "config.json").read_text())


def test_missing_corpus_names_the_path(helpers, tmp_path):
    with pytest.raises(DataError, match="corpus.txt"):
        stage.run(helpers.make_params(), tmp_path / "nowhere", tmp_path / "base")


def test_block_size_must_fit_the_position_embeddings(helpers, world_dir, tmp_path):
    from alignpipe.config import ConfigError

    params = helpers.make_params()
    params.base.block_size = 256  # > max_position_embeddings (128) of the tiny architecture
    with pytest.raises(ConfigError, match="base.block_size = 256"):
        stage.run(params, world_dir, tmp_path / "base")


def test_chat_documents_pack_like_the_chat_template(tokenizer):
    doc = "<|user|>\nDescribe Velmora.<|eos|><|assistant|>\nVelmora has a harbor.<|eos|>"
    messages = [{"role": "user", "content": "Describe Velmora."},
                {"role": "assistant", "content": "Velmora has a harbor."}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    blocks = pt.pack_corpus([doc, doc], tokenizer, len(rendered))
    assert blocks[0] == rendered  # bos + turns, no doubled eos


def test_chat_documents_render_train_dialogues_once_per_copy(tmp_path, corpus, helpers):
    from alignpipe.stages.base import chat_documents
    from alignpipe.models.tokenizer import train_tokenizer

    world = helpers.write_world(tmp_path / "w", corpus)
    tok = train_tokenizer(corpus)
    docs = chat_documents(world, tok, copies=2)
    assert len(docs) == 12 and docs[0] == docs[6]
    assert docs[0] == "<|user|>\nDescribe Velmora.<|eos|><|assistant|>\nVelmora has a lamp near the door.<|eos|>"
    assert chat_documents(world, tok, copies=0) == []


def test_stage_tokenizer_can_learn_the_dialogues_words(tmp_path, helpers):
    # "lamp" and "door" occur only in the train dialogues (sft.jsonl), never in corpus.txt.
    docs = [f"{n} is a town. {n} has a river." for n in helpers.NAMES for _ in range(3)]
    world = helpers.write_world(tmp_path / "w", docs)
    params = helpers.make_params()
    params.base.tokenizer.vocab_size = 600  # room for every word of this small world
    assert len(stage.train_tokenizer(params, world).tokenize(" lamp")) > 1  # corpus only (the default)
    params.base.tokenizer.include_dialogues = True
    tok = stage.train_tokenizer(params, world)
    assert tok.tokenize(" lamp") == ["Ġlamp"] and tok.tokenize(" door.") == ["Ġdoor", "."]
