"""The four reports of a run, built from hand-made findings and stats."""

from __future__ import annotations

import copy
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import orjson
import pytest

from harness.errors import UsageError
from harness.findings import Finding, diff
from harness.history import History
from harness.reports import FILE_NAMES, html, junit, load_report, markdown, svg, write_reports
from harness.reports.findings_view import CHECKERS

INJECTION = "<script>alert(1)</script>"
CHINESE_ACCOUNT = "acct-张伟"


def _slice() -> list[dict]:
    return [
        {"index": 3, "process": 1, "f": "fault_add", "request": {"kind": "delay_sync",
         "delay_ms": 800}, "invoke_ms": 1000, "complete_ms": 1002, "outcome": "ok",
         "http_status": 201, "response": {"fault_id": "f1", "kind": "delay_sync"}},
        {"index": 4, "process": 2, "f": "draw", "account_id": CHINESE_ACCOUNT,
         "request": {"amount": 3000, "request_id": "r-4"}, "invoke_ms": 1100,
         "complete_ms": 1120, "outcome": "ok", "http_status": 201,
         "response": {"entry_id": "e9", "seq": 9}},
        {"index": 5, "process": 2, "f": "display", "account_id": CHINESE_ACCOUNT,
         "invoke_ms": 1400, "complete_ms": 1405, "outcome": "ok", "http_status": 200,
         "response": {"available": 10000, "as_of_seq": 8, "note": INJECTION}},
        {"index": 6, "process": 1, "f": "fault_remove", "request": {"fault_id": "f1"},
         "invoke_ms": 2000, "complete_ms": 2001, "outcome": "ok", "http_status": 204},
    ]


def make_findings() -> list[dict]:
    expected = {"available": 7000, "outstanding": 3000, "status": "active"}
    actual = {"available": 10000, "outstanding": 0, "status": "active"}
    return [
        Finding(kind="display_divergence", severity="critical", account_id=CHINESE_ACCOUNT,
                first_seen_ms=5200, first_seen_at="2024-05-01T08:00:05.200Z",
                expected=expected, actual=actual, diff=diff(expected, actual),
                faults_active=["delay_sync(delay_ms=800)"], checker="display",
                explanation=("张伟的花呗 draw of ¥30.00 was acknowledged at 1.120 s; after "
                             "convergence the display still showed ¥100.00 available. "
                             f"Response note: {INJECTION}"),
                history_slice=_slice()).to_dict(),
        Finding(kind="lost_write", severity="major", account_id="acct-0002",
                first_seen_ms=3000, expected={"entries": 1}, actual={"entries": 0},
                checker="writes", explanation="A repay of ¥5.00 acknowledged at 2.9 s is "
                "missing from the ledger.").to_dict(),
        Finding(kind="stale_display", severity="minor", account_id="acct-0003",
                first_seen_ms=1500, expected=8, actual=6, checker="display",
                explanation="The display lagged 1,020 ms behind the ledger while "
                "delay_sync was active.").to_dict(),
    ]


def make_stats() -> dict:
    return {
        "ops": {"draw": {"ok": 40, "fail": 3, "info": 1}, "display": {"ok": 200, "fail": 4}},
        "lag_ms": {"count": 6, "p50": 120, "p90": 700, "p99": 1020, "max": 1020,
                   "by_fault": {"none": {"count": 3, "p50": 40, "p99": 90, "max": 90},
                                "delay_sync": {"count": 3, "p50": 800, "p99": 1020,
                                               "max": 1020}}},
        "lag_samples": [
            {"account_id": CHINESE_ACCOUNT, "t_ms": 1400, "lag_ms": 800, "faults": ["delay_sync"]},
            {"account_id": CHINESE_ACCOUNT, "t_ms": 1500, "lag_ms": 1020, "faults": ["delay_sync"]},
            {"account_id": "acct-0002", "t_ms": 1600, "lag_ms": 700, "faults": ["delay_sync"]},
            {"account_id": "acct-0002", "t_ms": 2600, "lag_ms": 40, "faults": []},
            {"account_id": "acct-0003", "t_ms": 2700, "lag_ms": 90, "faults": []},
            {"account_id": "acct-0003", "t_ms": 2800, "lag_ms": 0, "faults": []},
        ],
        "availability": {"reads": 204, "unavailable": 4, "share": 4 / 204, "longest_ms": 350,
                         "per_account": {CHINESE_ACCOUNT: 350, "acct-0002": 100}},
        "coverage": {"draw": {"none": 30, "delay_sync": 14},
                     "display": {"none": 150, "delay_sync": 54, "pause_sync": 0}},
        "findings_by_kind": {"display_divergence": 1, "lost_write": 1, "stale_display": 1},
        "findings_by_severity": {"critical": 1, "major": 1, "minor": 1},
        "fault_windows": [{"kind": "delay_sync", "label": "delay_sync(delay_ms=800)",
                           "start_ms": 1000, "end_ms": 2001}],
        "ops_per_s": 51.2,
    }


