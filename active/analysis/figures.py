"""Pictures of the diagnostics: galleries (NumPy/OpenCV) and matplotlib plots (Agg), as PNG bytes.

The gallery is a plain RGB array so its pixels map exactly to crop coordinates: tile ``i``'s crop
pixel (x, y) lands at ``origins[i] + ((x, y) + 0.5) * scale - 0.5``. True skeleton in
``TRUE_COLOUR``, drawn last (on top), predicted in ``PRED_COLOUR``.
"""

from __future__ import annotations

import io
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from active.analysis.tables import plot_curves
from hourglass.datasets.views import model_images
from hourglass.preview import draw_skeleton

TRUE_COLOUR = (0, 230, 0)  # RGB green
PRED_COLOUR = (255, 0, 200)  # RGB magenta
_FONT = cv2.FONT_HERSHEY_SIMPLEX
_LABEL_H, _CAPTION_H, _PAD = 20, 16, 4


@dataclass
class GalleryGroup:
    """One row of a gallery: a label and the tiles (cache rows, predictions, captions)."""

    label: str
    rows: np.ndarray
    pred: np.ndarray  # (n, J, 2) crop pixels
    captions: Sequence[str]


@dataclass
class Gallery:
    """A rendered gallery and where each tile's crop sits in it."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    scale: int
    origins: list[tuple[int, int]] = field(default_factory=list)  # (x, y) of each tile's crop
    rows: list[int] = field(default_factory=list)

    def to_pixel(self, tile: int, xy: np.ndarray) -> np.ndarray:
        """Gallery pixel (x, y) of crop coordinates ``xy`` in tile ``tile``."""
        ox, oy = self.origins[tile]
        return np.asarray([ox, oy]) + (np.asarray(xy, np.float64) + 0.5) * self.scale - 0.5


def _text(img: np.ndarray, text: str, x: int, y: int, scale: float = 0.4) -> None:
    cv2.putText(img, text, (x, y), _FONT, scale, (0, 0, 0), 1, cv2.LINE_AA)


def render_gallery(data, groups: Sequence[GalleryGroup], tile: int = 144, cols: int = 6) -> Gallery:
    """Tiles of model crops with predicted and true skeletons, one labelled band per group."""
    size = data.image_size
    scale = max(1, round(tile / size))
    side = size * scale
    cols = max(1, cols)
    width = _PAD + cols * (side + _PAD)
    bands = []
    gallery = Gallery(np.zeros((0, width, 3), np.uint8), scale)
    y = 0
    for group in groups:
        n = len(group.rows)
        lines = max(1, -(-n // cols))
        band = np.full((_LABEL_H + lines * (side + _CAPTION_H + _PAD), width, 3), 255, np.uint8)
        _text(band, group.label, _PAD, _LABEL_H - 6, 0.45)
        images = model_images(data, np.asarray(group.rows, np.int64)) if n else []
        for i in range(n):
            r, c = divmod(i, cols)
            tx, ty = _PAD + c * (side + _PAD), _LABEL_H + r * (side + _CAPTION_H + _PAD)
            crop = cv2.resize(
                np.ascontiguousarray(images[i]), (side, side), interpolation=cv2.INTER_NEAREST
            )
            row = int(group.rows[i])
            vis = data.visibility[row]
            pred_vis = np.where(vis >= 0, 1, -1).astype(np.int8)
            crop = draw_skeleton(crop, group.pred[i], pred_vis, scale, colour=PRED_COLOUR)
            crop = draw_skeleton(crop, data.joints[row], vis, scale, colour=TRUE_COLOUR)
            band[ty : ty + side, tx : tx + side] = crop
            _text(band, group.captions[i][:28], tx, ty + side + _CAPTION_H - 4, 0.35)
            gallery.origins.append((tx, y + ty))
            gallery.rows.append(row)
        bands.append(band)
        y += len(band)
    gallery.image = np.concatenate(bands) if bands else np.full((1, width, 3), 255, np.uint8)
    return gallery


def png_bytes(rgb: np.ndarray) -> bytes:
    """An RGB uint8 array encoded as PNG."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("could not encode the image as PNG")
    return buf.tobytes()


