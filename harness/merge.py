"""`limit-harness gate --merge REPORT...`: partial reports joined into one report, judged once.

The parts are the reports of `reconcile --partition K/N` (one per CI job or batch worker), or of
several runs. Partitions must be one whole split: the same N, the same ledger and display, the
same `as_of_seq` and money unit, every K from 1 to N exactly once; otherwise nothing is judged
and the message says what is missing or mixed. Findings are joined, worst first.

Stats are joined by what each number means, and nothing is averaged that cannot be:

- counts add (accounts, entries, findings by kind, ops by outcome, ...); durations add too,
  so `seconds` and `*_s` / `*_ms` of the merged report are the work of all parts together,
  while the report's `duration_s` is the longest part (the wall time when they ran at once);
- a maximum (`max`, `longest_ms`, `*_max`) is the largest part's, exactly;
- a share with its counts beside it (`availability.share` = unavailable / reads,
  `failure_ratio` = failures / requests) is computed again from the summed counts, exactly;
- a percentile, a mean or a ratio without its counts cannot be: the merged value is the
  largest part's, which is an upper bound (a quantile or a weighted average of a union never
  exceeds the largest of the parts'), so a gate bound on it can fail spuriously but never pass
  wrongly. Each such key is listed in `stats.merge.upper_bounds`;
- rates (`*_per_s`) and texts that differ between parts mean nothing for the whole: they are
  left out and listed in `stats.merge.dropped`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from . import gate
from .errors import UsageError
from .findings import SEVERITIES, severity_counts
from .reconcile.partition import parse as parse_partition
from .reports import load_report
from .reports.document import judged, rfc3339

# What a reconcile report's parts must share to be one split of one export.
SPLIT_KEYS = ("ledger", "display", "as_of_seq", "money_unit")
PERCENTILE = re.compile(r"(p[0-9]+(\.[0-9]+)?|median|mean|avg)")
# share key -> (numerator, denominator), siblings in the same stats table
SHARES = {"share": ("unavailable", "reads"), "failure_ratio": ("failures", "requests")}
PARTS_MAX = 10_000
SEVERITY_RANK = {severity: rank for rank, severity in enumerate(SEVERITIES)}


@dataclass(frozen=True)
class Part:
    path: Path
    report: dict

    @property
    def partition(self) -> tuple[int, int] | None:
        text = (self.report.get("config") or {}).get("partition")
        if text is None:
            return None
        try:
            return parse_partition(str(text))
        except UsageError:
            raise UsageError(f"{self.path}: partition {text!r} is not K/N") from None


def load_parts(paths: list[Path]) -> list[Part]:
    """Each path a report.json, or a report directory holding one."""
    if not paths:
        raise UsageError("gate --merge needs at least one report")
    if len(paths) > PARTS_MAX:
        raise UsageError(f"gate --merge takes at most {PARTS_MAX:,} reports")
    parts = []
    for path in paths:  # bounded by PARTS_MAX
        path = Path(path)
        file = path / "report.json" if path.is_dir() else path
        parts.append(Part(path, load_report(file)))
    return parts


def merge(parts: list[Part], policy: gate.Policy, argv: list[str] | None = None) -> dict:
    """One report for all `parts`, judged by `policy`. UsageError when they do not fit."""
    _check_distinct(parts)
    split = _check_split(parts)
    findings = [f for part in parts for f in part.report.get("findings") or []]
    # Worst first; within a severity the parts' own order (each part sorted its findings).
    findings.sort(key=lambda f: (SEVERITY_RANK[f["severity"]], str(f.get("kind")),
                                 str(f.get("account_id") or "")))
    stats, notes = merge_stats([part.report.get("stats") or {} for part in parts])
    stats["merge"] = {"parts": len(parts), **notes, **({"partitions": split} if split else {})}
    report = {
        "verdict": "pass",
        "run_id": f"merged-{dt.datetime.now(dt.timezone.utc):%Y%m%d-%H%M%S}",
        "seed": _common(parts, "seed"),
        "target": _common(parts, "target") or f"{len(parts)} parts",
        "mode": _common(parts, "mode") or "merged",
        "started_at": min(str(p.report.get("started_at") or "") for p in parts) or
        rfc3339(dt.datetime.now(dt.timezone.utc), "seconds"),
        "duration_s": max(_number(p.report.get("duration_s")) for p in parts),
        "config": _merged_config(parts),
        "stats": stats,
        "findings": findings,
        "replay": shlex.join(argv or ["limit-harness", "gate", "--merge",
                                      *(str(p.path) for p in parts)]),
    }
    return judged(report, policy)


# -- compatibility --------------------------------------------------------------------------------

def _check_distinct(parts: list[Part]) -> None:
    """The same report given twice would count its findings twice. Told by content, not by
    run_id: parts started in the same second by parallel jobs share one."""
    seen: dict[str, Path] = {}
    for part in parts:  # bounded by the parts
        digest = hashlib.sha256(orjson.dumps(part.report, option=orjson.OPT_SORT_KEYS)
                                ).hexdigest()
        if digest in seen:
            raise UsageError(f"{part.path} and {seen[digest]} are the same report; each part "
                             f"counts once")
        seen[digest] = part.path


def _check_split(parts: list[Part]) -> str | None:
    """For partitioned reconcile parts: 'N of N' when they are one whole split, else a
    UsageError naming the missing, doubled or mismatched parts."""
    partitioned = [p for p in parts if p.partition is not None]
    if not partitioned:
        return None
    whole = [p for p in parts if p.partition is None and p.report.get("mode") == "reconcile"]
    if whole:
        raise UsageError(f"{whole[0].path} reconciles every account and {partitioned[0].path} "
                         f"only a partition: merged, the accounts would count twice")
    first = partitioned[0]
    n = first.partition[1]
    for part in partitioned[1:]:  # bounded by the parts
        if part.partition[1] != n:
            raise UsageError(f"{part.path} is partition {_words(part.partition)}, "
                             f"{first.path} is {_words(first.partition)}: parts of one split "
                             f"share N")
        for key in SPLIT_KEYS:
            mine, theirs = _config(part).get(key), _config(first).get(key)
            if mine != theirs:
                raise UsageError(f"{part.path} reconciles {key} {mine!r}, {first.path} "
                                 f"{theirs!r}: the parts are not of one export")
    by_k: dict[int, Path] = {}
    for part in partitioned:  # bounded by the parts
        k = part.partition[0]
        if k in by_k:
            raise UsageError(f"partition {k}/{n} is given twice ({by_k[k]} and {part.path})")
        by_k[k] = part.path
    missing = [k for k in range(1, n + 1) if k not in by_k]  # bounded: N <= 999,999
    if missing:
        shown = ", ".join(f"{k}/{n}" for k in missing[:20]) + (", ..." if len(missing) > 20
                                                               else "")
        raise UsageError(f"{len(missing)} of {n} partitions missing ({shown}): a verdict over "
                         f"part of the accounts would pass what it never saw")
    return f"{n} of {n}"


def _config(part: Part) -> dict:
    config = part.report.get("config")
    return config if isinstance(config, dict) else {}


def _words(partition: tuple[int, int]) -> str:
    return f"{partition[0]}/{partition[1]}"


def _common(parts: list[Part], key: str) -> Any:
    values = {repr(p.report.get(key)) for p in parts}
    return parts[0].report.get(key) if len(values) == 1 else None


def _merged_config(parts: list[Part]) -> dict:
    """The settings every part shares, and where each part came from."""
    configs = [_config(p) for p in parts]
    shared = {key: value for key, value in configs[0].items()
              if key != "partition" and all(c.get(key, object()) == value for c in configs)}
    return {**shared, "merged_from": [
        {"report": str(p.path), "run_id": p.report.get("run_id"),
         "partition": _config(p).get("partition"), "verdict": p.report.get("verdict")}
        for p in parts]}


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) \
        else 0.0


# -- stats ----------------------------------------------------------------------------------------

def merge_stats(tables: list[dict]) -> tuple[dict, dict]:
    """The parts' stats as one table, and notes: {"upper_bounds": [...], "dropped": [...]}."""
    upper: list[str] = []
    dropped: list[str] = []
    merged = _merge_table(tables, "", upper, dropped)
    return merged, {"upper_bounds": sorted(upper), "dropped": sorted(dropped)}