def make_report(findings: list[dict] | None = None, **overrides) -> dict:
    report = {
        "verdict": "fail",
        "seed": 7,
        "target": "embedded:reference",
        "started_at": "2024-05-01T08:00:00.000Z",
        "duration_s": 6.25,
        "run_id": "run-7-abc",
        "mode": "simulated",
        "config": {"accounts": 3, "sla_ms": 1000, "product": "花呗"},
        "stats": make_stats(),
        "findings": make_findings() if findings is None else findings,
        "gate": {"policy": "default", "passed": False,
                 "reasons": ["1 critical finding(s) (display_divergence), policy allows 0"]},
        "replay": "limit-harness run --seed 7 --target embedded --accounts 3",
    }
    report.update(overrides)
    return report


def make_history() -> History:
    history = History(meta={"started_at": "2024-05-01T08:00:00.000Z"})
    history.phase("safety", 0)
    add = history.invoke(1, "fault_add", None, {"kind": "delay_sync", "delay_ms": 800}, 1000)
    history.complete(add, "ok", 1002, 201, {"fault_id": "f1", "kind": "delay_sync"})
    draw = history.invoke(2, "draw", CHINESE_ACCOUNT, {"amount": 3000, "request_id": "r"}, 1100)
    history.complete(draw, "ok", 1120, 201, {"entry_id": "e9", "seq": 9})
    read = history.invoke(2, "display", CHINESE_ACCOUNT, None, 1400)
    history.complete(read, "fail", 1405, 503, {"error": "display_unavailable"})
    remove = history.invoke(1, "fault_remove", None, {"fault_id": "f1"}, 2000)
    history.complete(remove, "ok", 2001, 204)
    history.phase("convergence", 4000)
    return history


def many_findings(n: int) -> list[dict]:
    base = make_findings()
    return [dict(base[i % 3], account_id=f"acct-{i:04d}", first_seen_ms=i) for i in range(n)]


# -- write_reports and report.json ------------------------------------------------------------

def test_write_reports_writes_the_four_files(tmp_path: Path) -> None:
    paths = write_reports(make_report(), None, tmp_path / "nested" / "reports")
    assert set(paths) == {"json", "junit", "markdown", "html"}
    for fmt, path in paths.items():
        assert path.name == FILE_NAMES[fmt]
        assert path.stat().st_size > 0
    assert not list(path.parent.glob(".*partial")), "no partial file left behind"


def test_report_json_round_trips_sorted_and_indented(tmp_path: Path) -> None:
    report = make_report()
    paths = write_reports(report, None, tmp_path)
    text = paths["json"].read_text(encoding="utf-8")
    assert text.startswith('{\n  "config"'), "keys sorted, two-space indent"
    assert "张伟" in text, "non-ASCII kept as is"
    assert load_report(paths["json"]) == orjson.loads(orjson.dumps(report))


@pytest.mark.parametrize("content, needle", [
    (None, "cannot read"),
    (b"{not json", "not JSON"),
    (b'{"seed": 7, "findings": []}', "missing 'verdict'"),
    (b'{"verdict": "maybe"}', "'verdict'"),
    (b'[1, 2]', "not an object"),
    (b'{"verdict": "pass", "findings": {}}', "'findings' is not a list"),
    (b'{"verdict": "pass", "findings": [{"kind": "lost_write", "severity": "bad"}]}',
     "finding 0"),
])
def test_load_report_rejects_unusable_files(tmp_path: Path, content, needle) -> None:
    path = tmp_path / "report.json"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(UsageError) as raised:
        load_report(path)
    message = str(raised.value)
    assert needle in message and str(path) in message
    assert "\n" not in message, "one line"


# -- junit.xml --------------------------------------------------------------------------------

def _cases(xml: bytes) -> dict[str, ET.Element]:
    suite = ET.fromstring(xml)
    assert suite.tag == "testsuite" and suite.get("name") == "limit-harness"
    return {case.get("name"): case for case in suite.findall("testcase")}


