"""The one exception base for usage errors.

A usage error is the user's to fix: a bad flag or config value, a file that is missing or of the
wrong kind, a dataset that does not fit the model. Its message names the flag or the file. Every
job prints it as ``error: <message>`` and exits with ``USAGE_EXIT_STATUS``; anything else is a bug
and keeps its traceback.
"""

from __future__ import annotations

USAGE_EXIT_STATUS = 2


class UsageError(Exception):
    """An input the user can fix; the message names the flag or the file."""
