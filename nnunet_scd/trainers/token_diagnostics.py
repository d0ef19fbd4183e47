"""What STP's token selection does during an nnU-Net training: the pieces the SCD trainers log.

Per epoch and pruning stage, the trainers log the foreground enrichment of the kept tokens on
the validation batches (``nnunet_scd.model.guidance``), the same per class, and the norm of the scorer's gradient
relative to the rest of the network on the training batches, and plot both into
``token_selection.png`` next to nnU-Net's ``progress.png``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from nnunet_scd.atomic import atomic_target

__all__ = ["plot_token_selection", "scorer_grad_ratios"]


def scorer_grad_ratios(network: nn.Module) -> list[float]:
    """Per STP stage: ||grad of its scorer|| / ||grad of every parameter outside the scorers||.

    Empty for networks without a scorer. Call after backward (and after unscaling under AMP).
    """
    stages = [m for m in getattr(network, "pruning", ()) if hasattr(m, "scorer")]
    if not stages:
        return []
    scorer_params = {id(p) for m in stages for p in m.scorer.parameters()}

    def norm(params) -> torch.Tensor:
        grads = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        return torch.stack(grads).norm() if grads else torch.zeros(())

    rest = float(norm(p for p in network.parameters() if id(p) not in scorer_params))
    return [float(norm(m.scorer.parameters())) / rest if rest > 0 else math.nan for m in stages]


def plot_token_selection(logged: Mapping[str, Sequence], path: str, title: str = "") -> str:
    """Enrichment and scorer-gradient ratio per stage against epoch, written atomically to ``path`` (a .png)."""
    # Imported here: the Agg backend must be chosen before pyplot loads, and a run that never plots never loads it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("stp_enrichment", "foreground enrichment of kept tokens (validation)"),
              ("scorer_grad_ratio", "||scorer grad|| / ||rest of network grad|| (training)"))
    with plt.style.context("default"):  # nnU-Net sets a global seaborn poster style
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8), dpi=100)
        for ax, (key, label) in zip(axes, panels):
            rows = list(logged.get(key, []))
            stages = max((len(r) for r in rows if r), default=0)
            for s in range(stages):
                epochs = [e for e, r in enumerate(rows) if r and len(r) > s]
                ax.plot(epochs, [rows[e][s] for e in epochs], marker=".", label=f"stage {s + 1}")
            ax.set_xlabel("epoch")
            ax.set_title(label, fontsize=10)
            ax.grid(alpha=0.3)
            if stages:
                ax.legend(fontsize=8)
        axes[0].axhline(1.0, color="grey", ls="--", lw=0.8)
        axes[0].text(0.01, 1.0, " random pruning", transform=axes[0].get_yaxis_transform(), va="bottom",
                     fontsize=8, color="grey")
        axes[0].set_ylim(bottom=0)
        if any(logged.get("scorer_grad_ratio", [])):
            axes[1].set_yscale("log")
        fig.suptitle(title or "STP token selection", fontsize=10)
        fig.tight_layout()
        with atomic_target(path, suffix=".png") as tmp:  # savefig picks the format by the ending
            fig.savefig(tmp)
        plt.close(fig)
    return path
