"""Which decoder layers a variant adapts (Hierarchical Alignment, arXiv 2510.12044) and its peft LoraConfig.

Usage::

    from alignpipe.methods.hierarchical import layer_blocks, resolve_layers, lora_config
    layer_blocks(6)        # {"local": [0, 1], "mid": [2, 3], "global": [4, 5]}
    layer_blocks(32)       # local 0-10, mid 11-21, global 22-31 (Llama-3.1-8B, Qwen1.5-7B)
    layers = resolve_layers(params.align.variants["global"], n_layers=6, name="global")   # [4, 5]
    peft_cfg = lora_config(params.align.lora, layers)   # LoraConfig(layers_to_transform=[4, 5], ...)

The paper splits the N decoder layers by position into three contiguous thirds: local (syntax, fluency),
intermediate (coherence, logic) and global (factuality, instruction adherence), and trains LoRA on one of them.
When N is not a multiple of 3 the first ``N % 3`` blocks get one extra layer each, the convention of
``numpy.array_split`` / ``torch.tensor_split`` (7 layers: 3/2/2, 8 layers: 3/3/2).
"""

from __future__ import annotations

from typing import Any

from alignpipe.config import ConfigError, LoraSection, VariantSection

BLOCKS = ("local", "mid", "global")


def layer_blocks(n_layers: int) -> dict[str, list[int]]:
    """Split ``range(n_layers)`` into three contiguous, disjoint, near-equal blocks (first blocks get the extra).

    Raises:
        ConfigError: fewer than 3 layers (a block would be empty).
    """
    if not isinstance(n_layers, int) or n_layers < 3:
        raise ConfigError(f"model has {n_layers} decoder layers; local/mid/global blocks need at least 3")
    base, extra = divmod(n_layers, 3)
    out: dict[str, list[int]] = {}
    start = 0
    for i, name in enumerate(BLOCKS):
        size = base + (1 if i < extra else 0)
        out[name] = list(range(start, start + size))
        start += size
    return out


def resolve_layers(variant: VariantSection, n_layers: int, name: str = "variant") -> list[int] | None:
    """Decoder layer indices the variant adapts, sorted; None means every layer (and full-parameter DPO).

    Args:
        variant: the ``align.variants.<name>`` section (``layers`` overrides ``block``).
        n_layers: the model's number of decoder layers.
        name: the variant's name, for error messages.

    Raises:
        ConfigError: explicit layers outside ``[0, n_layers)`` (the message names the variant, the bad indices
            and the model depth), or a block on a model with fewer than 3 layers.
    """
    if variant.peft == "none":
        return None
    if variant.layers is not None:
        bad = sorted(i for i in variant.layers if not 0 <= i < n_layers)
        if bad:
            raise ConfigError(
                f"align.variants.{name}.layers: indices {bad} are outside the model's {n_layers} decoder layers "
                f"(valid: 0..{n_layers - 1})"
            )
        return sorted(variant.layers)
    if variant.block == "all":
        return None
    try:
        return layer_blocks(n_layers)[variant.block]
    except ConfigError as err:
        raise ConfigError(f"align.variants.{name}.block = {variant.block!r}: {err}") from None


def lora_config(lora: LoraSection, layers: list[int] | None) -> Any:
    """A ``peft.LoraConfig`` adapting ``lora.target_modules`` in ``layers`` only (all layers when None).

    ``target_modules`` is passed as a list: peft treats a string as a full-name regex and then rejects
    ``layers_to_transform``. ``layers_pattern="layers"`` names the ModuleList of Llama/Qwen/Mistral decoders
    (``model.layers.<i>.self_attn.q_proj``), so the layer index is read from that path component only.
    """
    from peft import LoraConfig

    kwargs: dict[str, Any] = {}
    if layers is not None:
        kwargs = {"layers_to_transform": list(layers), "layers_pattern": "layers"}
    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.lora_alpha,
        lora_dropout=lora.lora_dropout,
        target_modules=list(lora.target_modules),
        bias="none",
        task_type="CAUSAL_LM",
        **kwargs,
    )


def _adaptable(model: Any) -> list[str]:
    """Paths of the modules LoRA can adapt in ``model``: peft's supported layer kinds (linear, embedding,
    convolution, multi-head attention, transformers' Conv1D)."""
    import torch  # third-party and heavy: only where a model is checked (the stages have loaded it by then)

    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.modules.conv._ConvNd, torch.nn.MultiheadAttention)
    return [name for name, module in model.named_modules()
            if name and (isinstance(module, kinds) or type(module).__name__ == "Conv1D")]


def check_target_modules(model: Any, target_modules: list[str], key: str) -> None:
    """Fail when an entry of ``target_modules`` names no module of ``model`` that LoRA can adapt.

    peft matches a list entry against the end of each module path (``q_proj`` or ``self_attn.q_proj``) and fails
    only when NO entry matches; a misspelled entry next to correct ones would be dropped without a word and the
    adapter trained on the rest. Checked on the loaded model, before the trainer is built.

    Raises:
        ConfigError: naming ``key`` (e.g. ``align.lora.target_modules``) and its value, the entries that match
            nothing, and the module names LoRA can adapt in this model.
    """
    paths = _adaptable(model)
    bad = [t for t in target_modules if not any(p == t or p.endswith(f".{t}") for p in paths)]
    if bad:
        names = sorted({p.rsplit(".", 1)[-1] for p in paths})
        where = getattr(model, "name_or_path", None)
        raise ConfigError(f"{key} = {list(target_modules)}: {', '.join(map(repr, bad))} match"
                          f"{'es' if len(bad) == 1 else ''} no module of the model"
                          f"{f' ({where})' if where else ''} that LoRA can adapt; its module names are {names}")


def num_layers(model: Any) -> int:
    """Number of decoder layers of a transformers model (text config for multimodal ones)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.num_hidden_layers)
