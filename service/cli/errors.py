"""The one error type of the command line: a failure the user can act on, printed without a traceback."""

from __future__ import annotations


class CliError(Exception):
    """What went wrong and what to do about it, in one message."""
