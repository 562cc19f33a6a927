"""On-disk cache of role calls, keyed by a hash of the request, so a crash or a rerun never pays twice.

One JSON file per request, ``<dir>/<key[:2]>/<key>.json``, written atomically (temp file + rename) as soon as
its answer arrives, so a killed run keeps every answer it had received. The key hashes the backend's identity
(kind, base URL, model; never a key) and the request as sent (messages, max tokens, temperature, seed).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from alignpipe.llm.base import ChatRequest, Completion


def request_key(identity: dict[str, Any], request: ChatRequest) -> str:
    """sha256 of the canonical JSON of (backend identity, request as sent)."""
    blob = json.dumps({"backend": identity, "request": request.wire()}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class DiskCache:
    """Completions by request key under one directory (safe for concurrent writers: writes are atomic)."""

    def __init__(self, directory: str | Path):
        self.dir = Path(directory)

    def _path(self, key: str) -> Path:
        return self.dir / key[:2] / f"{key}.json"

    def get(self, key: str) -> Completion | None:
        path = self._path(key)
        try:
            blob = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, json.JSONDecodeError):
            return None  # a damaged entry is a miss; the fresh answer overwrites it
        return Completion.from_json(blob["completion"])

    def put(self, key: str, request: ChatRequest, completion: Completion) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = {"template": request.template, "request": request.wire(), "completion": completion.to_json()}
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(blob, fh, ensure_ascii=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def __len__(self) -> int:
        return sum(1 for _ in self.dir.glob("*/*.json")) if self.dir.is_dir() else 0
