"""Test-wide settings: offline, quiet, deterministic; paths to the repo and the shared reference data."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from alignpipe.utils.env import apply_offline_env

apply_offline_env()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def repo_root() -> Path:
    return REPO


def _copy_repo(dst: Path) -> Path:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                           check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, files):
        if (REPO / rel).is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, dst / rel)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True, env=env)
    return dst


@pytest.fixture(scope="session")
def copy_repo():
    """``copy_repo(dst)``: the repo's tracked and non-ignored files copied into a fresh git repo at ``dst`` (no data,
    no caches), for the tests that run stages or ``dvc repro`` in a copy."""
    return _copy_repo


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


# Offline: every network attempt beyond 127.0.0.1 made by the test process or by any flow it starts (they
# inherit ALIGNPIPE_NET_AUDIT) is recorded, and the session fails listing them. `make test` also runs the
# suite in a network namespace without interfaces where the machine allows it (Makefile), so an attempt
# fails fast there instead of waiting on a timeout.
def pytest_configure(config):
    from alignpipe.utils import netaudit

    if not os.environ.get(netaudit.ENV):
        import tempfile

        fd, path = tempfile.mkstemp(prefix="alignpipe-net-audit-", suffix=".jsonl")
        os.close(fd)
        os.environ[netaudit.ENV] = path
        config._alignpipe_net_audit_own = path
    netaudit.install(os.environ[netaudit.ENV])


def pytest_sessionfinish(session, exitstatus):
    from alignpipe.utils import netaudit

    path = os.environ.get(netaudit.ENV)
    attempts = netaudit.read(path) if path else []
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if attempts:
        lines = [f"{len(attempts)} network attempt(s) beyond 127.0.0.1 (recorded in {path}):"]
        lines += [f"  {a['event']} {a['host']}:{a['port']} pid {a['pid']} [{a['argv']}] at {a['stack'][-1:]}"
                  for a in attempts[:20]]
        if reporter:
            reporter.write_line("\n".join(lines), red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    elif reporter and os.environ.get("ALIGNPIPE_NETNS"):
        reporter.write_line("offline: no network attempt beyond 127.0.0.1 (ran in a network namespace)")
    own = getattr(session.config, "_alignpipe_net_audit_own", None)
    if own and not attempts:
        os.unlink(own)
