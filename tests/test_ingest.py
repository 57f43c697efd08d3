"""Ingest: every bad input becomes a quarantined row with its reason; nothing is lost."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from conftest import encode, pattern
from memclean import io as mio
from memclean.errors import MemcleanError, QuarantineLimitError
from memclean.ingest import IngestOptions, check_quarantine, ingest, parse_image_size
from memclean.io import load_pair
from memclean.sources import list_imagefolder

EXPECTED = {
    "stray_at_root.png": "unknown_label",
    "cat/link_outside.png": "path_escape",
    "dog/bomb.png": "too_large",
    "dog/notes.txt": "format_not_allowed",
    "dog/text_named.png": "not_an_image",
    "dog/truncated.jpg": "truncated",
    "dog/truncated.png": "truncated",
    "dog/zero_bytes.png": "not_an_image",
}


@pytest.fixture
def messy_result(messy_folder, tmp_path):
    listing = list_imagefolder(messy_folder)
    with ingest(listing, tmp_path / "pixels.npy") as result:
        result.publish(tmp_path / "samples.parquet")
    return listing, result, tmp_path / "pixels.npy"


def test_every_bad_input_is_a_quarantined_row_with_its_reason(messy_result):
    _, result, _ = messy_result
    s = result.samples.set_index("sample_id")
    quarantined = s[s["status"] == "quarantined"]
    assert dict(quarantined["reason"]) == EXPECTED
    assert quarantined["row"].isna().all()
    assert quarantined["detail"].notna().all()


def test_every_input_row_is_accounted_for(messy_result, messy_folder):
    listing, result, pixels_path = messy_result
    files = {
        p.relative_to(messy_folder).as_posix()
        for p in messy_folder.rglob("*")
        if (p.is_file() or p.is_symlink()) and not p.name.startswith(".")
    }
    assert set(result.samples["sample_id"]) == files
    assert len(result.samples) == len(listing.items)
    ok = result.samples[result.samples["status"] == "ok"]
    pixels = np.load(pixels_path)
    assert sorted(ok["row"]) == list(range(len(pixels)))
    assert listing.notes["hidden_skipped"] == 1


def test_odd_but_valid_images_are_decoded_per_policy(messy_result):
    _, result, pixels_path = messy_result
    s = result.samples.set_index("sample_id")
    pixels = np.load(pixels_path)
    ok = s[s["status"] == "ok"]
    assert ok.loc["dog/cmyk.jpg", "orig_mode"] == "CMYK"
    assert ok.loc["dog/grey16.png", "orig_mode"].startswith("I")
    assert ok.loc["dog/palette_t.png", "orig_mode"] == "P"
    assert ok.loc["dog/rgba.png", "orig_mode"] == "RGBA"
    # EXIF orientation 6 turns the 24-wide, 16-high picture upright: 16 wide, 24 high.
    assert (ok.loc["dog/exif_rotated.jpg", "width"], ok.loc["dog/exif_rotated.jpg", "height"]) == (16, 24)
    assert "dog/ünïcode name with spaces.png" in ok.index
    assert ok.loc["bird/only.png", "label_name"] == "bird"
    # Common size is the most frequent one; the two others were resized.
    assert result.image_size == (16, 16) and result.channels == 3 and result.resized == 2
    assert pixels.shape == (len(ok), 3, 16, 16) and pixels.dtype == np.uint8
    # 16-bit grey: 0-65535 maps back to the 8-bit pattern it was made from.
    grey = pixels[ok.loc["dog/grey16.png", "row"]]
    np.testing.assert_array_equal(grey[0], pattern(16, 16, seed=21, channels=1))
    np.testing.assert_array_equal(grey[0], grey[1])
    # RGBA with alpha 128 over a white background is lighter than the colour alone.
    rgba = pixels[ok.loc["dog/rgba.png", "row"]].transpose(1, 2, 0).astype(int)
    expected = np.rint(pattern(16, 16, seed=23) * (128 / 255) + 255 * (1 - 128 / 255))
    assert np.abs(rgba - expected).max() <= 1


def test_classes_exclude_empty_folder_and_keep_singletons(messy_result):
    listing, result, _ = messy_result
    assert result.classes == ["bird", "cat", "dog"]
    assert listing.notes["empty_classes"] == ["empty_class"]


def test_quarantine_limit_fails_with_one_line_message(messy_result):
    _, result, _ = messy_result
    with pytest.raises(QuarantineLimitError) as info:
        check_quarantine(result, 0.05)
    msg = str(info.value)
    assert "\n" not in msg and "8/28 rows" in msg and "truncated=2" in msg
    check_quarantine(result, 0.5)  # under the limit: no error


def test_quarantine_failure_publishes_nothing(messy_result, messy_folder, tmp_path):
    _, old, pixels_path = messy_result
    samples_path = tmp_path / "samples.parquet"
    (messy_folder / "cat" / "good_0.png").write_bytes(encode(pattern(16, 16, seed=500)))
    (messy_folder / "cat" / "good_1.png").unlink()
    with pytest.raises(QuarantineLimitError), ingest(list_imagefolder(messy_folder), pixels_path) as result:
        assert result.pixels_path == pixels_path and len(result.pixels) == len(old.pixels) - 1
        check_quarantine(result, 0.05)
        result.publish(samples_path)
    samples, pixels, meta = load_pair(samples_path, pixels_path)  # the previous pair, untouched
    pd.testing.assert_frame_equal(samples, old.samples, check_dtype=False)
    np.testing.assert_array_equal(pixels, old.pixels)
    assert meta["classes"] == ["bird", "cat", "dog"] and meta["image_size"] == [16, 16] and meta["channels"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["messy", "outside.png", "pixels.npy", "samples.parquet"]


def test_staged_pixels_are_removed_without_a_context_manager(messy_folder, tmp_path):
    result = ingest(list_imagefolder(messy_folder), tmp_path / "p.npy")
    assert [p.name.startswith(".p.npy.memclean-new-") for p in tmp_path.glob(".p.npy*")] == [True]
    result.discard()
    assert not list(tmp_path.glob("*.npy*"))


def test_image_size_too_large_for_the_disk_is_one_line(messy_folder, tmp_path, monkeypatch):
    monkeypatch.setattr(mio.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**13, 10**13 - 10**11, 10**11))
    with pytest.raises(MemcleanError) as info:
        ingest(list_imagefolder(messy_folder), tmp_path / "p.npy", IngestOptions(image_size=(100_000, 100_000)))
    msg = str(info.value)
    assert "\n" not in msg and "p.npy needs ~660,000 MB (a 22×3×100000×100000 uint8 array)" in msg
    assert not list(tmp_path.glob("*.npy*"))


def test_explicit_size_and_channels(messy_folder, tmp_path):
    opts = IngestOptions(image_size=(8, 10), channels=1)
    with ingest(list_imagefolder(messy_folder), tmp_path / "p.npy", opts) as result:
        pixels = result.pixels
    assert pixels.shape[1:] == (1, 8, 10)
    assert result.resized == int((result.samples["status"] == "ok").sum())


def test_split_folders(tmp_path):
    root = tmp_path / "ds"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(2):
                (d / f"{i}.png").write_bytes(encode(pattern(8, 8, seed=hash((split, cls, i)) % 1000)))
    with ingest(list_imagefolder(root), tmp_path / "p.npy") as result:
        pass
    assert sorted(result.samples["split"].unique()) == ["test", "train"]
    assert result.classes == ["a", "b"]
    assert (result.samples["status"] == "ok").all()
    assert result.samples.loc[result.samples["sample_id"] == "test/b/1.png", "label"].item() == 1


def test_nothing_readable_is_a_clear_error(tmp_path):
    root = tmp_path / "bad"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.png").write_bytes(b"nope")
    with pytest.raises(MemcleanError, match="no readable image.*not_an_image=1"):
        ingest(list_imagefolder(root), tmp_path / "p.npy")
    assert not list(tmp_path.glob("*.npy*"))


def test_rerun_is_identical(messy_folder, tmp_path):
    digests = []
    for name in ("a", "b"):
        with ingest(list_imagefolder(messy_folder), tmp_path / f"{name}.npy") as result:
            digests.append(result.publish(tmp_path / f"{name}.parquet", metadata={"source": "imagefolder"}))
    a, pa_, meta_a = load_pair(tmp_path / "a.parquet", tmp_path / "a.npy")
    b, pb, meta_b = load_pair(tmp_path / "b.parquet", tmp_path / "b.npy")
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(pa_, pb)
    assert digests[0] == digests[1] == meta_a["pixels_digest"] and meta_b["source"] == "imagefolder"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("auto", None), (None, None), (32, (32, 32)), ([24, 32], (24, 32))],
)
def test_parse_image_size(value, expected):
    assert parse_image_size(value) == expected


@pytest.mark.parametrize("value", [0, -3, "big", [1, 2, 3], 2.5])
def test_parse_image_size_rejects(value):
    with pytest.raises(MemcleanError):
        parse_image_size(value)