def _merge_table(tables: list[dict], where: str, upper: list[str], dropped: list[str]) -> dict:
    keys = list(dict.fromkeys(k for t in tables for k in t))
    out: dict = {}
    for key in keys:  # bounded by the keys of the parts
        values = [t[key] for t in tables if key in t]
        path = f"{where}{key}"
        value = _merge_value(str(key), values, path, upper, dropped)
        if value is not _DROP:
            out[key] = value
    for key, (numerator, denominator) in SHARES.items():
        if key in out and _is_count(out.get(numerator)) and _is_count(out.get(denominator)):
            out[key] = out[numerator] / out[denominator] if out[denominator] else 0.0
            if f"{where}{key}" in upper:
                upper.remove(f"{where}{key}")
    return out


_DROP = object()


def _merge_value(key: str, values: list, path: str, upper: list[str], dropped: list[str]) -> Any:
    if all(isinstance(v, dict) for v in values):
        return _merge_table(values, f"{path}.", upper, dropped)
    if all(_is_number(v) for v in values):
        return _merge_numbers(key, values, path, upper, dropped)
    if all(isinstance(v, list) for v in values):
        return _merge_lists(values)
    if all(v == values[0] for v in values):
        return values[0]
    dropped.append(path)
    return _DROP


def _merge_numbers(key: str, values: list, path: str, upper: list[str],
                   dropped: list[str]) -> Any:
    if key.endswith("_per_s"):
        dropped.append(path)  # a rate of the whole needs the whole's time, which no part has
        return _DROP
    if key in ("max", "longest_ms") or key.endswith("_max") or key.startswith("max_"):
        return max(values)
    if key == "min" or key.endswith("_min") or key.startswith("min_"):
        return min(values)
    if PERCENTILE.fullmatch(key) or key in SHARES or key.endswith(("_share", "_ratio")):
        if len(values) > 1:
            upper.append(path)
        return max(values)
    return sum(values)