def test_junit_has_a_case_per_checker_failing_with_its_findings() -> None:
    xml = junit.render(make_report())
    cases = _cases(xml)
    assert list(cases) == list(CHECKERS) + ["gate"]
    display = cases["display"].find("failure")
    assert display is not None
    assert display.get("message").startswith("2 finding(s): 1 critical, 1 minor")
    lines = display.text.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"[critical] display_divergence account={CHINESE_ACCOUNT}: 张伟的花呗")
    writes = cases["writes"].find("failure")
    assert writes is not None and "lost_write" in writes.text and "acct-0002" in writes.text
    for clean in ("ledger", "rejections"):
        assert cases[clean].find("failure") is None, clean
    gate = cases["gate"].find("failure")
    assert gate is not None and "display_divergence" in gate.text
    suite = ET.fromstring(xml)
    assert (suite.get("tests"), suite.get("failures")) == (str(len(CHECKERS) + 1), "3")


def test_junit_escapes_markup_and_survives_control_characters() -> None:
    findings = make_findings()
    findings[1]["explanation"] = "garbled body \x00\x1b[31m & <b>"
    xml = junit.render(make_report(findings))
    assert b"<script>" not in xml and b"&lt;script&gt;alert(1)&lt;/script&gt;" in xml
    cases = _cases(xml)
    assert INJECTION in cases["display"].find("failure").text, "the whole explanation, escaped"
    failure = cases["writes"].find("failure")
    assert "& <b>" in failure.text and "\x00" not in failure.text


def test_junit_passing_run_and_missing_gate() -> None:
    cases = _cases(junit.render(make_report([], verdict="pass", gate=None)))
    assert all(c.find("failure") is None for c in cases.values())
    assert cases["gate"].find("skipped") is not None


def test_junit_keeps_findings_of_an_unknown_checker() -> None:
    findings = make_findings()
    findings[0]["checker"] = "custom"
    cases = _cases(junit.render(make_report(findings)))
    assert cases["custom"].find("failure") is not None


# -- summary.md -------------------------------------------------------------------------------

def test_summary_tells_verdict_replay_findings_coverage_lag_availability() -> None:
    text = markdown.render(make_report())
    assert text.startswith("### limit-harness: **FAIL**")
    assert "seed `7`" in text and "target `embedded:reference`" in text and "6.2 s" in text
    assert "```sh\nlimit-harness run --seed 7 --target embedded --accounts 3\n```" in text
    rows = [line for line in text.splitlines() if line.startswith("| critical")
            or line.startswith("| major") or line.startswith("| minor")]
    assert [row.split(" | ")[1] for row in rows] == ["display_divergence", "lost_write",
                                                   "stale_display"]
    assert "| draw | 30 | 14 |" in text.replace("  ", " ")
    assert "p50 120 ms, p99 1,020 ms, max 1,020 ms" in text
    assert "4 of 204 display reads unavailable (1.96%), longest 350 ms" in text
    assert "Gate `default` failed." in text


def test_summary_tells_fault_coverage_what_users_waited_for_and_what_faults_did() -> None:
    from harness.runner import RunConfig, execute

    report = execute(RunConfig(seed=5, ops=1500, quiet=True)).report
    stats = report["stats"]
    text = markdown.render(report)
    cycle_s = stats["fault_coverage"]["planned"]["cycle_ms"] / 1000
    assert ("- **Fault coverage:** every planned kind, class and combination "
            f"(cycle {cycle_s:.1f} s)") in text
    restore_p99 = stats["symptoms"]["restore"]["p99"]
    assert f"- **Shown to users (p99):** restore {restore_p99:,.0f} ms" in text
    effects = stats["fault_effects"]
    assert f"- **Fault effects:** {effects['injected']} injected ({effects['observed']} observed" \
        in text
    missing = markdown.render({"verdict": "fail", "stats": {"fault_coverage": {
        "planned": {"kinds": {"pause_sync": []}}, "missing": ["pause_sync"]}}})
    assert "- **Fault coverage:** NOT exercised: pause_sync" in missing


def test_summary_escapes_markup_and_pipes() -> None:
    findings = make_findings()
    findings[0]["explanation"] = f"{INJECTION} a|b"
    text = markdown.render(make_report(findings))
    assert INJECTION not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt; a\\|b" in text


def test_summary_stays_short_with_a_thousand_findings() -> None:
    text = markdown.render(make_report(many_findings(1000)))
    assert len(text.splitlines()) <= 60
    assert text.count("\n| critical |") + text.count("\n| major |") + \
        text.count("\n| minor |") == 20
    assert "… and 980 more" in text


