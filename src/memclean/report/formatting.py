"""Turning report values into display strings (plain text: escaping is the templates' job)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

#: What a missing, NaN or unknown value shows as.
NA = "n/a"


def get(mapping: Any, *keys: str) -> Any:
    """Nested ``dict.get`` that returns ``None`` on any missing level.

    Parameters
    ----------
    mapping
        A mapping (or anything else, which counts as missing).
    *keys
        The keys to follow, outermost first.

    Returns
    -------
    Any
        The value, or ``None``.
    """
    for key in keys:
        if not isinstance(mapping, Mapping):
            return None
        mapping = mapping.get(key)
    return mapping


def num(value: Any) -> float | None:
    """A finite float, or ``None`` (booleans, non-numbers, NaN and infinities).

    Parameters
    ----------
    value
        Anything.

    Returns
    -------
    float or None
    """
    if isinstance(value, bool) or value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def fmt(value: Any, digits: int = 4) -> str:
    """Format a value for display.

    Parameters
    ----------
    value
        ``None``/NA/NaN (``n/a``), a boolean (``yes``/``no``), an integer
        (thousands separators), a float (at most ``digits`` decimals, trailing
        zeros dropped), a mapping (``k=v, ...``), a list or tuple
        (comma-separated) or anything else (``str``).
    digits
        Decimals of a float.

    Returns
    -------
    str
        Plain, unescaped text.
    """
    if value is None or value is pd.NA:
        return NA
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        if not math.isfinite(float(value)):
            return NA
        text = f"{float(value):.{digits}f}"
        return text.rstrip("0").rstrip(".") if "." in text else text
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(map(fmt, value))
    return str(value)


def fixed(value: Any, digits: int = 4) -> str:
    """A number with exactly ``digits`` decimals (for aligned columns), or ``n/a``.

    Parameters
    ----------
    value
        Anything; only finite numbers show.
    digits
        Decimals.

    Returns
    -------
    str
    """
    number = num(value)
    return NA if number is None else f"{number:.{digits}f}"


def pct(part: int, whole: int) -> str:
    """``part`` as a percentage of ``whole`` with one decimal (``n/a`` when ``whole`` is 0).

    Parameters
    ----------
    part, whole
        Counts.

    Returns
    -------
    str
    """
    return f"{100.0 * part / whole:.1f}%" if whole else NA


def label_name(label: Any, classes: Sequence[str]) -> str | None:
    """The class name of a label index (the index itself when outside ``classes``).

    Parameters
    ----------
    label
        An integer label, or a missing value.
    classes
        Class names; index = label.

    Returns
    -------
    str or None
        ``None`` for a missing label.
    """
    if label is None or label is pd.NA or (isinstance(label, float) and math.isnan(label)):
        return None
    idx = int(label)
    return str(classes[idx]) if 0 <= idx < len(classes) else str(idx)


def param_value(value: Any) -> str:
    """A parameter value as written in a params file: text as is, anything else as JSON.

    Parameters
    ----------
    value
        A JSON value (``str``, number, boolean, ``None``, list or mapping).

    Returns
    -------
    str
        Plain, unescaped text: ``digits``, ``0.1``, ``true``, ``null``, ``[1, 2]``,
        ``{}``; the empty string shows as ``""``.
    """
    if isinstance(value, str) and value:
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """The leaves of a nested mapping as ``(dotted key, value)`` pairs, in the mapping's order.

    Parameters
    ----------
    mapping
        E.g. one params section (``{"trainer": {"epochs": 8}}``).
    prefix
        Put before every key with a dot (e.g. the section name).

    Returns
    -------
    list of (str, Any)
        ``[("score.trainer.epochs", 8)]`` for prefix ``score``; lists are leaves,
        and an empty nested mapping is a leaf with the value ``{}``.
    """
    out: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.extend(flatten(value, name))
        else:
            out.append((name, value))
    return out
