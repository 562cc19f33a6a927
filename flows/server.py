"""Run a command with a Prefect server available, so every stage's flow shows in the Prefect UI.

    python -m flows.server -- dvc repro          # what `make repro` runs
    python -m flows.server --keep -- dvc repro   # leave the server up afterwards for the UI

If PREFECT_API_URL is already set (a server you run, or Prefect Cloud), the command just runs against it.
Otherwise a local server is started on 127.0.0.1 (state in the project's .prefect/), the command runs with
PREFECT_API_URL pointing at it (one server for all stages instead of a temporary server per flow), and the
server is stopped afterwards. Exit status is the command's.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request

from alignpipe_ops.dvcstate import repair


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as r:  # noqa: S310 (loopback only)
            return r.status == 200
    except OSError:
        return False


def start_server(
    port: int | None = None, timeout: float = 180.0, cwd: str | os.PathLike | None = None
) -> tuple[subprocess.Popen, str]:
    """Start `prefect server start` on 127.0.0.1 and wait until it answers; return (process, api_url).

    ``cwd``: the project directory whose prefect.toml and .prefect/ the server uses (default: the current one).
    """
    port = port or _free_port()
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "true"}
    env.pop("PREFECT_API_URL", None)
    state = os.path.join(cwd or ".", ".prefect")
    os.makedirs(state, exist_ok=True)
    log = open(os.path.join(state, "server.log"), "ab")  # noqa: SIM115 (lives as long as the server)
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"prefect server exited with status {proc.returncode}; see .prefect/server.log")
        if _healthy(api):
            return proc, api
        time.sleep(0.5)
    proc.terminate()
    raise RuntimeError(f"prefect server did not answer on {api} within {timeout:.0f}s; see .prefect/server.log")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=None, help="port (default: a free one; 4200 for the UI)")
    parser.add_argument("--keep", action="store_true", help="leave the server running after the command")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="command to run, after --")
    args = parser.parse_args()
    cmd = [c for c in args.command if c != "--"] if args.command else []
    for repaired in repair("."):  # after a crash: a torn rwlock or dvc.lock, or git's index.lock, stops dvc
        print(f"flows.server: {repaired}", file=sys.stderr, flush=True)
    if os.environ.get("PREFECT_API_URL"):
        return subprocess.call(cmd) if cmd else 0
    proc, api = start_server(args.port)
    print(f"prefect server: {api.removesuffix('/api')} (UI), logs in .prefect/server.log", flush=True)
    try:
        return subprocess.call(cmd, env={**os.environ, "PREFECT_API_URL": api}) if cmd else proc.wait()
    finally:
        if not args.keep or not cmd:
            stop_server(proc)


if __name__ == "__main__":
    sys.exit(main())
