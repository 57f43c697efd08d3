"""Shared fixtures: small image folders with every kind of bad input."""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")


def pattern(h: int = 16, w: int = 16, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A textured uint8 image (smooth blobs, so perceptual hashes are stable)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.zeros((h, w, channels))
    for c in range(channels):
        f = rng.uniform(1, 4, size=2)
        p = rng.uniform(0, 2 * np.pi, size=2)
        out[..., c] = 127.5 + 120 * np.sin(2 * np.pi * f[0] * xx + p[0]) * np.cos(2 * np.pi * f[1] * yy + p[1])
    out = np.clip(out, 0, 255).astype(np.uint8)
    return out[..., 0] if channels == 1 else out


def encode(array: np.ndarray, fmt: str = "PNG", mode: str | None = None, **kw) -> bytes:
    img = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def exif_rotated_jpeg(array: np.ndarray, orientation: int = 6) -> bytes:
    img = Image.fromarray(array)
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, format="JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def cmyk_jpeg(array: np.ndarray) -> bytes:
    return encode(array, "JPEG", mode="CMYK", quality=95)


def png16(array8: np.ndarray) -> bytes:
    arr16 = array8.astype(np.uint16) * 257
    img = Image.fromarray(arr16)  # mode I;16
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def palette_with_transparency(array: np.ndarray) -> bytes:
    img = Image.fromarray(array).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    img.save(buf, format="PNG", transparency=0)
    return buf.getvalue()


def rgba_png(array: np.ndarray) -> bytes:
    a = np.full((*array.shape[:2], 1), 128, np.uint8)
    return encode(np.concatenate([array, a], axis=2), "PNG")


@pytest.fixture
def messy_folder(tmp_path: Path) -> Path:
    """An ImageFolder tree holding good images and every bad input the ingest issue lists."""
    root = tmp_path / "messy"
    good = [pattern(16, 16, seed=i) for i in range(12)]
    files: dict[str, bytes] = {}
    for i in range(8):
        files[f"cat/good_{i}.png"] = encode(good[i])
    for i in range(8, 12):
        files[f"dog/good_{i}.jpg"] = encode(good[i], "JPEG", quality=95)
    full = encode(pattern(16, 16, seed=99), "PNG")
    full_jpg = encode(pattern(64, 64, seed=98), "JPEG", quality=90)
    files.update(
        {
            "dog/zero_bytes.png": b"",
            "dog/truncated.png": full[: len(full) // 2],
            "dog/truncated.jpg": full_jpg[: len(full_jpg) // 2],
            "dog/text_named.png": b"this is not an image\n",
            "dog/bomb.png": png_bomb(),
            "dog/cmyk.jpg": cmyk_jpeg(pattern(16, 16, seed=20)),
            "dog/grey16.png": png16(pattern(16, 16, seed=21, channels=1)),
            "dog/palette_t.png": palette_with_transparency(pattern(16, 16, seed=22)),
            "dog/rgba.png": rgba_png(pattern(16, 16, seed=23)),
            "dog/exif_rotated.jpg": exif_rotated_jpeg(pattern(16, 24, seed=24)),
            "dog/ünïcode name with spaces.png": encode(pattern(16, 16, seed=25)),
            "dog/bigger.png": encode(pattern(32, 40, seed=26)),
            "dog/notes.txt": b"annotator notes\n",
            "bird/only.png": encode(pattern(16, 16, seed=27)),
            "stray_at_root.png": encode(pattern(16, 16, seed=28)),
        }
    )
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    (root / "empty_class").mkdir()
    (root / ".DS_Store").write_bytes(b"\x00\x01")
    outside = tmp_path / "outside.png"
    outside.write_bytes(encode(pattern(16, 16, seed=30)))
    (root / "cat" / "link_outside.png").symlink_to(outside)
    return root


def repo_files() -> list[str]:
    """Files of the working tree that git tracks or would track."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    return [line for line in out.splitlines() if line and (REPO / line).is_file()]


def copy_repo(dest: Path) -> Path:
    """A committed git copy of the repository's sources, without DVC outputs or dvc.lock."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in repo_files():
        if rel.startswith(("tests/", "bench/", "data/interim/", "data/reports/", "data/clean/")) or rel == "dvc.lock":
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    (dest / "data/raw").mkdir(parents=True, exist_ok=True)
    git = ["git", "-c", "user.email=ci@example.invalid", "-c", "user.name=ci"]
    subprocess.run([*git, "init", "-q"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "copy"], cwd=dest, check=True)
    return dest
