"""The progress-callback type the library accepts (the stages pass a tqdm wrapper)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

#: ``progress(iterable, description, total) -> iterable``.
Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]


def no_progress(it: Iterable[Any], desc: str, total: int) -> Iterable[Any]:
    """The default: iterate silently."""
    return it
