"""The words of CONTRACT.md v1 as data: ids, money bounds, statuses, error codes, fault kinds.

Both edges import from here (the reference service validating requests, the harness validating
answers), so the two can never disagree about what the contract allows.
"""

from __future__ import annotations

import re
from typing import Any

ID_PATTERN = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# Contract leaves money unbounded; SQLite and most ledgers store int64, so we cap every amount and
# line at 10^15 fen (10 trillion yuan) and answer 400 above it (README: "choices").
FEN_MAX = 10**15
REASON_LEN_MAX = 64
BODY_BYTES_MAX = 64 * 1024
LEDGER_PAGE_DEFAULT = 1000
LEDGER_PAGE_MAX = 10_000

PRODUCTS = ("huabei", "jiebei")
STATUSES = ("active", "frozen", "overdue", "closed")
# A write's kind is the type of the ledger entry it makes.
WRITE_KINDS = ("open", "draw", "repay", "limit", "status")
ENTRY_TYPES = WRITE_KINDS
# The fields an entry carries beyond the common ones, by type; the write's request fixes each.
ENTRY_FIELDS_BY_TYPE = {
    "open": ("product", "credit_line"),
    "draw": ("amount",),
    "repay": ("amount",),
    "limit": ("credit_line", "reason"),
    "status": ("status", "reason"),
}
ENTRY_COMMON_FIELDS = ("seq", "entry_id", "request_id", "account_id", "type", "at")
# Every column a stored entry may have: the common ones, then each type's own (once each).
ENTRY_COLUMNS = ENTRY_COMMON_FIELDS + ("product", "credit_line", "amount", "status", "reason")

FAULT_KINDS = (
    "delay_sync",
    "drop_events",
    "duplicate_events",
    "reorder_events",
    "pause_sync",
    "maintenance_reset",
)
# Bounds on fault parameters: the contract only says "missing or mistyped is 400"; these keep a
# fault from wedging a run (an hour of delay, a window larger than any queue).
DELAY_MS_MAX = 600_000
WINDOW_MAX = 1000
RESET_MODES = ("clear", "snapshot")

CURE_SUFFIX = ":cure"
CURE_REASON = "cured"


def cure_request_id(request_id: str) -> str:
    """The request_id of the cure entry a repay with this request_id makes."""
    return request_id + CURE_SUFFIX


def cured_request_id(request_id: str) -> str | None:
    """The repay's request_id when this is a cure entry's request_id, else None."""
    return request_id[: -len(CURE_SUFFIX)] if request_id.endswith(CURE_SUFFIX) else None

# Error codes by name, with the status code the contract gives each.
ERRORS = {
    "bad_request": 400,
    "not_found": 404,
    "exists": 409,
    "insufficient_limit": 409,
    "outstanding_balance": 409,
    "too_large": 413,
    "overpayment": 422,
    "account_not_active": 423,
    "display_unavailable": 503,
}


class BadRequest(ValueError):
    """A request the contract answers with 400; its message is the one-line detail."""


def is_id(value: Any) -> bool:
    return type(value) is str and ID_PATTERN.fullmatch(value) is not None


def is_fen(value: Any, *, minimum: int) -> bool:
    # bool is an int subclass in Python; JSON true must not pass as 1 fen.
    return type(value) is int and minimum <= value <= FEN_MAX


def require_object(body: Any) -> dict:
    if type(body) is not dict:
        raise BadRequest("body must be a JSON object")
    return body


def require_id(body: dict, field: str) -> str:
    value = body.get(field)
    if value is None:
        raise BadRequest(f"missing field {field!r}")
    if not is_id(value):
        raise BadRequest(f"{field!r} must be a string of 1 to 64 characters from [A-Za-z0-9._:-]")
    return value


def require_fen(body: dict, field: str, *, minimum: int) -> int:
    value = body.get(field)
    if value is None:
        raise BadRequest(f"missing field {field!r}")
    if not is_fen(value, minimum=minimum):
        low = "a positive" if minimum > 0 else "a non-negative"
        raise BadRequest(f"{field!r} must be {low} integer number of fen, at most {FEN_MAX}")
    return value


