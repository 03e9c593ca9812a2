"""schemathesis against `limit-harness serve`, driven by harness/openapi.json: every operation
fuzzed (positive and negative data, the coverage phase's boundary values), then sequences that
follow the document's links (open an account, then draw, repay, change its line or status and
read its display). Every answer must be no 5xx but the documented 503 and must conform to the
document: status code, content type, body schema; schema-valid data must not get a 400, invalid
data must not be accepted. The examples are few so the suite stays fast; docs/fuzzing.md has the
longer run, for which this file is also the hooks module (`SCHEMATHESIS_HOOKS=test_fuzz_service`)
and, run as a script, prints the configuration both runs share.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest
import schemathesis
import urllib3
from hypothesis import HealthCheck, settings

from harness import contract
from harness.service.process import spawn

DOCUMENT_PATH = Path(contract.__file__).with_name("openapi.json")
EXAMPLES_MAX = 25  # per operation and per phase; the long run in docs/fuzzing.md goes further
STATEFUL_EXAMPLES_MAX = 40
STATEFUL_STEPS_MAX = 6
HEALTHY_WAIT_S = 10.0

# Where the contract departs from schemathesis's defaults, and why.
CONFIG_TOML = """\
[generation]
mode = "all"
database = "none"

[checks.unsupported_method]
# The contract answers a wrong method on a known path 404 (an unknown route), never 405.
enabled = false

[checks.not_a_server_error]
# 503 display_unavailable is the contract's answer for a display it cannot trust yet; the status
# and schema checks still hold every 503 to the document (only the display documents one).
expected-statuses = ["2xx", "3xx", "4xx", "503"]

[checks.positive_data_acceptance]
# Valid data may still be refused by the account's state (409, 422, 423) or wait for the display.
expected-statuses = ["2xx", "404", "409", "413", "422", "423", "503"]

[phases.stateful]
max-steps = 6

[phases.stateful.inference]
# Only the document's links: inferred ones (e.g. GET /v1/chaos -> DELETE a listed fault) follow
# state that changes between Hypothesis's replays of a sequence.
algorithms = []
"""

ID_CHARS_MAX = 64  # contract.ID_PATTERN
ID_TAIL_CHARS = 13  # "." and 12 hex digits
FRESH_ID_FIELDS = ("request_id", "account_id")  # account_id: only an open's body carries one


# -- hooks: make the fuzzer a client the contract allows ------------------------------------------
@schemathesis.hook
def before_call(context, case, kwargs):
    """Client obligations JSON Schema cannot say: a request_id is never reused for a different
    request (a reused one replays the first answer, whatever its route); an integer is written as
    a JSON integer (JSON Schema counts 2.0 as one, the contract answers 400). And, as the
    harness's own clients do, a new account gets a fresh id, so a replayed sequence opens an
    account again instead of meeting 409 exists (Hypothesis needs replays to behave alike)."""
    if isinstance(case.body, dict):
        case.body = _fresh_ids(_json_integers(case.body))


def _fresh_ids(body: dict) -> dict:
    fresh = {name: _fresh_id(body[name]) for name in FRESH_ID_FIELDS
             if contract.is_id(body.get(name))}  # a malformed id is a negative case's point
    return {**body, **fresh}


def _fresh_id(value: str) -> str:
    fresh = f"{value[:ID_CHARS_MAX - ID_TAIL_CHARS]}.{uuid.uuid4().hex[:ID_TAIL_CHARS - 1]}"
    assert contract.is_id(fresh), fresh
    return fresh


def _json_integers(value):
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _json_integers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_integers(item) for item in value]
    return value


# -- the service under test ------------------------------------------------------------------------
@pytest.fixture(scope="module")
def service_url(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("fuzz")
    served = spawn(workdir, "--ledger", "memory://")
    try:
        _wait_healthy(served.url)
        yield served.url
    finally:
        code = served.stop()
    assert code == 0, f"serve exited with {code}: {served.stderr()}"


def _wait_healthy(url: str) -> None:
    deadline_s = time.monotonic() + HEALTHY_WAIT_S
    while True:
        try:
            if urllib3.request("GET", f"{url}/v1/health", retries=False).status == 200:
                return
        except urllib3.exceptions.HTTPError:
            pass
        assert time.monotonic() < deadline_s, f"{url} not healthy within {HEALTHY_WAIT_S} s"
        time.sleep(0.02)


# Loading a configuration loads the hooks module named in SCHEMATHESIS_HOOKS: when that is this
# file, it must be imported by module name (docs/fuzzing.md), so the nested load finds it in
# sys.modules instead of running it again.
schema = schemathesis.openapi.from_path(DOCUMENT_PATH,
                                        config=schemathesis.Config.from_str(CONFIG_TOML))


# -- every operation, alone ------------------------------------------------------------------------
@pytest.mark.http
@pytest.mark.timeout(120)
@schema.parametrize()
@settings(max_examples=EXAMPLES_MAX, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented(case, service_url):
    case.call_and_validate(base_url=service_url)


# -- sequences along the document's links ----------------------------------------------------------
@pytest.mark.http
@pytest.mark.timeout(120)
def test_linked_sequences_answer_as_documented(service_url):
    class AgainstService(schema.as_state_machine()):
        def get_call_kwargs(self, case):
            return {"base_url": service_url}

    AgainstService.run(settings=settings(
        max_examples=STATEFUL_EXAMPLES_MAX, deadline=None, derandomize=True,
        stateful_step_count=STATEFUL_STEPS_MAX, suppress_health_check=list(HealthCheck)))


def test_the_document_links_every_account_operation_from_open():
    document = json.loads(DOCUMENT_PATH.read_text(encoding="utf-8"))
    operations = {operation["operationId"]: path for path, item in document["paths"].items()
                  for operation in item.values()}
    opened = document["paths"]["/v1/accounts"]["post"]["responses"]["201"]["links"]
    assert set(opened) == {"draw", "repay", "setLimit", "setStatus", "display"}
    for reference in opened.values():
        link = document["components"]["links"][reference["$ref"].rsplit("/", 1)[1]]
        assert "{account_id}" in operations[link["operationId"]], link
        assert link["parameters"] == {"account_id": "$response.body#/account_id"}, link


if __name__ == "__main__":
    print(CONFIG_TOML, end="")
