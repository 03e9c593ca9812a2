"""A tiny driver for tests: the reference service's sans-IO core under a simulated clock.

`Sim` owns a `SimClock`, a ledger store and a `LimitService`, and talks to the service only
through `LimitService.call` (the same entry point both edges use) and `LimitService.advance`.
Every recorded call keeps the ledger's last seq at the moment it was made, so a test can ask
what the oracle said *then* (for acceptance and rejection checks) long after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from harness import oracle
from harness.clock import SimClock
from harness.service.core import LimitService, ServiceConfig
from harness.service.storage import open_ledger

STEP_MS = 10  # `tick` never moves the clock further than this between two `advance` calls
LEDGER_PAGE = 10_000  # the contract's maximum page size


@dataclass(frozen=True)
class Call:
    t_ms: int
    method: str
    path: str
    body: Any
    query: dict | None
    status: int
    reply: Any
    seq_before: int  # the ledger's last seq just before this call was answered


class Sim:
    def __init__(self, bugs=(), ledger: str = "memory://", seed: int = 0,
                 sync_lag_ms: int = 20, request_prefix: str = "r") -> None:
        # Generated request ids are `{request_prefix}-{n}`: a second Sim on a durable ledger
        # needs another prefix, or its first write would replay the first Sim's answer.
        self.request_prefix = request_prefix
        self.clock = SimClock()
        self.store = open_ledger(ledger)
        self.service = LimitService(self.store, self.clock,
                                    ServiceConfig(sync_lag_ms=sync_lag_ms, seed=seed),
                                    bugs=tuple(bugs))
        self.history: list[Call] = []
        self._next_request = 0

    # -- the wire ----------------------------------------------------------------------------
    def call(self, method: str, path: str, body=None, query=None) -> tuple[int, Any]:
        seq_before = self.service.seq
        status, reply = self.service.call(method, path, body, query)
        self.history.append(Call(self.clock.now_ms(), method, path, body, query, status, reply,
                                 seq_before))
        return status, reply

    def tick(self, ms: int, on_step: Callable[[], None] | None = None) -> None:
        """Let `ms` of simulated time pass, running the service's jobs at least every 10 ms."""
        assert ms >= 0
        remaining = ms
        while remaining > 0:
            step = min(STEP_MS, remaining)
            self.clock.advance(step)
            remaining -= step
            self.service.advance()
            if on_step is not None:
                on_step()

    def now_ms(self) -> int:
        return self.clock.now_ms()

    def close(self) -> None:
        self.store.close()

    # -- reads -------------------------------------------------------------------------------
    def ledger(self, after_seq: int = 0) -> list[dict]:
        """Every entry with seq > after_seq, through GET /v1/ledger paging (not recorded)."""
        out: list[dict] = []
        while True:
            status, page = self.service.call(
                "GET", "/v1/ledger", None,
                {"after_seq": str(after_seq), "limit": str(LEDGER_PAGE)})
            assert status == 200, (status, page)
            if not page["entries"]:
                assert page["next_seq"] == after_seq, page
                return out
            assert page["next_seq"] == page["entries"][-1]["seq"], page
            out.extend(page["entries"])
            after_seq = page["next_seq"]

    def account_entries(self, account_id: str) -> list[dict]:
        return [e for e in self.ledger() if e["account_id"] == account_id]

    def oracle_view(self, account_id: str, as_of_seq: int | None = None) -> dict | None:
        """What the oracle shows for the account over its entries (with seq <= as_of_seq when
        given); None when no such entry exists (no open entry yet)."""
        timeline = oracle.replay(self.account_entries(account_id))
        if not timeline:
            return None
        state = (timeline[-1][1] if as_of_seq is None
                 else oracle.state_at(timeline, as_of_seq))
        return None if state is None else state.view()

    def display(self, account_id: str) -> tuple[int, Any]:
        return self.call("GET", f"/v1/accounts/{account_id}/display")

    # -- writes with generated request ids, for scripted scenarios ---------------------------
    def request_id(self) -> str:
        self._next_request += 1
        return f"{self.request_prefix}-{self._next_request}"

    def open(self, account_id: str, credit_line: int, product: str = "huabei",
             request_id: str | None = None) -> tuple[int, Any]:
        return self.call("POST", "/v1/accounts", {
            "account_id": account_id, "product": product, "credit_line": credit_line,
            "request_id": request_id or self.request_id()})

    def draw(self, account_id: str, amount: int, request_id: str | None = None):
        return self.call("POST", f"/v1/accounts/{account_id}/draws",
                         {"amount": amount, "request_id": request_id or self.request_id()})

    def repay(self, account_id: str, amount: int, request_id: str | None = None):
        return self.call("POST", f"/v1/accounts/{account_id}/repayments",
                         {"amount": amount, "request_id": request_id or self.request_id()})

    def limit(self, account_id: str, credit_line: int, reason: str = "review",
              request_id: str | None = None):
        return self.call("POST", f"/v1/accounts/{account_id}/limit",
                         {"credit_line": credit_line, "reason": reason,
                          "request_id": request_id or self.request_id()})

    def set_status(self, account_id: str, status: str, reason: str = "ops",
                   request_id: str | None = None):
        return self.call("POST", f"/v1/accounts/{account_id}/status",
                         {"status": status, "reason": reason,
                          "request_id": request_id or self.request_id()})

    def fault(self, kind: str, **params) -> str:
        status, reply = self.call("POST", "/v1/chaos/faults", {"kind": kind, **params})
        assert status == 201, (status, reply)
        return reply["fault_id"]

    def clear_faults(self) -> None:
        status, reply = self.call("DELETE", "/v1/chaos/faults")
        assert status == 204, (status, reply)
