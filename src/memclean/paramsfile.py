"""Set values in a params file from ``section.key=value`` overrides.

``memclean run --set score.trainer.epochs=5 --set clean.export=parquet`` (and
``memclean set``) edit ``params.yaml`` in place, so the next ``dvc repro`` reruns
the stages whose section changed and records the new values in ``dvc.lock``.
The Prefect flow (``flows/clean_dataset.py``) calls :func:`apply_overrides` the
same way.

* A key is a dotted path of any depth: ``ingest.source``, ``score.trainer.epochs``,
  ``score.scorers.el2n.early_fraction``. Missing keys below a section are created.
* A value is parsed as YAML, with the same loader the stages use (PyYAML):
  ``5`` is an int, ``0.1`` a float, ``null`` (or nothing) is null, ``[28, 28]`` a list,
  ``{h: 0.01}`` a mapping, anything else a string.
* Items without ``=``, empty key parts, paths through a value that is not a mapping,
  and any result that :func:`memclean.options.parse_params` rejects (an unknown key,
  a wrong type, a value out of range) raise :class:`MemcleanError`; nothing is
  written then.

The file is edited with ruamel.yaml, so comments, key order and flow style are kept,
and written atomically (temporary file, fsync, ``os.replace``). Before the file is
replaced, the new text is read back with PyYAML and compared with the expected
parameters, so a value can never reach a stage with a different meaning.
"""

from __future__ import annotations

import copy
import io
import os
import stat
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from memclean.errors import MemcleanError
from memclean.io import atomic_path
from memclean.options import SECTIONS, parse_params, read_params_yaml

KeyPath = tuple[str, ...]


def parse_override(item: str) -> tuple[KeyPath, Any]:
    """Split ``section.key=value`` into its key path and its YAML-parsed value."""
    if not isinstance(item, str) or "=" not in item:
        raise MemcleanError(f"malformed override {item!r}: expected section.key=value")
    key, _, raw = item.partition("=")
    parts = tuple(p.strip() for p in key.strip().split("."))
    if len(parts) < 2 or any(not p for p in parts):
        raise MemcleanError(f"malformed override {item!r}: the key must be a dotted path section.key[.subkey...]")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise MemcleanError(f"malformed override {item!r}: the value is not valid YAML ({problem})") from None
    return parts, value


def _yaml() -> YAML:
    rt = YAML()  # round-trip: keeps comments, order and flow style
    rt.width = 4096
    rt.preserve_quotes = True
    rt.indent(mapping=2, sequence=4, offset=2)
    rt.representer.add_representer(
        type(None), lambda rep, _data: rep.represent_scalar("tag:yaml.org,2002:null", "null")
    )
    return rt


def _node(value: Any) -> Any:
    """A ruamel node for ``value`` that PyYAML reads back as ``value``.

    Containers are written in flow style (``[a, b]``, ``{k: v}``) like the rest of
    params.yaml; strings that PyYAML would read as something else (``yes``, ``1.0``,
    ``null``, ``a: b``) are double-quoted.
    """
    if isinstance(value, Mapping):
        node = CommentedMap((k, _node(v)) for k, v in value.items())
        node.fa.set_flow_style()
        return node
    if isinstance(value, list | tuple):
        seq = CommentedSeq(_node(v) for v in value)
        seq.fa.set_flow_style()
        return seq
    if isinstance(value, str):
        try:
            plain_ok = yaml.safe_load(value) == value
        except yaml.YAMLError:
            plain_ok = False
        return value if plain_ok and value.strip() == value and "#" not in value else DoubleQuotedScalarString(value)
    return value


def _set(tree: Any, path: KeyPath, value: Any, item: str, *, plain: bool) -> None:
    node = tree
    for depth, part in enumerate(path[:-1]):
        if part not in node or (node[part] is None and depth > 0):
            node[part] = {} if plain else CommentedMap()
        node = node[part]
        if not isinstance(node, Mapping):
            where = ".".join(path[: depth + 1])
            raise MemcleanError(f"cannot apply {item!r}: {where} is {type(node).__name__} {node!r}, not a mapping")
    node[path[-1]] = copy.deepcopy(value) if plain else _node(value)


def apply_overrides(path: Path, sets: Sequence[str] | Iterable[str]) -> dict[str, Any]:
    """Apply ``section.key=value`` overrides to the params file at ``path``, atomically.

    Parameters
    ----------
    path
        The ``params.yaml`` to edit. It must exist and hold a mapping of sections.
    sets
        Overrides such as ``"ingest.source=idx"`` or ``"score.trainer.epochs=5"``.
        Later items win over earlier ones for the same key. No items: nothing is written.

    Returns
    -------
    dict
        All parameters after the change, as the stages will read them (PyYAML).

    Raises
    ------
    MemcleanError
        The file is missing or not a mapping, an item is malformed, a key path runs
        through a non-mapping value, or the result is not valid params. The file is
        left untouched.
    """
    path = Path(path)
    expected = read_params_yaml(path) or {}
    if not isinstance(expected, dict):
        raise MemcleanError(f"{path} must hold a mapping of sections, not {type(expected).__name__}")
    parsed = [(parse_override(item), item) for item in sets]
    if not parsed:
        return expected
    for (keys, _value), item in parsed:
        if keys[0] not in SECTIONS:
            raise MemcleanError(f"unknown params section {keys[0]!r} in {item!r} (sections: {', '.join(SECTIONS)})")
        if not isinstance(expected.get(keys[0]), dict | type(None)):
            raise MemcleanError(f"cannot apply {item!r}: section {keys[0]!r} is not a mapping")

    rt = _yaml()
    doc = rt.load(path.read_text(encoding="utf-8"))
    for (keys, value), item in parsed:
        if expected.get(keys[0]) is None:
            expected[keys[0]] = {}
            doc[keys[0]] = CommentedMap()
        _set(expected, keys, value, item, plain=True)
        _set(doc, keys, value, item, plain=False)
    parse_params(expected, f"{path.name} after {' '.join(item for _, item in parsed)}")
    buf = io.StringIO()
    rt.dump(doc, buf)
    new_text = buf.getvalue()
    if yaml.safe_load(new_text) != expected:  # pragma: no cover - a ruamel/PyYAML mismatch
        raise MemcleanError(f"overrides {list(sets)} would not round-trip through {path.name}; nothing written")

    mode = stat.S_IMODE(path.stat().st_mode)
    with atomic_path(path) as tmp:
        tmp.write_text(new_text, encoding="utf-8")
        os.chmod(tmp, mode)
    return expected
