"""limit-harness: a chaos and reconciliation test harness for credit-limit services."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("limit-harness")
except PackageNotFoundError:  # running from a checkout that was never installed
    __version__ = "0+unknown"
