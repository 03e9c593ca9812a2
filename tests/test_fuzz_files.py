"""Every file the harness reads, fuzzed (hypothesis): fault profiles, personas, gate policies,
deployment files, report.json (for `gate` and `replay`), history.jsonl and ledger.jsonl (for
`check`), the reconcile columns file and exported data (JSON lines, CSV, Parquet). Each is a
shipped or freshly made good file, then broken the ways hand-edited and half-copied files are:
truncated, invalid UTF-8, wrong types, unknown keys, huge numbers, NaN and infinities, dates
where numbers go, deeply nested values.

Whatever the file, the command either judges (exit 0 or 1: the file was still good) or refuses it
with exit 2 and exactly one line on stderr that names the file: never a traceback, never an
"internal error", never a report left behind that looks whole."""

from __future__ import annotations

import copy
import os
import datetime as dt
import itertools
import json
import math
import tomllib
from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness import cli, runner
from harness.deployment import load_deployment
from harness.errors import UsageError
from harness.http_options import HttpOptions
from harness.packaged import fixture

pytestmark = pytest.mark.timeout(300)

# FUZZ_FILES_EXAMPLES=1000 searches longer, with fresh randomness each time (docs/bounds.md).
EXAMPLES = int(os.environ.get("FUZZ_FILES_EXAMPLES", "40"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                derandomize=os.environ.get("FUZZ_FILES_EXAMPLES") is None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])
DEEP = 3_000  # deeper than any parser's recursion limit


# -- hostile values and documents -----------------------------------------------------------------

_SCALARS = st.one_of(
    st.integers(min_value=-2**63, max_value=2**63 - 1),
    st.integers(min_value=2**63, max_value=2**200),                  # past int64
    st.integers(min_value=-2**200, max_value=-1),
    st.sampled_from([0, -1, 1, 2**31, 2**53 + 1, 10**18]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 1e308, -0.0, 0.5]),
    st.booleans(),
    st.text(st.characters(blacklist_categories=("Cs",)), max_size=12),
    st.datetimes(timezones=st.just(dt.timezone.utc)), st.dates(),
)
def _nested(scalars):
    return st.recursive(scalars, lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text("abcdefgh_", min_size=1, max_size=6), inner, max_size=3)),
        max_leaves=5)


HOSTILE = _nested(_SCALARS)
HOSTILE_JSON = _nested(_SCALARS.filter(lambda v: not isinstance(v, (dt.date, dt.datetime))))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    raise AssertionError(type(value))


def toml_text(doc: dict) -> str:
    """`doc` as TOML: every top-level key a line, tables inline."""
    return "".join(f"{json.dumps(k)} = {_toml_value(v)}\n" for k, v in doc.items())


def _places(doc) -> list[tuple[object, object]]:
    """(container, key) of every value in a nested dict/list document."""
    out = []
    items = doc.items() if isinstance(doc, dict) else enumerate(doc)
    for key, value in items:
        out.append((doc, key))
        if isinstance(value, (dict, list)):
            out.extend(_places(value))
    return out


@st.composite
def mutated(draw, base, json_like: bool = False):
    """`base` (a parsed document) with one to three edits: a value replaced by a hostile one,
    a key or item deleted, an unknown key added."""
    doc = copy.deepcopy(base)
    values = HOSTILE_JSON if json_like else HOSTILE
    for _ in range(draw(st.integers(1, 3))):
        places = _places(doc)
        edit = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        tables = [doc] * isinstance(doc, dict) + [c[k] for c, k in places if isinstance(c[k], dict)]
        if (edit == "add" or not places) and tables:
            where = draw(st.sampled_from(tables))
            where[draw(st.sampled_from(["zzz_unknown", "mix", "kinds", "seq", "type"]))] = \
                draw(values)
            continue
        if not places:
            continue
        container, key = draw(st.sampled_from(places))
        if edit == "delete":
            del container[key]
        else:
            container[key] = draw(values)
    return doc


