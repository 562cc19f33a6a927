"""Layer blocks of Hierarchical Alignment, explicit layer overrides, and where peft puts the LoRA modules."""

import re

import pytest

from alignpipe.config import ConfigError, LoraSection, VariantSection
from alignpipe.methods.hierarchical import layer_blocks, lora_config, resolve_layers


@pytest.mark.parametrize("n", range(3, 14))
def test_blocks_are_contiguous_disjoint_covering_and_near_equal(n):
    blocks = layer_blocks(n)
    assert list(blocks) == ["local", "mid", "global"]
    flat = blocks["local"] + blocks["mid"] + blocks["global"]
    assert flat == list(range(n))  # in order: contiguous, disjoint, covering
    sizes = [len(b) for b in blocks.values()]
    assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
    # The first n % 3 blocks get the extra layer (numpy.array_split's convention).
    assert sizes == sorted(sizes, reverse=True)


def test_known_depths():
    assert layer_blocks(6) == {"local": [0, 1], "mid": [2, 3], "global": [4, 5]}
    assert layer_blocks(7) == {"local": [0, 1, 2], "mid": [3, 4], "global": [5, 6]}
    b32 = layer_blocks(32)
    assert (b32["local"][-1], b32["mid"][0], b32["global"]) == (10, 11, list(range(22, 32)))


@pytest.mark.parametrize("n", [0, 1, 2])
def test_too_shallow_fails(n):
    with pytest.raises(ConfigError, match=f"{n} decoder layers.*at least 3"):
        layer_blocks(n)


def test_resolve_layers():
    assert resolve_layers(VariantSection(peft="none"), 6) is None
    assert resolve_layers(VariantSection(block="all"), 6) is None
    assert resolve_layers(VariantSection(block="global"), 6) == [4, 5]
    assert resolve_layers(VariantSection(block="global", layers=[3, 1]), 6) == [1, 3]  # layers override block


def test_out_of_range_layers_name_variant_indices_and_depth():
    with pytest.raises(ConfigError) as err:
        resolve_layers(VariantSection(layers=[2, 6, 9]), 6, name="custom")
    msg = str(err.value)
    assert "align.variants.custom.layers" in msg and "[6, 9]" in msg and "6 decoder layers" in msg


def test_block_on_shallow_model_names_variant():
    with pytest.raises(ConfigError, match="align.variants.local.block"):
        resolve_layers(VariantSection(block="local"), 2, name="local")


def test_lora_lands_only_on_chosen_layers(sft_dir):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(sft_dir / "model")
    cfg = lora_config(LoraSection(r=2, lora_alpha=4, target_modules=["q_proj", "down_proj"]), [1, 4])
    assert isinstance(cfg.target_modules, (list, set)) and cfg.layers_to_transform == [1, 4]
    peft_model = get_peft_model(model, cfg)
    pattern = re.compile(r"layers\.(\d+)\..*?(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_")
    adapted = {(int(m.group(1)), m.group(2)) for n, _ in peft_model.named_parameters() if (m := pattern.search(n))}
    assert adapted == {(1, "q_proj"), (1, "down_proj"), (4, "q_proj"), (4, "down_proj")}
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora_" in n for n in trainable)
