"""Malformed and hostile input over real HTTP: each gets the contract's status, error code and a
one-line detail, writes nothing to the ledger, and leaves the server serving."""

from __future__ import annotations

import uuid

import orjson
import pytest
import urllib3

from harness.clock import RealClock
from harness.contract import BODY_BYTES_MAX, FEN_MAX
from harness.service.core import LimitService
from harness.service.server import start_in_thread
from harness.service.storage import open_ledger

pytestmark = pytest.mark.http

ACCT = "{acct}"  # replaced by a real, open account so only the input can be at fault


def _body(**fields) -> bytes:
    return orjson.dumps({"request_id": f"bad-{uuid.uuid4().hex[:12]}", **fields})


def _open(**override) -> bytes:
    fields = {"account_id": f"new-{uuid.uuid4().hex[:12]}", "product": "huabei",
              "credit_line": 1_000, **override}
    return _body(**{k: v for k, v in fields.items() if v is not ...})


DRAWS = f"/v1/accounts/{ACCT}/draws"
LIMIT = f"/v1/accounts/{ACCT}/limit"
STATUS = f"/v1/accounts/{ACCT}/status"
OVERSIZE = b'{"amount": 1, "request_id": "big", "pad": "' + b"x" * BODY_BYTES_MAX + b'"}'