@st.composite
def broken_text(draw, text: str) -> bytes:
    """`text` as bytes, then maybe broken below the level of its syntax."""
    data = text.encode("utf-8")
    how = draw(st.sampled_from(["as is", "as is", "truncate", "bad utf-8", "deep", "junk line"]))
    at = draw(st.integers(0, max(0, len(data))))
    if how == "truncate":
        return data[:at]
    if how == "bad utf-8":
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80",
                                                 b"\xf0\x28\x8c"])) + data[at:]
    if how == "deep":
        return data + b'deep = ' + b"[" * DEEP + b"]" * DEEP + b"\n"
    if how == "junk line":
        return data + draw(st.sampled_from([b"= =\n", b"[[[\n", b"\x00\n", b'"\n', b"}{\n"]))
    return data


@st.composite
def broken_json_lines(draw, lines: list) -> bytes:
    """JSON lines (a list of documents) with edits, then maybe broken at the byte level: NaN and
    Infinity literals, huge integers, deep nesting, truncation, invalid UTF-8."""
    docs = draw(mutated(lines, json_like=True))
    text = "".join(json.dumps(d, allow_nan=True, ensure_ascii=False) + "\n" for d in docs)
    data = draw(broken_text(text))
    if draw(st.booleans()):  # one line of a kind JSON parsers choke on
        n = draw(st.integers(0, max(0, len(docs) - 1)))
        bad = draw(st.sampled_from([
            b'{"seq": NaN}', b'{"seq": Infinity}', b"[" * DEEP + b"]" * DEEP,
            b'{"seq": 123456789012345678901234567890}', b'{"seq": 1e999}', b'{"a": 1', b"null",
            b"[]", b'"text"', b"\xff\xfe"]))
        rows = data.split(b"\n")
        rows.insert(min(n, len(rows)), bad)
        data = b"\n".join(rows)
    return data


# -- the assertion every file kind shares -------------------------------------------------------

def judged_or_refused(code: int, capsys, path: Path, *, judged_ok: bool = True,
                      or_names: tuple[Path, ...] = ()) -> str:
    """The command judged (0, 1) or refused the file in one line naming it (2; or naming one of
    `or_names`, the files it is read with); the line."""
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err and "internal error" not in err, err
    if code == 2:
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert any(str(p) in lines[0] for p in or_names) or path.name in lines[0], lines[0]
        return lines[0]
    assert judged_ok and code in (0, 1), (code, err)
    return ""


_runs = itertools.count()


def fresh(tmp_path: Path) -> Path:
    """A report directory no earlier example wrote to."""
    return tmp_path / f"out-{next(_runs)}"


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def _fixture_doc(name: str) -> dict:
    found = fixture(name)
    assert found is not None, name
    return tomllib.loads(found.read_text(encoding="utf-8"))


TINY_RUN = ["--ops", "20", "--accounts", "1", "--quiet"]


# -- TOML files ----------------------------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_fault_profiles(tmp_path, capsys, data):
    base = data.draw(st.sampled_from([_fixture_doc("faults-all.toml"),
                                      _fixture_doc("faults-gentle.toml")]))
    path = _write(tmp_path / "my-faults.toml",
                  data.draw(broken_text(toml_text(data.draw(mutated(base))))))
    code = cli.main(["run", "--faults", str(path), *TINY_RUN,
                     "--report-dir", str(fresh(tmp_path))])
    judged_or_refused(code, capsys, path)


@FUZZ
@given(data=st.data())
def test_personas(tmp_path, capsys, data):
    path = _write(tmp_path / "my-personas.toml", data.draw(broken_text(toml_text(
        data.draw(mutated(_fixture_doc("personas.toml")))))))
    code = cli.main(["run", "--personas", str(path), "--faults", "none", *TINY_RUN,
                     "--report-dir", str(fresh(tmp_path))])
    judged_or_refused(code, capsys, path)


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory) -> Path:
    """One small simulated run's files: report.json, history.jsonl, ledger.jsonl."""
    where = tmp_path_factory.mktemp("stored-run")
    assert cli.main(["run", "--seed", "5", "--ops", "150", "--accounts", "3", "--quiet",
                     "--report-dir", str(where)]) in (0, 1)
    return where


