"""A built wheel, installed into a fresh virtual environment, runs every command from any
directory: the fixtures, the load test and the contract ship inside the package."""

from __future__ import annotations

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The `limit-harness` script of a fresh venv holding only the built wheel (its
    dependencies are borrowed from this environment, read-only, so nothing is downloaded)."""
    tmp = tmp_path_factory.mktemp("install")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "-w", str(tmp / "dist"), str(ROOT)],
                   check=True, timeout=300, capture_output=True)
    [wheel] = (tmp / "dist").glob("limit_harness-*.whl")
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    subprocess.run([venv / "bin" / "pip", "install", "--quiet", "--no-deps", str(wheel)],
                   check=True, timeout=300, capture_output=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "borrowed-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv / "bin" / "limit-harness"


def _cli(script: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(script), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_the_wheel_runs_every_command_from_an_empty_directory(installed, tmp_path):
    work = tmp_path / "empty"
    work.mkdir()
    version = _cli(installed, work, "--version")
    assert version.returncode == 0 and version.stdout.startswith("limit-harness 0.")
    where = subprocess.run([installed.parent / "python", "-c",
                            "import harness, harness.fixtures; print(harness.__file__)"],
                           capture_output=True, text=True, cwd=work, timeout=60)
    assert "site-packages" in where.stdout and str(ROOT) not in where.stdout, where

    run = _cli(installed, work, "run", "--seed", "3", "--ops", "400", "--quiet")
    assert run.returncode == 0, run.stdout + run.stderr
    [report_dir] = (work / "reports").iterdir()
    assert {"report.json", "junit.xml", "summary.md", "report.html", "history.jsonl",
            "ledger.jsonl"} <= {p.name for p in report_dir.iterdir()}

    gate = _cli(installed, work, "gate", str(report_dir / "report.json"), "--policy", "strict")
    assert gate.returncode in (0, 1) and "gate:" in gate.stdout, gate.stderr
    check = _cli(installed, work, "check", str(report_dir / "history.jsonl"),
                 str(report_dir / "ledger.jsonl"), "--report-dir", "again")
    assert check.returncode == 0, check.stderr

    prop = _cli(installed, work, "prop", "--examples", "3", "--steps", "8")
    assert prop.returncode == 0 and "no failure in 3 examples" in prop.stdout, prop.stderr
    bugs = _cli(installed, work, "serve", "--list-bugs")
    assert bugs.returncode == 0 and "no_cure" in bugs.stdout
    openapi = _cli(installed, work, "contract")
    assert json.loads(openapi.stdout)["openapi"].startswith("3.1")
    markdown = _cli(installed, work, "contract", "--format", "markdown")
    assert markdown.returncode == 0 and "cure" in markdown.stdout
    conform = _cli(installed, work, "conform", "--report-dir", "conform")
    assert conform.returncode == 0, conform.stdout[-800:] + conform.stderr
    assert (work / "conform" / "junit.xml").is_file()
    assert sorted(p.name for p in work.iterdir()) == ["again", "conform", "reports"], \
        "nothing but the reports asked for lands in the working directory"


def test_the_wheel_carries_one_copy_of_the_fixtures_and_the_load_test(installed):
    from zipfile import ZipFile

    [wheel] = (installed.parent.parent.parent / "dist").glob("*.whl")
    names = ZipFile(wheel).namelist()
    shipped = {n.removeprefix("harness/fixtures/") for n in names
               if n.startswith("harness/fixtures/") and n.endswith(".toml")}
    assert shipped == {p.relative_to(ROOT / "fixtures").as_posix()
                       for p in (ROOT / "fixtures").rglob("*.toml")}  # deployments/ too
    assert "harness/loadtests/locustfile.py" in names and "harness/openapi.json" in names
    assert "harness/docs/contract.md" in names
    assert not any(n.startswith(("fixtures/", "loadtests/", "tests/")) for n in names)
