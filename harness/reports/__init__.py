"""The reports of a run, written together into its report directory (DESIGN.md, "Reports and the
gate"): report.json for machines, junit.xml for CI test tabs, summary.md for a pull-request
comment, report.html for people."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from ..errors import UsageError
from ..secrets import redact_bytes
from ..history import History
from . import html, json_report, junit, markdown

FILE_NAMES = {
    "json": "report.json",
    "junit": "junit.xml",
    "markdown": "summary.md",
    "html": "report.html",
}


def write_reports(report: dict, history: History | None, report_dir: Path) -> dict[str, Path]:
    """Write the four reports; returns their paths by format ("json", "junit", "markdown",
    "html"). `history`, when given, lets report.html draw full timelines and fault windows."""
    report_dir = Path(report_dir)
    try:
        report_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create report directory {report_dir}: "
                         f"{exc.strerror or exc}") from None
    renderers: dict[str, Callable[[], bytes]] = {
        "json": lambda: json_report.dumps(report),
        "junit": lambda: junit.render(report),
        "markdown": lambda: markdown.render(report).encode("utf-8"),
        "html": lambda: html.render(report, history).encode("utf-8"),
    }
    return {fmt: _write_atomically(report_dir / FILE_NAMES[fmt], render())
            for fmt, render in renderers.items()}


def load_report(path: Path | str) -> dict:
    """A report.json read back and validated; UsageError (one line) when it cannot be used."""
    return json_report.load(path)


def _write_atomically(path: Path, data: bytes) -> Path:
    # A CI step reading the directory while a run rewrites it never sees half a file.
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(redact_bytes(data))
        os.replace(partial, path)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def write_file(path: Path, data: bytes) -> Path:
    """Any file of a run (history.jsonl, ledger.jsonl, ...): whole or not at all, no secrets."""
    return _write_atomically(path, data)


__all__ = ["FILE_NAMES", "load_report", "write_file", "write_reports"]
