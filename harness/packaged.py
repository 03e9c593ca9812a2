"""What ships inside the package, read with importlib.resources so that a wheel installed
anywhere finds it as a checkout does: the fixtures (personas, fault profiles, gate policies,
deployment files), the load test, the contract (OpenAPI and Markdown). The build carries the
repository's fixtures/, loadtests/ and docs/ folders into the package; there is one copy.
Also: reading a TOML file (shipped or the user's) with one-line errors that name it."""

from __future__ import annotations

import tomllib
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from .errors import UsageError


def fixture(name: str) -> Traversable | None:
    """A shipped fixture file by name (`faults-all.toml`), or None when there is none."""
    found = resources.files("harness.fixtures") / name
    return found if found.is_file() else None


def fixture_names(prefix: str, suffix: str = ".toml") -> list[str]:
    """The names after `prefix` of the shipped fixtures `PREFIX-NAME.toml`, for help texts."""
    return sorted(p.name[len(prefix):-len(suffix)] for p in resources.files("harness.fixtures")
                  .iterdir() if p.name.startswith(prefix) and p.name.endswith(suffix))


def locustfile() -> Path:
    """The load test's locustfile, as a path locust can be given."""
    path = resources.files("harness.loadtests") / "locustfile.py"
    assert isinstance(path, Path), "the package is installed as files, not zipped"
    return path


def document(name: str) -> str:
    """A shipped document: `openapi.json` (in the package) or a guide in docs/ (`contract.md`)."""
    place = resources.files("harness") if name == "openapi.json" else resources.files("harness.docs")
    return (place / name).read_text(encoding="utf-8")


def read_toml(path: Path | Traversable, what: str) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid TOML: not UTF-8 text at byte "
                         f"{exc.start}") from None
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{what} {path} is not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per level of `[[[...]]]`
        raise UsageError(f"{what} {path}: values nested too deeply to read") from None