CASES = [
    # (name, method, path, body bytes, status, error)
    ("malformed-json", "POST", DRAWS, b'{"amount": 1, "request_id": ', 400, "bad_request"),
    ("trailing-garbage", "POST", DRAWS, _body(amount=1) + b"}", 400, "bad_request"),
    ("non-utf8", "POST", DRAWS, b'{"amount": 1, "request_id": "r\xff"}', 400, "bad_request"),
    ("empty-body", "POST", DRAWS, b"", 400, "bad_request"),
    ("whitespace-body", "POST", DRAWS, b"  \n", 400, "bad_request"),
    ("json-array", "POST", DRAWS, b"[1, 2]", 400, "bad_request"),
    ("json-string", "POST", DRAWS, b'"draw"', 400, "bad_request"),
    ("json-number", "POST", DRAWS, b"42", 400, "bad_request"),
    ("json-null", "POST", DRAWS, b"null", 400, "bad_request"),
    ("missing-amount", "POST", DRAWS, _body(), 400, "bad_request"),
    ("missing-request-id", "POST", DRAWS, b'{"amount": 1}', 400, "bad_request"),
    ("string-amount", "POST", DRAWS, _body(amount="100"), 400, "bad_request"),
    ("float-amount", "POST", DRAWS, _body(amount=100.0), 400, "bad_request"),
    ("exponent-amount", "POST", DRAWS, b'{"amount": 1e2, "request_id": "e"}', 400, "bad_request"),
    ("bool-amount", "POST", DRAWS, _body(amount=True), 400, "bad_request"),
    ("null-amount", "POST", DRAWS, _body(amount=None), 400, "bad_request"),
    ("zero-amount", "POST", DRAWS, _body(amount=0), 400, "bad_request"),
    ("negative-amount", "POST", DRAWS, _body(amount=-5), 400, "bad_request"),
    ("amount-above-cap", "POST", DRAWS, _body(amount=FEN_MAX + 1), 400, "bad_request"),
    ("amount-beyond-int64", "POST", DRAWS, b'{"amount": 100000000000000000000000, '
                                           b'"request_id": "huge"}', 400, "bad_request"),
    ("zero-repay", "POST", f"/v1/accounts/{ACCT}/repayments", _body(amount=0), 400,
     "bad_request"),
    ("negative-line", "POST", LIMIT, _body(credit_line=-1, reason="cut"), 400, "bad_request"),
    ("string-line", "POST", LIMIT, _body(credit_line="1", reason="cut"), 400, "bad_request"),
    ("missing-reason", "POST", LIMIT, _body(credit_line=1), 400, "bad_request"),
    ("empty-reason", "POST", LIMIT, _body(credit_line=1, reason=""), 400, "bad_request"),
    ("long-reason", "POST", STATUS, _body(status="frozen", reason="r" * 65), 400, "bad_request"),
    ("number-reason", "POST", STATUS, _body(status="frozen", reason=7), 400, "bad_request"),
    ("unknown-status", "POST", STATUS, _body(status="deleted", reason="x"), 400, "bad_request"),
    ("status-case", "POST", STATUS, _body(status="Active", reason="x"), 400, "bad_request"),
    ("unknown-product", "POST", "/v1/accounts", _open(product="yuebao"), 400, "bad_request"),
    ("missing-product", "POST", "/v1/accounts", _open(product=...), 400, "bad_request"),
    ("negative-open-line", "POST", "/v1/accounts", _open(credit_line=-1), 400, "bad_request"),
    ("float-open-line", "POST", "/v1/accounts", _open(credit_line=1.5), 400, "bad_request"),
    ("id-with-space", "POST", "/v1/accounts", _open(account_id="a b"), 400, "bad_request"),
    ("id-empty", "POST", "/v1/accounts", _open(account_id=""), 400, "bad_request"),
    ("id-65-chars", "POST", "/v1/accounts", _open(account_id="a" * 65), 400, "bad_request"),
    ("id-number", "POST", "/v1/accounts", _open(account_id=12), 400, "bad_request"),
    ("id-unicode", "POST", "/v1/accounts", _open(account_id="花呗"), 400, "bad_request"),
    ("request-id-slash", "POST", DRAWS, b'{"amount": 1, "request_id": "a/b"}', 400,
     "bad_request"),
    ("request-id-empty", "POST", DRAWS, b'{"amount": 1, "request_id": ""}', 400, "bad_request"),
    ("path-id-dollar", "POST", "/v1/accounts/bad$id/draws", _body(amount=1), 400, "bad_request"),
    ("path-id-65", "POST", f"/v1/accounts/{'a' * 65}/draws", _body(amount=1), 400,
     "bad_request"),
    ("path-id-space", "GET", "/v1/accounts/bad%20id/display", None, 400, "bad_request"),
    ("path-id-encoded-slash", "GET", "/v1/accounts/a%2Fb/display", None, 400, "bad_request"),
    ("path-id-encoded-slash-write", "POST", "/v1/accounts/a%2fb/draws", _body(amount=1), 400,
     "bad_request"),
    ("path-fault-id", "DELETE", "/v1/chaos/faults/bad$id", None, 400, "bad_request"),
    ("unknown-fault-kind", "POST", "/v1/chaos/faults", b'{"kind": "meteor"}', 400,
     "bad_request"),
    ("oversize-body", "POST", DRAWS, OVERSIZE, 413, "too_large"),
    ("oversize-open", "POST", "/v1/accounts", OVERSIZE, 413, "too_large"),
    ("unknown-route", "GET", "/v1/nothing", None, 404, "not_found"),
    ("unknown-version", "GET", "/v2/health", None, 404, "not_found"),
    ("unknown-action", "POST", f"/v1/accounts/{ACCT}/transfers", _body(amount=1), 404,
     "not_found"),
    ("unknown-route-bad-body", "POST", "/v1/nothing", b"{not json", 404, "not_found"),
    ("trailing-slash", "GET", "/v1/health/", None, 404, "not_found"),
    ("put-accounts", "PUT", "/v1/accounts", _open(), 404, "not_found"),
    ("get-draws", "GET", DRAWS, None, 404, "not_found"),
    ("post-display", "POST", f"/v1/accounts/{ACCT}/display", _body(amount=1), 404, "not_found"),
    ("delete-health", "DELETE", "/v1/health", None, 404, "not_found"),
    ("post-ledger", "POST", "/v1/ledger", b"{}", 404, "not_found"),
    ("patch-chaos", "PATCH", "/v1/chaos", b"{}", 404, "not_found"),
    ("get-fault", "GET", "/v1/chaos/faults/f-1", None, 404, "not_found"),
]


@pytest.fixture(scope="module")
def account(api) -> str:
    account_id = f"victim-{uuid.uuid4().hex[:12]}"
    status, body = api.post("/v1/accounts", {"account_id": account_id, "product": "jiebei",
                                             "credit_line": 10_000, "request_id": account_id})
    assert status == 201, body
    return account_id


