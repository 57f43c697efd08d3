"""Turn a :class:`~memclean.sources.Listing` into the samples table and pixel array.

Every input row comes out as one row of the samples table: ``ok`` rows point at
their slice of the ``N×C×H×W`` uint8 pixel array (``row``), quarantined rows
carry a reason code and a human-readable ``detail``. Nothing is dropped.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pandas as pd
from PIL import Image

from memclean import imaging
from memclean.errors import MemcleanError, QuarantineLimitError
from memclean.progress import Progress, no_progress
from memclean.io import AtomicNpyWriter
from memclean.schema import SAMPLES_SCHEMA, Reason, Status
from memclean.sources import Item, Listing

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class IngestOptions:
    """Decoding and normalisation settings (the ``ingest`` params section).

    Attributes
    ----------
    image_size
        ``None`` for the most common size among readable images (ties: the
        larger), an int for square images, or ``(height, width)``.
    channels
        ``None`` for 1 when every readable image is grey and 3 otherwise.
    max_image_pixels
        Decompression-bomb limit; larger images are quarantined as ``too_large``.
    allowed_formats
        Pillow format names that are decoded.
    alpha_background
        Grey level transparent pixels are composited onto.
    """

    image_size: tuple[int, int] | None = None
    channels: int | None = None
    max_image_pixels: int = 40_000_000
    allowed_formats: frozenset[str] = field(default_factory=lambda: frozenset(imaging.DEFAULT_ALLOWED_FORMATS))
    alpha_background: int = 255


@dataclass
class IngestResult:
    """The samples table, the size the pixels were stored at, and counts."""

    samples: pd.DataFrame
    classes: list[str]
    image_size: tuple[int, int]
    channels: int
    resized: int
    notes: dict[str, Any]

    @property
    def quarantined(self) -> int:
        return int((self.samples["status"] == Status.QUARANTINED).sum())

    def reason_counts(self) -> dict[str, int]:
        counts = self.samples.loc[self.samples["status"] == Status.QUARANTINED, "reason"].value_counts()
        return {str(k): int(v) for k, v in counts.sort_index().items()}


def parse_image_size(value: Any) -> tuple[int, int] | None:
    """Parse ``auto``/``None``, an int, or ``[h, w]`` into ``(h, w)``."""
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        return None
    if isinstance(value, int) and value > 0:
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value):
        return (int(value[0]), int(value[1]))
    raise MemcleanError(f"ingest.image_size must be 'auto', a positive int or [height, width]; got {value!r}")


def _bytes(item: Item) -> bytes:
    return item.read() if item.read else b""


def _guarded(item: Item, fn: Callable[[], T]) -> tuple[T | None, dict[str, Any] | None]:
    """Run ``fn``; a decode or read failure becomes the item's quarantine row."""
    try:
        return fn(), None
    except imaging.DecodeError as exc:
        return None, _quarantine_row(item, exc.reason, exc.detail)
    except OSError as exc:
        return None, _quarantine_row(item, Reason.UNREADABLE, f"read: {exc}")


def _quarantine_row(item: Item, reason: Reason, detail: str | None) -> dict[str, Any]:
    return {
        "sample_id": item.sample_id,
        "source": item.source,
        "split": item.split,
        "label": item.label,
        "status": Status.QUARANTINED.value,
        "reason": reason.value,
        "detail": detail,
        "row": None,
    }


