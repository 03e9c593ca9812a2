"""The contract's routes: method and path to a core handler. Shared by every edge."""

from __future__ import annotations

from typing import Any, Callable

from ..contract import BadRequest, is_id

# (handler, the id in the path or None); (None, None) for a route the contract does not have.
Route = tuple[Callable[..., Any] | None, str | None]


# Every handler takes (service, path id or None, body, query), positionally: `call` runs one per
# request, and keyword arguments would cost more than some handlers do.
def _open(svc, _, body, query):
    return svc.open_account(body)


def _draw(svc, account_id, body, query):
    return svc.draw(account_id, body)


def _repay(svc, account_id, body, query):
    return svc.repay(account_id, body)


def _limit(svc, account_id, body, query):
    return svc.set_limit(account_id, body)


def _status(svc, account_id, body, query):
    return svc.set_status(account_id, body)


def _display(svc, account_id, body, query):
    return svc.display(account_id)


def _ledger(svc, _, body, query):
    return svc.ledger_page(query)


def _health(svc, _, body, query):
    return 200, {"status": "ok"}


def _chaos(svc, _, body, query):
    return svc.chaos_status()


def _fault_add(svc, _, body, query):
    return svc.chaos_add(body)


def _fault_remove(svc, fault_id, body, query):
    return svc.chaos_remove(fault_id)


def _sync(svc, _, body, query):
    return svc.sync()


_WRITE_HANDLERS = {"draws": _draw, "repayments": _repay, "limit": _limit, "status": _status}
_FIXED = {
    ("POST", "/v1/accounts"): _open,
    ("GET", "/v1/ledger"): _ledger,
    ("GET", "/v1/health"): _health,
    ("GET", "/v1/chaos"): _chaos,
    ("POST", "/v1/chaos/faults"): _fault_add,
    ("DELETE", "/v1/chaos/faults"): _fault_remove,
    ("GET", "/v1/sync"): _sync,
}


_CACHE: dict[tuple[str, str], Route] = {}
CACHE_MAX = 65_536  # routes seen recently; cleared when full, so it stays bounded


def route(method: str, path: str) -> Route:
    """(handler, path id or None), or (None, None) for an unknown route. A malformed id in the path is
    a 400, as the contract asks for bad ids."""
    key = (method, path)
    found = _CACHE.get(key)
    if found is None:
        found = _route(method, path)
        if len(_CACHE) >= CACHE_MAX:
            _CACHE.clear()
        _CACHE[key] = found
    return found


def _route(method: str, path: str):
    handler = _FIXED.get((method, path))
    if handler is not None:
        return handler, None
    parts = path.split("/")
    # ['', 'v1', 'accounts', ID, ACTION] and ['', 'v1', 'chaos', 'faults', ID]
    if len(parts) == 5 and parts[0] == "" and parts[1] == "v1":
        if parts[2] == "accounts":
            action = parts[4]
            handler = (_WRITE_HANDLERS.get(action) if method == "POST"
                       else _display if method == "GET" and action == "display" else None)
            if handler is not None:
                return handler, _path_id(parts[3])
        elif parts[2] == "chaos" and parts[3] == "faults" and method == "DELETE":
            return _fault_remove, _path_id(parts[4])
    return None, None


def _path_id(raw: str) -> str:
    if not is_id(raw):
        raise BadRequest("ids are 1 to 64 characters from [A-Za-z0-9._:-]")
    return raw
