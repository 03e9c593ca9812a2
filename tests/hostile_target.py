"""A target that speaks the contract and misbehaves on purpose, for the deadline and secrets
tests: the reference service's core behind a tiny stdlib HTTP server, with a rule that picks,
per request, how to answer it: normally, `stall` (never answer: sleep until the test ends),
`trickle` (a byte at a time, well under the answer size bound), `endless` (a body that never
ends), `echo` (the answer, plus every request header sent back in it) or `echo_lie` (that, and a
display showing one fen more available than the truth, so a finding quotes the answer)."""

from __future__ import annotations

import http.server
import threading
import time
from typing import Callable
from urllib.parse import parse_qsl, urlsplit

import orjson

from harness.clock import RealClock
from harness.service.core import LimitService
from harness.service.storage import open_ledger

# (method, path, query) -> None (answer normally) or a misbehaviour's name
Rule = Callable[[str, str, dict], "str | None"]
TRICKLE_EVERY_S = 0.2
ENDLESS_PIECE = b"1," * 32_000


class HostileTarget:
    def __init__(self, rule: Rule) -> None:
        self.rule = rule
        self.service = LimitService(open_ledger("memory://"), RealClock())
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.misbehaved_at_s: dict[str, float] = {}  # misbehaviour: when it first began
        self.headers_seen: list[dict[str, str]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self):
                owner.answer(self)

            do_POST = do_DELETE = do_GET

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> "HostileTarget":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        self.server.shutdown()
        self.server.server_close()

    def answer(self, handler: http.server.BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = dict(parse_qsl(parts.query))
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        self.headers_seen.append(dict(handler.headers.items()))
        how = self.rule(handler.command, parts.path, query)
        if how is not None:
            self.misbehaved_at_s.setdefault(how, time.monotonic())
        try:
            if how == "stall":
                self.stopping.wait()
                return
            if how in ("trickle", "endless"):
                self._stream(handler, how)
                return
            with self.lock:
                self.service.advance()
                status, body = self.service.call(handler.command, parts.path,
                                                 orjson.loads(raw) if raw else None,
                                                 query or None)
            if how in ("echo", "echo_lie") and isinstance(body, dict):
                body = {**body, "echo": dict(handler.headers.items())}
                if how == "echo_lie" and type(body.get("available")) is int:
                    body["available"] += 1
            data = b"" if body is None else orjson.dumps(body)
            handler.send_response(status)
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
        except OSError:
            pass  # the harness hung up on us: what it should do with a bad answer

    def _stream(self, handler, how: str) -> None:
        handler.send_response(200)
        handler.send_header("content-type", "application/json")
        if how == "trickle":  # a whole answer of 1 MB, under the 8 MiB bound, never finished
            handler.send_header("content-length", str(1_000_000))
            handler.end_headers()
            handler.wfile.write(b"[")
            while not self.stopping.wait(TRICKLE_EVERY_S):
                handler.wfile.write(b"1")
                handler.wfile.flush()
            return
        handler.send_header("transfer-encoding", "chunked")
        handler.end_headers()
        handler.wfile.write(b"1\r\n[\r\n")
        piece = f"{len(ENDLESS_PIECE):x}\r\n".encode() + ENDLESS_PIECE + b"\r\n"
        while not self.stopping.is_set():
            handler.wfile.write(piece)