def ingest(
    listing: Listing,
    pixels_path: str | Path,
    options: IngestOptions | None = None,
    progress: Progress | None = None,
) -> IngestResult:
    """Decode every item, write ``pixels_path`` atomically and return the samples table.

    Parameters
    ----------
    listing
        Rows from one of the readers in :mod:`memclean.sources`.
    pixels_path
        Where the ``N×C×H×W`` uint8 array of the readable rows is written.
    options
        Decoding settings.
    progress
        Optional wrapper ``progress(iterable, description, total)`` (e.g. tqdm).

    Returns
    -------
    IngestResult
        One row per input item, in the listing's order.
    """
    opts = options or IngestOptions()
    wrap = progress or no_progress
    items = listing.items
    rows: list[dict[str, Any] | None] = [None] * len(items)

    # Pass 1: headers (size, mode) for every candidate, so the common size and
    # channel count are known before any pixel is stored.
    headers: dict[int, tuple[int, int, bool]] = {}  # idx -> (h, w, grey)
    for idx, item in enumerate(wrap(items, "headers", len(items))):
        if item.reason is not None:
            rows[idx] = _quarantine_row(item, item.reason, item.detail)
            continue
        if item.array is not None:
            headers[idx] = (item.array.shape[0], item.array.shape[1], item.array.ndim == 2)
            continue
        head, rows[idx] = _guarded(
            item, lambda it=item: imaging.read_header(_bytes(it), opts.max_image_pixels, opts.allowed_formats)
        )
        if head is not None:
            headers[idx] = (head.height, head.width, head.mode in imaging.GREY_MODES)

    if not headers:
        raise MemcleanError(_nothing_readable(rows))
    if opts.image_size is not None:
        size = opts.image_size
    else:
        size_counts = Counter((h, w) for h, w, _ in headers.values())
        size = max(size_counts, key=lambda s: (size_counts[s], s[0] * s[1], s))
    channels = opts.channels or (1 if all(g for _, _, g in headers.values()) else 3)
    height, width = size

    # Pass 2: decode, normalise, resize and store.
    resized = 0
    candidates = sorted(headers)
    next_row = 0
    staging_path = Path(pixels_path).with_name(Path(pixels_path).name + ".staging")
    with AtomicNpyWriter(staging_path, (len(candidates), channels, height, width)) as staging:
        buf = staging.array
        assert buf is not None
        for idx in wrap(candidates, "decode", len(candidates)):
            item = items[idx]
            if item.array is not None:
                native = np.ascontiguousarray(item.array, dtype=np.uint8)
                orig_mode = "L" if native.ndim == 2 else "RGB"
            else:
                dec, rows[idx] = _guarded(
                    item,
                    lambda it=item: imaging.decode(
                        _bytes(it), opts.max_image_pixels, opts.allowed_formats, opts.alpha_background
                    ),
                )
                if dec is None:
                    continue
                native, orig_mode = dec.pixels, dec.orig_mode
            h0, w0 = native.shape[:2]
            hwc = imaging.to_channels(native, channels)
            if (h0, w0) != (height, width):
                resized += 1
                hwc = imaging.resize(hwc, height, width)
            buf[next_row] = hwc.transpose(2, 0, 1)
            rows[idx] = {
                "sample_id": item.sample_id,
                "source": item.source,
                "split": item.split,
                "label": item.label,
                "width": w0,
                "height": h0,
                "channels": Image.getmodebands(orig_mode),
                "orig_mode": orig_mode,
                "pixel_sha256": imaging.pixel_digest(native),
                "status": Status.OK.value,
                "reason": None,
                "detail": None,
                "row": next_row,
            }
            next_row += 1
    if next_row == 0:
        staging_path.unlink(missing_ok=True)
        raise MemcleanError(_nothing_readable(rows))
    _publish(staging_path, Path(pixels_path), next_row)

    frame = pd.DataFrame([r for r in rows if r is not None], columns=SAMPLES_SCHEMA.names)
    assert len(frame) == len(items), "every input item must produce one row"
    names = listing.classes
    frame["label_name"] = [names[int(v)] if pd.notna(v) and 0 <= int(v) < len(names) else None for v in frame["label"]]
    frame["label"] = frame["label"].astype("Int32")
    frame["row"] = frame["row"].astype("Int64")
    for col in ("width", "height"):
        frame[col] = frame[col].astype("Int32")
    frame["channels"] = frame["channels"].astype("Int8")
    if frame["sample_id"].duplicated().any():
        dup = frame.loc[frame["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise MemcleanError(f"sample_id {dup!r} is not unique")
    log.info(
        "ingested %d rows: %d ok, %d quarantined; stored at %dx%dx%d (%d resized)",
        len(frame), next_row, len(frame) - next_row, channels, height, width, resized,
    )
    return IngestResult(frame, list(names), (height, width), channels, resized, dict(listing.notes))


def _publish(staging_path: Path, target: Path, n_rows: int) -> None:
    """Move the staged array to ``target``, trimmed to the rows that decoded."""
    staged = np.load(staging_path, mmap_mode="r")
    try:
        if len(staged) == n_rows:
            del staged
            os.replace(staging_path, target)
            return
        with AtomicNpyWriter(target, (n_rows, *staged.shape[1:])) as out:
            assert out.array is not None
            for start in range(0, n_rows, 4096):
                stop = min(start + 4096, n_rows)
                out.array[start:stop] = staged[start:stop]
    finally:
        staging_path.unlink(missing_ok=True)


def _nothing_readable(rows: Sequence[dict[str, Any] | None]) -> str:
    reasons = Counter(r["reason"] for r in rows if r is not None)
    listed = ", ".join(f"{k}={v}" for k, v in sorted(reasons.items())) or "no input rows"
    return f"no readable image in the input ({listed})"


def check_quarantine(result: IngestResult, max_fraction: float) -> None:
    """Raise :class:`QuarantineLimitError` when too many rows were quarantined.

    The message is one line: the fraction, the limit, counts by reason and the
    first offending row.
    """
    total = len(result.samples)
    bad = result.quarantined
    if total and bad / total > max_fraction:
        first = result.samples.loc[result.samples["status"] == Status.QUARANTINED].iloc[0]
        counts = ", ".join(f"{k}={v}" for k, v in result.reason_counts().items())
        raise QuarantineLimitError(
            f"{bad}/{total} rows ({bad / total:.1%}) quarantined, above ingest.max_quarantine_fraction="
            f"{max_fraction}: {counts}; first: {first['sample_id']} ({first['reason']}: {first['detail']})"
        )
