"""report.html in a real headless browser (Debian's chromium): it renders offline, shows the
findings, runs its small script without errors, and can be screenshotted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from harness.findings import Finding
from harness.history import History
from harness.reports import write_reports

CHROMIUM = Path("/usr/bin/chromium")
INJECTION = "<script>alert(1)</script>"
TIMEOUT_S = 120

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists() and not shutil.which("chromium"),
                       reason="needs Debian's chromium (apt-get install chromium)"),
]


def _chromium() -> str:
    return str(CHROMIUM) if CHROMIUM.exists() else str(shutil.which("chromium"))


def _run_chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / f"profile-{len(list(tmp_path.glob('profile-*')))}"
    command = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
               "--enable-logging=stderr", "--v=0", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT_S,
                          check=False)


def _history() -> History:
    history = History(meta={"started_at": "2024-05-01T08:00:00.000Z"})
    history.phase("safety", 0)
    add = history.invoke(1, "fault_add", None, {"kind": "pause_sync"}, 500)
    history.complete(add, "ok", 505, 201, {"fault_id": "f1", "kind": "pause_sync"})
    for n in range(12):
        draw = history.invoke(2, "draw", "acct-李娜", {"amount": 1000 + n, "request_id": f"r{n}"},
                              600 + 200 * n)
        history.complete(draw, "ok" if n != 5 else "info", 640 + 200 * n, 201 if n != 5 else None)
        read = history.invoke(3, "display", "acct-李娜", None, 700 + 200 * n)
        history.complete(read, "ok", 705 + 200 * n, 200, {"available": 50000})
    remove = history.invoke(1, "fault_remove", None, {"all": True}, 2500)
    history.complete(remove, "ok", 2502, 204)
    history.phase("convergence", 3000)
    return history


def _report(history: History) -> dict:
    findings = [
        Finding(kind="display_divergence", severity="critical", account_id="acct-李娜",
                first_seen_ms=3400, expected={"available": 38934}, actual={"available": 50000},
                checker="display", faults_active=["pause_sync"],
                explanation=f"李娜的借呗 display stayed at ¥500.00 after convergence. {INJECTION}",
                history_slice=[op.to_dict() for op in history.ops[-6:]]).to_dict(),
        Finding(kind="lost_write", severity="major", account_id="acct-李娜", first_seen_ms=3500,
                expected={"entries": 1}, actual={"entries": 0}, checker="writes",
                explanation="The draw of ¥10.05 acknowledged at 1.640 s is not in the ledger.")
        .to_dict(),
    ]
    samples = [{"account_id": "acct-李娜", "t_ms": 700 + 200 * n, "lag_ms": 100 * n,
                "faults": ["pause_sync"] if n < 10 else []} for n in range(12)]
    return {
        "verdict": "fail", "seed": 11, "target": "embedded:reference", "mode": "simulated",
        "started_at": "2024-05-01T08:00:00.000Z", "duration_s": 4.0, "run_id": "browser-test",
        "config": {"accounts": 1}, "findings": findings,
        "stats": {"lag_ms": {"count": 12, "p50": 550, "p90": 1000, "p99": 1100, "max": 1100},
                  "lag_samples": samples,
                  "coverage": {"draw": {"none": 1, "pause_sync": 11}},
                  "availability": {"reads": 12, "unavailable": 0, "share": 0.0, "longest_ms": 0}},
        "gate": {"policy": "default", "passed": False, "reasons": ["1 critical finding(s)"]},
        "replay": "limit-harness run --seed 11 --target embedded",
    }


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    history = _history()
    paths = write_reports(_report(history), history, tmp_path_factory.mktemp("report"))
    return paths["html"]


def test_page_renders_the_findings_and_its_script_runs_cleanly(page: Path, tmp_path: Path) -> None:
    result = _run_chromium(tmp_path, "--dump-dom", page.as_uri())
    dom = result.stdout
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'data-script="ok"' in dom, "the inline script ran to its end"
    assert "Uncaught" not in result.stderr, result.stderr[-2000:]
    assert dom.count('<details class="finding') == 2
    assert "李娜的借呗 display stayed at ¥500.00" in dom
    assert INJECTION not in dom and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    assert '<rect class="band"' in dom, "the pause_sync window is drawn"
    assert "<button" in dom and 'id="toggle-all">expand all' in dom


def test_page_screenshots(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "report.png"
    result = _run_chromium(tmp_path, "--hide-scrollbars", "--window-size=1280,2200",
                           f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0, result.stderr[-2000:]
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    assert len(data) > 20_000, "a blank page compresses to almost nothing"
