"""report.json: the machine-readable whole of a run, and reading it back for `gate` and `replay`.

Written as is (the caller owns its shape); read back with enough validation that a later command
fails with one clear line instead of a KeyError deep inside a renderer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from ..errors import UsageError
from ..findings import SEVERITIES

VERDICTS = ("pass", "fail")
_OPTIONS = orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def dumps(report: dict) -> bytes:
    return orjson.dumps(report, option=_OPTIONS) + b"\n"


def load(path: Path | str) -> dict:
    """A report.json as a dict, or UsageError saying in one line why it cannot be one."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read report {path}: {exc.strerror or exc}") from None
    try:
        report = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise UsageError(f"report {path} is not JSON: {_one_line(exc)}") from None
    if isinstance(report, dict) and report.get("verdict") == "incomplete":
        incomplete = report.get("incomplete")
        reason = incomplete.get("reason") if isinstance(incomplete, dict) else None
        raise UsageError(f"report {path} is of a run cut short, never judged"
                         + (f" ({' '.join(reason.split())[:300]})" if isinstance(reason, str)
                            else "")
                         + "; run its replay command again")
    problem = problem_with(report)
    if problem:
        raise UsageError(f"report {path} is not a harness report: {problem}")
    return report


def problem_with(report: Any) -> str | None:
    """What makes `report` unusable by the gate and the renderers, None when nothing does."""
    if not isinstance(report, dict):
        return "the top level is not an object"
    if "verdict" not in report:
        return "missing 'verdict'"
    if report["verdict"] not in VERDICTS:
        return f"'verdict' is {report['verdict']!r}, not one of {', '.join(VERDICTS)}"
    if not isinstance(report.get("findings", []), list):
        return "'findings' is not a list"
    if not isinstance(report.get("stats", {}), dict):
        return "'stats' is not an object"
    for number, finding in enumerate(report.get("findings", [])):
        problem = _problem_with_finding(finding)
        if problem:
            return f"finding {number}: {problem}"
    return None


def _problem_with_finding(finding: Any) -> str | None:
    if not isinstance(finding, dict):
        return "not an object"
    if not isinstance(finding.get("kind"), str):
        return "missing 'kind'"
    if finding.get("severity") not in SEVERITIES:
        return f"'severity' is {finding.get('severity')!r}, not one of {', '.join(SEVERITIES)}"
    return None


def _one_line(exc: Exception) -> str:
    return " ".join(str(exc).split())
