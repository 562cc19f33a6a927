"""Test-wide settings: offline, quiet, deterministic; paths to the repo and the shared reference data; the one
clean `dvc repro` of the tiny profile (run A) that the end-to-end and the kill tests share."""

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from alignpipe.utils.env import apply_offline_env
from alignpipe_ops import runlog
from alignpipe_ops.copyrepo import copy_repo as copy_repo_to

apply_offline_env()
runlog.install()  # the library's run events (alignpipe.utils.events) go to the run record, as in a flow

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


# `make test` runs two pytest-xdist workers with --dist loadscope: each module is one unit of work (its module-scoped
# servers and repo copies are built once), except that the end-to-end tests and the kill tests share the session's
# tiny-profile run (tiny_run) and so go to one worker together, first (--no-loadscope-reorder keeps collection
# order). xdist's own `loadgroup` cannot do this under pytest 9.2: it renames items by assigning `item._nodeid`,
# which pytest 9.2's nodes no longer read, so every test became its own group.
SHARED_TINY_RUN = ("tests/e2e/test_repro.py", "tests/reliability/test_kill_resume.py",
                   "tests/reliability/test_parallel_repro.py")


@pytest.hookimpl(optionalhook=True)  # pytest -p no:xdist: no such hook, and the suite runs in one process
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::")[0]
            return "tiny_run" if module in SHARED_TINY_RUN else module

    return ModuleScheduling(config, log)


@pytest.fixture
def repo_root() -> Path:
    return REPO


def _copy_repo(dst: Path) -> Path:
    return copy_repo_to(REPO, dst)


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
    from alignpipe_ops import netaudit

    if not os.environ.get(netaudit.ENV):
        import tempfile

        fd, path = tempfile.mkstemp(prefix="alignpipe-net-audit-", suffix=".jsonl")
        os.close(fd)
        os.environ[netaudit.ENV] = path
        config._alignpipe_net_audit_own = path
    netaudit.install(os.environ[netaudit.ENV])


def pytest_sessionfinish(session, exitstatus):
    from alignpipe_ops import netaudit

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


def tiny_repo(dst: Path) -> dict[str, str]:
    """A copy of the repo at ``dst`` with the tiny profile in params.yaml; returns the env to run dvc in it
    (its own work dir under ``dst/.cache``, the venv's tools first, no Prefect server inherited)."""
    from alignpipe.profile import apply_profile

    _copy_repo(dst)
    # key order kept: the report's tables list the variants in params.yaml's order
    params = apply_profile("tiny", dst / "params.yaml", dst / "profiles")
    (dst / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "ALIGNPIPE_WORK_DIR": str(dst / ".cache/alignpipe"), "PYTHONPATH": str(dst / "src")}
    env.pop("PREFECT_API_URL", None)
    env.pop("DVC_STAGE", None)
    return env


@pytest.fixture(scope="session")
def make_tiny_repo():
    """``make_tiny_repo(dst) -> env``: another tiny-profile copy of the repo (the kill tests' run B)."""
    return tiny_repo


class TinyRun(NamedTuple):
    root: Path
    env: dict[str, str]
    seconds: float
    log: str


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> TinyRun:
    """Run A: one uninterrupted run of the tiny profile through a Prefect server, two stages at a time as
    `make repro` runs it (alignpipe_ops.repro; ~3-5 min on 2 cores).

    Shared by tests/e2e (outputs, status, metrics) and tests/reliability (the reference every killed-and-rerun
    stage is compared with, byte for byte: the kill campaign's run B goes one stage at a time, so its equal
    dvc.lock shows the concurrent run gives a sequential run's bytes).
    """
    dst = tmp_path_factory.mktemp("run-a")
    env = tiny_repo(dst)
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.server", "--", sys.executable, "-m", "alignpipe_ops.repro", "--jobs", "2"],
        cwd=dst, env=env, capture_output=True, text=True, timeout=1500,
    )
    assert proc.returncode == 0, f"dvc repro failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"
    return TinyRun(dst, env, time.perf_counter() - start, proc.stdout + proc.stderr)
