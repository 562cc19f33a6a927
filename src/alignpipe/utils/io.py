"""Artifact I/O: atomic outputs, deterministic JSON, JSONL reading with file:line errors.

Every stage writes its outputs through :func:`atomic_dir` (or :func:`atomic_file`): the content is built
under a temporary sibling path and renamed into place only when complete, so a stage killed at any moment
never leaves an output that DVC or the next stage could take for complete.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alignpipe.config import ConfigError, UserError


class DataError(UserError, ValueError):
    """An input file is missing, empty or malformed; the message names the file (and line)."""


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``final`` only if the block completes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = final.with_name(f".{final.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_file(final: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``final`` for writing; rename it into place when the block completes."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.partial")
    kwargs = {"encoding": "utf-8"} if "b" not in mode else {}
    try:
        with open(tmp, mode, **kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, final)


def dumps(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, fixed indentation, trailing newline)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_json(path: str | Path, obj: Any) -> None:
    """Write deterministic JSON atomically (a kill mid-write leaves the old file or none, never a torn one)."""
    with atomic_file(path) as fh:
        fh.write(dumps(obj))


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write JSON lines atomically; returns the number of rows."""
    n = 0
    with atomic_file(path) as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_json(path: str | Path) -> Any:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); the file must be UTF-8") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None


def _check_fields(where: str, row: Any, required: dict[str, type | tuple[type, ...]] | None) -> None:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    for field, types in (required or {}).items():
        if field not in row:
            raise DataError(f"{where}: missing field '{field}'")
        if not isinstance(row[field], types):
            want = types.__name__ if isinstance(types, type) else "/".join(t.__name__ for t in types)
            raise DataError(f"{where}: field '{field}' is {type(row[field]).__name__}, expected {want}")


def read_records(
    path: str | Path, required: dict[str, type | tuple[type, ...]] | None = None
) -> list[tuple[str, dict[str, Any]]]:
    """Records of a JSON list or a JSONL file (a leading ``[`` decides), each with where it is: ``(where, record)``.

    ``where`` is ``"<file> record <i>"`` (0-based) in a list, ``"<file> line <n>"`` in JSONL; every problem
    (missing, empty, not UTF-8, bad JSON, a line over 8 MB, not an object, a missing or mistyped ``required``
    field) fails with a :class:`DataError` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with open(path, "rb") as fh:
        is_list = fh.read(4096).lstrip().startswith(b"[")
    if not is_list:
        return [(f"{path} line {n}", row) for n, row in read_jsonl_numbered(path, required)]
    data = read_json(path)
    if not data:
        raise DataError(f"{path}: empty JSON list (no records)")
    out = [(f"{path} record {i}", row) for i, row in enumerate(data)]
    for where, row in out:
        _check_fields(where, row, required)
    return out


def read_jsonl(
    path: str | Path, required: dict[str, type | tuple[type, ...]] | None = None, max_line_bytes: int = 8 << 20
) -> list[dict[str, Any]]:
    """Read a JSONL file; every bad line fails with ``file line N: what is wrong``.

    Args:
        path: the file.
        required: field name -> allowed Python type(s) that every record must have.
        max_line_bytes: lines longer than this are rejected (a runaway line is almost always corruption).
    """
    return [row for _, row in read_jsonl_numbered(path, required, max_line_bytes)]


def read_jsonl_numbered(
    path: str | Path, required: dict[str, type | tuple[type, ...]] | None = None, max_line_bytes: int = 8 << 20
) -> list[tuple[int, dict[str, Any]]]:
    """:func:`read_jsonl` with each record's line number: ``[(line, record)]`` (blank lines skipped)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    rows: list[tuple[int, dict[str, Any]]] = []
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            if len(raw) > max_line_bytes:
                raise DataError(f"{path} line {lineno}: line is {len(raw)} bytes, over the limit of {max_line_bytes} "
                                "bytes per line (a runaway line is almost always a corrupt file)")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path} line {lineno}: not UTF-8 text (byte 0x{raw[err.start]:02x} at column "
                                f"{err.start + 1}); the file must be UTF-8") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
            _check_fields(f"{path} line {lineno}", row, required)
            rows.append((lineno, row))
    if not rows:
        raise DataError(f"{path}: file is empty (no records)")
    return rows


def sha256_file(path: str | Path) -> str:
    """The file's sha256 (hex); a missing input fails naming it (stage configs digest their inputs first)."""
    if not Path(path).is_file():
        raise DataError(f"{path}: file not found (run the stage that writes it)")
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def config_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able config (keys checkpoints so a changed config never resumes)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def work_dir(stage: str, cfg: Any, root: str | Path = ".cache/alignpipe") -> Path:
    """Persistent scratch space for a stage's checkpoints, outside DVC outputs (DVC deletes outs on rerun)."""
    path = Path(os.environ.get("ALIGNPIPE_WORK_DIR", root)) / stage / config_hash(cfg)
    path.mkdir(parents=True, exist_ok=True)
    return path


__all__ = [
    "ConfigError",
    "DataError",
    "atomic_dir",
    "atomic_file",
    "config_hash",
    "dumps",
    "read_json",
    "read_jsonl",
    "read_jsonl_numbered",
    "read_records",
    "sha256_file",
    "work_dir",
    "write_json",
    "write_jsonl",
]
