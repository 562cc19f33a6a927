"""Offline: the pipeline and the suite make no network attempt beyond 127.0.0.1 (issue 8, property 4).

Two mechanisms, both tested here: the network audit (alignpipe_ops.netaudit, installed by every flow and by
tests/conftest.py for the whole session) records any attempt with the code that made it, and scripts/offline
(what `make test` runs the suite through) blocks any attempt in a network namespace with only loopback.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from alignpipe_ops import netaudit

pytestmark = pytest.mark.fault
REPO = Path(__file__).resolve().parents[2]
PROBE = textwrap.dedent("""
    import socket, sys, time
    from alignpipe_ops import netaudit
    netaudit.install(sys.argv[1])
    server = socket.socket(); server.bind(("127.0.0.1", 0)); server.listen()
    socket.create_connection(server.getsockname(), timeout=2).close()   # loopback: allowed, not recorded
    socket.getaddrinfo("localhost", 80)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for send in (lambda: udp.connect(("192.0.2.2", 80)),              # a UDP connect sends nothing: not recorded
                 lambda: udp.sendto(b"x", ("192.0.2.3", 53))):          # a datagram does: recorded
        try:
            send()
        except OSError:                                                 # (no route at all in a namespace)
            pass
    start = time.time()
    try:
        socket.create_connection(("192.0.2.1", 9), timeout=3)          # TEST-NET-1: never routable
        print("connected")
    except OSError as err:
        print(f"{type(err).__name__} {err.errno} {time.time() - start:.2f}")
""")


def _probe(tmp_path: Path, *wrapper: str) -> tuple[str, list[dict]]:
    audit = tmp_path / "probe.jsonl"
    env = {**os.environ, netaudit.ENV: str(audit)}  # not the session's file: this attempt is deliberate
    out = subprocess.run([*wrapper, sys.executable, "-c", PROBE, str(audit)], env=env, capture_output=True,
                         text=True, timeout=60, check=True).stdout.strip()
    return out, netaudit.read(audit)


@pytest.mark.parametrize("host,local", [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True), (None, True),
    ("0.0.0.0", True), ("192.0.2.1", False), ("10.0.0.1", False), ("pypi.org", False), ("huggingface.co", False),
    (b"localhost", True),
])
def test_is_local(host, local):
    assert netaudit.is_local(host) is local


def test_audit_records_attempts_beyond_loopback_only(tmp_path):
    _, attempts = _probe(tmp_path)
    assert [(a["event"], a["host"], a["port"]) for a in attempts] == [
        ("socket.sendto", "192.0.2.3", 53), ("socket.connect", "192.0.2.1", 9)], attempts
    assert attempts[0]["stack"] and "<string>" in attempts[0]["stack"][-1]  # names the code that tried


def test_offline_wrapper_blocks_the_network(tmp_path):
    probe = subprocess.run([str(REPO / "scripts/offline"), "true"], capture_output=True, text=True)
    if "no network namespace" in probe.stderr:
        pytest.skip("this machine allows no network namespace (unshare -rn refused): the audit alone applies")
    out, attempts = _probe(tmp_path, str(REPO / "scripts/offline"))
    kind, errno, seconds = out.split()
    assert kind == "OSError" and int(errno) == 101, out  # ENETUNREACH: refused at once, no timeout
    assert float(seconds) < 1.0
    assert len(attempts) == 2  # and still recorded


def test_suite_runs_offline_under_make_test():
    if not os.environ.get("ALIGNPIPE_NETNS"):
        pytest.skip("not run through scripts/offline (make test does that); the session's net audit still applies")
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    assert [line.split(":")[1].strip() for line in out.splitlines()] == ["lo"]


@pytest.mark.slow
def test_default_params_world_stage_offline(tmp_path, copy_repo):
    """`dvc repro world` on the default params.yaml, through a Prefect server, offline: no attempt recorded."""
    repo = copy_repo(tmp_path / "repo")
    audit = tmp_path / "net.jsonl"
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", netaudit.ENV: str(audit),
           "PYTHONPATH": str(repo / "src"), "ALIGNPIPE_WORK_DIR": str(repo / ".cache/alignpipe")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.run([str(REPO / "scripts/offline"), sys.executable, "-m", "flows.server", "--", "dvc",
                           "repro", "world"], cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads((repo / "data/world/metrics.json").read_text())
    assert netaudit.read(audit) == [], netaudit.read(audit)
