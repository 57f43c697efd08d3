"""Exceptions that carry a message meant for the user, not a stack trace."""

from __future__ import annotations

from typing import Any


class MemcleanError(Exception):
    """A problem with the user's input or configuration.

    Stages and the CLI catch it and print its message on one line; anything else
    is a bug and keeps its traceback.
    """


class QuarantineLimitError(MemcleanError):
    """Too large a fraction of the input rows was quarantined."""


def describe_validation_error(exc: Any, where: str) -> str:
    """One line from a :class:`pydantic.ValidationError`: ``where.key: problem (got value)``; several joined by ``;``.

    Parameters
    ----------
    exc
        The validation error.
    where
        Dotted prefix of the keys, e.g. ``score.trainer`` (empty: the keys as they are).
    """
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err.get("loc", ()) if not _is_union_tag(p))
        key = ".".join(part for part in (where, loc) if part)
        if err.get("type") in ("extra_forbidden", "unexpected_keyword_argument"):
            parts.append(f"{key}: unknown key")
            continue
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        value = err.get("input")
        top = (where or loc).split(".")[0]
        if top and msg.startswith(f"{top}."):  # the message names its own key
            parts.append(msg)
            continue
        if err.get("type") == "missing" or isinstance(value, dict):
            parts.append(f"{key}: {msg}" if key else msg)
            continue
        shown = repr(value)
        if len(shown) > 60:
            shown = shown[:57] + "..."
        parts.append(f"{key}: {msg} (got {shown})")
    return "; ".join(dict.fromkeys(parts))


def _is_union_tag(part: Any) -> bool:
    """Pydantic puts the union member it tried (``int``, ``literal['auto']``) into ``loc``; hide those."""
    return isinstance(part, str) and (
        part in {"int", "float", "str", "bool", "list", "dict", "none"} or "[" in part or part.startswith("function-")
    )
