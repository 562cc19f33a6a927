"""DVC's state files torn by a SIGKILL: a torn .dvc/tmp/rwlock stops every dvc command and the repair removes it only
when no dvc process is working in the repo; a torn dvc.lock is put back from the copy taken as its stage started."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignpipe_ops.dvcstate import (
    repair,
    repair_git_index_lock,
    repair_lockfile,
    repair_rwlock,
    snapshot_lockfile,
)

TORN = '{"read": {"/repo/flows/world.py": [{"pid": 7289, "cmd": "dvc repro --sing'


def _dvc(root: Path, *args: str) -> subprocess.CompletedProcess:
    dvc = Path(sys.executable).with_name("dvc")
    return subprocess.run([str(dvc), *args], cwd=root, capture_output=True, text=True, timeout=120)


def test_a_torn_rwlock_stops_dvc_and_the_repair_lets_it_run_again(tmp_path):
    assert _dvc(tmp_path, "init", "--no-scm", "-q").returncode == 0
    (tmp_path / "in.txt").write_text("x\n", encoding="utf-8")
    (tmp_path / "dvc.yaml").write_text("stages:\n  copy:\n    cmd: cp in.txt out.txt\n    deps: [in.txt]\n"
                                       "    outs: [out.txt]\n", encoding="utf-8")
    (tmp_path / ".dvc/tmp").mkdir(exist_ok=True)
    rwlock = tmp_path / ".dvc/tmp/rwlock"
    rwlock.write_text(TORN, encoding="utf-8")
    broken = _dvc(tmp_path, "repro")
    assert broken.returncode != 0 and "JSON structure is corrupted" in broken.stdout + broken.stderr
    message = repair_rwlock(tmp_path)
    assert message and "torn" in message and str(len(TORN)) in message and not rwlock.exists()
    assert _dvc(tmp_path, "repro").returncode == 0 and (tmp_path / "out.txt").read_text(encoding="utf-8") == "x\n"


@pytest.mark.parametrize("content", ["", TORN])
def test_torn_or_empty_is_removed_whole_or_absent_is_kept(tmp_path, content):
    tmp = tmp_path / ".dvc/tmp"
    tmp.mkdir(parents=True)
    assert repair_rwlock(tmp_path) is None  # absent
    (tmp / "rwlock").write_text('{"read": {}, "write": {}}', encoding="utf-8")
    assert repair_rwlock(tmp_path) is None and (tmp / "rwlock").exists()  # whole: DVC's business
    (tmp / "rwlock").write_text(content, encoding="utf-8")  # DVC reads an empty file as corrupted too
    assert repair_rwlock(tmp_path) is not None and not (tmp / "rwlock").exists()


@pytest.mark.parametrize("held", ["lock", "rwlock.lock"])
def test_left_alone_while_a_dvc_process_holds_a_lock(tmp_path, held):
    """The repo lock (a running dvc repro) or the rwlock's guard (a dvc process editing it this instant)."""
    tmp = tmp_path / ".dvc/tmp"
    tmp.mkdir(parents=True)
    (tmp / "rwlock").write_text(TORN, encoding="utf-8")
    holder = subprocess.Popen(  # another process, as DVC would be (the same lock class DVC uses)
        [sys.executable, "-c", "import sys, time, zc.lockfile; l = zc.lockfile.LockFile(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)", str(tmp / held)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert repair_rwlock(tmp_path) is None and (tmp / "rwlock").read_text(encoding="utf-8") == TORN
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    assert repair_rwlock(tmp_path) is not None and not (tmp / "rwlock").exists()


# -- dvc.lock ---------------------------------------------------------------------------------------------------
# DVC itself, killed while it rewrites dvc.lock: its writer (dvc/utils/serialize/_common.py _dump_data, open "w+" then
# a YAML dump) is wrapped so that its TEAR_AT-th write of dvc.lock stops after TEAR_BYTES bytes ("half": half the
# dump) and the process SIGKILLs itself, as a kill in that instant would leave it.
TEARING_DVC = r"""
import os, signal, sys
import dvc.utils.serialize._common as c, dvc.utils.serialize._yaml as y
real, writes = c._dump_data, []
def tearing(path, data, dumper, fs=None, **kw):
    writes.extend([path] if str(path).endswith("dvc.lock") else [])
    if str(path).endswith("dvc.lock") and len(writes) == int(os.environ["TEAR_AT"]):
        import io
        buf = io.StringIO(); dumper(data, buf, **kw); text = buf.getvalue()
        cut = len(text) // 2 if os.environ["TEAR_BYTES"] == "half" else int(os.environ["TEAR_BYTES"])
        with open(path, "w+", encoding="utf-8") as fd:
            fd.write(text[:cut]); fd.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    return real(path, data, dumper, fs=fs, **kw)
c._dump_data = y._dump_data = tearing  # _modify_data (DVC's lock update) and dump_yaml
from dvc.cli import main
sys.exit(main(sys.argv[1:]))
"""
# Each stage snapshots dvc.lock as it starts, as flows._common.main does for a stage run by DVC.
SNAP = "python -c \"from alignpipe_ops.dvcstate import snapshot_lockfile; snapshot_lockfile('.')\""


def _pipeline(root: Path) -> None:
    assert _dvc(root, "init", "--no-scm", "-q").returncode == 0
    stages = {"a": ("in.txt", "a.txt"), "b": ("a.txt", "b.txt"), "c": ("b.txt", "c.txt")}
    lines = ["stages:"]
    for name, (dep, out) in stages.items():
        lines += [f"  {name}:", f"    cmd: {SNAP} && cat {dep} {dep} > {out}", f"    deps: [{dep}]",
                  f"    outs: [{out}]"]
    (root / "dvc.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (root / "in.txt").write_text("x\n", encoding="utf-8")
    assert _dvc(root, "repro").returncode == 0


def _tearing_repro(root: Path, at: int, cut: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TEAR_AT": str(at), "TEAR_BYTES": cut}
    return subprocess.run([sys.executable, "-c", TEARING_DVC, "repro"], cwd=root, env=env, capture_output=True,
                          text=True, timeout=120)


def _ran(result: subprocess.CompletedProcess) -> list[str]:
    return re.findall(r"Running stage '(\w+)'", result.stdout + result.stderr)


@pytest.mark.parametrize("cut", ["0", "half"])
def test_dvc_killed_writing_dvc_lock_is_repaired_losing_only_that_stage(tmp_path, cut):
    _pipeline(tmp_path)
    (tmp_path / "in.txt").write_text("changed\n", encoding="utf-8")  # a, b, c rerun; the kill comes at b's record
    torn = _tearing_repro(tmp_path, 2, cut)
    assert torn.returncode == -signal.SIGKILL and _ran(torn) == ["a", "b"]
    whole = (tmp_path / ".dvc/tmp/alignpipe/dvc.lock").read_text(encoding="utf-8")  # taken as b started
    assert "\n  c:" in whole
    text = (tmp_path / "dvc.lock").read_text(encoding="utf-8")  # what DVC's own kill leaves
    assert text == "" if cut == "0" else (len(whole) // 3 < len(text) < len(whole) and "\n  c:" not in text)
    status = _dvc(tmp_path, "status")
    # empty: dvc stops; cut in half: dvc reads a lock that lost stage c's record
    assert status.returncode != 0 or "c:" in status.stdout, status.stdout + status.stderr

    message = repair_lockfile(tmp_path)
    assert message and ("empty" if cut == "0" else "bytes") in message
    assert (tmp_path / "dvc.lock").read_text(encoding="utf-8") == whole
    assert repair_lockfile(tmp_path) is None  # whole now: nothing more to do
    rerun = _dvc(tmp_path, "repro")
    # a's record kept; b's lost: DVC's run-cache restores its outputs here (in the pipeline, a stage with a
    # `cache: false` log has no run-cache entry and reruns); c's upstream changed
    assert rerun.returncode == 0 and _ran(rerun) == ["c"], rerun.stdout
    assert "Stage 'a' didn't change" in rerun.stdout and "Stage 'b' is cached" in rerun.stdout, rerun.stdout
    assert (tmp_path / "c.txt").read_text(encoding="utf-8") == "changed\n" * 8


def test_a_dvc_lock_not_torn_by_dvc_is_left_alone(tmp_path):
    _pipeline(tmp_path)
    lock = tmp_path / "dvc.lock"
    snapshot_lockfile(tmp_path)
    whole = lock.read_text(encoding="utf-8")
    # written anew (git checkout, an editor, a merge with conflict markers): another inode, the user's business
    fresh = tmp_path / "fresh.lock"
    fresh.write_text("<<<<<<< HEAD\n", encoding="utf-8")
    os.replace(fresh, lock)
    assert repair_lockfile(tmp_path) is None and lock.read_text(encoding="utf-8") == "<<<<<<< HEAD\n"
    # rewritten in place but whole, with a stage gone from dvc.yaml too (dvc remove): not a cut
    fresh.write_text(whole, encoding="utf-8")
    os.replace(fresh, lock)
    snapshot_lockfile(tmp_path)
    assert _dvc(tmp_path, "remove", "c").returncode == 0
    assert repair_lockfile(tmp_path) is None and "c:" not in lock.read_text(encoding="utf-8")


def test_a_torn_dvc_lock_is_left_alone_while_dvc_holds_the_repo_lock(tmp_path):
    _pipeline(tmp_path)
    snapshot_lockfile(tmp_path)
    lock = tmp_path / "dvc.lock"
    time.sleep(0.01)
    with open(lock, "w+", encoding="utf-8"):  # DVC's in-place rewrite, cut at 0 bytes
        pass
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time, zc.lockfile; l = zc.lockfile.LockFile(sys.argv[1]); "
         "print('held', flush=True); time.sleep(60)", str(tmp_path / ".dvc/tmp/lock")], stdout=subprocess.PIPE,
        text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert repair_lockfile(tmp_path) is None and lock.read_text(encoding="utf-8") == ""
    finally:
        holder.kill()
        holder.wait()
    assert repair(tmp_path) and lock.read_text(encoding="utf-8").startswith("schema:")


# -- .git/index.lock --------------------------------------------------------------------------------------------
# DVC killed in its autostage (core.autostage): dulwich wrote .git/index.lock and dies before renaming it over the
# index (dulwich/file.py _GitFile.close: os.replace).
KILLED_AUTOSTAGE = r"""
import os, signal, sys
real = os.replace
def dying(src, dst, *a, **kw):
    if str(src).endswith("index.lock"):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst, *a, **kw)
os.replace = dying
from dvc.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _git_pipeline(root: Path) -> None:
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    assert _dvc(root, "init", "-q").returncode == 0
    assert _dvc(root, "config", "core.autostage", "true").returncode == 0
    (root / "in.txt").write_text("x\n", encoding="utf-8")
    (root / "dvc.yaml").write_text("stages:\n  copy:\n    cmd: cp in.txt out.txt\n    deps: [in.txt]\n"
                                   "    outs: [out.txt]\n", encoding="utf-8")
    subprocess.run(["git", "add", "-A"], cwd=root, check=True)
    subprocess.run([*git, "commit", "-qm", "init"], cwd=root, check=True)


def test_dvc_killed_in_autostage_leaves_git_index_lock_and_the_repair_removes_it(tmp_path):
    _git_pipeline(tmp_path)
    killed = subprocess.run([sys.executable, "-c", KILLED_AUTOSTAGE, "repro"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    lock = tmp_path / ".git/index.lock"
    assert killed.returncode == -signal.SIGKILL and lock.is_file()
    (tmp_path / "in.txt").write_text("y\n", encoding="utf-8")
    broken = _dvc(tmp_path, "repro")
    assert broken.returncode != 0 and "index.lock" in broken.stdout + broken.stderr  # after running the stage
    assert repair_git_index_lock(tmp_path) is None  # younger than a live writer could be: left alone
    old = time.time() - 60
    os.utime(lock, (old, old))
    message = repair_git_index_lock(tmp_path)
    assert message and "stale" in message and not lock.exists()
    (tmp_path / "in.txt").write_text("z\n", encoding="utf-8")
    fixed = _dvc(tmp_path, "repro")
    assert fixed.returncode == 0 and (tmp_path / "out.txt").read_text(encoding="utf-8") == "z\n", fixed.stderr
    staged = subprocess.run(["git", "diff", "--cached", "--name-only"], cwd=tmp_path, capture_output=True, text=True)
    assert "dvc.lock" in staged.stdout.split()  # autostage works again


def test_a_git_index_lock_open_in_a_live_process_is_left_alone(tmp_path):
    (tmp_path / ".git").mkdir()
    lock = tmp_path / ".git/index.lock"
    lock.write_bytes(b"DIRC")
    old = time.time() - 60
    os.utime(lock, (old, old))
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; f = open(sys.argv[1], 'ab'); "
                               "print('open', flush=True); time.sleep(60)", str(lock)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "open"
        assert repair_git_index_lock(tmp_path) is None and lock.exists()
    finally:
        holder.kill()
        holder.wait()
    assert repair(tmp_path) and not lock.exists()
