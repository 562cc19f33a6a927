"""A torn .dvc/tmp/rwlock (a dvc process SIGKILLed while rewriting it) stops every dvc command; the repair removes
it only when no dvc process is working in the repo."""

import subprocess
import sys
import time
from pathlib import Path

import pytest

from alignpipe.utils.dvcstate import repair_rwlock

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
