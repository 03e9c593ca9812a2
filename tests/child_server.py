"""A tiny HTTP server for fault provider tests to start as a child process (or in a container):
it answers every GET with 200 `ok`, so a test can tell a paused, killed or cut-off child from a
running one."""

from __future__ import annotations

from pathlib import Path

import urllib3

# Run as `python -c SERVER PORT`; prints "serving" once it is about to listen.
SERVER = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
print("serving", flush=True)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


def answers(url: str, timeout_s: float = 2.0) -> bool:
    try:
        return urllib3.request("GET", url, retries=False, timeout=timeout_s).status == 200
    except urllib3.exceptions.HTTPError:
        return False


def gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (it runs nothing any more)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True