# -- matplotlib -------------------------------------------------------------------------------
def _figure(w: float = 5.5, h: float = 4.0):
    fig = Figure(figsize=(w, h), dpi=110)
    FigureCanvasAgg(fig)
    return fig


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def score_scatter(cell, title: str) -> bytes:
    """Priority (oriented score) against true error: offered pool grey, picks red."""
    fig = _figure()
    ax = fig.add_subplot()
    pool = cell.offered & (cell.role != "selected")
    sel = cell.role == "selected"
    has = np.isfinite(cell.priority)
    ax.scatter(
        cell.error[pool & has], cell.priority[pool & has], s=6, c="0.6", label="offered pool"
    )
    ax.scatter(cell.error[sel], cell.priority[sel], s=14, c="tab:red", label="picked")
    if not (pool & has).any():
        ax.text(0.02, 0.95, "pool not re-scored: picks only", transform=ax.transAxes, va="top")
    ax.set_xlabel("true error (mean joint distance / normaliser)")
    ax.set_ylabel("acquisition priority (score, oriented: higher = wanted)")
    ax.set_title(title, fontsize="medium")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    return _png(fig)


def pca_map(cell, title: str) -> bytes:
    """2D PCA of the pooled embeddings: unlabelled, labelled and the cycle's picks."""
    fig = _figure()
    ax = fig.add_subplot()
    for role, colour, size in (
        ("unlabelled", "0.75", 5),
        ("labelled", "tab:blue", 9),
        ("selected", "tab:red", 16),
    ):
        m = cell.role == role
        ax.scatter(cell.pca[m, 0], cell.pca[m, 1], s=size, c=colour, label=f"{role} ({m.sum()})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small", markerscale=1.5)
    return _png(fig)


def overlap_heatmap(matrix: np.ndarray, names: Sequence[str], title: str) -> bytes:
    """Mean Jaccard overlap of picks between every pair of acquirers, annotated."""
    n = len(names)
    fig = _figure(1.6 + 0.75 * n, 1.2 + 0.65 * n)
    ax = fig.add_subplot()
    im = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize="small")
    ax.set_yticks(range(n), names, fontsize="small")
    for i in range(n):
        for j in range(n):
            if np.isfinite(matrix[i, j]):
                colour = "black" if matrix[i, j] > 0.6 else "white"
                ax.text(
                    j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", color=colour, fontsize=8
                )
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(title, fontsize="medium")
    return _png(fig)


def family_bars(shares: dict[str, np.ndarray], family_names: Sequence[str], title: str) -> bytes:
    """Stacked bars: the share of each family among each acquirer's picks (and the pool)."""
    labels = list(shares)
    fig = _figure(7, 1.2 + 0.4 * len(labels))
    ax = fig.add_subplot()
    left = np.zeros(len(labels))
    colours = [f"C{i}" for i in range(len(family_names))]
    for f, name in enumerate(family_names):
        width = np.array([shares[a][f] for a in labels])
        ax.barh(labels, width, left=left, color=colours[f % 10], label=name)
        left += width
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.set_xlabel("share of picks")
    ax.set_title(title, fontsize="medium")
    ax.legend(
        fontsize="x-small",
        ncol=min(4, len(family_names)),
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if len(labels) < 4 else -0.15),
    )
    return _png(fig)


def joint_gain_heatmap(
    gain: np.ndarray, acquirers: Sequence[str], joints: Sequence[str], title: str
) -> bytes:
    """(acquirer x joint) mean PCKh gain per cycle, diverging colours around 0."""
    fig = _figure(1.8 + 0.45 * len(joints), 1.4 + 0.4 * len(acquirers))
    ax = fig.add_subplot()
    finite = gain[np.isfinite(gain)]
    lim = float(np.max(np.abs(finite))) if finite.size else 1.0
    im = ax.imshow(gain, cmap="RdBu", vmin=-lim or -1, vmax=lim or 1, aspect="auto")
    ax.set_xticks(range(len(joints)), joints, rotation=60, ha="right", fontsize="x-small")
    ax.set_yticks(range(len(acquirers)), acquirers, fontsize="small")
    for i in range(gain.shape[0]):
        for j in range(gain.shape[1]):
            if np.isfinite(gain[i, j]):
                ax.text(j, i, f"{gain[i, j]:.1f}", ha="center", va="center", fontsize=6)
    fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02, label="PCKh points per cycle")
    ax.set_title(title, fontsize="medium")
    return _png(fig)


def curves_png(table) -> bytes:
    """The learning curves of ``alpose table`` (``report.plot_curves``) as PNG bytes."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "curves.png"
        plot_curves(table, path)
        return path.read_bytes()
