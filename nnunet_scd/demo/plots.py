"""The demo's figures: Dice vs inference throughput, the tokens STP kept per stage, predicted vs true
segmentation. Figures have a fixed size in pixels (no tight bounding box) so tests can check them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

__all__ = [
    "LABEL_COLOURS",
    "STAGE_COLOURS",
    "plot_dice_vs_throughput",
    "plot_segmentations",
    "plot_token_overlay",
    "token_boxes",
    "tokens_on_slice",
]

# Background transparent, then one colour per organ label (1..7 in the phantoms; cycles beyond).
LABEL_COLOURS = ("#00000000", "#e41a1c", "#377eb8", "#4daf4a", "#ffff33", "#ff7f00", "#a65628", "#f781bf",
                 "#984ea3", "#66c2a5", "#fc8d62", "#8da0cb", "#e78ac3", "#a6d854")
STAGE_COLOURS = ("#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e")
DPI = 100


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def token_boxes(indices: Sequence[int] | np.ndarray, grid: Sequence[int], token_size: Sequence[int]) -> np.ndarray:
    """Voxel boxes of tokens given by flat grid positions (C order): (K, 2 * ndim) as starts then stops."""
    coords = np.stack(np.unravel_index(np.asarray(indices, dtype=np.int64), tuple(grid)), axis=1)
    starts = coords * np.asarray(token_size)
    return np.concatenate([starts, starts + np.asarray(token_size)], axis=1)


def tokens_on_slice(boxes: np.ndarray, z: int) -> np.ndarray:
    """In-plane boxes (y0, x0, y1, x1) of the 3D token boxes that cover slice ``z`` of the patch."""
    hit = (boxes[:, 0] <= z) & (z < boxes[:, 3])
    return boxes[hit][:, [1, 2, 4, 5]]


def _label_cmap(num_labels: int):
    from matplotlib.colors import ListedColormap

    return ListedColormap([LABEL_COLOURS[i % len(LABEL_COLOURS)] if i else LABEL_COLOURS[0]
                           for i in range(max(2, num_labels))])


def _show_labels(ax, labels: np.ndarray, num_labels: int, alpha: float = 0.6) -> None:
    masked = np.ma.masked_equal(labels, 0)
    ax.imshow(masked, cmap=_label_cmap(num_labels), vmin=0, vmax=max(1, num_labels - 1), alpha=alpha,
              interpolation="nearest")


def plot_token_overlay(image: np.ndarray, labels: np.ndarray, stage_boxes: Sequence[np.ndarray],
                       grid_shape: Sequence[int], token_size: Sequence[int], path: Path,
                       title: str = "", num_labels: int = 8) -> Path:
    """One panel per pruning stage: the CT slice with the token cells kept at that stage filled in colour.

    ``image``/``labels`` are one (H, W) slice of the network's input patch; ``stage_boxes`` holds per
    stage the in-plane boxes (y0, x0, y1, x1) of the kept tokens on that slice (``tokens_on_slice``).
    """
    plt = _pyplot()
    from matplotlib.patches import Rectangle

    panels = len(stage_boxes) + 1
    fig, axes = plt.subplots(1, panels, figsize=(3.2 * panels, 3.9), dpi=DPI)
    axes[0].imshow(image, cmap="gray", interpolation="nearest")
    _show_labels(axes[0], labels, num_labels, alpha=0.45)
    axes[0].set_title("input slice + true organs\n(grey border: nnU-Net zero padding)", fontsize=9)
    h, w = image.shape
    th, tw = token_size[-2], token_size[-1]
    total = int(np.prod(grid_shape))
    for stage, (ax, boxes) in enumerate(zip(axes[1:], stage_boxes, strict=True)):
        colour = STAGE_COLOURS[stage % len(STAGE_COLOURS)]
        ax.imshow(image, cmap="gray", interpolation="nearest")
        for y in range(0, h + 1, th):  # the token grid, faint
            ax.axhline(y - 0.5, color="white", lw=0.3, alpha=0.35)
        for x in range(0, w + 1, tw):
            ax.axvline(x - 0.5, color="white", lw=0.3, alpha=0.35)
        for y0, x0, y1, x1 in boxes:
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, facecolor=colour, alpha=0.45,
                                   edgecolor=colour, lw=1.0))
        ax.contour(labels > 0, levels=[0.5], colors="yellow", linewidths=0.6)
        ax.set_title(f"stage {stage + 1}: {len(boxes)} kept on this slice\n"
                     f"(grid {'x'.join(map(str, grid_shape))} = {total} tokens)", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
    fig.suptitle(title or "Tokens kept by Soft-topK Token Pruning (yellow: organ outlines)", fontsize=10)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.80, wspace=0.06)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_segmentations(image: np.ndarray, truth: np.ndarray, predictions: Mapping[str, np.ndarray],
                       label_names: Mapping[str, int], path: Path, title: str = "") -> Path:
    """CT slice, ground truth and each model's prediction side by side, with an organ legend."""
    plt = _pyplot()
    from matplotlib.patches import Patch

    num_labels = max(label_names.values()) + 1
    panels = [("ground truth", truth), *predictions.items()]
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(3.0 * (len(panels) + 1), 3.8), dpi=DPI)
    axes[0].imshow(image, cmap="gray", interpolation="nearest")
    axes[0].set_title("CT slice", fontsize=9)
    for ax, (name, seg) in zip(axes[1:], panels, strict=True):
        ax.imshow(image, cmap="gray", interpolation="nearest")
        _show_labels(ax, seg, num_labels)
        ax.set_title(name, fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [Patch(color=LABEL_COLOURS[v % len(LABEL_COLOURS)], label=n) for n, v in label_names.items() if v]
    fig.legend(handles=handles, loc="lower center", ncol=min(7, len(handles)), fontsize=8, frameon=False)
    fig.suptitle(title or "Validation slice: truth vs predictions", fontsize=10)
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.12, top=0.86, wspace=0.04)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def plot_dice_vs_throughput(models: Sequence[Mapping], path: Path, chance: float | None = None) -> Path:
    """Mean Dice against inference volumes/s (left) and training epochs/hour (right), one labelled point per model."""
    plt = _pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.8), dpi=DPI)
    specs = [("volumes_per_second", "inference throughput (volumes / s, CPU)"),
             ("epochs_per_hour", "training throughput (epochs / hour, CPU)")]
    for ax, (key, xlabel) in zip(axes, specs, strict=True):
        right = 0.0
        for i, m in enumerate(models):
            x = m.get(key)
            if x is None and key == "epochs_per_hour" and m.get("train_seconds_per_epoch"):
                x = 3600.0 / m["train_seconds_per_epoch"]
            if x is None:
                continue
            right = max(right, x)
            colour = STAGE_COLOURS[i % len(STAGE_COLOURS)]
            ax.scatter([x], [m["mean_dice"]], s=80, color=colour, zorder=3)
            ax.annotate(m["model"], (x, m["mean_dice"]), textcoords="offset points", xytext=(6, 6), fontsize=9)
        if chance is not None:
            ax.axhline(chance, color="grey", ls="--", lw=0.8)
            ax.text(0.01, chance, " chance", transform=ax.get_yaxis_transform(), va="bottom", fontsize=8,
                    color="grey")
        ax.set_xlabel(xlabel, fontsize=9)
        ax.set_ylabel("mean Dice (validation)", fontsize=9)
        ax.set_ylim(0, 1)
        ax.set_xlim(0, 1.35 * right if right > 0 else 1)  # from zero, so small differences look small
        ax.grid(alpha=0.3)
    fig.suptitle(" vs ".join(m["model"] for m in models) + ": accuracy against speed (up and right is better)",
                 fontsize=10)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.88, wspace=0.28)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
