"""Ingest: every bad input becomes a quarantined row with its reason; nothing is lost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import encode, pattern

from memclean.errors import MemcleanError, QuarantineLimitError
from memclean.ingest import IngestOptions, check_quarantine, ingest, parse_image_size
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
    return listing, ingest(listing, tmp_path / "pixels.npy"), tmp_path / "pixels.npy"


def test_every_bad_input_is_a_quarantined_row_with_its_reason(messy_result):
    listing, result, _ = messy_result
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


def test_explicit_size_and_channels(messy_folder, tmp_path):
    opts = IngestOptions(image_size=(8, 10), channels=1)
    result = ingest(list_imagefolder(messy_folder), tmp_path / "p.npy", opts)
    pixels = np.load(tmp_path / "p.npy")
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
    result = ingest(list_imagefolder(root), tmp_path / "p.npy")
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
    assert not (tmp_path / "p.npy").exists()


def test_rerun_is_identical(messy_folder, tmp_path):
    a = ingest(list_imagefolder(messy_folder), tmp_path / "a.npy").samples
    b = ingest(list_imagefolder(messy_folder), tmp_path / "b.npy").samples
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


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