@FUZZ
@given(data=st.data())
def test_gate_policies(tmp_path, capsys, stored_run, data):
    base = data.draw(st.sampled_from([_fixture_doc("gate-strict.toml"),
                                      _fixture_doc("gate-default.toml")]))
    path = _write(tmp_path / "my-policy.toml",
                  data.draw(broken_text(toml_text(data.draw(mutated(base))))))
    code = cli.main(["gate", str(stored_run / "report.json"), "--policy", str(path)])
    judged_or_refused(code, capsys, path)


@FUZZ
@given(data=st.data())
def test_deployment_files(tmp_path, capsys, data):
    """Read, not started (a good one would start processes): the reader either returns a
    deployment or refuses in one line naming the file; `run --deployment` says the same."""
    path = _write(tmp_path / "my-deployment.toml", data.draw(broken_text(toml_text(
        data.draw(mutated(_fixture_doc("deployments/reference.toml")))))))
    try:
        load_deployment(path)
    except UsageError as exc:
        message = str(exc)
        assert "\n" not in message and path.name in message, message
        code = cli.main(["run", "--deployment", str(path), "--duration", "1", "--quiet",
                         "--report-dir", str(fresh(tmp_path))])
        judged_or_refused(code, capsys, path, judged_ok=False)


@FUZZ
@given(data=st.data())
def test_reconcile_columns_files(tmp_path, capsys, exports, data):
    base = {"ledger": {"amount": "amount", "seq": "seq"}, "display": {"available": "available"}}
    path = _write(tmp_path / "my-columns.toml",
                  data.draw(broken_text(toml_text(data.draw(mutated(base))))))
    code = cli.main(["reconcile", "--ledger", str(exports["jsonl"][0]), "--display",
                     str(exports["jsonl"][1]), "--columns", str(path),
                     "--report-dir", str(fresh(tmp_path))])
    # A column the file maps to that the export lacks is the export's line to say.
    judged_or_refused(code, capsys, path, or_names=exports["jsonl"])


# -- JSON files of a run ---------------------------------------------------------------------------

@FUZZ
@given(data=st.data())
def test_reports_for_gate(tmp_path, capsys, stored_run, data):
    base = orjson.loads((stored_run / "report.json").read_bytes())
    path = _write(tmp_path / "my-report.json", data.draw(broken_text(json.dumps(
        data.draw(mutated(base, json_like=True)), allow_nan=True))))
    code = cli.main(["gate", str(path)])
    judged_or_refused(code, capsys, path)


class _Replayable(UsageError):
    """What the stub `execute` raises: the report's config was read into a sane RunConfig."""


def _sane(config: runner.RunConfig) -> None:
    """A config `execute` can take: what the CLI's own checks would have let through."""
    def positive(value, kind=int):
        return type(value) in ((int,) if kind is int else (int, float)) and value > 0

    assert type(config.seed) is int and config.seed >= 0, config.seed
    assert positive(config.accounts) and positive(config.sla_ms) and positive(config.workers)
    assert config.ops is None or positive(config.ops), config.ops
    assert config.duration_s is None or positive(config.duration_s, float) and \
        math.isfinite(config.duration_s), config.duration_s
    assert config.max_run_s is None or positive(config.max_run_s, float) and \
        math.isfinite(config.max_run_s), config.max_run_s
    assert (config.ops is None) != (config.duration_s is None) or not config.simulated
    for name in ("faults", "ledger"):
        assert type(getattr(config, name)) is str, name
    for name in ("target", "personas", "locale", "target_cmd", "deployment"):
        assert getattr(config, name) is None or type(getattr(config, name)) is str, name
    assert config.policy is None or isinstance(config.policy, Path)
    assert isinstance(config.bugs, tuple) and all(type(b) is str for b in config.bugs)
    assert type(config.quiet) is bool and isinstance(config.http, HttpOptions)


@FUZZ
@given(data=st.data())
def test_reports_for_replay(tmp_path, capsys, stored_run, monkeypatch, data):
    """Replayed up to the run itself (a stub: a config can ask for a run of any length)."""
    def execute(config, policy=None):
        _sane(config)
        raise _Replayable(f"replayable {path.name}")

    monkeypatch.setattr(runner, "execute", execute)
    base = orjson.loads((stored_run / "report.json").read_bytes())
    doc = data.draw(mutated({"config": base["config"]}, json_like=True))
    path = _write(tmp_path / "my-report.json", data.draw(broken_text(json.dumps(
        {**base, **doc}, allow_nan=True))))
    code = cli.main(["replay", str(path), "--report-dir", str(fresh(tmp_path))])
    judged_or_refused(code, capsys, path, judged_ok=False)


def _lines(path: Path) -> list:
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@FUZZ
@given(data=st.data())
def test_histories_for_check(tmp_path, capsys, stored_run, data):
    path = _write(tmp_path / "my-history.jsonl",
                  data.draw(broken_json_lines(_lines(stored_run / "history.jsonl")[:40])))
    out = fresh(tmp_path)
    code = cli.main(["check", str(path), str(stored_run / "ledger.jsonl"),
                     "--report-dir", str(out)])
    judged_or_refused(code, capsys, path)
    if code == 2:
        assert not (out / "report.json").exists()


@FUZZ
@given(data=st.data())
def test_ledgers_for_check(tmp_path, capsys, stored_run, data):
    path = _write(tmp_path / "my-ledger.jsonl",
                  data.draw(broken_json_lines(_lines(stored_run / "ledger.jsonl")[:30])))
    code = cli.main(["check", str(stored_run / "history.jsonl"), str(path),
                     "--report-dir", str(fresh(tmp_path))])
    judged_or_refused(code, capsys, path)


# -- exported data for reconcile ------------------------------------------------------------------

@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """A small good export (ledger, display) in each format."""
    pl = pytest.importorskip("polars")
    from harness.reconcile import datagen

    where = tmp_path_factory.mktemp("exports")
    made = datagen.generate(6, 4, seed=2, out_dir=where / "parquet")
    ledger, display = pl.read_parquet(made.ledger_path), pl.read_parquet(made.display_path)
    out = {"parquet": (made.ledger_path, made.display_path)}
    for form, write in (("jsonl", "write_ndjson"), ("csv", "write_csv")):
        (where / form).mkdir()
        pair = (where / form / f"ledger.{form}", where / form / f"display.{form}")
        getattr(ledger, write)(pair[0])
        getattr(display, write)(pair[1])
        out[form] = pair
    return out


@FUZZ
@given(data=st.data())
def test_reconcile_json_lines(tmp_path, capsys, exports, data):
    side = data.draw(st.sampled_from([0, 1]))
    good = exports["jsonl"]
    path = _write(tmp_path / f"my-{'ledger' if side == 0 else 'display'}.jsonl",
                  data.draw(broken_json_lines(_lines(good[side]))))
    pair = [str(good[0]), str(good[1])]
    pair[side] = str(path)
    code = cli.main(["reconcile", "--ledger", pair[0], "--display", pair[1],
                     "--report-dir", str(fresh(tmp_path))])
    judged_or_refused(code, capsys, path)


@FUZZ
@given(data=st.data())
def test_reconcile_csv(tmp_path, capsys, exports, data):
    side = data.draw(st.sampled_from([0, 1]))
    good = exports["csv"]
    rows = good[side].read_text().splitlines()
    cells = [row.split(",") for row in rows]
    for _ in range(data.draw(st.integers(1, 3))):  # a cell replaced by something hostile
        r = data.draw(st.integers(0, len(cells) - 1))
        c = data.draw(st.integers(0, len(cells[r]) - 1))
        cells[r][c] = data.draw(st.sampled_from(["NaN", "inf", "-inf", "1e999", "", "true",
                                                 "99999999999999999999999", "-1", "1.5", '"',
                                                 "2026-13-45", "\u00e9", "a,b"]))
    if data.draw(st.booleans()):
        cells[data.draw(st.integers(0, len(cells) - 1))].append("extra")
    path = _write(tmp_path / f"my-{'ledger' if side == 0 else 'display'}.csv",
                  data.draw(broken_text("\n".join(",".join(r) for r in cells) + "\n")))
    pair = [str(good[0]), str(good[1])]
    pair[side] = str(path)
    code = cli.main(["reconcile", "--ledger", pair[0], "--display", pair[1],
                     "--report-dir", str(fresh(tmp_path))])
    judged_or_refused(code, capsys, path)


