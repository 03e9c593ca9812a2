"""How a command ends: its exit codes, and the errors that end it with a one-line message and
exit code 2 (the harness could not judge). Anything else escaping to the CLI is a bug in the
harness."""

# Every command's exit codes, the same for `run`, `prop`, `check`, `gate`, the load test, ...
EXIT_PASS = 0      # judged, and the gate passed
EXIT_FAIL = 1      # judged, and the gate failed (or a property failed)
EXIT_UNJUDGED = 2  # the harness could not judge: bad input, unreachable or unusable target
EXIT_INTERRUPTED = 130


def exit_code(passed: bool) -> int:
    return EXIT_PASS if passed else EXIT_FAIL


class HarnessError(Exception):
    """A command cannot go on; the message is one line that says what to do next."""


class UsageError(HarnessError):
    """A bad option, an unreadable or malformed file."""


class TargetError(HarnessError):
    """The target cannot be reached, or breaks the contract so badly nothing can be judged."""
