"""Turn a :class:`~memclean.sources.Listing` into the samples table and pixel array.

Every input row comes out as one row of the samples table: ``ok`` rows point at
their slice of the ``N×C×H×W`` uint8 pixel array (``row``), quarantined rows
carry a reason code and a human-readable ``detail``. Nothing is dropped.

:func:`ingest` only *stages* the pixel array; the caller checks the result and
then publishes the samples table and the pixels together
(:meth:`IngestResult.publish`), so a failed check never leaves new pixels beside
old samples.
"""

from __future__ import annotations

import functools
import logging
import os
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self, TypeVar

import numpy as np
import pandas as pd
from PIL import Image

from memclean import imaging
from memclean.errors import MemcleanError, QuarantineLimitError
from memclean.io import StagedArray, publish_pair
from memclean.progress import Progress, no_progress
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
    """The samples table, the staged pixel array, the size it was stored at, and counts.

    Nothing is published yet: check the result (:func:`check_quarantine`), then
    :meth:`publish` the samples table and the pixels together. Use it as a
    context manager so the staged pixels are removed when anything fails first::

        with ingest(listing, pixels_path, options) as result:
            check_quarantine(result, max_fraction)
            result.publish(samples_path, metadata={"params_digest": digest})
    """

    samples: pd.DataFrame
    classes: list[str]
    image_size: tuple[int, int]
    channels: int
    resized: int
    notes: dict[str, Any]
    staged: StagedArray = field(repr=False)

    @property
    def quarantined(self) -> int:
        return int((self.samples["status"] == Status.QUARANTINED).sum())

    @property
    def pixels(self) -> np.ndarray:
        """The ``N×C×H×W`` uint8 pixels (read-only), before and after :meth:`publish`."""
        view = self.staged.array.view(np.ndarray)
        view.flags.writeable = False
        return view

    @property
    def pixels_path(self) -> Path:
        """Where :meth:`publish` puts the pixel array."""
        return self.staged.target

    def reason_counts(self) -> dict[str, int]:
        counts = self.samples.loc[self.samples["status"] == Status.QUARANTINED, "reason"].value_counts()
        return {str(k): int(v) for k, v in counts.sort_index().items()}

    def publish(self, samples_path: str | os.PathLike[str], metadata: Mapping[str, Any] | None = None) -> str:
        """Write ``samples_path`` and publish the pixels to :attr:`pixels_path`, as one pair.

        Parameters
        ----------
        samples_path
            Where the samples table goes.
        metadata
            More schema metadata (``params_digest``, ``source``...). ``classes``,
            ``image_size``, ``channels`` and ``pixels_digest`` are added.

        Returns
        -------
        str
            The pixel digest stored as ``pixels_digest``; :func:`memclean.io.load_pair`
            checks it.
        """
        meta = {"classes": self.classes, "image_size": list(self.image_size), "channels": self.channels}
        return publish_pair(self.samples, samples_path, self.staged, {**meta, **(metadata or {})})

    def discard(self) -> None:
        """Remove the staged pixels unless they were published."""
        self.staged.discard()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()


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


def _read_header(item: Item, opts: IngestOptions) -> imaging.ImageHeader:
    return imaging.read_header(_bytes(item), opts.max_image_pixels, opts.allowed_formats)


def _decode(item: Item, opts: IngestOptions) -> Any:
    return imaging.decode(_bytes(item), opts.max_image_pixels, opts.allowed_formats, opts.alpha_background)


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
    """Decode every item into a pixel array staged beside ``pixels_path``; publish nothing.

    Parameters
    ----------
    listing
        Rows from one of the readers in :mod:`memclean.sources`.
    pixels_path
        Where :meth:`IngestResult.publish` will put the ``N×C×H×W`` uint8 array
        of the readable rows. Until then the array is a temporary file in the
        same folder, preallocated (a full disk fails here, with one line).
    options
        Decoding settings.
    progress
        Optional wrapper ``progress(iterable, description, total)`` (e.g. tqdm).

    Returns
    -------
    IngestResult
        One row per input item, in the listing's order, and the staged pixels.

    Raises
    ------
    MemcleanError
        When nothing is readable, a ``sample_id`` repeats, or the array would
        not fit on the disk.
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
        head, rows[idx] = _guarded(item, functools.partial(_read_header, item, opts))
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
    staged = StagedArray(pixels_path, (len(candidates), channels, height, width))
    try:
        for idx in wrap(candidates, "decode", len(candidates)):
            item = items[idx]
            if item.array is not None:
                native = np.ascontiguousarray(item.array, dtype=np.uint8)
                orig_mode = "L" if native.ndim == 2 else "RGB"
            else:
                dec, rows[idx] = _guarded(
                    item,
                    functools.partial(_decode, item, opts),
                )
                if dec is None:
                    continue
                native, orig_mode = dec.pixels, dec.orig_mode
            h0, w0 = native.shape[:2]
            hwc = imaging.to_channels(native, channels)
            if (h0, w0) != (height, width):
                resized += 1
                hwc = imaging.resize(hwc, height, width)
            staged.array[next_row] = hwc.transpose(2, 0, 1)
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
            raise MemcleanError(_nothing_readable(rows))
        if next_row < len(candidates):
            staged.truncate(next_row)
        frame = _samples_frame(rows, listing.classes)
    except BaseException:
        staged.discard()
        raise
    assert len(frame) == len(items), "every input item must produce one row"
    log.info(
        "ingested %d rows: %d ok, %d quarantined; stored at %dx%dx%d (%d resized)",
        len(frame),
        next_row,
        len(frame) - next_row,
        channels,
        height,
        width,
        resized,
    )
    return IngestResult(frame, list(listing.classes), (height, width), channels, resized, dict(listing.notes), staged)


def _samples_frame(rows: Sequence[dict[str, Any] | None], names: Sequence[str]) -> pd.DataFrame:
    """The samples table from the per-item rows, typed per the schema."""
    frame = pd.DataFrame([r for r in rows if r is not None], columns=SAMPLES_SCHEMA.names)
    frame["label_name"] = [names[int(v)] if pd.notna(v) and 0 <= int(v) < len(names) else None for v in frame["label"]]
    frame["label"] = frame["label"].astype("Int32")
    frame["row"] = frame["row"].astype("Int64")
    for col in ("width", "height"):
        frame[col] = frame[col].astype("Int32")
    frame["channels"] = frame["channels"].astype("Int8")
    if frame["sample_id"].duplicated().any():
        dup = frame.loc[frame["sample_id"].duplicated(), "sample_id"].iloc[0]
        raise MemcleanError(f"sample_id {dup!r} is not unique")
    return frame


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
