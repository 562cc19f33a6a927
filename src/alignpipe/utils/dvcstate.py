"""DVC's own state files after a crash: what a SIGKILL can leave behind, and the safe repair.

DVC (3.67) rewrites ``.dvc/tmp/rwlock`` in place (``dvc/rwlock.py``: ``open(path, "w")`` then ``json.dump``), under
the guard ``.dvc/tmp/rwlock.lock``. A ``dvc repro`` killed in that instant leaves the file torn, and every later dvc
command in the repo then stops with "Unable to read RWLock-file '.dvc/tmp/rwlock'. JSON structure is corrupted".
The file only lists which running dvc processes read or write which paths; with no dvc process in the repo, a torn
copy holds nothing worth keeping. The kill tests (tests/reliability) met it: killed processes' entries stay in the
file until a later command meets them, so it grows (49 KB after a kill campaign) and the write window with it.

    from alignpipe.utils.dvcstate import repair_rwlock
    repair_rwlock(".")   # -> a message when a torn rwlock was removed, else None

``python -m flows.server`` (what ``make repro`` runs) calls it before the command.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def _held(path: Path) -> Iterator[bool]:
    """Hold the lock file DVC holds (zc.lockfile, an exclusive fcntl lock) if no one does; yield whether we got it."""
    import zc.lockfile

    if not path.parent.is_dir():
        yield True
        return
    try:
        lock = zc.lockfile.LockFile(str(path))
    except zc.lockfile.LockError:
        yield False
        return
    try:
        yield True
    finally:
        lock.close()


def repair_rwlock(root: str | os.PathLike = ".") -> str | None:
    """Remove ``<root>/.dvc/tmp/rwlock`` if it is torn (not JSON) and no dvc process is working in the repo.

    "No dvc process" means both DVC locks can be taken: the repo lock (``.dvc/tmp/lock``, held by a running
    ``dvc repro``) and the rwlock's guard (``.dvc/tmp/rwlock.lock``, held while any dvc process edits it). A torn
    file while a dvc process runs is left alone (that process may be writing it this instant).

    Returns:
        What was done, for the caller to print, or None when the file was absent, whole, or busy.
    """
    tmp = Path(root) / ".dvc" / "tmp"
    path = tmp / "rwlock"
    if not _torn(path):
        return None
    with _held(tmp / "lock") as repo_free, _held(tmp / "rwlock.lock") as guard_free:
        if not (repo_free and guard_free) or not _torn(path):
            return None
        size = path.stat().st_size
        path.unlink()
    return (f"removed a torn {path} ({size} bytes, not JSON: a dvc process was killed while writing it); no dvc "
            "process was running, so it held no live entry")


def _torn(path: Path) -> bool:
    try:
        json.loads(path.read_text(encoding="utf-8"))  # DVC reads an empty file as corrupted too
    except FileNotFoundError:
        return False
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True
    return False
