"""FIFOs and other non-regular files are quarantined rows (or one-line errors), never read."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from conftest import encode, pattern
from memclean.errors import MemcleanError
from memclean.ingest import ingest
from memclean.sources import list_hf_parquet, list_idx, list_imagefolder, list_manifest

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")

TIMEOUT_S = 20


def within_timeout(fn: Callable[[], Any], fifos: list[Path]) -> Any:
    """Run ``fn`` in a thread; if it blocks, unblock every FIFO reader and fail instead of hanging."""
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(TIMEOUT_S)
    if thread.is_alive():
        for fifo in fifos:
            with contextlib.suppress(OSError):  # a writer that opens and closes releases a blocked reader
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"blocked for {TIMEOUT_S}s on a FIFO")
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_fifo_in_a_class_folder_is_a_quarantined_row(tmp_path):
    root = tmp_path / "folder"
    for i, cls in enumerate(["cat", "cat", "dog"]):
        (root / cls).mkdir(parents=True, exist_ok=True)
        (root / cls / f"{i}.png").write_bytes(encode(pattern(8, 8, seed=i)))
    fifo = root / "cat" / "x.png"
    os.mkfifo(fifo)
    listing = within_timeout(lambda: list_imagefolder(root), [fifo])
    result = within_timeout(lambda: ingest(listing, tmp_path / "p.npy"), [fifo])
    s = result.samples.set_index("sample_id")
    assert len(s) == 4  # every entry of the folder is a row
    assert s.loc["cat/x.png", "status"] == "quarantined"
    assert s.loc["cat/x.png", "reason"] == "unreadable"
    assert "FIFO" in s.loc["cat/x.png", "detail"] and "not a regular file" in s.loc["cat/x.png", "detail"]
    assert s.loc["cat/x.png", "label_name"] == "cat"
    assert (s.drop(index="cat/x.png")["status"] == "ok").all()


def test_manifest_rows_naming_a_fifo_or_a_folder_are_unreadable_not_missing(tmp_path):
    root = tmp_path / "m"
    (root / "imgs" / "sub").mkdir(parents=True)
    (root / "imgs" / "a.png").write_bytes(encode(pattern(8, 8, seed=1)))
    fifo = root / "imgs" / "x.png"
    os.mkfifo(fifo)
    rows = [
        {"path": "imgs/a.png", "label": "cat"},
        {"path": "imgs/x.png", "label": "cat"},
        {"path": "imgs/sub", "label": "dog"},
        {"path": "imgs/gone.png", "label": "dog"},
    ]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    listing = within_timeout(lambda: list_manifest(root / "manifest.csv"), [fifo])
    result = within_timeout(lambda: ingest(listing, tmp_path / "p.npy"), [fifo])
    s = result.samples
    assert list(s["reason"].fillna("ok")) == ["ok", "unreadable", "unreadable", "missing"]
    assert "FIFO (named pipe), not a regular file" in s.loc[1, "detail"]
    assert "folder, not a regular file" in s.loc[2, "detail"]


def test_a_file_swapped_for_a_fifo_after_listing_is_not_read(tmp_path):
    root = tmp_path / "folder"
    (root / "cat").mkdir(parents=True)
    for i in range(2):
        (root / "cat" / f"{i}.png").write_bytes(encode(pattern(8, 8, seed=i)))
    listing = list_imagefolder(root)
    swapped = root / "cat" / "1.png"
    swapped.unlink()
    os.mkfifo(swapped)
    result = within_timeout(lambda: ingest(listing, tmp_path / "p.npy"), [swapped])
    row = result.samples.set_index("sample_id").loc["cat/1.png"]
    assert row["reason"] == "unreadable" and "not a regular file" in row["detail"]


def test_fifo_dataset_files_are_one_line_errors(tmp_path):
    idx = tmp_path / "idx"
    idx.mkdir()
    fifos = [idx / "train-images-idx3-ubyte", tmp_path / "train.parquet"]
    for fifo in fifos:
        os.mkfifo(fifo)
    (idx / "train-labels-idx1-ubyte").write_bytes(b"")
    with pytest.raises(MemcleanError, match=r"train-images-idx3-ubyte: a FIFO \(named pipe\), not a regular file"):
        within_timeout(lambda: list_idx(idx), fifos)
    with pytest.raises(MemcleanError, match=r"train.parquet: a FIFO \(named pipe\), not a regular file"):
        within_timeout(lambda: list_hf_parquet(tmp_path / "train.parquet"), fifos)
