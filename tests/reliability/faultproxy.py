"""A fault-injecting HTTP proxy for the reliability tests (stdlib only): 127.0.0.1, a free port, one thread per
connection, forwarding to an OpenAI-compatible server and failing a seeded share of the attempts.

    proxy = FaultProxy("http://127.0.0.1:8000", share=0.25, seed=0, slow_s=3.0).start()
    base_url = proxy.url + "/v1"          # what the roles' base_url points at
    ...
    proxy.records                         # one Attempt per request received, in arrival order
    proxy.max_in_flight                   # the most requests it held at once
    proxy.stop()

Whether an attempt fails is a function of (seed, hash of the request body, how many times that body was seen
before in the current ``label``'s phase), never of arrival order, so a run with 8 requests in flight fails the
same attempts as a sequential one; the kinds are dealt in turn over the failing attempts, so any run with as many
faults as kinds meets every kind. The first ``max_faults`` attempts of a body may fail; later ones are forwarded,
so every request can complete within a client's retry budget. A request the client gives up on (its timeout) is
dropped at once. ``mode = "down"`` answers every request with ``down_fault`` (an outage; 503 unless set).

Faults (each an equal part of ``share``): ``http500``; ``http429`` (with Retry-After); ``http503``; ``reset``
(status line and headers, half the body, then a TCP reset); ``slow`` (holds the request ``slow_s`` seconds, past
the client's timeout, answering nothing); ``echo500`` (a 500 whose body echoes the request headers, as a
misbehaving upstream or debugging proxy does: a client that logs error bodies would log its own key).

The Authorization header of each attempt is kept in memory (never written) for the secret tests.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import select
import socket
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FAULTS = ("http500", "http429", "http503", "reset", "slow", "echo500")
_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "proxy-connection", "upgrade", "te",
        "trailer", "host"}


@dataclass
class Attempt:
    """One request the proxy received."""

    label: str  # the test phase it arrived in (``FaultProxy.label``)
    method: str
    path: str
    body_sha: str  # sha256 of the request body
    attempt: int  # how many times this body was seen before in this label's phase (0: first)
    authorization: str | None
    fault: str | None  # the injected fault, None: forwarded
    in_flight: int  # requests held at once, this one included, when it arrived
    status: int | None = None  # what the client was sent (None: nothing, or a broken response)
    body: dict | None = None  # the parsed request (JSON bodies)
    reply: dict | None = None  # the upstream's parsed answer when forwarded
    t0: float = field(default_factory=time.time)
    t1: float | None = None


class FaultProxy:
    """See the module docstring."""

    def __init__(self, upstream: str, share: float = 0.25, seed: int = 0, slow_s: float = 3.0, max_faults: int = 3,
                 faults: tuple[str, ...] = FAULTS, retry_after: int = 1, down_fault: str = "http503"):
        up = urlsplit(upstream)
        self.upstream = (up.hostname, up.port or 80)
        self.share, self.seed, self.slow_s, self.max_faults = share, seed, slow_s, max_faults
        self.faults, self.retry_after, self.down_fault = faults, retry_after, down_fault
        self.mode = "plan"  # plan: seeded faults | down: ``down_fault`` to everything
        self.label = ""
        self.records: list[Attempt] = []
        self.in_flight = self.max_in_flight = 0
        self._seen: dict[tuple[str, str], int] = {}  # (label, body hash) -> attempts so far
        self._dealt = 0  # faults injected so far (the next kind is dealt from it)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]  # type: ignore[union-attr]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        proxy = self

        class Handler(_Handler):
            owner = proxy

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="faultproxy", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def plan(self, body_sha: str, attempt: int) -> str | None:
        """The fault injected into this attempt of this body (None: forward it). Called under the lock."""
        if self.mode == "down":
            return self.down_fault
        if attempt >= self.max_faults or not self.faults:
            return None
        h = hashlib.sha256(f"{self.seed}:{body_sha}:{attempt}".encode()).digest()
        u = int.from_bytes(h[:8], "big") / 2**64
        if u >= self.share:
            return None
        self._dealt += 1
        return self.faults[(self._dealt - 1) % len(self.faults)]

    def attempts(self, label: str | None = None, path: str = "/v1/chat/completions") -> list[Attempt]:
        """The attempts at ``path`` (in ``label``'s phase when given)."""
        return [r for r in self.records if r.path == path and (label is None or r.label == label)]

    def _arrive(self, method: str, path: str, body: bytes, auth: str | None) -> Attempt:
        sha = hashlib.sha256(body).hexdigest()
        with self._lock:
            n = self._seen.get((self.label, sha), 0)
            self._seen[(self.label, sha)] = n + 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            try:
                parsed = json.loads(body) if body else None
            except ValueError:
                parsed = None
            rec = Attempt(self.label, method, path, sha, n, auth, self.plan(sha, n), self.in_flight, body=parsed)
            self.records.append(rec)
        return rec

    def _leave(self, rec: Attempt) -> None:
        with self._lock:
            self.in_flight -= 1
            rec.t1 = time.time()


class _Handler(BaseHTTPRequestHandler):
    owner: FaultProxy
    protocol_version = "HTTP/1.1"  # keep-alive, as the openai client (httpx) expects

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        proxy = self.owner
        rec = proxy._arrive(self.command, self.path, body, self.headers.get("Authorization"))
        try:
            if rec.fault is None:
                self._forward(rec, body)
            elif rec.fault == "http429":
                self._reply(rec, 429, {"error": {"message": "rate limited (injected)"}},
                            {"Retry-After": str(proxy.retry_after)})
            elif rec.fault in ("http500", "http503"):
                self._reply(rec, int(rec.fault[4:]), {"error": {"message": f"injected {rec.fault}"}})
            elif rec.fault == "echo500":
                echoed = json.dumps(dict(self.headers))
                self._reply(rec, 500, {"error": {"message": f"upstream failure; request_headers: {echoed}"}})
            elif rec.fault == "reset":
                self._reset(rec)
            elif rec.fault == "slow":
                self._hold(proxy.slow_s)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            proxy._leave(rec)

    def _send(self, rec: Attempt, status: int, headers: Iterable[tuple[str, str]], data: bytes) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()
        rec.status = status

    def _reply(self, rec: Attempt, status: int, payload: dict, headers: dict | None = None) -> None:
        headers = {"Content-Type": "application/json", **(headers or {})}
        self._send(rec, status, headers.items(), json.dumps(payload).encode())

    def _forward(self, rec: Attempt, body: bytes) -> None:
        """Relay to the upstream; if the client gives up first (its timeout), drop the request at once, so that
        ``in_flight`` counts only requests a client is waiting for and a late answer is never delivered."""
        got: dict = {}

        def fetch() -> None:
            conn = http.client.HTTPConnection(*self.owner.upstream, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                conn.request(self.command, self.path, body=body, headers=headers)
                resp = conn.getresponse()
                got["data"] = resp.read()
                got["status"] = resp.status
                got["headers"] = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            except OSError as err:
                got["error"] = err
            finally:
                conn.close()

        worker = threading.Thread(target=fetch, daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.02)
            if self._client_gone():
                self.close_connection = True
                return
        if "error" in got:
            self._reply(rec, 502, {"error": {"message": f"proxy: upstream failed: {got['error']}"}})
            return
        data, status, resp_headers = got["data"], got["status"], got["headers"]
        try:
            rec.reply = json.loads(data)
        except ValueError:
            rec.reply = None
        self._send(rec, status, resp_headers, data)

    def _reset(self, rec: Attempt) -> None:
        """Headers promising a body, half of it, then a TCP reset (SO_LINGER 0)."""
        data = json.dumps({"id": "x", "choices": [{"index": 0, "message": {"role": "assistant",
                                                                             "content": "partial " * 20}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _client_gone(self, wait: float = 0.0) -> bool:
        """True when the client closed the connection (within ``wait`` seconds). While it waits for an answer it
        sends nothing, so a readable socket means end of stream."""
        readable, _, _ = select.select([self.connection], [], [], wait)
        try:
            return bool(readable) and not self.connection.recv(1, socket.MSG_PEEK)
        except OSError:
            return True

    def _hold(self, seconds: float) -> None:
        """Answer nothing for ``seconds``; stop as soon as the client gives up and closes the connection."""
        self.close_connection = True
        deadline = time.time() + seconds
        while (left := deadline - time.time()) > 0:
            if self._client_gone(min(left, 0.05)):
                return  # the client closed (timed out): the request is no longer in flight
