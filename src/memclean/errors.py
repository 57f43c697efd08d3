"""Exceptions that carry a message meant for the user, not a stack trace."""

from __future__ import annotations


class MemcleanError(Exception):
    """A problem with the user's input or configuration.

    Stages and the CLI catch it and print its message on one line; anything else
    is a bug and keeps its traceback.
    """


class QuarantineLimitError(MemcleanError):
    """Too large a fraction of the input rows was quarantined."""
