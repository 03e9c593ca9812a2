"""Errors that end a command with a one-line message and exit code 2 (the harness could not
judge). Anything else escaping to the CLI is a bug in the harness."""


class HarnessError(Exception):
    exit_code = 2


class UsageError(HarnessError):
    """A bad option, an unreadable or malformed file."""


class TargetError(HarnessError):
    """The target cannot be reached, or breaks the contract so badly nothing can be judged."""