def _merge_lists(values: list[list]) -> list:
    """Names (fault kinds covered, ...) as their union; records (workers, samples) joined."""
    if all(isinstance(item, str) for v in values for item in v):
        return sorted({item for v in values for item in v})
    return [item for v in values for item in v]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return _is_number(value) and value >= 0


def summary(report: dict, report_dir: Path | None) -> str:
    """The merged verdict in a few lines: parts, findings, the gate's reasons."""
    from .console import FINDINGS_SHOWN_MAX

    merged = report["stats"]["merge"]
    split = f", partitions {merged['partitions']}" if merged.get("partitions") else ""
    lines = [f"{report['verdict'].upper()}  merged {merged['parts']} reports{split}  "
             f"target {report['target']}",
             "  findings: " + severity_counts(f["severity"] for f in report["findings"])]
    for f in report["findings"][:FINDINGS_SHOWN_MAX]:
        words = str(f.get("explanation") or "").splitlines() or [""]
        lines.append(f"   - [{f['severity']}] {f['kind']} {f.get('account_id') or ''}: "
                     f"{words[0][:150]}")
    bounds = merged["upper_bounds"]
    if bounds:
        lines.append(f"  {len(bounds)} stats are upper bounds, the largest part's (e.g. "
                     f"{', '.join(bounds[:3])}; all in stats.merge.upper_bounds)")
    lines += [f"  - {reason}" for reason in report["gate"]["reasons"]]
    if report_dir is not None:
        lines.append(f"  reports: {report_dir}")
    lines.append(f"gate: {'PASS' if report['verdict'] == 'pass' else 'FAIL'} (merged)")
    return "\n".join(lines)
