"""Artifact I/O: atomic outputs, deterministic JSON, JSONL reading with file:line errors.

Every stage writes its outputs through :func:`atomic_dir` (or :func:`atomic_file`): the content is built
under a temporary sibling path and renamed into place only when complete, so a stage killed at any moment
never leaves an output that DVC or the next stage could take for complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from alignpipe.config import ConfigError, UserError


class DataError(UserError, ValueError):
    """An input file is missing, empty or malformed; the message names the file (and line)."""


def _lone_surrogate(obj: Any, where: str = "") -> str | None:
    """Where the first string of a parsed JSON value holds a lone UTF-16 surrogate, e.g. ``field 'prompt.0.content'
    ('\\ud800' at character 3)``; None when there is none. ``"\\ud800"`` unpaired is valid JSON but no Unicode
    character: writing it as UTF-8 fails later, far from the input (a paired escape decodes to one character)."""
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")  # C speed; only a failing string is looked at closer
            return None
        except UnicodeEncodeError as err:
            return f"{f'field {where!r}' if where else 'the text'} ({obj[err.start]!r} at character {err.start})"
    if isinstance(obj, dict):
        items: Iterable[tuple[Any, Any]] = obj.items()
    elif isinstance(obj, list):
        items = enumerate(obj)
    else:
        return None
    for key, value in items:
        path = f"{where}.{key}" if where else str(key)
        if isinstance(key, str) and _lone_surrogate(key):
            return f"key {path!r}"
        found = _lone_surrogate(value, path)
        if found:
            return found
    return None


def _has_surrogate_escape(raw: bytes) -> bool:
    return b"\\ud" in raw or b"\\uD" in raw


def _surrogate_error(where: str, found: str) -> DataError:
    return DataError(f"{where}: {found} holds a lone surrogate, an unpaired \\ud800-\\udfff escape that is no "
                     "Unicode character and cannot be written as UTF-8: remove it, or pair it into one character")


class OutputError(UserError, OSError):
    """An output could not be written: a read-only or full disk, a directory without write permission (a fault of
    the machine, not of the stage); the message names the output, the path the system refused and why."""


# errno values that mean "this place cannot be written" (the stage's inputs and code are not at fault)
_WRITE_FAULTS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG}
# How Rust libraries (safetensors, tokenizers) report an I/O error, which is then no OSError: "... (os error 28)" or
# "IoError(Os { code: 28, ... })".
_RUST_IO = re.compile(r"\(os error (\d+)\)|\bOs \{ code: (\d+)")


def _write_fault(err: BaseException, within: Path | None = None) -> tuple[int, str | None] | None:
    """``(errno, path or None)`` when ``err`` is a write fault of the machine (see :data:`_WRITE_FAULTS`).

    With ``within`` (the partial output being written), a permission error on a path elsewhere is not one: the block
    may have failed to READ an input, which is its own story."""
    if isinstance(err, OutputError):
        return None
    if isinstance(err, OSError):
        code, path = err.errno, err.filename
    else:
        found = _RUST_IO.search(str(err)[:2000])
        code, path = (int(found.group(1) or found.group(2)), None) if found else (None, None)
    if code not in _WRITE_FAULTS:
        return None
    if within is not None and code in (errno.EACCES, errno.EPERM) and path is not None:
        if not Path(os.path.abspath(path)).is_relative_to(os.path.abspath(within)):
            return None
    return code, (os.fsdecode(path) if path is not None else None)


# torch.save's zip writer reports a failed write without an errno (a full disk, most often)
_TORCH_WRITE = re.compile(r"PytorchStreamWriter failed writing file (\S+): file write failed")


def machine_fault(err: BaseException) -> OutputError | None:
    """The one-line error for a write fault met outside an output's atomic block (a checkpoint or cache file the
    trainer writes mid-run): names the path where known, the cause and what to do; None for anything else.

    The stage's flow wrapper turns such an exception into this :class:`OutputError`, so a full or read-only disk
    ends the stage with one line and no traceback, whoever was writing."""
    fault = _write_fault(err)
    if fault is not None:
        code, path = fault
        where = path or "a file of the stage (its outputs, checkpoints or caches)"
        if code in (errno.EACCES, errno.EPERM):
            what, todo = "no permission", "make it accessible"
        else:
            what = os.strerror(code)
            todo = "free disk space" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "make it writable"
        out = OutputError(f"cannot write {where}: {what} [{errno.errorcode[code]}]; {todo}, then rerun (earlier "
                          "outputs are left as they were; training resumes from its last checkpoint)")
        out.errno = code
        return out
    found = _TORCH_WRITE.search(str(err)[:2000])
    if found is not None:
        return OutputError(f"cannot write a tensor file (torch.save: writing {found.group(1)} failed, most often a "
                           "full disk); free disk space, then rerun (earlier outputs are left as they were; training "
                           "resumes from its last checkpoint)")
    return None


def _output_error(final: Path, err: BaseException, within: Path | None = None) -> OutputError | None:
    """The one-line error for a write fault met while writing ``final``; None for anything else (re-raised)."""
    fault = _write_fault(err, within)
    if fault is None:
        return None
    code, path = fault
    at = f" ({path})" if path and Path(path) != final else ""
    todo = "free disk space" if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG) else "make it writable"
    out = OutputError(f"cannot write {final}{at}: {os.strerror(code)} [{errno.errorcode[code]}]; {todo}, then rerun "
                      "(earlier outputs are left as they were)")
    out.errno = code  # an OSError still, for callers that tolerate one (the message stays the one line above)
    return out


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``final`` only if the block completes.

    A read-only or full disk (met here or in the block: an ``OSError`` such as ENOSPC / EROFS / EACCES, or a
    library's "(os error 28)") raises :class:`OutputError` naming ``final`` and the cause; the partial directory is
    removed and ``final`` is left as it was.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.partial")
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir()
    except OSError as err:
        raise _output_error(final, err) or err from None
    try:
        yield tmp
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        fault = _output_error(final, err, within=tmp)
        if fault is not None:
            raise fault from None
        raise
    old = final.with_name(f".{final.name}.old")
    try:
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            final.rename(old)
        tmp.rename(final)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not final.exists():
            old.rename(final)  # put the earlier output back
        raise _output_error(final, err) or err from None
    _fsync_dir(final.parent)
    if old.exists():
        shutil.rmtree(old)


@contextlib.contextmanager
def atomic_file(final: str | Path, mode: str = "w") -> Iterator[Any]:
    """Open a temporary sibling of ``final`` for writing; rename it into place when the block completes.

    A write fault (read-only or full disk, no permission) raises :class:`OutputError` naming ``final`` and the
    cause; the partial file is removed and ``final`` is left as it was.
    """
    final = Path(final)
    tmp = final.with_name(f".{final.name}.partial")
    kwargs = {"encoding": "utf-8"} if "b" not in mode else {}
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        fh = open(tmp, mode, **kwargs)  # noqa: SIM115  (closed below, on every path)
    except OSError as err:
        raise _output_error(final, err) or err from None
    try:
        with fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        fault = _output_error(final, err, within=tmp)
        if fault is not None:
            raise fault from None
        raise


def dumps(obj: Any) -> str:
    """Deterministic JSON text (sorted keys, fixed indentation, trailing newline)."""
    return json.dumps(obj, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def one_line(obj: Any) -> str:
    """Compact JSON on one line (sorted keys): for a log message, where a pretty-printed dump spans a screen."""
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(", ", ": "), default=str)


def write_json(path: str | Path, obj: Any) -> None:
    """Write deterministic JSON atomically (a kill mid-write leaves the old file or none, never a torn one).

    Text that cannot be UTF-8 (a lone surrogate) fails with a :class:`DataError` naming the file and the field."""
    text = dumps(obj)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise _surrogate_error(str(path), _lone_surrogate(obj) or "the text") from None
    with atomic_file(path) as fh:
        fh.write(text)


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write JSON lines atomically; returns the number of rows.

    A row whose text cannot be UTF-8 (a lone surrogate) fails with a :class:`DataError` naming the file, the
    record (its 1-based line, and its ``id`` when it has one) and the field; nothing is written."""
    n = 0
    with atomic_file(path) as fh:
        for row in rows:
            n += 1
            line = json.dumps(row, sort_keys=True, ensure_ascii=False) + "\n"
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                rid = f" (id {row['id']!r})" if isinstance(row, dict) and isinstance(row.get("id"), str) else ""
                raise _surrogate_error(f"{path} record {n}{rid}", _lone_surrogate(row) or "the text") from None
            fh.write(line)
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
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno}: not valid JSON ({err.msg}, column {err.colno})") from None
    if "\\ud" in text or "\\uD" in text:  # an escaped surrogate; a lone one is no text
        found = _lone_surrogate(data)
        if found:
            raise _surrogate_error(str(path), found)
    return data


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


_JSON_ARRAY = ": the file holds a JSON array, but JSON Lines is expected (one JSON object per line)"


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
            # The first record opening a JSON array: the file is one JSON document, not JSON Lines.
            array = "" if rows or not line.lstrip().startswith("[") else _JSON_ARRAY
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path} line {lineno}: not valid JSON ({err.msg}, column {err.colno})"
                                f"{array}") from None
            if array and isinstance(row, list):
                raise DataError(f"{path} line {lineno}: expected a JSON object, got list{array}")
            if _has_surrogate_escape(raw):
                found = _lone_surrogate(row)
                if found:
                    raise _surrogate_error(f"{path} line {lineno}", found)
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
    "OutputError",
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
