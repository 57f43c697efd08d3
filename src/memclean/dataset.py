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

    Mirrors :class:`torchvision.datasets.ImageFolder`; ``dataset[i]`` is
    ``(PIL image, class_index)`` after the optional ``transform`` /
    ``target_transform``. Pixels always come from ``pixels.npy``, whatever
    ``samples`` says.

    Parameters
    ----------
    manifest
        Path to ``data/clean/manifest.parquet``.
    pixels
        Path to ``data/interim/pixels.npy`` (default: ``../interim/pixels.npy``
        next to the manifest's ``clean`` folder).
    split
        Keep only this split (``None``: all). A split the manifest does not
        have is an error that lists the splits it has.
    include_dropped
        Also return rows with ``keep = False`` (quarantined rows never).
    transform, target_transform
        As in torchvision.
    root
        Folder the manifest's ``source`` paths are relative to, for datasets
        read from image files (imagefolder, manifest). ``None``: the
        manifest's ``root`` schema metadata when it has one.

    Attributes
    ----------
    root : pathlib.Path or None
        The folder image paths are relative to; ``None`` when unknown or when
        the rows never were files.
    classes : list of str
        Class names in index order.
    class_to_idx : dict of str to int
        Class name → index.
    samples : list of (str, int)
        ``(path, class_index)`` per item. ``path`` is the original image file
        (``root / source``, absolute when ``root`` is) when ``root`` is known.
        Otherwise it is the row's ``source``: for in-memory sources that names
        the row inside its container (``train-images-idx3-ubyte.gz#12``,
        ``train-00000-of-00001.parquet#7``, ``sklearn:digits/3``) and is not a
        file to open; for file sources it is the path relative to the unknown
        root.
    imgs : list of (str, int)
        The same list as ``samples``.
    targets : list of int
        The class index of each item.
    """

    def __init__(
        self,
        manifest: str | os.PathLike[str],
        pixels: str | os.PathLike[str] | None = None,
        split: str | None = None,
        include_dropped: bool = False,
        transform: Callable[[Image.Image], Any] | None = None,
        target_transform: Callable[[int], Any] | None = None,
        root: str | os.PathLike[str] | None = None,
    ) -> None:
        manifest = Path(manifest)
        if not manifest.exists():
            raise MemcleanError(f"{manifest} does not exist: run the clean stage first")
        frame = pd.read_parquet(manifest)
        meta = read_metadata(manifest)
        self.classes: list[str] = list(meta.get("classes") or [])
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        mask = frame["row"].notna()
        if not include_dropped:
            mask &= frame["keep"]
        if split is not None:
            present = sorted(str(s) for s in frame["split"].dropna().unique())
            if split not in present:
                raise MemcleanError(
                    f"split {split!r} is not in {manifest}; its splits are: {', '.join(present) or '(none)'}"
                )
            mask &= frame["split"] == split
        self.frame = frame[mask].reset_index(drop=True)
        self.pixels = load_pixels(pixels or manifest.parent.parent / "interim" / "pixels.npy")
        if len(frame) and frame["row"].max() >= len(self.pixels):
            raise MemcleanError("the manifest points past the end of pixels.npy: are they from the same run?")
        root = root if root is not None else meta.get("root")
        self.root: Path | None = Path(root) if root else None
        sources = [str(s) for s in self.frame["source"]]
        paths = [str(self.root / s) for s in sources] if self.root is not None else sources
        labels = self.frame["label"].astype(int).tolist()
        self.samples: list[tuple[str, int]] = list(zip(paths, labels, strict=True))
        self.imgs = self.samples
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
