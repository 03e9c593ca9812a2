"""An independent credit-limit service for the tests of faults from outside: it speaks the
contract (docs/contract.md) with no chaos API, shares no code with the reference service or the
harness (standard library only), and is run as a child process, as a user's own service would:

    python outside_service.py --port PORT --ledger FILE [--lag-ms 20]
                              [--ack-before-durable] [--broken-idempotency]
                              [--repay-not-shown] [--draw-over-limit]

The ledger is a JSON-lines file: each accepted write is appended and fsynced before it is
acknowledged, and so is each remembered rejection (the contract remembers every outcome but a
400). On start the file is read back: the ledger, the outcomes by request id and the display are
rebuilt from it before the port is opened. A projector thread applies each committed entry to
the display `--lag-ms` after its commit, as an asynchronous read model would.

Four seeded bugs, each a real one:
- `--ack-before-durable`: writes go to a large user-space buffer and are acknowledged before they
  reach the disk; a SIGKILL loses every acknowledged write still in the buffer.
- `--broken-idempotency`: request ids are remembered in memory only, and never rebuilt from the
  file: after a restart, a client retrying a request that had committed writes it a second time.
- `--repay-not-shown`: the projector moves the display's as_of_seq past a repay without applying
  it: the user repays and the available limit does not come back.
- `--draw-over-limit`: a draw is checked against the credit line, not against what is left of
  it: the ledger holds draws the limit did not allow.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import http.server
import json
import os
import re
import signal
import sys
import threading
import time

ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
STATUSES = ("active", "frozen", "overdue", "closed")
PRODUCTS = ("huabei", "jiebei")
BODY_MAX = 64 * 1024
PAGE_DEFAULT, PAGE_MAX = 1000, 10_000
BUFFER_BYTES = 1 << 22  # the buggy mode's write buffer: far more than a short test writes
FLUSH_S = 0.5
ROUTES = {"draws": "draw", "repayments": "repay", "limit": "limit", "status": "status"}


class Refused(Exception):
    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code = status, code


class Account:
    __slots__ = ("credit_line", "outstanding", "status")

    def __init__(self, credit_line: int) -> None:
        self.credit_line, self.outstanding, self.status = credit_line, 0, "active"

    def available(self) -> int:
        return max(0, self.credit_line - self.outstanding) if self.status == "active" else 0

    def apply(self, entry: dict) -> None:
        kind = entry["type"]
        if kind == "draw":
            self.outstanding += entry["amount"]
        elif kind == "repay":
            self.outstanding -= entry["amount"]
        elif kind == "limit":
            self.credit_line = entry["credit_line"]
        elif kind == "status":
            self.status = entry["status"]

    def view(self, account_id: str, as_of_seq: int) -> dict:
        available = self.available()
        return {"account_id": account_id, "credit_line": self.credit_line,
                "outstanding": self.outstanding, "available": available, "status": self.status,
                "usable": available > 0, "as_of_seq": as_of_seq}


class Service:
    def __init__(self, path: str, lag_ms: int, ack_before_durable: bool,
                 broken_idempotency: bool, repay_not_shown: bool = False,
                 draw_over_limit: bool = False) -> None:
        self.path, self.lag_s = path, lag_ms / 1000
        self.ack_before_durable, self.broken_idempotency = ack_before_durable, broken_idempotency
        self.repay_not_shown, self.draw_over_limit = repay_not_shown, draw_over_limit
        self.lock = threading.Lock()
        self.entries: list[dict] = []
        self.accounts: dict[str, Account] = {}
        self.outcomes: dict[str, tuple[int, dict]] = {}
        self.display: dict[str, tuple[Account, int]] = {}
        self.pending: collections.deque = collections.deque()
        self.wake = threading.Condition(self.lock)
        self._load()
        self.file = open(path, "ab", buffering=BUFFER_BYTES if ack_before_durable else 0)

    # -- the file --------------------------------------------------------------------------
    def _load(self) -> None:
        if not os.path.exists(self.path):
            return
        with open(self.path, "rb") as f:
            data = f.read()
        good = 0
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # torn by a crash mid-write: never acknowledged
            record = json.loads(line)
            good += len(line)
            if "entry" in record:
                entry = record["entry"]
                self.entries.append(entry)
                if entry["type"] == "open":
                    self.accounts[entry["account_id"]] = Account(entry["credit_line"])
                else:
                    self.accounts[entry["account_id"]].apply(entry)
            if not self.broken_idempotency and "outcome" in record:
                self.outcomes[record["request_id"]] = tuple(record["outcome"])
        if good < len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good)
        # Rebuilt straight from the ledger: the display is current once the port opens.
        last_seq = {entry["account_id"]: entry["seq"] for entry in self.entries}
        self.display = {account_id: (_copy(account), last_seq[account_id])
                        for account_id, account in self.accounts.items()}

    def flush_now_and_then(self) -> None:
        """The buggy mode's writer: the buffer reaches the OS every FLUSH_S, so a crash loses
        what was acknowledged since the last flush."""
        while True:
            time.sleep(FLUSH_S)
            with self.lock:
                self.file.flush()

    def _append(self, records: list[dict]) -> None:
        data = b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        self.file.write(data)
        if not self.ack_before_durable:
            os.fsync(self.file.fileno())

    # -- writes ----------------------------------------------------------------------------
    def write(self, kind: str, account_id: str, body: dict) -> tuple[int, dict]:
        request_id = body.get("request_id")
        if not isinstance(request_id, str) or not ID.fullmatch(request_id):
            raise Refused(400, "bad_request", "request_id must be an id")
        value = _validated(kind, body)
        with self.lock:
            known = self.outcomes.get(request_id)
            if known is not None:
                return known
            try:
                entries = self._judge(kind, account_id, body, value, request_id)
            except Refused as exc:
                outcome = (exc.status, {"error": exc.code, "detail": str(exc)})
                self._append([{"request_id": request_id, "outcome": outcome}])
                self.outcomes[request_id] = outcome
                return outcome
            self._append([{"entry": e} for e in entries] +
                         [{"request_id": request_id, "outcome": self._answer(kind, account_id,
                                                                              entries[0])}])
            for entry in entries:
                self.entries.append(entry)
                if entry["type"] == "open":
                    self.accounts[account_id] = Account(entry["credit_line"])
                else:
                    self.accounts[account_id].apply(entry)
                self.pending.append((time.monotonic() + self.lag_s, entry))
            self.wake.notify()
            outcome = self._answer(kind, account_id, entries[0])
            self.outcomes[request_id] = outcome
            return outcome

    def _answer(self, kind: str, account_id: str, entry: dict) -> tuple[int, dict]:
        if kind == "open":
            view = Account(entry["credit_line"]).view(account_id, entry["seq"])
            view.pop("as_of_seq")
            return 201, {**view, "entry_id": entry["entry_id"], "seq": entry["seq"]}
        return 201, {"entry_id": entry["entry_id"], "seq": entry["seq"]}

    def _judge(self, kind, account_id, body, value, request_id) -> list[dict]:
        account = self.accounts.get(account_id)
        if kind == "open":
            if account is not None:
                raise Refused(409, "exists", f"account {account_id} exists")
            return [self._entry(request_id, account_id, "open", product=body["product"],
                                credit_line=value)]
        if account is None:
            raise Refused(404, "not_found", f"no account {account_id}")
        if kind == "draw":
            if account.status != "active":
                raise Refused(423, "account_not_active", f"account is {account.status}")
            left = account.credit_line if self.draw_over_limit else account.available()
            if value > left:
                raise Refused(409, "insufficient_limit", "over the available limit")
            return [self._entry(request_id, account_id, "draw", amount=value)]
        if kind == "repay":
            if account.status == "closed":
                raise Refused(423, "account_not_active", "account is closed")
            if value > account.outstanding:
                raise Refused(422, "overpayment", "over the outstanding balance")
            repay = self._entry(request_id, account_id, "repay", amount=value)
            if account.status == "overdue" and value == account.outstanding:
                return [repay, self._entry(request_id + ":cure", account_id, "status",
                                           status="active", reason="cured", after=repay)]
            return [repay]
        if kind == "limit":
            if account.status == "closed":
                raise Refused(423, "account_not_active", "account is closed")
            return [self._entry(request_id, account_id, "limit", credit_line=value,
                                reason=body["reason"])]
        if value == "closed" and account.outstanding != 0:
            raise Refused(409, "outstanding_balance", "the account still owes money")
        return [self._entry(request_id, account_id, "status", status=value,
                            reason=body["reason"])]

    def _entry(self, request_id, account_id, kind, after=None, **fields) -> dict:
        seq = (after or (self.entries[-1] if self.entries else {"seq": 0}))["seq"] + 1
        at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
        return {"seq": seq, "entry_id": f"e{seq}", "request_id": request_id,
                "account_id": account_id, "type": kind, "at": at.replace("+00:00", "Z"),
                **fields}

    # -- reads -----------------------------------------------------------------------------
    def shown(self, account_id: str) -> tuple[int, dict]:
        with self.lock:
            if account_id not in self.accounts:
                return 404, {"error": "not_found", "detail": f"no account {account_id}"}
            shown = self.display.get(account_id)
            if shown is None:  # opened, not projected yet
                return 503, {"error": "display_unavailable", "detail": "not built yet"}
            return 200, shown[0].view(account_id, shown[1])

    def ledger(self, after_seq: int, limit: int) -> dict:
        with self.lock:
            page = [e for e in self.entries if e["seq"] > after_seq][:limit]
        return {"entries": page, "next_seq": page[-1]["seq"] if page else after_seq}

    def project(self) -> None:
        """The projector: each entry reaches the display lag_ms after its commit."""
        with self.lock:
            while True:
                while not self.pending:
                    self.wake.wait()
                due_s, entry = self.pending[0]
                wait_s = due_s - time.monotonic()
                if wait_s > 0:
                    self.wake.wait(wait_s)
                    continue
                self.pending.popleft()
                shown = self.display.get(entry["account_id"])
                account = Account(entry["credit_line"]) if entry["type"] == "open" else \
                    _copy(shown[0])
                if entry["type"] != "open" and not (self.repay_not_shown
                                                    and entry["type"] == "repay"):
                    account.apply(entry)
                self.display[entry["account_id"]] = (account, entry["seq"])


def _copy(account: Account) -> Account:
    out = Account(account.credit_line)
    out.outstanding, out.status = account.outstanding, account.status
    return out


def _money(body: dict, name: str, positive: bool = True) -> int:
    value = body.get(name)
    if type(value) is not int or value < (1 if positive else 0):
        raise Refused(400, "bad_request", f"{name} must be a {'positive' if positive else ''} "
                                          f"integer number of fen")
    return value


def _reason(body: dict) -> None:
    reason = body.get("reason")
    if not isinstance(reason, str) or not 1 <= len(reason) <= 64:
        raise Refused(400, "bad_request", "reason must be 1 to 64 characters")


def _validated(kind: str, body: dict):
    if kind == "open":
        if not isinstance(body.get("account_id"), str) or not ID.fullmatch(body["account_id"]):
            raise Refused(400, "bad_request", "account_id must be an id")
        if body.get("product") not in PRODUCTS:
            raise Refused(400, "bad_request", "unknown product")
        return _money(body, "credit_line", positive=False)
    if kind in ("draw", "repay"):
        return _money(body, "amount")
    _reason(body)
    if kind == "limit":
        return _money(body, "credit_line", positive=False)
    if body.get("status") not in STATUSES:
        raise Refused(400, "bad_request", "unknown status")
    return body["status"]


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # eight clients reconnecting at once after a restart


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes
    service: Service

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        path, _, query = self.path.partition("?")
        parts = path.strip("/").split("/")
        if path == "/v1/health":
            return self._send(200, {"status": "ok"})
        if path == "/v1/ledger":
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            try:
                after_seq = int(params.get("after_seq", "0"))
                limit = int(params.get("limit", str(PAGE_DEFAULT)))
            except ValueError:
                return self._send(400, {"error": "bad_request", "detail": "bad ledger query"})
            if after_seq < 0 or limit < 1:
                return self._send(400, {"error": "bad_request", "detail": "bad ledger query"})
            return self._send(200, self.service.ledger(after_seq, min(limit, PAGE_MAX)))
        if len(parts) == 4 and parts[:2] == ["v1", "accounts"] and parts[3] == "display":
            if not ID.fullmatch(parts[2]):
                return self._send(400, {"error": "bad_request", "detail": "bad id"})
            return self._send(*self.service.shown(parts[2]))
        self._send(404, {"error": "not_found", "detail": "no such route"})

    def do_POST(self) -> None:
        parts = self.path.strip("/").split("/")
        length = int(self.headers.get("content-length") or 0)
        if length > BODY_MAX:
            self.close_connection = True
            return self._send(413, {"error": "too_large", "detail": "body over 64 KiB"})
        raw = self.rfile.read(length)
        if parts == ["v1", "accounts"]:
            kind, account_id = "open", None
        elif len(parts) == 4 and parts[:2] == ["v1", "accounts"] and parts[3] in ROUTES:
            kind, account_id = ROUTES[parts[3]], parts[2]
        else:
            return self._send(404, {"error": "not_found", "detail": "no such route"})
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise Refused(400, "bad_request", "the body must be a JSON object")
            if account_id is None:
                account_id = body.get("account_id")
            elif not ID.fullmatch(account_id):
                raise Refused(400, "bad_request", "bad account id")
            status, answer = self.service.write(kind, account_id, body)
        except ValueError:
            status, answer = 400, {"error": "bad_request", "detail": "the body is not JSON"}
        except Refused as exc:
            status, answer = exc.status, {"error": exc.code, "detail": str(exc)}
        self._send(status, answer)

    def do_DELETE(self) -> None:
        self._send(404, {"error": "not_found", "detail": "no such route"})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ledger", required=True)
    parser.add_argument("--lag-ms", type=int, default=20)
    parser.add_argument("--ack-before-durable", action="store_true")
    parser.add_argument("--broken-idempotency", action="store_true")
    parser.add_argument("--repay-not-shown", action="store_true")
    parser.add_argument("--draw-over-limit", action="store_true")
    args = parser.parse_args(argv)
    service = Service(args.ledger, args.lag_ms, args.ack_before_durable, args.broken_idempotency,
                      args.repay_not_shown, args.draw_over_limit)
    threading.Thread(target=service.project, daemon=True, name="projector").start()
    if args.ack_before_durable:
        threading.Thread(target=service.flush_now_and_then, daemon=True, name="flush").start()
    Handler.service = service
    server = Server(("127.0.0.1", args.port), Handler)

    def stop(*_) -> None:  # a clean stop flushes what the buggy mode still buffers
        with service.lock:
            service.file.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    print(f"serving on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
