"""harness/openapi.json is a valid OpenAPI 3.1 document, agrees with harness/contract.py, and
every answer the reference service gives validates against it (openapi-core, not hand-written
checks): every route, its success and every error code it documents.

Most answers come from the embedded service (in process, fast); the HTTP edge's own answers
(413, unknown routes, malformed JSON) come from the served one.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import orjson
import pytest
from openapi_core import OpenAPI
from openapi_core.exceptions import OpenAPIError
from openapi_core.testing import MockRequest, MockResponse
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate as validate_spec

from harness import contract
from harness.targets import EmbeddedTarget, Reply

HOST_URL = "http://localhost"
METHODS = ("get", "post", "delete")
# Documented only for the HTTP edge: the embedded service takes parsed JSON of any size.
HTTP_EDGE_STATUSES = {413}


# Beside the modules, as it ships in the wheel (harness is a namespace package, which
# importlib.resources cannot read from in an editable install).
DOCUMENT_PATH = Path(contract.__file__).with_name("openapi.json")


def load_document() -> dict:
    return json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))


DOCUMENT = load_document()
OPENAPI = OpenAPI.from_dict(DOCUMENT)


def documented() -> set[tuple[str, str, int]]:
    """(method, path template, status) for every response the document lists."""
    return {(method.upper(), path, int(status))
            for path, item in DOCUMENT["paths"].items()
            for method, operation in item.items() if method in METHODS
            for status in operation["responses"]}


def template_of(path: str) -> str | None:
    for template in DOCUMENT["paths"]:
        if re.fullmatch(re.sub(r"\{[^/]+\}", "[^/]+", template), path):
            return template
    return None


def validate_answer(method: str, path: str, status: int, body, query: dict | None = None,
                    content_type: str = "application/json") -> None:
    """Raises an openapi-core error when the answer breaks the document."""
    request = MockRequest(HOST_URL, method, path, args=query)
    data = b"" if body is None else orjson.dumps(body)
    OPENAPI.validate_response(request, MockResponse(data, status, content_type=content_type))


class Validated:
    """The embedded service behind a client that validates every answer and records which
    documented (method, path, status) it has seen."""

    def __init__(self) -> None:
        self.target = EmbeddedTarget()
        self.seen: set[tuple[str, str, int]] = set()
        self.run = uuid.uuid4().hex[:8]

    def call(self, method: str, path: str, body=None, query: dict | None = None) -> Reply:
        reply = self.target.request(method, path, body, query)
        validate_answer(method, path, reply.status, reply.body, query)
        self.seen.add((method, template_of(path), reply.status))
        return reply

    def id(self, label: str) -> str:
        return f"oa-{self.run}-{label}-{uuid.uuid4().hex[:6]}"

    def open(self, credit_line: int = 10_000) -> str:
        account_id = self.id("acct")
        reply = self.call("POST", "/v1/accounts", {"account_id": account_id, "product": "huabei",
                                                   "credit_line": credit_line,
                                                   "request_id": self.id("open")})
        assert reply.status == 201, reply
        return account_id

    def write(self, account_id: str, route: str, **fields) -> Reply:
        return self.call("POST", f"/v1/accounts/{account_id}/{route}",
                         {**fields, "request_id": self.id(route)})


@pytest.fixture
def svc() -> Validated:
    validated = Validated()
    yield validated
    validated.target.close()


def expect(reply: Reply, status: int, error: str | None = None) -> None:
    assert reply.status == status, reply
    if error is not None:
        assert reply.body["error"] == error, reply


# -- the document --------------------------------------------------------------------------------
def test_the_document_is_valid_openapi_3_1():
    validate_spec(DOCUMENT)
    assert DOCUMENT["openapi"].startswith("3.1.")


def test_the_document_agrees_with_contract_py():
    schemas = DOCUMENT["components"]["schemas"]
    assert schemas["Id"]["pattern"] == f"^{contract.ID_PATTERN.pattern}$"
    assert schemas["Fen"]["maximum"] == schemas["Amount"]["maximum"] == contract.FEN_MAX
    assert schemas["Reason"]["maxLength"] == contract.REASON_LEN_MAX
    assert schemas["Error"]["properties"]["error"]["enum"] == list(contract.ERRORS)
    assert schemas["FaultKind"]["enum"] == list(contract.FAULT_KINDS)
    assert schemas["Status"]["enum"] == list(contract.STATUSES)
    assert schemas["Product"]["enum"] == list(contract.PRODUCTS)
    assert schemas["DelaySync"]["properties"]["delay_ms"]["maximum"] == contract.DELAY_MS_MAX
    assert schemas["ReorderEvents"]["properties"]["window"]["maximum"] == contract.WINDOW_MAX
    assert schemas["LedgerPage"]["properties"]["entries"]["maxItems"] == contract.LEDGER_PAGE_MAX
    # Every error response names exactly the code the contract gives its status.
    for name, response in DOCUMENT["components"]["responses"].items():
        [code] = response["content"]["application/json"]["schema"]["allOf"][1][
            "properties"]["error"]["enum"]
        statuses = {int(s) for p in DOCUMENT["paths"].values() for o in p.values()
                    for s, r in o["responses"].items()
                    if r.get("$ref") == f"#/components/responses/{name}"}
        assert statuses == {contract.ERRORS[code]}, name


def test_every_route_is_documented_and_the_chaos_api_is_marked_optional():
    routes = {(m.upper(), p) for p, item in DOCUMENT["paths"].items() for m in item}
    assert routes == {
        ("POST", "/v1/accounts"), ("POST", "/v1/accounts/{account_id}/draws"),
        ("POST", "/v1/accounts/{account_id}/repayments"),
        ("POST", "/v1/accounts/{account_id}/limit"), ("POST", "/v1/accounts/{account_id}/status"),
        ("GET", "/v1/accounts/{account_id}/display"), ("GET", "/v1/ledger"),
        ("GET", "/v1/health"), ("GET", "/v1/chaos"), ("POST", "/v1/chaos/faults"),
        ("DELETE", "/v1/chaos/faults"), ("DELETE", "/v1/chaos/faults/{fault_id}"),
        ("GET", "/v1/sync")}
    for path, item in DOCUMENT["paths"].items():
        for operation in item.values():
            optional = path.startswith(("/v1/chaos", "/v1/sync"))
            assert operation.get("x-optional", False) is optional, path
            assert ("chaos (optional)" in operation["tags"]) is optional, path


# -- the validator can fail ----------------------------------------------------------------------
DISPLAY = {"account_id": "a", "credit_line": 5_000, "outstanding": 0, "available": 5_000,
           "status": "active", "usable": True, "as_of_seq": 3}
ENTRY = {"seq": 1, "entry_id": "e-1", "request_id": "r", "account_id": "a", "type": "draw",
         "at": "2026-01-01T00:00:00Z"}  # a draw entry without its amount


@pytest.mark.parametrize("method, path, status, body", [
    ("GET", "/v1/accounts/a/display", 200, {**DISPLAY, "available": "5000"}),
    ("GET", "/v1/accounts/a/display", 200, {**DISPLAY, "available": -1}),
    ("GET", "/v1/accounts/a/display", 200, {**DISPLAY, "as_of_seq": "3"}),
    ("GET", "/v1/accounts/a/display", 200, {k: v for k, v in DISPLAY.items() if k != "usable"}),
    ("GET", "/v1/accounts/a/display", 503, {"error": "not_found", "detail": "x"}),
    ("POST", "/v1/accounts/a/draws", 409, {"error": "exists", "detail": "x"}),
    ("POST", "/v1/accounts/a/draws", 201, {"entry_id": "e-1", "seq": 1.5}),
    ("POST", "/v1/accounts/a/draws", 500, {"error": "internal", "detail": "x"}),
    ("POST", "/v1/accounts/a/repayments", 422, {"error": "overpayment"}),
    ("GET", "/v1/ledger", 200, {"entries": [{**ENTRY, "credit_line": 5}], "next_seq": 1}),
    ("GET", "/v1/ledger", 200, {"entries": [{**ENTRY, "amount": 5, "at": "yesterday"}],
                                "next_seq": 1}),
    ("GET", "/v1/ledger", 200, {"entries": [{**ENTRY, "amount": 5, "seq": 0}], "next_seq": 0}),
    ("POST", "/v1/chaos/faults", 201, {"fault_id": "f-1", "kind": "delay_sync"}),
])
def test_the_validator_rejects_a_wrong_answer(method, path, status, body):
    with pytest.raises(OpenAPIError):
        validate_answer(method, path, status, body)


def test_the_validator_accepts_right_answers():
    validate_answer("GET", "/v1/accounts/a/display", 200, DISPLAY)
    validate_answer("GET", "/v1/accounts/a/display", 200, {**DISPLAY, "as_of_seq": None})
    validate_answer("GET", "/v1/ledger", 200, {"entries": [{**ENTRY, "amount": 5}],
                                               "next_seq": 1})


# -- the reference service's answers, in process -------------------------------------------------
def scenario_accounts(svc: Validated) -> None:
    account_id = svc.open()
    request = {"account_id": account_id, "product": "jiebei", "credit_line": 1,
               "request_id": svc.id("open")}
    expect(svc.call("POST", "/v1/accounts", request), 409, "exists")
    expect(svc.call("POST", "/v1/accounts", {**request, "product": "yuebao"}), 400, "bad_request")
    expect(svc.call("POST", "/v1/accounts", {**request, "account_id": "a b"}), 400, "bad_request")
    expect(svc.call("POST", "/v1/accounts", {**request, "credit_line": contract.FEN_MAX + 1}),
           400, "bad_request")
    expect(svc.call("POST", "/v1/accounts", [request]), 400, "bad_request")


def scenario_writes(svc: Validated) -> None:
    account_id = svc.open(10_000)
    expect(svc.write(account_id, "draws", amount=10_000), 201)
    expect(svc.write(account_id, "draws", amount=1), 409, "insufficient_limit")
    expect(svc.write(account_id, "repayments", amount=10_001), 422, "overpayment")
    expect(svc.write(account_id, "repayments", amount=4_000), 201)
    expect(svc.write(account_id, "limit", credit_line=2_000, reason="cut"), 201)
    expect(svc.write(account_id, "status", status="closed", reason="x"), 409,
           "outstanding_balance")
    expect(svc.write(account_id, "status", status="overdue", reason="late"), 201)
    expect(svc.write(account_id, "repayments", amount=6_000), 201)  # cures it
    expect(svc.write(account_id, "status", status="closed", reason="done"), 201)
    for route, fields in (("draws", {"amount": 1}), ("repayments", {"amount": 1}),
                          ("limit", {"credit_line": 1, "reason": "x"})):
        expect(svc.write(account_id, route, **fields), 423, "account_not_active")
    missing = svc.id("missing")
    for route, fields in (("draws", {"amount": 1}), ("repayments", {"amount": 1}),
                          ("limit", {"credit_line": 1, "reason": "x"}),
                          ("status", {"status": "frozen", "reason": "x"})):
        expect(svc.write(missing, route, **fields), 404, "not_found")
    bad = [("draws", {"amount": 0}), ("draws", {"amount": True}), ("draws", {"amount": "1"}),
           ("draws", {}), ("repayments", {"amount": -1}), ("limit", {"credit_line": 1}),
           ("limit", {"credit_line": 1, "reason": ""}),
           ("status", {"status": "deleted", "reason": "x"})]
    for route, fields in bad:
        expect(svc.write(account_id, route, **fields), 400, "bad_request")
    expect(svc.call("POST", "/v1/accounts/a b/draws", {"amount": 1, "request_id": "r"}), 400,
           "bad_request")


def scenario_display(svc: Validated) -> None:
    account_id = svc.open()
    expect(svc.write(account_id, "draws", amount=3_000), 201)
    svc.target.wait_ms(1_000)
    expect(svc.call("GET", f"/v1/accounts/{account_id}/display"), 200)
    expect(svc.call("GET", f"/v1/accounts/{svc.id('missing')}/display"), 404, "not_found")
    expect(svc.call("GET", "/v1/accounts/a b/display"), 400, "bad_request")
    expect(svc.call("POST", "/v1/chaos/faults", {"kind": "maintenance_reset", "mode": "clear"}),
           201)
    expect(svc.call("GET", f"/v1/accounts/{account_id}/display"), 503, "display_unavailable")
    svc.target.wait_ms(1_000)
    reply = svc.call("GET", f"/v1/accounts/{account_id}/display")
    expect(reply, 200)
    assert reply.body["as_of_seq"] is not None


def scenario_ledger(svc: Validated) -> None:
    account_id = svc.open()
    for _ in range(3):
        expect(svc.write(account_id, "draws", amount=100), 201)
    first = svc.call("GET", "/v1/ledger", query={"after_seq": "0", "limit": "1"})
    expect(first, 200)
    assert len(first.body["entries"]) == 1
    expect(svc.call("GET", "/v1/ledger"), 200)
    expect(svc.call("GET", "/v1/ledger", query={"limit": "20000"}), 200)
    beyond = svc.call("GET", "/v1/ledger", query={"after_seq": "999999"})
    assert beyond.body == {"entries": [], "next_seq": 999_999}
    for query in ({"after_seq": "-1"}, {"after_seq": "x"}, {"limit": "0"}, {"limit": "1.5"}):
        expect(svc.call("GET", "/v1/ledger", query=query), 400, "bad_request")


def scenario_health_and_chaos(svc: Validated) -> None:
    expect(svc.call("GET", "/v1/health"), 200)
    params = {"delay_sync": {"delay_ms": 5}, "drop_events": {"probability": 0.1},
              "duplicate_events": {"probability": 0.1}, "reorder_events": {"window": 3},
              "pause_sync": {}, "maintenance_reset": {"mode": "snapshot"}}
    added = [svc.call("POST", "/v1/chaos/faults", {"kind": kind, **p}) for kind, p in
             params.items()]
    assert [r.status for r in added] == [201] * len(params)
    listing = svc.call("GET", "/v1/chaos")
    assert len(listing.body["active"]) == len(params) - 1  # a reset is never active
    expect(svc.call("GET", "/v1/sync"), 200)
    for bad in ({"kind": "no_such_kind"}, {"kind": "delay_sync"},
                {"kind": "drop_events", "probability": "0.5"}, {"kind": "reorder_events",
                                                                "window": 0}):
        expect(svc.call("POST", "/v1/chaos/faults", bad), 400, "bad_request")
    expect(svc.call("DELETE", f"/v1/chaos/faults/{added[0].body['fault_id']}"), 204)
    expect(svc.call("DELETE", f"/v1/chaos/faults/{added[0].body['fault_id']}"), 404, "not_found")
    expect(svc.call("DELETE", "/v1/chaos/faults/a b"), 400, "bad_request")
    expect(svc.call("DELETE", "/v1/chaos/faults"), 204)
    assert svc.call("GET", "/v1/chaos").body["active"] == []


SCENARIOS = [scenario_accounts, scenario_writes, scenario_display, scenario_ledger,
             scenario_health_and_chaos]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda f: f.__name__)
def test_every_answer_validates(svc, scenario):
    scenario(svc)


def test_the_scenarios_reach_every_documented_answer(svc):
    for scenario in SCENARIOS:
        scenario(svc)
    missing = {d for d in documented() if d[2] not in HTTP_EDGE_STATUSES} - svc.seen
    assert not missing, f"documented but never answered: {sorted(missing)}"
    assert None not in {path for _, path, _ in svc.seen}


def test_the_ledger_entries_validate_by_type(svc):
    """A cure and one entry of every type, each validated through the ledger page schema."""
    for scenario in (scenario_accounts, scenario_writes):
        scenario(svc)
    page = svc.call("GET", "/v1/ledger", query={"limit": "10000"})
    types = {e["type"] for e in page.body["entries"]}
    assert types == set(contract.ENTRY_TYPES)
    assert any(e["request_id"].endswith(contract.CURE_SUFFIX) for e in page.body["entries"])


# -- the HTTP edge -------------------------------------------------------------------------------
def _http_answer(api, method: str, path: str, data: bytes | None):
    status, body, headers = api.request(method, path, body=data,
                                        headers={"content-type": "application/json"})
    return status, body, headers.get("content-type", "")


POST_ROUTES = ["/v1/accounts", "/v1/accounts/{a}/draws", "/v1/accounts/{a}/repayments",
               "/v1/accounts/{a}/limit", "/v1/accounts/{a}/status", "/v1/chaos/faults"]


@pytest.mark.http
@pytest.mark.parametrize("route", POST_ROUTES)
def test_an_oversized_body_is_413_too_large_over_http(api, route):
    path = route.replace("{a}", f"oa-big-{uuid.uuid4().hex[:8]}")
    data = orjson.dumps({"request_id": "oa-big", "pad": "x" * contract.BODY_BYTES_MAX})
    status, body, content_type = _http_answer(api, "POST", path, data)
    assert (status, body["error"]) == (413, "too_large")
    validate_answer("POST", path, status, body, content_type=content_type)


@pytest.mark.http
def test_malformed_json_is_400_over_http(api):
    path = f"/v1/accounts/oa-{uuid.uuid4().hex[:8]}/draws"
    status, body, content_type = _http_answer(api, "POST", path, b'{"amount": 1, ')
    assert (status, body["error"]) == (400, "bad_request")
    validate_answer("POST", path, status, body, content_type=content_type)


@pytest.mark.http
@pytest.mark.parametrize("method, path", [("GET", "/v1/nowhere"), ("POST", "/v1/health"),
                                          ("GET", "/v1/accounts/a/draws"), ("PUT", "/v1/ledger")])
def test_an_unknown_route_is_404_with_an_error_body_over_http(api, method, path):
    status, body, _ = _http_answer(api, method, path, b"{not json")
    assert status == 404
    # An unknown route has no operation to validate against; its body is still an Error.
    OAS31Validator(DOCUMENT["components"]["schemas"]["Error"]).validate(body)
    with pytest.raises(OpenAPIError):
        validate_answer(method, path, status, body)
