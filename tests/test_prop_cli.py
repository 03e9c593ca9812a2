"""`limit-harness prop` through the real CLI, as a user runs it: exit 0 with a one-line summary
when nothing fails, exit 1 with the shrunk program printed and saved, exit 2 when it cannot
judge; and nothing left behind in the working directory but the reports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

RUN_TIMEOUT_S = 120


def prop(cwd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness.cli", "prop", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=RUN_TIMEOUT_S)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nobody listens once the socket is closed


def test_no_failure_exits_0_with_a_one_line_summary_and_writes_nothing(tmp_path):
    done = prop(tmp_path, "--examples", "5", "--steps", "8", "--seed", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("no failure in 5 examples (seed 3")
    # No report for a pass, and no .hypothesis cache in the user's working directory.
    assert list(tmp_path.iterdir()) == []


def test_a_failure_exits_1_prints_the_shrunk_program_and_saves_it(tmp_path):
    done = prop(tmp_path, "--bug", "exact_available_rejected", "--examples", "100",
                "--seed", "0")
    assert done.returncode == 1, done.stderr
    out = done.stdout
    assert out.startswith("FAIL  seed 0  target embedded (bugs: exact_available_rejected)")
    assert "The failing program:" in out and "state = LimitMachine()" in out
    assert "[major] wrongful_rejection on account" in out and "diff (expected -> actual):" in out
    assert "replay:  limit-harness prop --seed 0 --examples 100" in out
    report_dir = tmp_path / "reports" / "prop-0"  # the default, relative to the cwd
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]
    program = (report_dir / "program.txt").read_text(encoding="utf-8").splitlines()
    assert program[0].startswith("# embedded (bugs: exact_available_rejected), seed 0")
    assert "state = LimitMachine()" in program and program[-1] == "state.teardown()"
    for line in program[2:]:
        assert line in out, "program.txt is the program printed"
    document = json.loads((report_dir / "findings.json").read_text(encoding="utf-8"))
    assert document["seed"] == 0 and 1 <= document["steps"] <= 12
    assert [f["kind"] for f in document["findings"]] == ["wrongful_rejection"]
    assert document["findings"][0]["diff"], "each finding keeps its deepdiff"


def test_the_same_seed_gives_the_same_program(tmp_path):
    runs = [prop(tmp_path, "--bug", "overpay_accepted", "--examples", "60", "--seed", "11",
                 "--report-dir", str(tmp_path / name)) for name in ("a", "b")]
    assert [r.returncode for r in runs] == [1, 1], [r.stderr for r in runs]
    assert (tmp_path / "a" / "program.txt").read_text() == \
        (tmp_path / "b" / "program.txt").read_text()


def test_progress_goes_to_stderr(tmp_path):
    done = prop(tmp_path, "--examples", "3", "--steps", "5")
    assert done.returncode == 0
    assert "search" in done.stderr and "search" not in done.stdout


@pytest.mark.parametrize("args, words", [
    (("--target", "http://127.0.0.1:{port}"), "is not reachable"),
    (("--bug", "no_such_bug"), "unknown bug 'no_such_bug'"),
    (("--target", "http://127.0.0.1:{port}", "--bug", "no_cure"), "embedded reference service"),
    (("--target", "ftp://example"), "is not an http:// or https:// URL"),
    (("--examples", "0"), "must be greater than 0"),
])
def test_what_cannot_be_judged_exits_2_with_one_line(tmp_path, args, words):
    port = closed_port()
    done = prop(tmp_path, *(a.format(port=port) for a in args))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert words in done.stderr
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []
