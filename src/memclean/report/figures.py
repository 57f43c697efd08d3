"""The report's images: matplotlib figures and sample thumbnails, each as a PNG data URI.

matplotlib is imported on first use (it is slow to import) and only its Agg
canvas is used, so no display and no global pyplot state are involved.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from PIL import Image

from memclean.report.formatting import NA, get, num

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Target thumbnail size in CSS pixels.
THUMB = 72


def _png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _mpl(text: Any) -> str:
    """Make a string safe as matplotlib text (no mathtext)."""
    return str(text).replace("$", r"\$")


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A matplotlib figure on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _figure_uri(fig: Figure, dpi: int = 96) -> str:
    """Render a figure and return it as a PNG data URI."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return _png_uri(buf.getvalue())


def image_data_uri(image: np.ndarray, size: int = THUMB) -> str:
    """Encode one ``C×H×W`` uint8 image as a PNG data URI.

    Parameters
    ----------
    image
        ``C×H×W`` (C = 1 or 3) or ``H×W`` uint8 pixels.
    size
        Target size of the longer side. Smaller images are enlarged by an
        integer factor with nearest-neighbour sampling (so 8×8 digits stay
        crisp); larger ones are shrunk with Lanczos filtering.

    Returns
    -------
    str
        ``data:image/png;base64,...``
    """
    arr = np.asarray(image)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr[:3], 0, -1)
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    img = Image.fromarray(arr, mode="L" if arr.ndim == 2 else "RGB")
    longest = max(img.size)
    if longest <= size:
        factor = max(1, size // longest)
        img = img.resize((img.width * factor, img.height * factor), Image.Resampling.NEAREST)
    else:
        img.thumbnail((size, size), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return _png_uri(buf.getvalue())


def class_balance_figure(before: Mapping[str, int], after: Mapping[str, int]) -> str | None:
    """Bar chart of the rows per class before and after cleaning.

    Parameters
    ----------
    before, after
        ``class name -> rows``.

    Returns
    -------
    str or None
        A PNG data URI; ``None`` when there is no class.
    """
    names = list(before) + [k for k in after if k not in before]
    if not names:
        return None
    x = np.arange(len(names))
    width = max(6.0, min(14.0, 0.45 * len(names) + 2))
    fig = _new_figure((width, 3.6))
    ax = fig.add_subplot()
    ax.bar(x - 0.2, [before.get(n, 0) for n in names], 0.4, label="before (ok rows)", color="#9aa7b8")
    ax.bar(x + 0.2, [after.get(n, 0) for n in names], 0.4, label="after (kept)", color="#2f6fb3")
    if len(names) <= 60:
        ax.set_xticks(x, [_mpl(n)[:18] for n in names], rotation=0 if len(names) <= 12 else 90, fontsize=8)
    else:
        ax.set_xticks([])
        ax.set_xlabel(f"{len(names)} classes")
    ax.set_ylabel("samples")
    top = max([*before.values(), *after.values(), 1])
    ax.set_ylim(0, top * 1.18)
    ax.legend(frameon=False, fontsize=8, loc="upper center", ncol=2)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _figure_uri(fig)


def roc_figure(roc: Mapping[str, pd.DataFrame], scorers: Mapping[str, Any], highlight: str | None) -> str | None:
    """ROC curves of every scorer on the injected label noise.

    Parameters
    ----------
    roc
        ``scorer -> frame`` with ``fpr`` and ``tpr``; other frames are skipped.
    scorers
        ``validation.json``'s ``scorers`` (for the AUROC in the legend and the order).
    highlight
        The scorer drawn with a thicker line (the cleaning scorer).

    Returns
    -------
    str or None
        A PNG data URI; ``None`` when there is no usable curve.
    """
    curves = {n: f for n, f in roc.items() if {"fpr", "tpr"} <= set(f.columns) and len(f)}
    if not curves:
        return None
    fig = _new_figure((6.2, 4.6))
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="#bbbbbb", lw=1, ls="--")
    order = sorted(curves, key=lambda n: -(num(get(scorers, n, "auroc")) or 0.0))
    for name in order:
        frame = curves[name]
        value = num(get(scorers, name, "auroc"))
        auroc = f"{value:.4f}" if value is not None else NA
        lw = 2.6 if name == highlight else 1.3
        label = _mpl(f"{name} (AUROC {auroc})")
        ax.plot(frame["fpr"], frame["tpr"], lw=lw, label=label, zorder=3 if name == highlight else 2)
    ax.set_xlim(-0.01, 1.01)
    ax.set_ylim(-0.01, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate (injected flips found)")
    ax.legend(frameon=False, fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return _figure_uri(fig)


def histogram_figure(
    m: pd.DataFrame, cols: Sequence[str], chosen: str | None, threshold: float | None, applied: bool = True
) -> str | None:
    """Log-scale histogram of each score over the ok rows, the cleaning scorer first.

    Parameters
    ----------
    m
        The manifest (``status`` and the score columns).
    cols
        The ``<scorer>_score`` columns.
    chosen
        The cleaning scorer: drawn first, highlighted, with the threshold line.
    threshold
        The cleaning threshold, or ``None`` (no line).
    applied
        Whether the threshold was applied (the label says so when not).

    Returns
    -------
    str or None
        A PNG data URI; ``None`` when no column has a finite score.
    """
    ok = m["status"] == "ok"
    series = {c[: -len("_score")]: m.loc[ok, c].to_numpy(dtype=np.float64, na_value=np.nan) for c in cols}
    series = {n: v[np.isfinite(v)] for n, v in series.items()}
    series = {n: v for n, v in series.items() if len(v)}
    if not series:
        return None
    names = sorted(series, key=lambda n: (n != chosen, n))
    ncol = min(4, len(names))
    nrow = math.ceil(len(names) / ncol)
    from matplotlib.ticker import MaxNLocator, NullFormatter

    fig = _new_figure((3.3 * ncol, 2.5 * nrow))
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrow, ncol, i + 1)
        is_chosen = name == chosen
        ax.hist(series[name], bins=40, color="#2f6fb3" if is_chosen else "#9aa7b8", log=True)
        title = f"{name} (cleaning scorer)" if is_chosen else name
        ax.set_title(_mpl(title), fontsize=9, fontweight="bold" if is_chosen else "normal")
        if is_chosen and threshold is not None:
            label = f"threshold {threshold:.4g}" + ("" if applied else " (not applied)")
            ax.axvline(threshold, color="#c0392b", ls="--", lw=1.5, label=label)
            ax.legend(frameon=False, fontsize=7)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=5))
        ax.ticklabel_format(axis="x", style="sci", scilimits=(-3, 4), useMathText=True)
        ax.xaxis.get_offset_text().set_fontsize(7)
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.spines[["top", "right"]].set_visible(False)
    fig.supxlabel("score (higher = more suspicious)", fontsize=8)
    fig.supylabel("samples (log)", fontsize=8)
    fig.tight_layout()
    return _figure_uri(fig)
