"""A known secret fed through every path the harness takes one from (a typed header, a `$VAR`
header read from the environment, a password in a target URL, in a database URL, in a bad URL)
and every output searched for it: stdout, stderr (progress line included), every file written,
the replay command, the error lines, a pytest failure; including a target that echoes the token
back in its answers, so a finding quotes it. Each case first proves the secret really went
through (the target saw it), so a test that finds nothing could have found something."""

from __future__ import annotations

import getpass
import socket
import uuid
from pathlib import Path

import orjson
import pytest

from harness import cli, secrets

from hostile_target import HostileTarget

pytestmark = pytest.mark.timeout(120)
pytest_plugins = ["pytester"]

TYPED = "typed-S3cr3t-7f3a9c"        # typed on the command line
FROM_ENV = "env-S3cr3t-2b8d41"        # read from $LIMIT_TEST_KEY
IN_URL = "url-S3cr3t-95e0cd"          # a password in a URL
SECRETS = (TYPED, FROM_ENV, IN_URL)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _everything(capsys, *dirs: Path) -> str:
    """stdout, stderr and every file under `dirs`, as text."""
    out = capsys.readouterr()
    texts = [out.out, out.err]
    for root in dirs:
        for path in sorted(Path(root).rglob("*")):
            if path.is_file():
                texts.append(f"--- {path.name}\n" + path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def _leaks(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


def _displays(how: str):
    return lambda method, path, query: how if path.endswith("/display") else None


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("LIMIT_TEST_KEY", FROM_ENV)
    # Each test starts knowing no secret: one registered by an earlier test would be redacted
    # here by luck, and hide a path that never registers it.
    monkeypatch.setattr(secrets, "_known", set())


HEADERS = ["--header", f"Authorization: Bearer {TYPED}", "--header", "X-Api-Key: $LIMIT_TEST_KEY"]


def _saw_both(target: HostileTarget) -> bool:
    seen = str(target.headers_seen)
    return TYPED in seen and FROM_ENV in seen


def test_a_run_against_a_target_echoing_the_token_in_a_lying_display_leaks_nothing(tmp_path,
                                                                                    capsys):
    with HostileTarget(_displays("echo_lie")) as target:
        code = cli.main(["run", "--target", target.url, "--duration", "1", "--accounts", "2",
                         "--workers", "2", "--faults", "none", "--report-dir", str(tmp_path),
                         *HEADERS])  # not --quiet: the progress line is searched too
        assert _saw_both(target)
    text = _everything(capsys, tmp_path)
    assert code == 1 and "inconsistent_display" in text  # the echoing answer is in a finding
    assert {"report.json", "report.html", "junit.xml", "summary.md", "history.jsonl"} <= \
        {p.name for p in tmp_path.iterdir()}
    assert "echo" in (tmp_path / "history.jsonl").read_text()
    assert _leaks(text) == []
    replay = orjson.loads((tmp_path / "report.json").read_bytes())["replay"]
    assert "X-Api-Key: $LIMIT_TEST_KEY" in replay and "Authorization: <redacted>" in replay


def test_a_run_cut_short_by_its_bound_leaks_nothing_either(tmp_path, capsys):
    with HostileTarget(_displays("stall")) as target:
        code = cli.main(["run", "--target", target.url.replace("//", f"//qa:{IN_URL}@"),
                         "--duration", "1", "--accounts", "2", "--workers", "2", "--faults",
                         "none", "--timeout-s", "0.5", "--max-run-s", "3",
                         "--report-dir", str(tmp_path), *HEADERS])
        assert _saw_both(target)
    text = _everything(capsys, tmp_path)
    assert code == 2 and "cut short" in text and _leaks(text) == []


@pytest.mark.parametrize("url", [
    f"http://qa:{IN_URL}@127.0.0.1:{_closed_port()}",   # unreachable
    f"http://qa:{IN_URL}@[::1",                          # not a URL at all
    f"http://qa:{IN_URL}@127.0.0.1:notaport",            # a port that is no number
    f"ftp://qa:{IN_URL}@127.0.0.1/",                     # not HTTP
    f"http://127.0.0.1:{_closed_port()}/?password={IN_URL}",
])
@pytest.mark.parametrize("command", ["run", "conform", "prop"])
def test_error_lines_about_a_target_url_never_show_its_password(tmp_path, capsys, url, command):
    extra = ["--duration", "1"] if command == "run" else ["--examples", "1"] \
        if command == "prop" else []
    code = cli.main([command, "--target", url, "--timeout-s", "0.5", "--report-dir",
                     str(tmp_path), *extra])
    text = _everything(capsys, tmp_path)
    assert code == 2 and "limit-harness: error:" in text and "Traceback" not in text, text
    assert _leaks(text) == [], text


@pytest.mark.parametrize("line", [f"Authorization Bearer {TYPED}",   # no colon
                                  f"Bad Name: {TYPED}",               # a name no header has
                                  f"Authorization: {TYPED}\x01",      # a control character
                                  f"Content-Type: {TYPED}"])          # one the harness sets
def test_a_malformed_header_is_refused_without_quoting_its_value(tmp_path, capsys, line):
    code = cli.main(["conform", "--target", "http://127.0.0.1:1", "--header", line,
                     "--report-dir", str(tmp_path)])
    text = _everything(capsys, tmp_path)
    assert code == 2 and "--header" in text and _leaks(text) == [], text


@pytest.mark.parametrize("ledger", [
    f"postgresql://qa:{IN_URL}@127.0.0.1:{_closed_port()}/ledger?table=entries",
    f"postgresql://127.0.0.1:{_closed_port()}/ledger?table=entries&password={IN_URL}",
    f"postgresql://qa:{IN_URL}@[::1/ledger?table=entries",
])
def test_reconcile_never_shows_a_database_password(tmp_path, capsys, ledger):
    display = tmp_path / "display.jsonl"
    display.write_text('{"account_id": "a", "credit_line": 1, "outstanding": 0, "available": 1, '
                       '"status": "active", "usable": true, "as_of_seq": 1}\n')
    code = cli.main(["reconcile", "--ledger", ledger, "--display", str(display),
                     "--report-dir", str(tmp_path / "out")])
    text = _everything(capsys, tmp_path)
    assert code == 2 and "limit-harness: error:" in text and _leaks(text) == [], text


@pytest.mark.parametrize("argv", [
    ["run", "--ledger", f"postgresql://qa:{IN_URL}@127.0.0.1:{_closed_port()}/ledger",
     "--ops", "10"],
    ["run", "--ledger", f"postgresql://qa:{IN_URL}@[::1/ledger", "--ops", "10"],
    ["serve", "--port", "0", "--ledger", f"postgresql://qa:{IN_URL}@127.0.0.1:{_closed_port()}/x"],
])
def test_the_reference_service_store_never_shows_its_password(tmp_path, capsys, argv):
    pytest.importorskip("psycopg")
    code = cli.main([*argv, *(["--report-dir", str(tmp_path)] if argv[0] == "run" else [])])
    text = _everything(capsys, tmp_path)
    assert code == 2 and _leaks(text) == [], text


def test_a_run_on_a_postgresql_store_with_a_password_keeps_it_out_of_every_output(
        tmp_path, capsys, postgres_server):
    user_part = postgres_server.split("://", 1)[1].split("@", 1)[0] if "@" in postgres_server \
        else getpass.getuser()
    host_part = postgres_server.split("@", 1)[1] if "@" in postgres_server else \
        postgres_server.split("://", 1)[1]
    url = f"postgresql://{user_part}:{IN_URL}@{host_part}?schema=secrets_{uuid.uuid4().hex[:8]}"
    assert cli.main(["run", "--ops", "100", "--accounts", "2", "--ledger", url,
                     "--report-dir", str(tmp_path)]) == 0  # trust auth: the password is unused
    text = _everything(capsys, tmp_path)
    assert "--ledger 'postgresql://" in text and _leaks(text) == [], text


def test_conform_and_prop_against_an_echoing_target_leak_nothing(tmp_path, capsys):
    with HostileTarget(_displays("echo")) as target:
        assert cli.main(["conform", "--target", target.url, "--report-dir",
                         str(tmp_path / "conform"), *HEADERS]) in (0, 1)
        assert cli.main(["prop", "--target", target.url, "--examples", "3", "--steps", "5",
                         "--report-dir", str(tmp_path / "prop"), *HEADERS]) in (0, 1)
        assert _saw_both(target)
    text = _everything(capsys, tmp_path)
    assert "conform:" in text and _leaks(text) == []


def test_replaying_a_run_that_was_given_a_typed_secret_says_so_without_it(tmp_path, capsys):
    with HostileTarget(lambda method, path, query: None) as target:
        assert cli.main(["run", "--target", target.url, "--duration", "1", "--accounts", "2",
                         "--workers", "2", "--faults", "none", "--quiet",
                         "--report-dir", str(tmp_path / "run"), *HEADERS]) == 0
    code = cli.main(["replay", str(tmp_path / "run" / "report.json")])
    text = _everything(capsys, tmp_path)
    assert code == 2 and "secret" in text and _leaks(text) == []


ECHOED_USER_TEST = '''
def test_reconciles(limit_recorder, limit_ids, reconcile):
    account = limit_ids.account("huabei")
    limit_recorder.write(1, "open", account, {
        "account_id": account, "product": "huabei", "credit_line": 1000,
        "request_id": limit_ids.request()})
    limit_recorder.display(1, account)
    reconcile()
'''


def test_a_pytest_plugin_failure_quoting_an_echoed_token_does_not_show_it(pytester):
    pytester.makepyfile(test_user=ECHOED_USER_TEST)
    with HostileTarget(_displays("echo_lie")) as target:
        result = pytester.runpytest_subprocess(
            "--limit-target", target.url, "--limit-header", f"Authorization: Bearer {TYPED}",
            "--limit-header", "X-Api-Key: $LIMIT_TEST_KEY", "-p", "no:cacheprovider")
        assert _saw_both(target)
    result.assert_outcomes(failed=1)
    out = result.stdout.str() + result.stderr.str()
    assert "inconsistent_display" in out and _leaks(out) == [], out