def require_reason(body: dict) -> str:
    value = body.get("reason")
    if value is None:
        raise BadRequest("missing field 'reason'")
    if type(value) is not str or not 1 <= len(value) <= REASON_LEN_MAX:
        raise BadRequest(f"'reason' must be a string of 1 to {REASON_LEN_MAX} characters")
    return value


def require_choice(body: dict, field: str, choices: tuple[str, ...]) -> str:
    value = body.get(field)
    if value is None:
        raise BadRequest(f"missing field {field!r}")
    if type(value) is not str or value not in choices:
        raise BadRequest(f"{field!r} must be one of {', '.join(choices)}")
    return value


def parse_open(body: Any) -> dict:
    body = require_object(body)
    return {
        "account_id": require_id(body, "account_id"),
        "product": require_choice(body, "product", PRODUCTS),
        "credit_line": require_fen(body, "credit_line", minimum=0),
        "request_id": require_id(body, "request_id"),
    }


def parse_amount(body: Any) -> dict:
    if type(body) is dict:  # a well-formed body passes in one go: this runs on every draw/repay
        amount, request_id = body.get("amount"), body.get("request_id")
        if (type(amount) is int and 0 < amount <= FEN_MAX and type(request_id) is str
                and ID_PATTERN.fullmatch(request_id) is not None):
            return {"amount": amount, "request_id": request_id}
    body = require_object(body)
    return {"amount": require_fen(body, "amount", minimum=1), "request_id": require_id(body, "request_id")}


def parse_limit(body: Any) -> dict:
    body = require_object(body)
    return {
        "credit_line": require_fen(body, "credit_line", minimum=0),
        "reason": require_reason(body),
        "request_id": require_id(body, "request_id"),
    }


def parse_status(body: Any) -> dict:
    body = require_object(body)
    return {
        "status": require_choice(body, "status", STATUSES),
        "reason": require_reason(body),
        "request_id": require_id(body, "request_id"),
    }


def parse_fault(body: Any) -> dict:
    """A fault request's kind and params, checked; the fault as the service will echo it."""
    body = require_object(body)
    kind = require_choice(body, "kind", FAULT_KINDS)
    if kind == "delay_sync":
        value = body.get("delay_ms")
        if type(value) is not int or not 0 <= value <= DELAY_MS_MAX:
            raise BadRequest(f"'delay_ms' must be an integer from 0 to {DELAY_MS_MAX}")
        return {"kind": kind, "delay_ms": value}
    if kind in ("drop_events", "duplicate_events"):
        value = body.get("probability")
        if type(value) not in (int, float) or not 0 <= value <= 1:
            raise BadRequest("'probability' must be a number from 0 to 1")
        return {"kind": kind, "probability": float(value)}
    if kind == "reorder_events":
        value = body.get("window")
        if type(value) is not int or not 1 <= value <= WINDOW_MAX:
            raise BadRequest(f"'window' must be an integer from 1 to {WINDOW_MAX}")
        return {"kind": kind, "window": value}
    if kind == "maintenance_reset":
        return {"kind": kind, "mode": require_choice(body, "mode", RESET_MODES)}
    return {"kind": kind}


def parse_ledger_query(query: dict[str, str]) -> tuple[int, int]:
    """`after_seq` and `limit` from a ledger page query string."""
    after_seq = _query_int(query, "after_seq", 0)
    limit = _query_int(query, "limit", LEDGER_PAGE_DEFAULT)
    if after_seq < 0:
        raise BadRequest("'after_seq' must be a non-negative integer")
    if limit < 1:
        raise BadRequest("'limit' must be at least 1")
    return after_seq, min(limit, LEDGER_PAGE_MAX)


def _query_int(query: dict[str, str], name: str, default: int) -> int:
    raw = query.get(name)
    if raw is None:
        return default
    if not re.fullmatch(r"-?[0-9]{1,19}", raw):
        raise BadRequest(f"{name!r} must be an integer")
    return int(raw)


def error_body(code: str, detail: str) -> dict:
    assert code in ERRORS, code
    return {"error": code, "detail": detail}
