"""junit.xml: the run as a CI test tab understands it. One testcase per checker (so a green tab
still shows what was checked) and one for the gate; a checker fails with all its findings."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from .findings_view import CHECKERS, account, one_line, ordered, severity_counts

SUITE = "limit-harness"
# XML 1.0 forbids most control characters even as character references; a finding quoting a
# garbled response body must not make the whole file unparseable.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def render(report: dict) -> bytes:
    suite = _suite(report)
    for case in _checker_cases(report) + [_gate_case(report)]:
        suite.append(case)
    _count(suite)
    ET.indent(suite)
    return ET.tostring(suite, encoding="utf-8", xml_declaration=True) + b"\n"


def _suite(report: dict) -> ET.Element:
    suite = ET.Element("testsuite", {
        "name": SUITE,
        "time": f"{float(report.get('duration_s') or 0):.3f}",
    })
    if report.get("started_at"):
        suite.set("timestamp", _clean(report["started_at"]))
    properties = ET.SubElement(suite, "properties")
    for name in ("seed", "target", "mode", "run_id", "replay"):
        if report.get(name) is not None:
            ET.SubElement(properties, "property", name=name, value=_clean(report[name]))
    return suite


def _checker_cases(report: dict) -> list[ET.Element]:
    findings = ordered(report.get("findings") or [])
    by_checker: dict[str, list[dict]] = {name: [] for name in CHECKERS}
    for finding in findings:
        # A checker this module does not know still gets its own testcase: never drop a finding.
        by_checker.setdefault(str(finding.get("checker") or "unknown"), []).append(finding)
    return [_checker_case(name, found) for name, found in by_checker.items()]


def _checker_case(checker: str, findings: list[dict]) -> ET.Element:
    case = ET.Element("testcase", classname=f"{SUITE}.checkers", name=checker, time="0")
    if findings:
        failure = ET.SubElement(case, "failure", {
            "message": _clean(f"{len(findings)} finding(s): {severity_counts(findings)}"),
            "type": str(findings[0].get("kind")),
        })
        failure.text = _clean("\n".join(_finding_line(f) for f in findings))
    return case


def _finding_line(finding: dict) -> str:
    return (f"[{finding.get('severity')}] {finding.get('kind')} account={account(finding)}: "
            f"{one_line(finding.get('explanation'), limit=2000, whole=True)}")


def _gate_case(report: dict) -> ET.Element:
    case = ET.Element("testcase", classname=f"{SUITE}.gate", name="gate", time="0")
    gate = report.get("gate")
    if not isinstance(gate, dict):
        ET.SubElement(case, "skipped", message="no gate was judged for this run")
    elif not gate.get("passed"):
        reasons = [str(r) for r in gate.get("reasons") or []] or ["the gate failed"]
        failure = ET.SubElement(case, "failure", {
            "message": _clean(f"gate policy {gate.get('policy', '?')} failed: {reasons[0]}"),
            "type": "gate",
        })
        failure.text = _clean("\n".join(reasons))
    return case


def _count(suite: ET.Element) -> None:
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))


def _clean(value: object) -> str:
    return _NOT_XML.sub("\ufffd", str(value))