@settings(FUZZ, max_examples=25)
@given(data=st.data())
def test_reconcile_parquet(tmp_path, capsys, exports, data):
    side = data.draw(st.sampled_from([0, 1]))
    good = exports["parquet"]
    raw = bytearray(good[side].read_bytes())
    how = data.draw(st.sampled_from(["truncate", "flip", "empty", "other file"]))
    if how == "truncate":
        raw = raw[:data.draw(st.integers(0, len(raw) - 1))]
    elif how == "flip":
        for _ in range(data.draw(st.integers(1, 8))):
            at = data.draw(st.integers(0, len(raw) - 1))
            raw[at] ^= data.draw(st.integers(1, 255))
    elif how == "empty":
        raw = bytearray()
    else:
        raw = bytearray(exports["parquet"][1 - side].read_bytes())  # the other side's columns
    path = _write(tmp_path / f"my-{'ledger' if side == 0 else 'display'}.parquet", bytes(raw))
    pair = [str(good[0]), str(good[1])]
    pair[side] = str(path)
    code = cli.main(["reconcile", "--ledger", pair[0], "--display", pair[1],
                     "--report-dir", str(fresh(tmp_path))])
    judged_or_refused(code, capsys, path)


# -- where the line or the key is known, the message says it --------------------------------------

def test_a_truncated_toml_file_is_refused_at_its_line(tmp_path, capsys):
    path = _write(tmp_path / "cut.toml", "kinds = [\"delay_sync\"]\ninterval_ms_min = \n")
    line = judged_or_refused(cli.main(["run", "--faults", str(path), *TINY_RUN, "--report-dir",
                                       str(fresh(tmp_path))]), capsys, path)
    assert "line 2" in line


def test_a_toml_file_nested_past_any_limit_is_refused(tmp_path, capsys):
    path = _write(tmp_path / "deep.toml", b"kinds = " + b"[" * DEEP + b"]" * DEEP + b"\n")
    line = judged_or_refused(cli.main(["run", "--faults", str(path), *TINY_RUN, "--report-dir",
                                       str(fresh(tmp_path))]), capsys, path)
    assert "nested" in line


@pytest.mark.parametrize("name, text, key", [
    ("policy.toml", "stale_lag_ms_max = nan\n", "stale_lag_ms_max"),
    ("policy.toml", "stale_lag_ms_max = inf\n", "stale_lag_ms_max"),
    ("policy.toml", "unknown_bound = 1\n", "unknown_bound"),
    ("personas.toml", "[workload]\nthink_ms_min = 1979-05-27\n", "think_ms_min"),
    ("faults.toml", "interval_ms_max = 1979-05-27\n", "interval_ms_max"),
    ("faults.toml", "concurrent_max = 99999999999999999999999\n", "concurrent_max"),
])
def test_a_bad_value_is_refused_naming_its_key(tmp_path, capsys, stored_run, name, text, key):
    path = _write(tmp_path / name, text)
    argv = {"policy.toml": ["gate", str(stored_run / "report.json"), "--policy", str(path)],
            "personas.toml": ["run", "--personas", str(path), *TINY_RUN],
            "faults.toml": ["run", "--faults", str(path), *TINY_RUN]}[name]
    argv += ["--report-dir", str(fresh(tmp_path))] if argv[0] == "run" else []
    line = judged_or_refused(cli.main(argv), capsys, path, judged_ok=False)
    assert key in line


def test_a_bad_line_of_a_history_is_named(tmp_path, capsys, stored_run):
    lines = (stored_run / "history.jsonl").read_bytes().splitlines()
    lines[3] = b'{"index": NaN}'
    path = _write(tmp_path / "history.jsonl", b"\n".join(lines))
    line = judged_or_refused(cli.main(["check", str(path), str(stored_run / "ledger.jsonl"),
                                       "--report-dir", str(fresh(tmp_path))]),
                             capsys, path, judged_ok=False)
    assert "line 4" in line
