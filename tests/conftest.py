"""Test-wide settings: offline, quiet, deterministic; paths to the repo and the shared reference data."""

import os
from pathlib import Path

import pytest

from alignpipe.utils.env import apply_offline_env

apply_offline_env()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def repo_root() -> Path:
    return REPO


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data not found at {SHARED_DATA} (the ../shared/data folder beside the repo)")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One torch thread, as the pipeline's default: on 2 shared cores spin-waiting OpenMP threads are ~40x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _work_dir(tmp_path, monkeypatch):
    """Checkpoints of stages run in tests go to a temp dir, never the repo's .cache/."""
    monkeypatch.setenv("ALIGNPIPE_WORK_DIR", str(tmp_path / "_work"))
