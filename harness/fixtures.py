"""The project's `fixtures/` folder (personas, fault profiles, gate policies) and reading its
TOML files with one-line errors that name the file."""

from __future__ import annotations

import tomllib
from pathlib import Path

from .errors import UsageError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def read_toml(path: Path, what: str) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {path} is not valid TOML: {exc}") from None