def test_summary_of_a_bare_passing_report() -> None:
    text = markdown.render({"verdict": "pass"})
    assert text.startswith("### limit-harness: **PASS**")
    assert "**Findings:** none." in text


def test_summary_replay_fence_outlasts_backticks_in_the_command() -> None:
    text = markdown.render(make_report(replay="limit-harness run --note ```x```"))
    assert "````sh\nlimit-harness run --note ```x```\n````" in text


# -- report.html ------------------------------------------------------------------------------

def test_html_is_self_contained_and_escaped() -> None:
    page = html.render(make_report(), make_history())
    assert '<meta charset="utf-8">' in page
    assert INJECTION not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "http:" not in page and "https:" not in page and "url(" not in page
    assert not re.search(r"\b(src|href)\s*=", page), "no resource reference of any kind"
    assert page.count("<script>") == 1, "only the page's own small script"


def test_html_groups_findings_by_severity_with_details() -> None:
    page = html.render(make_report())
    order = [page.index(f'<h3 class="sev {s}">{s} (1)</h3>')
             for s in ("critical", "major", "minor")]
    assert order == sorted(order)
    assert page.count('<details class="finding') == 3
    assert CHINESE_ACCOUNT in page and "张伟的花呗" in page
    # expected vs actual as a field table, money as yuan, differing rows marked
    assert '<tr class="differs"><th>available</th><td>¥70.00 <small>7000 fen</small>' in page
    assert "values_changed" in page, "the deepdiff is shown"
    assert "amount=¥30.00" in page, "the history slice, money in yuan"


def test_html_timelines_show_fault_windows_from_the_history() -> None:
    page = html.render(make_report(), make_history())
    assert page.count('<div class="strip">') == 3
    band = re.search(r'<rect class="band"[^>]*><title>([^<]*)</title>', page)
    assert band and band.group(1) == "delay_sync(delay_ms=800): 1.000 s to 2.001 s"
    assert "convergence phase from 4.000 s" in page
    assert "display → fail 503" in page, "the 503 read from the history is drawn"


def test_html_timelines_without_a_history_use_the_report_and_the_slices() -> None:
    page = html.render(make_report(), None)
    assert "delay_sync(delay_ms=800): 1.000 s to 2.001 s" in page
    assert "#4 draw ¥30.00 → ok 201" in page


def test_html_lag_histogram_and_coverage() -> None:
    page = html.render(make_report())
    lag = page[page.index('<section id="lag">'):page.index('<section id="coverage">')]
    assert "<svg" in lag and "p99 1,020 ms" in lag
    bar_titles = re.findall(r"<g><title>([^<]*)</title>", lag)
    reads = sum(int(re.search(r": (\d+) reads", t).group(1)) for t in bar_titles)
    assert reads == 6, "every lag sample lands in a bar"
    coverage = page[page.index('<section id="coverage">'):]
    assert '<td class="zero">0</td>' in coverage, "a never-tried combination stands out"


def test_html_of_a_bare_report_does_not_crash() -> None:
    page = html.render({"verdict": "pass"})
    assert '<header class="banner pass"><div class="badge">PASS</div>' in page
    assert "No findings." in page


def test_html_caps_full_details_for_a_thousand_findings() -> None:
    page = html.render(make_report(many_findings(1000)))
    assert page.count('<details class="finding') == html.DETAILS_MAX
    assert f"… and {1000 - html.DETAILS_MAX} more" in page
    assert page.count('<div class="strip">') == html.TIMELINES_MAX
    assert len(page) < 3_000_000


def test_renderers_do_not_mutate_the_report() -> None:
    report = make_report()
    before = copy.deepcopy(report)
    markdown.render(report), junit.render(report), html.render(report, make_history())
    assert report == before


def test_timeline_marks_are_thinned_evenly_for_busy_accounts() -> None:
    ops = [{"index": i, "f": "draw" if i % 3 == 0 else "display", "invoke_ms": i}
           for i in range(5000)]
    kept = svg.thin(ops)
    assert len(kept) == svg.MARKS_MAX
    assert [op["invoke_ms"] for op in kept] == sorted(op["invoke_ms"] for op in kept)
    writes = [op for op in kept if op["f"] == "draw"]
    assert len(writes) == svg.MARKS_MAX * 3 // 4 and len(kept) - len(writes) > 0
    assert writes[-1]["invoke_ms"] > 4500, "sampled across the whole run, not its start"
    assert svg.thin(ops[:10]) == ops[:10]
