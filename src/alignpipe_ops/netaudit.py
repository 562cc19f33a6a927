"""Record every network attempt beyond the loopback interface: the check behind "the run is offline".

The pipeline's default run and its tests talk only to 127.0.0.1 (a Prefect server, a local OpenAI-compatible
test server). With ``ALIGNPIPE_NET_AUDIT=<file>`` in the environment every flow (``flows/_common.py``) and the
test session (``tests/conftest.py``) install a Python audit hook that appends one JSON line per attempt to
reach anything else: a ``connect``/``sendto`` to a non-loopback address, or a name lookup of a host that is
not ``localhost``. It records, it does not block: blocking is the job of a network namespace without
interfaces (``make test`` runs the suite in one where the machine allows it, see the Makefile). Used
together, an attempt fails fast *and* is named with the code that made it, instead of being swallowed by a
library's ``try/except``.

Usage::

    ALIGNPIPE_NET_AUDIT=/tmp/net.jsonl python -m flows.world
    python -c "from alignpipe_ops.netaudit import read; print(read('/tmp/net.jsonl'))"
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

ENV = "ALIGNPIPE_NET_AUDIT"
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback", ""}
_installed: set[str] = set()
_HOSTNAME = socket.gethostname()


def _name(host: Any) -> str:
    """A host as text: bytes decoded, IPv6 brackets and zone id dropped, lower case."""
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    return str(host).strip("[]").split("%", 1)[0].lower()


def _address(host: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The IP address ``host`` spells, or None for a name."""
    try:
        return ipaddress.ip_address(_name(host))
    except ValueError:
        return None


def is_local(host: Any) -> bool:
    """True for loopback addresses, ``localhost``, the wildcard bind address and Unix socket paths."""
    if host is None or _name(host) in _LOCAL_NAMES:
        return True
    addr = _address(host)
    return addr is not None and (addr.is_loopback or addr.is_unspecified)


def _target(event: str, args: tuple) -> tuple[str, Any] | None:
    """The (host, port) an audited socket event tries to reach, or None when it is local / not a network use."""
    if event in ("socket.connect", "socket.sendto"):
        sock, address = args[0], args[-1]
        if getattr(sock, "family", None) == socket.AF_UNIX or not isinstance(address, tuple):
            return None
        if event == "socket.connect" and getattr(sock, "type", None) == socket.SOCK_DGRAM:
            return None  # a UDP connect sends nothing (Dask asks the kernel its own address so); sendto is audited
        host, port = address[0], address[1] if len(address) > 1 else None
    elif event == "socket.getaddrinfo":
        host, port = args[0], args[1]
    elif event in ("socket.gethostbyname", "socket.gethostbyname_ex", "socket.gethostbyaddr"):
        host, port = args[0], None
    else:
        return None
    if is_local(host):
        return None
    if event == "socket.getaddrinfo" or event.startswith("socket.gethostby"):
        if str(host) == _HOSTNAME or _address(host) is not None:
            return None  # the machine's own name (logging, Dask, Ray look it up) or a literal: no query leaves
    return str(host), port


def install(path: str | os.PathLike) -> None:
    """Append one JSON line to ``path`` for every non-loopback network attempt of this process (idempotent)."""
    path = str(Path(path).resolve())
    if path in _installed:
        return
    _installed.add(path)
    state = threading.local()  # per thread: one thread inside the hook must not hide another thread's attempt

    def hook(event: str, args: tuple) -> None:
        if not event.startswith("socket.") or getattr(state, "busy", False):
            return
        state.busy = True  # nothing the hook itself does is audited
        try:
            target = _target(event, args)
            if target is None:
                return
            frames = [f"{f.filename}:{f.lineno} {f.name}" for f in traceback.extract_stack()[:-1]
                      if "/socket.py" not in f.filename][-6:]
            record = {"pid": os.getpid(), "argv": " ".join(sys.argv)[:200], "event": event,
                      "host": target[0], "port": target[1], "stack": frames}
            with open(path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record, default=str) + "\n")
        except Exception:  # noqa: BLE001 (an audit hook must never break the audited program)
            pass
        finally:
            state.busy = False

    sys.addaudithook(hook)


def install_from_env() -> None:
    """:func:`install` at the file ``ALIGNPIPE_NET_AUDIT`` names, if it is set."""
    path = os.environ.get(ENV)
    if path:
        install(path)


def read(path: str | os.PathLike) -> list[dict]:
    """The recorded attempts (empty when the file does not exist)."""
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
