"""Plot of the search masks: per encoder block, the distribution of attention-channel, MLP-neuron and token masks."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from nnunet_scd.search.slicing import masked_blocks, token_masks

__all__ = ["plot_mask_distribution"]


def plot_mask_distribution(network: nn.Module, path: str | Path, title: str = "") -> Path:
    """Write a PNG with one box plot per block and dimension type (tokens as ``tanh(p)``); returns the path."""
    # Imported here: the Agg backend must be chosen before pyplot loads, and a run that never plots never loads it.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = masked_blocks(network)
    series = {
        "attention head-dim channels": [b.attn.head_mask.detach().abs().flatten().cpu().numpy() for b in blocks],
        "MLP hidden neurons": [b.mlp.neuron_mask.detach().abs().flatten().cpu().numpy() for b in blocks],
    }
    tokens = token_masks(network)
    if tokens is not None:
        series[f"tokens ({tokens.kind})"] = [v.detach().abs().cpu().numpy() for v in tokens.values()]
    path = Path(path)
    with plt.style.context("default"):  # nnU-Net's progress plot sets a global poster-size seaborn style
        fig, axes = plt.subplots(1, len(series), figsize=(5 * len(series), 4), sharey=True)
        for ax, (name, values) in zip(axes, series.items()):
            ax.boxplot(values, showfliers=True, flierprops={"markersize": 2})
            ax.set_xticks(range(1, len(values) + 1), [str(i) for i in range(1, len(values) + 1)])
            ax.set_xlabel("encoder block")
            ax.set_title(name)
        axes[0].set_ylabel("|mask|")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return path
