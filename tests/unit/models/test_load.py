"""load_model: local directories load; bad paths fail naming the path; missing pad/chat template get defaults."""

import json
import os
import shutil

import pytest

from alignpipe.config import ModelSection
from alignpipe.models import load_model
from alignpipe.models.load import DEFAULT_CHAT_TEMPLATE, looks_like_hub_id
from alignpipe.utils.io import DataError


def test_offline_in_tests():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_local_directory_loads_ready_for_generation(base_dir):
    model, tok = load_model(base_dir / "model", ModelSection())
    assert not model.training and model.device.type in ("cpu", "cuda")
    assert tok.padding_side == "left" and tok.pad_token == "<|pad|>"
    assert model.config.pad_token_id == tok.pad_token_id
    _, right = load_model(str(base_dir / "model"), padding_side="right")
    assert right.padding_side == "right"


def test_missing_path_names_the_path(tmp_path):
    missing = tmp_path / "no" / "such" / "model"
    with pytest.raises(DataError, match="model directory not found") as err:
        load_model(missing, ModelSection())
    assert str(missing) in str(err.value)


def test_directory_without_config_is_not_a_model(tmp_path):
    (tmp_path / "weights.txt").write_text("not a model")
    with pytest.raises(DataError, match=r"not a model directory \(no config.json\)") as err:
        load_model(tmp_path, ModelSection())
    assert str(tmp_path) in str(err.value)
    with pytest.raises(DataError, match="found a file"):
        load_model(tmp_path / "weights.txt")


def test_hub_id_offline_fails_naming_the_id():
    with pytest.raises(DataError, match="hub model 'alignpipe-test/does-not-exist' \\(revision v1\\)"):
        load_model("alignpipe-test/does-not-exist", ModelSection(revision="v1"))


@pytest.mark.parametrize("name, hub", [("Qwen/Qwen1.5-7B", True), ("meta-llama/Llama-3.1-8B", True),
                                       ("data/base/model", False), ("./org/name", False), ("/abs/x", False),
                                       ("gpt2", False)])
def test_hub_id_shape(name, hub):
    assert looks_like_hub_id(name) is hub


def test_tokenizer_without_pad_or_template_gets_defaults(base_dir, tmp_path):
    target = tmp_path / "plain"
    shutil.copytree(base_dir / "model", target)
    (target / "chat_template.jinja").unlink()
    cfg = json.loads((target / "tokenizer_config.json").read_text())
    cfg.pop("pad_token", None)
    (target / "tokenizer_config.json").write_text(json.dumps(cfg))
    model, tok = load_model(target)
    assert tok.pad_token == tok.eos_token and tok.chat_template == DEFAULT_CHAT_TEMPLATE
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True, tokenize=False)
    assert text == "<|bos|><|user|>\nHi<|eos|><|assistant|>\n"


def test_peft_adapter_directory_loads_on_its_base(base_dir, tmp_path):
    """An align@variant output (LoRA adapter + tokenizer) loads merged onto the base it names."""
    import torch
    from peft import LoraConfig, get_peft_model

    base, tok = load_model(base_dir / "model", padding_side="right")
    peft_model = get_peft_model(base, LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    tok.save_pretrained(tmp_path / "adapter")
    assert not (tmp_path / "adapter" / "config.json").exists()
    ids = torch.tensor([tok("Velmora has a harbor")["input_ids"]])
    with torch.no_grad():
        expected = peft_model(ids).logits
    merged, tok2 = load_model(tmp_path / "adapter")
    assert type(merged).__name__ == "LlamaForCausalLM" and tok2.padding_side == "left"
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, expected, atol=1e-5)
    (tmp_path / "adapter" / "adapter_model.safetensors").unlink()
    with pytest.raises(DataError, match="no adapter_model.safetensors"):
        load_model(tmp_path / "adapter")
