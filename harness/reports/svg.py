"""Inline SVG charts for report.html: an account's timeline strip, the lag histogram and the
percentile bars of what users waited for.

Inline because the page must open offline with no external resource; drawn by hand because a
chart library would be exactly such a resource. Every mark carries a <title>, which browsers show
as a tooltip, so the chart stays readable without any script.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Iterable, Sequence

from ..findings import fen

WIDTH = 960
STRIP_HEIGHT = 84
MARKS_MAX = 800  # a 960-unit strip cannot show more distinct marks than this

OUTCOME_COLOURS = {"ok": "#2e7d32", "fail": "#ef6c00", "info": "#8e24aa"}
READ_COLOURS = {"ok": "#1565c0", "fail": "#c62828", "info": "#8e24aa"}
SEVERITY_COLOURS = {"critical": "#b71c1c", "major": "#e65100", "minor": "#b8860b"}
FAULT_COLOURS = {
    "delay_sync": "#1e88e5",
    "drop_events": "#e53935",
    "duplicate_events": "#8e24aa",
    "reorder_events": "#00897b",
    "pause_sync": "#6d4c41",
    "maintenance_reset": "#f4511e",
}
OTHER_COLOUR = "#9e9e9e"

# Strip layout, top to bottom: findings, writes, reads, time axis.
_FINDING_Y, _WRITE_Y, _READ_Y, _AXIS_Y = 10, 30, 50, 66
_LEFT, _RIGHT = 46, WIDTH - 10


@dataclass(frozen=True)
class Window:
    """A fault window as drawn: `end_ms` None means still on at the end of the run."""
    kind: str
    label: str
    start_ms: int
    end_ms: int | None


@dataclass(frozen=True)
class Scale:
    lo_ms: float
    hi_ms: float

    def x(self, t_ms: float) -> float:
        span_ms = max(self.hi_ms - self.lo_ms, 1)
        return _LEFT + (t_ms - self.lo_ms) / span_ms * (_RIGHT - _LEFT)


def fault_colour(kind: str) -> str:
    return FAULT_COLOURS.get(kind, OTHER_COLOUR)


# -- timeline strip -------------------------------------------------------------------------

def timeline(ops: Sequence[dict], windows: Sequence[Window], findings: Sequence[dict],
             scale: Scale, phase_marks_ms: dict[str, int] | None = None) -> str:
    """One account over the run: fault windows as shaded bands, writes and reads as marks,
    findings as diamonds where they were first seen."""
    parts = [_svg_open(STRIP_HEIGHT, "account timeline")]
    parts += [_band(w, scale) for w in windows]
    parts += [_phase_mark(name, t_ms, scale) for name, t_ms in (phase_marks_ms or {}).items()]
    parts += _lane_labels()
    parts += [_op_mark(op, scale) for op in thin(ops)]
    parts += [_finding_mark(f, scale) for f in findings
              if isinstance(f.get("first_seen_ms"), (int, float))]
    parts += _axis(scale)
    parts.append("</svg>")
    return "".join(parts)


def thin(ops: Sequence[dict], limit: int = MARKS_MAX) -> list[dict]:
    """At most `limit` ops, evenly sampled, so the strip stays drawable for busy accounts.
    Writes get most of the room: findings are about writes, reads mostly repeat each other."""
    if len(ops) <= limit:
        return list(ops)
    writes = [op for op in ops if op.get("f") not in ("display", "ledger")]
    reads = [op for op in ops if op.get("f") in ("display", "ledger")]
    write_room = min(len(writes), max(limit - len(reads), limit * 3 // 4))
    kept = _evenly(writes, write_room) + _evenly(reads, limit - write_room)
    return sorted(kept, key=lambda op: op.get("invoke_ms", 0))


def _evenly(items: Sequence[dict], count: int) -> list[dict]:
    if count >= len(items):
        return list(items)
    step = len(items) / count if count > 0 else 0
    return [items[int(i * step)] for i in range(max(count, 0))]


def _svg_open(height: int, label: str) -> str:
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
            f'aria-label="{escape(label)}">')


def _band(window: Window, scale: Scale) -> str:
    x0 = scale.x(window.start_ms)
    x1 = scale.x(window.end_ms if window.end_ms is not None else scale.hi_ms)
    until = f"{window.end_ms / 1000:.3f} s" if window.end_ms is not None else "the end"
    title = f"{window.label}: {window.start_ms / 1000:.3f} s to {until}"
    return (f'<rect class="band" x="{x0:.1f}" y="0" width="{max(x1 - x0, 2):.1f}" '
            f'height="{_AXIS_Y - 4}" fill="{fault_colour(window.kind)}" fill-opacity="0.22">'
            f"<title>{escape(title)}</title></rect>")


def _phase_mark(name: str, t_ms: int, scale: Scale) -> str:
    x = scale.x(t_ms)
    return (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="0" y2="{_AXIS_Y - 4}" stroke="#455a64" '
            f'stroke-dasharray="3 3"><title>{escape(name)} phase from {t_ms / 1000:.3f} s'
            f"</title></line>"
            f'<text x="{x + 3:.1f}" y="{_AXIS_Y - 6}" class="phase halo">{escape(name)}</text>')


def _lane_labels() -> list[str]:
    return [f'<text x="2" y="{y + 4}" class="lane">{label}</text>'
            for label, y in (("finding", _FINDING_Y), ("writes", _WRITE_Y), ("reads", _READ_Y))]


def _op_mark(op: dict, scale: Scale) -> str:
    title = f"<title>{escape(op_label(op))}</title>"
    x0 = scale.x(op.get("invoke_ms", 0))
    if op.get("f") in ("display", "ledger"):
        colour = READ_COLOURS.get(op.get("outcome"), OTHER_COLOUR)
        return (f'<circle cx="{x0:.1f}" cy="{_READ_Y}" r="3" fill="{colour}">{title}</circle>')
    if op.get("f") in ("fault_add", "fault_remove", "phase"):
        return ""
    colour = OUTCOME_COLOURS.get(op.get("outcome"), OTHER_COLOUR)
    complete_ms = op.get("complete_ms")
    x1 = scale.x(complete_ms) if complete_ms is not None else x0 + 2
    return (f'<rect x="{x0:.1f}" y="{_WRITE_Y - 7}" width="{max(x1 - x0, 2.5):.1f}" '
            f'height="14" rx="1" fill="{colour}">{title}</rect>')


def _finding_mark(finding: dict, scale: Scale) -> str:
    x = scale.x(finding["first_seen_ms"])
    y = _FINDING_Y
    colour = SEVERITY_COLOURS.get(finding.get("severity"), OTHER_COLOUR)
    title = (f"{finding.get('severity')} {finding.get('kind')} first seen at "
             f"{finding['first_seen_ms'] / 1000:.3f} s")
    return (f'<path d="M{x:.1f} {y - 7}L{x + 6:.1f} {y}L{x:.1f} {y + 7}L{x - 6:.1f} {y}Z" '
            f'fill="{colour}" stroke="#fff" stroke-width="1"><title>{escape(title)}</title></path>')


def _axis(scale: Scale) -> list[str]:
    parts = [f'<line x1="{_LEFT}" x2="{_RIGHT}" y1="{_AXIS_Y}" y2="{_AXIS_Y}" stroke="#90a4ae"/>']
    for t_ms in nice_ticks(scale.lo_ms, scale.hi_ms):
        x = scale.x(t_ms)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_AXIS_Y}" y2="{_AXIS_Y + 4}" '
                     f'stroke="#90a4ae"/><text x="{x:.1f}" y="{_AXIS_Y + 15}" class="tick" '
                     f'text-anchor="middle">{t_ms / 1000:g} s</text>')
    return parts


def op_label(op: dict) -> str:
    """'#12 draw ¥30.00 → ok 201 (0.120–0.135 s)': what a reader hovering a mark needs."""
    request = op.get("request") or {}
    what = [str(op.get("f"))]
    for key in ("amount", "credit_line"):
        if isinstance(request.get(key), int):
            what.append(fen(request[key]))
    for key in ("status", "kind"):
        if isinstance(request.get(key), str):
            what.append(request[key])
    outcome = f"{op.get('outcome') or 'pending'} {op.get('http_status') or ''}".strip()
    invoke_ms, complete_ms = op.get("invoke_ms", 0), op.get("complete_ms")
    when = f"{invoke_ms / 1000:.3f}" + (f"–{complete_ms / 1000:.3f}" if complete_ms else "")
    return f"#{op.get('index', '?')} {' '.join(what)} → {outcome} ({when} s)"


def nice_ticks(lo: float, hi: float, count: int = 6) -> list[float]:
    """Round tick positions (1, 2 or 5 times a power of ten) covering [lo, hi]."""
    span = hi - lo
    if span <= 0:
        return [lo]
    step = nice_step(span / count)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step) + 1)]


def nice_step(raw: float) -> float:
    power = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1
    for factor in (1, 2, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


# -- lag histogram --------------------------------------------------------------------------

HIST_HEIGHT = 236
# Percentile labels get their own rows above the tallest bar, so no bar ever hides one.
_LABEL_Y, _H_TOP, _H_BOTTOM = 12, 40, HIST_HEIGHT - 30
BINS_MAX = 40


def lag_histogram(samples: Iterable[dict], marks_ms: dict[str, float]) -> str:
    """Display lag, stacked by whether a fault was active at the read: lag under an injected
    delay is expected, lag without one is the service's own."""
    faulted, clean = _split_lags(samples)
    every = faulted + clean
    if not every:
        return ""
    step_ms = nice_step(max(max(every), 1) / BINS_MAX)
    bins = int(max(every) // step_ms) + 1
    counts_faulted, counts_clean = _bin(faulted, step_ms, bins), _bin(clean, step_ms, bins)
    tallest = max(f + c for f, c in zip(counts_faulted, counts_clean))
    scale = Scale(0, bins * step_ms)
    parts = [_svg_open(HIST_HEIGHT, "display lag histogram")]
    for i in range(bins):
        parts.append(_bar(i, step_ms, counts_clean[i], counts_faulted[i], tallest, scale))
    marks = [(name, value) for name, value in marks_ms.items() if isinstance(value, (int, float))]
    parts += [_hist_mark(name, value, scale, row) for row, (name, value) in enumerate(marks)]
    parts += _hist_axes(scale, tallest)
    parts.append("</svg>")
    return "".join(parts)


def _split_lags(samples: Iterable[dict]) -> tuple[list[float], list[float]]:
    faulted: list[float] = []
    clean: list[float] = []
    for sample in samples:
        lag_ms = sample.get("lag_ms") if isinstance(sample, dict) else None
        if isinstance(lag_ms, (int, float)) and not isinstance(lag_ms, bool) and lag_ms >= 0:
            (faulted if sample.get("faults") else clean).append(lag_ms)
    return faulted, clean


def _bin(values: list[float], step_ms: float, bins: int) -> list[int]:
    counts = [0] * bins
    for value in values:
        counts[min(int(value // step_ms), bins - 1)] += 1
    return counts


def _bar(i: int, step_ms: float, clean: int, faulted: int, tallest: int, scale: Scale) -> str:
    if not clean and not faulted:
        return ""
    x0, x1 = scale.x(i * step_ms), scale.x((i + 1) * step_ms)
    unit = (_H_BOTTOM - _H_TOP) / tallest
    title = (f"{i * step_ms:g}–{(i + 1) * step_ms:g} ms: {clean + faulted} reads "
             f"({faulted} with a fault active)")
    clean_h, faulted_h = clean * unit, faulted * unit
    width = max(x1 - x0 - 1, 1)
    return (f'<g><title>{escape(title)}</title>'
            f'<rect x="{x0:.1f}" y="{_H_BOTTOM - clean_h:.1f}" width="{width:.1f}" '
            f'height="{clean_h:.1f}" fill="#1565c0"/>'
            f'<rect x="{x0:.1f}" y="{_H_BOTTOM - clean_h - faulted_h:.1f}" width="{width:.1f}" '
            f'height="{faulted_h:.1f}" fill="#fb8c00"/></g>')


def _hist_mark(name: str, value_ms: float, scale: Scale, row: int) -> str:
    # A percentile from the full stats may lie past the sampled range: pin it to the edge.
    x = scale.x(min(value_ms, scale.hi_ms))
    y = _LABEL_Y + 13 * row  # one row per mark, so p50 and p99 never print over each other
    anchor = "end" if x > _RIGHT - 120 else "start"
    dx = -3 if anchor == "end" else 3
    return (f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y + 3}" y2="{_H_BOTTOM}" stroke="#263238" '
            f'stroke-dasharray="4 3"/><text x="{x + dx:.1f}" y="{y}" class="tick halo" '
            f'text-anchor="{anchor}">{escape(name)} {value_ms:,.0f} ms</text>')


def _hist_axes(scale: Scale, tallest: int) -> list[str]:
    parts = [f'<line x1="{_LEFT}" x2="{_RIGHT}" y1="{_H_BOTTOM}" y2="{_H_BOTTOM}" '
             'stroke="#90a4ae"/>',
             f'<text x="{_LEFT - 4}" y="{_H_TOP + 4}" class="tick" '
             f'text-anchor="end">{tallest}</text>',
             f'<text x="{_LEFT - 4}" y="{_H_BOTTOM}" class="tick" text-anchor="end">0</text>']
    for t_ms in nice_ticks(scale.lo_ms, scale.hi_ms):
        x = scale.x(t_ms)
        parts.append(f'<text x="{x:.1f}" y="{_H_BOTTOM + 16}" class="tick" text-anchor="middle">'
                     f"{t_ms:,.0f} ms</text>")
    return parts


# -- percentile bars ------------------------------------------------------------------------

BAR_ROW = 15
_GROUP_HEAD = 18
_P_LEFT, _P_RIGHT = 150, WIDTH - 270
# p50 darkest over p90 over p99 palest: one bar reads as the whole distribution.
PERCENTILE_SHADES = {"p99": 0.28, "p90": 0.55, "p50": 0.95}
NEVER_COLOUR = "#c62828"
ALL_COLOUR = "#37474f"


def percentile_bars(groups: Sequence[tuple[str, Sequence[tuple[str, dict]]]]) -> str:
    """Groups of rows, each row's p50, p90 and p99 as nested bars on one shared linear scale
    with a tick at its max: `groups` is [(heading, [(row label, numbers)])], numbers as in
    `symptoms.summary`. A percentile that is null because it lands on a write never shown runs
    to the edge in red: its wait is longer than the run could see."""
    rows = [(label, numbers) for _, group in groups for label, numbers in group]
    if not rows:
        return ""
    hi_ms = max([_number(n.get(k)) for _, n in rows for k in ("p99", "max")] + [1])
    step_ms = nice_step(hi_ms / 6)
    hi_ms = math.ceil(hi_ms / step_ms) * step_ms
    height = 8 + sum(_GROUP_HEAD + BAR_ROW * len(group) for _, group in groups) + 26
    parts = [_svg_open(height, "time until a display showed each write, by percentile")]
    y = 8
    for heading, group in groups:
        parts.append(f'<text x="2" y="{y + 12}" class="phase halo">{escape(heading)}</text>')
        y += _GROUP_HEAD
        for label, numbers in group:
            parts.append(_percentile_row(label, numbers, y, hi_ms))
            y += BAR_ROW
    parts += _percentile_axis(hi_ms, step_ms, y + 2)
    parts.append("</svg>")
    return "".join(parts)


def _number(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0


def _bar_x(value_ms: float, hi_ms: float) -> float:
    return _P_LEFT + min(value_ms, hi_ms) / hi_ms * (_P_RIGHT - _P_LEFT)


def _percentile_row(label: str, numbers: dict, y: int, hi_ms: float) -> str:
    colour = ALL_COLOUR if label == "all" else fault_colour(label)
    count, never = numbers.get("count"), numbers.get("never_shown") or 0
    values = {p: numbers.get(p) for p in PERCENTILE_SHADES}
    shown = " · ".join(f"{p} {'never' if values[p] is None else f'{_number(values[p]):,.0f} ms'}"
                       for p in ("p50", "p99"))
    title = (f"{label}: {count} write(s); "
             + ", ".join(f"{p} {'never shown' if v is None else f'{_number(v):,.0f} ms'}"
                         for p, v in sorted(values.items()))
             + f", max {_number(numbers.get('max')):,.0f} ms; {never} never shown")
    parts = [f"<g><title>{escape(title)}</title>",
             f'<text x="{_P_LEFT - 4}" y="{y + 10}" class="lane" text-anchor="end">'
             f"{escape(label)}</text>"]
    for p, shade in PERCENTILE_SHADES.items():
        value = values[p]
        if value is None:  # dashed, so it never reads as a fault kind's red
            parts.append(f'<rect x="{_P_LEFT}" y="{y + 2}" width="{_P_RIGHT - _P_LEFT}" '
                         f'height="10" fill="{NEVER_COLOUR}" fill-opacity="0.08" '
                         f'stroke="{NEVER_COLOUR}" stroke-dasharray="4 2"/>')
            continue
        width = _bar_x(_number(value), hi_ms) - _P_LEFT
        parts.append(f'<rect x="{_P_LEFT}" y="{y + 2}" width="{max(width, 1):.1f}" height="10" '
                     f'fill="{colour}" fill-opacity="{shade}"/>')
    if isinstance(numbers.get("max"), (int, float)):
        x = _bar_x(_number(numbers["max"]), hi_ms)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 14}" stroke="#263238" '
                     f'stroke-width="1.5"/>')
    note = f"{shown} · n={_number(count):,.0f}" + (f", {_number(never):,.0f} never" if never else "")
    css = ' fill="#c62828"' if never else ""
    parts.append(f'<text x="{_P_RIGHT + 8}" y="{y + 10}" class="tick"{css}>{escape(note)}'
                 "</text></g>")
    return "".join(parts)


def _percentile_axis(hi_ms: float, step_ms: float, y: int) -> list[str]:
    parts = [f'<line x1="{_P_LEFT}" x2="{_P_RIGHT}" y1="{y}" y2="{y}" stroke="#90a4ae"/>']
    for n in range(int(hi_ms / step_ms) + 1):
        t_ms = n * step_ms
        x = _bar_x(t_ms, hi_ms)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{y}" y2="{y + 4}" stroke="#90a4ae"/>'
                     f'<text x="{x:.1f}" y="{y + 15}" class="tick" text-anchor="middle">'
                     f"{t_ms:,.0f} ms</text>")
    return parts
