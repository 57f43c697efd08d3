"""``scripts/screenshot.sh`` captures the whole page, however tall (skipped without Chromium)."""

from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from conftest import REPO

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("chromium") or shutil.which("chromium-browser")), reason="needs chromium"),
]

FOOTER = (204, 51, 51)


def test_screenshot_is_as_tall_as_the_page(tmp_path):
    html = tmp_path / "audit.html"
    boxes = "".join(f'<div style="height:1500px;border:2px solid #36c">section {i}</div>' for i in range(4))
    footer = "<footer style='height:83px;background:#c33'></footer>"
    html.write_text(
        "<!doctype html><html><head><meta charset='utf-8'></head>"
        f"<body style='margin:0;background:#fff'>{boxes}{footer}</body></html>"
    )  # 4 x 1504 + 83 = 6,099 px: the digits report is about as tall
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCREENSHOT_")}
    script = str(REPO / "scripts/screenshot.sh")
    run = subprocess.run([script, str(html)], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    pixels = np.asarray(Image.open(tmp_path / "audit.png").convert("RGB"))
    assert pixels.shape[:2] == (6099, 1400)
    red = np.flatnonzero((pixels[:, 700] == FOOTER).all(axis=1))
    assert red.min() == 6016 and red.max() == 6098  # the footer is the last thing on the image
    bad = subprocess.run(
        [script, str(html)], check=False, capture_output=True, text=True, env={**env, "SCREENSHOT_WIDTH": "wide"}
    )
    assert bad.returncode == 1 and bad.stderr.strip().splitlines() == [
        "screenshot: error: SCREENSHOT_WIDTH must be a positive number of pixels, got 'wide'"
    ]
