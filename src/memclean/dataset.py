"""``ManifestDataset``: the cleaned dataset as an ImageFolder-compatible torch Dataset."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image
from torch.utils.data import Dataset

from memclean.errors import MemcleanError
from memclean.io import load_pixels, read_metadata


class ManifestDataset(Dataset):
    """The kept samples of a clean manifest, read from the ingested pixel array.

    Mirrors :class:`torchvision.datasets.ImageFolder`: ``classes``,
    ``class_to_idx``, ``samples`` (``(source, class_index)`` pairs) and
    ``targets``; ``dataset[i]`` is ``(PIL image, class_index)`` after the
    optional ``transform`` / ``target_transform``.

    Parameters
    ----------
    manifest
        Path to ``data/clean/manifest.parquet``.
    pixels
        Path to ``data/interim/pixels.npy`` (default: ``../interim/pixels.npy``
        next to the manifest's ``clean`` folder).
    split
        Keep only this split (``None``: all).
    include_dropped
        Also return rows with ``keep = False`` (quarantined rows never).
    transform, target_transform
        As in torchvision.
    """

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        pixels: str | os.PathLike[str] | None = None,
        split: str | None = None,
        include_dropped: bool = False,
        transform: Callable[[Image.Image], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
    ) -> None:
        manifest = Path(manifest)
        if not manifest.exists():
            raise MemcleanError(f"{manifest} does not exist: run the clean stage first")
        frame = pd.read_parquet(manifest)
        self.classes: list[str] = list(read_metadata(manifest).get("classes") or [])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        mask = frame["row"].notna()
        if not include_dropped:
            mask &= frame["keep"]
        if split is not None:
            mask &= frame["split"] == split
        self.frame = frame[mask].reset_index(drop=True)
        self.pixels = load_pixels(pixels or manifest.parent.parent / "interim" / "pixels.npy")
        if len(frame) and frame["row"].max() >= len(self.pixels):
            raise MemcleanError("the manifest points past the end of pixels.npy: are they from the same run?")
        self.samples = list(zip(self.frame["source"].tolist(), self.frame["label"].astype(int).tolist()))
        self.targets = [t for _, t in self.samples]
        self.transform = transform
        self.target_transform = target_transform

    def __len__(self) -> int:
        return len(self.frame)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        arr = np.asarray(self.pixels[int(self.frame.at[index, "row"])])
        img = Image.fromarray(arr[0] if arr.shape[0] == 1 else arr.transpose(1, 2, 0))
        target = self.targets[index]
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target
