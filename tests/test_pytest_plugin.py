"""The pytest plugin, driven the way a QA engineer's suite uses it (pytester runs a user's test
file): a test against a correct service passes, the same test against a seeded bug fails with a
readable diff, the options parse, and the markers are registered."""

from __future__ import annotations

import socket

import pytest

# Imported here, before any in-process pytester run: a run forgets the modules first imported
# during it, and a harness imported twice would hold two copies of hypothesis's classes.
import harness.pytest_plugin  # noqa: F401
import harness.stateful  # noqa: F401

pytest_plugins = ["pytester"]

# A user's test file: open an account, draw under a sync delay, cut the limit, reconcile.
USER_TESTS = '''
import pytest


def open_account(rec, ids, line=500_000):
    account = ids.account("huabei")
    op = rec.write(1, "open", account, {"account_id": account, "product": "huabei",
                                        "credit_line": line, "request_id": ids.request()})
    assert op.outcome == "ok", op.response
    return account


def test_draw_under_delay_then_cut_reconciles(limit_target, limit_recorder, limit_ids, chaos,
                                              reconcile):
    account = open_account(limit_recorder, limit_ids)
    with chaos.fault("delay_sync", delay_ms=300):
        op = limit_recorder.write(1, "draw", account, {"amount": 120_000,
                                                        "request_id": limit_ids.request()})
        assert op.outcome == "ok"
        limit_target.wait_ms(50)
        limit_recorder.display(1, account)
    limit_recorder.write(1, "limit", account, {"credit_line": 100_000, "reason": "risk-cut",
                                                "request_id": limit_ids.request()})
    verdict = reconcile()
    assert not [f for f in verdict.findings if f.severity != "minor"]
    assert verdict.stats["accounts"] == 1


@pytest.mark.limit_bug("limit_cut_hidden")
def test_a_cut_is_shown(limit_recorder, limit_ids, reconcile):
    account = open_account(limit_recorder, limit_ids)
    limit_recorder.write(1, "limit", account, {"credit_line": 100_000, "reason": "risk-cut",
                                                "request_id": limit_ids.request()})
    reconcile()
'''


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_correct_service_passes_and_a_seeded_bug_fails_with_a_readable_diff(pytester):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    out = result.stdout.str()
    failure = out[out.index("_ test_a_cut_is_shown _"):]
    for words in ("findings (2 critical) against embedded (bugs: limit_cut_hidden):",
                  "[critical] inconsistent_display on account 'huabei-1' (checker: display)",
                  "a display may be old, never invented",
                  "diff (expected -> actual):",
                  "root['credit_line']: 100000 -> 500000"):
        assert words in failure, words
    # The readable diff is the whole failure: no traceback of the plugin's internals.
    assert "harness/stateful.py" not in out and "Traceback" not in out


def test_the_fault_context_manager_removes_its_fault_and_teardown_clears_the_rest(pytester):
    pytester.makepyfile(test_chaos='''
        def test_faults_are_recorded(limit_recorder, chaos):
            with chaos.fault("pause_sync") as fault_id:
                assert fault_id
            chaos.inject("drop_events", probability=0.5)
            fs = [(op.f, op.outcome) for op in limit_recorder.history.ops]
            assert fs == [("fault_add", "ok"), ("fault_remove", "ok"), ("fault_add", "ok")]
            assert chaos.supported  # the embedded service supports all six kinds
    ''')
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_options_are_parsed_and_shown_in_help(pytester):
    pytester.makepyfile(test_options='''
        def test_options(request, limit_target):
            assert request.config.getoption("limit_sla_ms") == 250
            assert limit_target.simulated
    ''')
    pytester.runpytest("-p", "no:cacheprovider", "--limit-sla-ms", "250").assert_outcomes(passed=1)
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--limit-target=URL" in help_text and "--limit-sla-ms=MS" in help_text
    bad = pytester.runpytest("--limit-sla-ms", "0")
    assert bad.ret != 0 and "must be greater than 0" in bad.stderr.str()


def test_an_unreachable_target_errors_each_test_in_one_line(pytester):
    pytester.makepyfile(test_unreachable='''
        def test_needs_a_target(limit_target):
            pass
    ''')
    url = f"http://127.0.0.1:{closed_port()}"
    result = pytester.runpytest("-p", "no:cacheprovider", "--limit-target", url)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines([f"*target {url} is not reachable or not healthy*"])


def test_limit_bug_tests_are_skipped_against_another_target(pytester):
    pytester.makepyfile(test_bug='''
        import pytest

        @pytest.mark.limit_bug("no_cure")
        def test_cure(limit_target):
            pass
    ''')
    result = pytester.runpytest("-p", "no:cacheprovider", "-rs", "--limit-target",
                                f"http://127.0.0.1:{closed_port()}")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(["*limit_bug(no_cure) needs the embedded reference service*"])


def test_the_markers_are_registered(pytester):
    result = pytester.runpytest("--markers")
    result.stdout.fnmatch_lines(["@pytest.mark.limit_bug(name, ...):*",
                                 "@pytest.mark.limit_chaos(kind, ...):*"])
    pytester.makepyfile(test_strict='''
        import pytest

        @pytest.mark.limit_chaos("pause_sync")
        @pytest.mark.limit_bug("no_cure")
        def test_marked(limit_target):
            pass
    ''')
    pytester.runpytest("-p", "no:cacheprovider", "--strict-markers").assert_outcomes(passed=1)


@pytest.mark.http
def test_the_fixtures_drive_a_real_service_over_http(pytester, service_url):
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest("-p", "no:cacheprovider", "--limit-target", service_url,
                                "--limit-sla-ms", "300", "-rs")
    # The limit_bug test needs the embedded service and is skipped; the other runs for real.
    result.assert_outcomes(passed=1, skipped=1)
