"""A working copy of a checkout for a run that must not touch it: the tests that run stages or `dvc repro` in a copy,
and `bench/repro.py`'s fresh runs.

    copy_repo(Path("."), Path("/tmp/run1"))   # tracked + untracked, non-ignored files; a fresh git repo, one commit

What `git ls-files --cached --others --exclude-standard` lists is copied (so no `data/`, caches or venv, and the
uncommitted edits of the checkout are in), then committed in a new repository, which DVC needs to run there.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

_IDENTITY = {"GIT_AUTHOR_NAME": "alignpipe", "GIT_AUTHOR_EMAIL": "alignpipe@localhost",
             "GIT_COMMITTER_NAME": "alignpipe", "GIT_COMMITTER_EMAIL": "alignpipe@localhost"}


def copy_repo(src: Path, dst: Path, message: str = "copy", edit: Callable[[Path], None] | None = None) -> Path:
    """Copy the checkout at ``src`` into ``dst`` (created if needed) as a fresh git repository; returns ``dst``.
    ``edit(dst)``, if given, changes the copy before its commit (e.g. a profile applied to its params)."""
    src, dst = Path(src), Path(dst)
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=src,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        if (src / rel).is_file():  # a file deleted but not yet staged is still listed
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, dst / rel)
    if edit is not None:
        edit(dst)
    env = {**os.environ, **_IDENTITY}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", message]):
        subprocess.run(cmd, cwd=dst, check=True, env=env)
    return dst


__all__ = ["copy_repo"]
