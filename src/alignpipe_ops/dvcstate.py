"""DVC's own state files after a crash: what a SIGKILL can leave behind, and the safe repairs.

DVC (3.67) rewrites ``.dvc/tmp/rwlock`` in place (``dvc/rwlock.py``: ``open(path, "w")`` then ``json.dump``), under
the guard ``.dvc/tmp/rwlock.lock``. A ``dvc repro`` killed in that instant leaves the file torn, and every later dvc
command in the repo then stops with "Unable to read RWLock-file '.dvc/tmp/rwlock'. JSON structure is corrupted".
The file only lists which running dvc processes read or write which paths; with no dvc process in the repo, a torn
copy holds nothing worth keeping. The kill tests (tests/reliability) met it: killed processes' entries stay in the
file until a later command meets them, so it grows (49 KB after a kill campaign) and the write window with it.

DVC also rewrites ``dvc.lock`` in place after every stage (``dvc/utils/serialize/_common.py _dump_data``:
``open(path, "w+")`` then a YAML dump in 8 KB flushes). A kill in that instant leaves it empty or cut short: empty,
every later dvc command stops with "dvc.lock is invalid"; cut short, it still loads but has lost the records of the
stages after the cut, which then rerun. Git keeps the committed copy, not the records of stages run since. So every
stage run by DVC first snapshots the lock file it starts with (:func:`snapshot_lockfile`, from
``flows._common.main``; no dvc write can happen while a stage's command runs), and :func:`repair_lockfile` puts that
snapshot back when the file is torn *by DVC's own in-place rewrite*: the same inode, written after the snapshot. The
stage whose record was being written is the only one lost; it reruns.

With ``core.autostage`` (on in this project), DVC ends every command by staging ``dvc.lock`` in git (dulwich writes
``.git/index.lock``, then renames it over ``.git/index``). A kill in that instant leaves ``.git/index.lock``, and
every later ``dvc repro`` runs its stages and then fails ("unexpected error ... File exists: '.git/index.lock'");
git commands fail too. :func:`repair_git_index_lock` removes it when no process has it open (a live git or dulwich
writer holds it open until the rename) and no dvc process works in the repo.

    from alignpipe_ops.dvcstate import repair
    repair(".")   # -> messages for what was repaired (rwlock removed, dvc.lock restored, git index.lock removed)

``python -m flows.server`` (what ``make repro`` runs) calls it before the command; by hand (after a crash, before a
plain ``dvc repro``): ``python -m alignpipe_ops.dvcstate``.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alignpipe.utils.io import atomic_file

SNAPSHOT_DIR = Path(".dvc") / "tmp" / "alignpipe"  # DVC's own tmp dir: git-ignored, never a DVC output


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


# -- dvc.lock ---------------------------------------------------------------------------------------------------
def snapshot_lockfile(root: str | os.PathLike = ".") -> bool:
    """Keep a copy of ``<root>/dvc.lock`` as a stage run by DVC starts (before DVC rewrites it for this stage).

    Call it only from inside a stage's command (``DVC_STAGE`` set): DVC holds the repo lock, writes ``dvc.lock``
    only between commands and refuses to start one on a lock it cannot load, so the file is whole and still; it is
    copied as it is (no parse: this runs at every stage's start; :func:`repair_lockfile` checks the copy before
    using it). Returns whether a snapshot was written.
    """
    root = Path(root)
    path = root / "dvc.lock"
    try:
        text = path.read_text(encoding="utf-8")
        st = path.stat()
    except FileNotFoundError:
        return False
    meta = {"ino": st.st_ino, "mtime_ns": st.st_mtime_ns}
    for name, content in (("dvc.lock", text), ("dvc.lock.json", json.dumps(meta))):
        with atomic_file(root / SNAPSHOT_DIR / name) as fh:  # the copy before its metadata
            fh.write(content)
    return True


def repair_lockfile(root: str | os.PathLike = ".") -> str | None:
    """Put back the snapshot of ``<root>/dvc.lock`` if DVC was killed while rewriting the file.

    Torn means: DVC rewrote this very file in place after the snapshot (same inode, newer mtime) and it either does
    not load as a lock file (empty, cut inside YAML, not DVC's schema) or was cut short: its stages are a proper
    prefix of the snapshot's (every entry but the last byte-equal) and the lost ones are still stages of
    ``dvc.yaml``. Anything else (a file git or an editor wrote, a ``dvc remove``, a whole rewrite) is left alone, as
    is everything while a dvc process holds the repo lock.

    Returns:
        What was done, for the caller to print, or None.
    """
    root = Path(root)
    path, snap = root / "dvc.lock", root / SNAPSHOT_DIR
    try:
        meta = json.loads((snap / "dvc.lock.json").read_text(encoding="utf-8"))
        saved = (snap / "dvc.lock").read_text(encoding="utf-8")
        st = path.stat()
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    if st.st_ino != meta.get("ino") or st.st_mtime_ns <= meta.get("mtime_ns", 0):
        return None  # not DVC's in-place rewrite after the snapshot
    saved_stages = _lock_stages(saved)
    if saved_stages is None:
        return None
    with _held(root / ".dvc" / "tmp" / "lock") as repo_free:
        if not repo_free:
            return None
        try:
            why = _torn_lock(path.read_text(encoding="utf-8"), saved_stages, _pipeline_stages(root))
        except UnicodeDecodeError:
            why = "cut inside a UTF-8 character"
        if why is None:
            return None
        with atomic_file(path) as fh:
            fh.write(saved)
    return (f"restored {path} from the copy taken when its last stage started: it was {why} (a dvc process was "
            f"killed while rewriting it); that stage's record is lost and it will rerun")


def repair(root: str | os.PathLike = ".") -> list[str]:
    """Every repair here, in the order dvc needs them; the messages of those that did something."""
    return [m for m in (repair_rwlock(root), repair_lockfile(root), repair_git_index_lock(root)) if m]


def _lock_stages(text: str) -> dict[str, Any] | None:
    """The ``stages`` of a lock file's text as DVC would load it, or None if DVC would refuse it."""
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA
    from dvc.utils.serialize import YAMLFileCorruptedError, parse_yaml
    from voluptuous import Invalid

    try:
        data = parse_yaml(text, "dvc.lock")
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            return None
        COMPILED_LOCKFILE_SCHEMA(data)
    except (YAMLFileCorruptedError, Invalid):
        return None
    return data["stages"]


def _torn_lock(text: str, saved: dict[str, Any], pipeline: set[str]) -> str | None:
    if not text.strip():
        return "empty"
    stages = _lock_stages(text)
    if stages is None:
        return f"{len(text)} bytes that do not load as a lock file"
    names, before = list(stages), list(saved)
    cut = len(names)
    if not (0 < cut < len(before) and names == before[:cut]):
        return None
    if any(stages[n] != saved[n] for n in names[:-1]):
        return None  # more than the last entry changed: a whole rewrite, not a cut
    lost = before[cut:]
    if any(n.split("@")[0] not in pipeline for n in lost):
        return None  # a stage gone from dvc.yaml: `dvc remove`, not a cut
    return f"cut short after {len(text)} bytes, losing the records of {len(lost)} stage(s) ({', '.join(lost[:3])}" \
        f"{', ...' if len(lost) > 3 else ''})"


def _pipeline_stages(root: Path) -> set[str]:
    import yaml

    try:
        data = yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8")) or {}
    except (FileNotFoundError, yaml.YAMLError):
        return set()
    return set(data.get("stages") or {})


# -- git's index lock -------------------------------------------------------------------------------------------
def repair_git_index_lock(root: str | os.PathLike = ".", min_age_s: float = 2.0) -> str | None:
    """Remove ``<root>/.git/index.lock`` left by a killed writer (DVC's autostage, or git itself).

    Stale means: older than ``min_age_s`` (a writer closes the file a moment before renaming it), open in no process
    this user can see, and no dvc process holds the repo lock. Returns what was done, or None.
    """
    root = Path(root)
    lock = root / ".git" / "index.lock"
    if not lock.is_file():
        return None
    with _held(root / ".dvc" / "tmp" / "lock") as repo_free:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return None
        if not repo_free or age < min_age_s or _open_anywhere(lock):
            return None
        lock.unlink(missing_ok=True)
    return (f"removed a stale {lock} ({age:.0f} s old, open in no process: a git index writer, e.g. DVC's "
            "autostage, was killed before renaming it); git's index is the one before that write")


def _open_anywhere(path: Path) -> bool:
    import psutil

    target = str(path.resolve())
    for proc in psutil.process_iter():
        try:
            if any(f.path == target for f in proc.open_files()):
                return True
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue  # a process we may not inspect (another user's) is taken as not holding it
    return False


if __name__ == "__main__":
    done = repair(".")
    for message in done:
        print(message, file=sys.stderr)
    print("nothing to repair" if not done else f"{len(done)} repair(s) done", file=sys.stderr)