def _ledger_seq(api) -> int:
    return api.get("/v1/sync")[1]["ledger_seq"]


def _assert_one_line_error(status: int, body, expected_status: int, expected_error: str):
    assert status == expected_status, body
    assert set(body) == {"error", "detail"} and body["error"] == expected_error, body
    detail = body["detail"]
    assert isinstance(detail, str) and detail.strip() and "\n" not in detail, detail


@pytest.mark.parametrize("name,method,path,raw,expected_status,expected_error", CASES,
                         ids=[case[0] for case in CASES])
def test_bad_input_is_refused_with_its_code_and_writes_nothing(
        api, account, name, method, path, raw, expected_status, expected_error):
    before = _ledger_seq(api)
    status, body, headers = api.request(method, path.replace(ACCT, account), body=raw)
    _assert_one_line_error(status, body, expected_status, expected_error)
    assert headers["content-type"] == "application/json"
    assert api.get("/v1/health") == (200, {"status": "ok"})
    assert _ledger_seq(api) == before, "a refused request wrote to the ledger"


def test_a_streamed_body_over_the_limit_is_413(api, account):
    # Chunked: no content-length to judge by, so the server must count the bytes it reads.
    before = _ledger_seq(api)
    chunks = (OVERSIZE[i:i + 8192] for i in range(0, len(OVERSIZE), 8192))
    status, body, _ = api.request("POST", f"/v1/accounts/{account}/draws", body=chunks,
                                  headers={"transfer-encoding": "chunked"})
    _assert_one_line_error(status, body, 413, "too_large")
    assert _ledger_seq(api) == before


def test_a_body_of_exactly_the_limit_is_read(api, account):
    fields = orjson.dumps({"amount": 1, "request_id": f"edge-{uuid.uuid4().hex[:12]}"})
    raw = fields + b" " * (BODY_BYTES_MAX - len(fields))  # JSON allows trailing whitespace
    assert len(raw) == BODY_BYTES_MAX
    status, body, _ = api.request("POST", f"/v1/accounts/{account}/draws", body=raw)
    assert status == 201, body


def test_the_server_keeps_serving_after_a_burst_of_bad_input(api, account):
    for raw in (b"{", b"\xff\xfe", b"[]", OVERSIZE, b"null") * 10:
        status, _, _ = api.request("POST", f"/v1/accounts/{account}/draws", body=raw)
        assert status in (400, 413)
    status, body = api.post(f"/v1/accounts/{account}/draws",
                            {"amount": 1, "request_id": f"after-{uuid.uuid4().hex[:12]}"})
    assert status == 201, body


class _Exploding:
    """Wraps a real service; one path raises, as a bug in the core would."""

    def __init__(self, service) -> None:
        self.service = service
        self.clock, self.store, self.config = service.clock, service.store, service.config
        self.advance, self.next_wakeup_ms = service.advance, service.next_wakeup_ms

    def begin(self, found, method, path, body=None, query=None):
        if path == "/v1/health" and query.get("explode"):
            raise RuntimeError("boom\nwith a second line")
        return self.service.begin(found, method, path, body, query)


def test_an_unexpected_exception_is_a_500_and_the_server_keeps_serving(capfd):
    url, stop = start_in_thread(lambda: _Exploding(LimitService(open_ledger("memory://"),
                                                                RealClock())))
    try:
        with urllib3.PoolManager(retries=False, timeout=5.0) as pool:
            response = pool.request("GET", f"{url}/v1/health?explode=1")
            body = orjson.loads(response.data)
            assert response.status == 500 and body["error"] == "internal"
            assert "boom" in body["detail"] and "\n" not in body["detail"]
            response = pool.request("GET", f"{url}/v1/health")
            assert response.status == 200 and orjson.loads(response.data) == {"status": "ok"}
    finally:
        stop()
    logged = [line for line in capfd.readouterr().err.splitlines() if "boom" in line]
    assert len(logged) == 1, logged
