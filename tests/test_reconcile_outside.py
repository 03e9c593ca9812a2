"""`limit-harness reconcile` over data exported from a service the harness has never seen
(tests/outside_service.py: standard library only, its own ledger file, no code shared): a QA
engineer's export (the entries of its ledger file; a display snapshot read from its API, one
row per account), then `reconcile`. The correct service passes; each buggy one fails with the
finding its bug makes, on the accounts it touched, both engines alike."""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytest.importorskip("polars")  # the [reconcile] extra

SERVICE = Path(__file__).resolve().parent / "outside_service.py"
ACCOUNTS = 8
START_S_MAX = 10.0
SETTLE_S_MAX = 5.0
LINE_FEN, FIRST_DRAW_FEN, REPAY_FEN, SECOND_DRAW_FEN = 500_000, 200_000, 50_000, 400_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _running(ledger: Path, *bugs: str):
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(SERVICE), "--port", str(port), "--ledger", str(ledger),
         "--lag-ms", "5", *bugs], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_S_MAX
        while True:  # bounded by START_S_MAX
            with contextlib.suppress(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            assert process.poll() is None and time.monotonic() < deadline, "service did not start"
            time.sleep(0.05)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def _call(url: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method="GET" if body is None
                                     else "POST", headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


def _drive(url: str) -> None:
    """Each user: open, draw, repay part, try to draw more than is left (a correct service
    refuses it), and get a limit raise."""
    for n in range(ACCOUNTS):  # bounded: ACCOUNTS
        account = f"user{n}"
        writes = [("/v1/accounts", {"request_id": f"o{n}", "account_id": account,
                                    "product": "huabei", "credit_line": LINE_FEN}),
                  (f"/v1/accounts/{account}/draws", {"request_id": f"d{n}",
                                                     "amount": FIRST_DRAW_FEN + n}),
                  (f"/v1/accounts/{account}/repayments", {"request_id": f"r{n}",
                                                          "amount": REPAY_FEN}),
                  (f"/v1/accounts/{account}/draws", {"request_id": f"x{n}",
                                                     "amount": SECOND_DRAW_FEN}),
                  (f"/v1/accounts/{account}/limit", {"request_id": f"l{n}",
                                                     "credit_line": LINE_FEN + 100_000,
                                                     "reason": "annual review"})]
        for path, body in writes:  # bounded: five writes
            status, answer = _call(url, path, body)
            assert status in (201, 409), (path, status, answer)


def _export(url: str, service_ledger: Path, out: Path) -> tuple[Path, Path]:
    """What a QA engineer exports: the ledger's entries, and once the display has caught up
    with them (its as_of_seq at each account's last entry), one display row per account."""
    entries = [record["entry"] for record in map(json.loads, service_ledger.read_text()
                                                 .splitlines()) if "entry" in record]
    last_seq = {}
    for entry in entries:  # bounded by the ledger
        last_seq[entry["account_id"]] = entry["seq"]
    deadline = time.monotonic() + SETTLE_S_MAX
    while True:  # bounded by SETTLE_S_MAX
        rows = [_call(url, f"/v1/accounts/{account}/display")[1] for account in last_seq]
        if all(row.get("as_of_seq") == last_seq[row.get("account_id")] for row in rows):
            break
        assert time.monotonic() < deadline, f"the display never caught up: {rows}"
        time.sleep(0.05)
    ledger, display = out / "ledger.jsonl", out / "display.jsonl"
    ledger.write_text("".join(json.dumps(e) + "\n" for e in entries))
    display.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return ledger, display


def _reconcile(ledger: Path, display: Path, out: Path, engine: str) -> tuple[int, list[dict]]:
    reports = out / f"reports-{engine}"
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "reconcile", "--ledger", str(ledger),
         "--display", str(display), "--engine", engine, "--report-dir", str(reports)],
        capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads((reports / "report.json").read_text())["findings"]


@pytest.mark.parametrize("bug, kind", [
    (None, None),
    ("--repay-not-shown", "inconsistent_display"),
    ("--draw-over-limit", "ledger_rule_violation"),
])
def test_an_export_from_a_service_never_seen_is_reconciled(tmp_path, bug, kind):
    service_ledger = tmp_path / "service-ledger.jsonl"
    with _running(service_ledger, *([bug] if bug else [])) as url:
        _drive(url)
        ledger, display = _export(url, service_ledger, tmp_path)
    for engine in ("columnar", "rows"):  # bounded: the two engines
        code, findings = _reconcile(ledger, display, tmp_path, engine)
        if bug is None:
            assert (code, findings) == (0, []), findings
            continue
        assert code == 1
        assert {f["kind"] for f in findings} == {kind}, findings
        assert {f["account_id"] for f in findings} == {f"user{n}" for n in range(ACCOUNTS)}
        assert all(f["explanation"] for f in findings)
