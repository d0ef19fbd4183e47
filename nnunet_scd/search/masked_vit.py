"""ViT block whose attention heads and MLP may have any width, with optional learnable search masks.

One module family serves both halves of the joint search:

- **search**: uniform head widths as in the dense block, plus masks initialised to one: one per
  head-dim channel, shape (H, d_head), shared by q, k and v; one per MLP hidden neuron, after the
  activation (as ViT-Slim).
- **slim**: per-head widths that may differ (uneven, zero drops the head), no masks. Heads are
  stored grouped by width, so each group is one contiguous slice of the qkv output and one
  ``scaled_dot_product_attention`` call, with no padding. A block whose every head was pruned
  keeps of its attention branch only the projection bias, a constant added to the residual: it
  has no ``norm1`` and no ``qkv``, so no parameter of it is left without a gradient (which
  DistributedDataParallel, as nnU-Net uses it, refuses).

The softmax scale stays that of the dense head width, so a sliced head computes exactly what the
masked head computed on its kept channels. State-dict names match timm's ``Block`` (``norm1``,
``attn.qkv``, ``attn.proj``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``), so dense weights load directly.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import nn

__all__ = ["SlimAttention", "SlimBlock", "SlimMlp", "drop_headless_keys", "head_groups"]

# Attention keys of a block without heads that `nnunet-scd slim` weights (fold_<n>.pth) and slim checkpoints may hold.
_HEADLESS_KEYS = ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias")


def head_groups(head_dims: Sequence[int]) -> list[tuple[int, int]]:
    """Runs of equal width in ``head_dims`` as (number of heads, width); zero-width heads must be absent."""
    return [(len(list(run)), width) for width, run in itertools.groupby(head_dims)]


class SlimAttention(nn.Module):
    """Multi-head self-attention with a width per head.

    Args:
        dim: token width D (input and output).
        head_dims: width of each head; equal widths must be adjacent (``slicing`` sorts them).
        qkv_bias: bias on the qkv projection.
        scale: softmax scale; defaults to ``head_dims[0] ** -0.5`` (the dense value).
        masked: add the learnable channel mask ``head_mask`` (H, d_head); needs uniform widths.

    Shapes: (B, N, D) -> (B, N, D). The qkv output is laid out [q | k | v], each the heads in order.
    """

    def __init__(
        self,
        dim: int,
        head_dims: Sequence[int],
        qkv_bias: bool = True,
        scale: float | None = None,
        masked: bool = False,
    ) -> None:
        super().__init__()
        self.head_dims = tuple(int(d) for d in head_dims)
        if any(d < 1 for d in self.head_dims):
            raise ValueError(f"head widths must be positive (drop a head instead of giving it 0), got {head_dims}.")
        if len({g[1] for g in head_groups(self.head_dims)}) != len(head_groups(self.head_dims)):
            raise ValueError(f"heads of equal width must be adjacent, got {self.head_dims}.")
        if masked and len(set(self.head_dims)) > 1:
            raise ValueError(f"search masks need uniform head widths, got {self.head_dims}.")
        if scale is None and not self.head_dims:
            raise ValueError("an attention without heads needs an explicit scale.")
        self.scale = float(scale if scale is not None else self.head_dims[0] ** -0.5)
        self.groups = head_groups(self.head_dims)
        self.inner_dim = sum(self.head_dims)
        self.qkv_bias = qkv_bias
        with warnings.catch_warnings():  # every head pruned: proj keeps only its bias
            warnings.filterwarnings("ignore", "Initializing zero-element tensors")
            # Every head pruned: no input projection at all, since nothing would read it.
            self.qkv = nn.Linear(dim, 3 * self.inner_dim, bias=qkv_bias) if self.head_dims else None
            self.proj = nn.Linear(self.inner_dim, dim)
        self.head_mask = (
            nn.Parameter(torch.ones(len(self.head_dims), self.head_dims[0])) if masked and self.head_dims else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, _ = x.shape
        if not self.groups:  # every head pruned: only the projection bias is left (x is not read)
            return self.proj(x.new_zeros(batch, tokens, 0))
        if len(self.groups) == 1:
            heads, width = self.groups[0]
            q, k, v = self.qkv(x).reshape(batch, tokens, 3, heads, width).permute(2, 0, 3, 1, 4).unbind(0)
            if self.head_mask is not None:
                mask = self.head_mask[None, :, None, :]
                q, k, v = q * mask, k * mask, v * mask
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
            return self.proj(out.transpose(1, 2).reshape(batch, tokens, self.inner_dim))
        outs = []
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.inner_dim)
        for part, (heads, width) in zip(qkv.split([h * w for h, w in self.groups], dim=-1), self.groups):
            q, k, v = part.reshape(batch, tokens, 3, heads, width).permute(2, 0, 3, 1, 4).unbind(0)
            out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
            outs.append(out.transpose(1, 2).reshape(batch, tokens, heads * width))
        return self.proj(torch.cat(outs, dim=-1))


class SlimMlp(Mlp):
    """timm's ``Mlp`` with any hidden width (0 allowed) and an optional mask per hidden neuron.

    The mask ``neuron_mask`` (hidden,) multiplies the activations after GELU, so fc1 rows and fc2
    columns can later be removed together.
    """

    def __init__(self, dim: int, hidden_features: int, masked: bool = False) -> None:
        super().__init__(in_features=dim, hidden_features=max(hidden_features, 1))
        if hidden_features == 0:  # timm reads 0 as "same as input"; a fully pruned MLP keeps only fc2's bias
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Initializing zero-element tensors")
                self.fc1, self.fc2 = nn.Linear(dim, 0), nn.Linear(0, dim)
        self.neuron_mask = nn.Parameter(torch.ones(hidden_features)) if masked else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop1(self.act(self.fc1(x)))
        if self.neuron_mask is not None:
            x = x * self.neuron_mask
        return self.drop2(self.fc2(self.norm(x)))


class SlimBlock(nn.Module):
    """Pre-norm transformer block (timm ``Block`` layout) with per-head and MLP widths.

    Args:
        dim: token width D.
        head_dims: width of each attention head.
        mlp_hidden: MLP hidden width.
        qkv_bias: bias on the qkv projection.
        drop_path: stochastic depth rate.
        scale: softmax scale (the dense block's, so slicing stays exact).
        masked: add the search masks.
    """

    def __init__(
        self,
        dim: int,
        head_dims: Sequence[int],
        mlp_hidden: int,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        scale: float | None = None,
        masked: bool = False,
    ) -> None:
        super().__init__()
        # Without heads the attention branch does not read its input, so its norm would get no gradient.
        self.norm1 = nn.LayerNorm(dim, eps=1e-6) if len(head_dims) else nn.Identity()
        self.attn = SlimAttention(dim, head_dims, qkv_bias=qkv_bias, scale=scale, masked=masked)
        if not self.attn.head_dims:
            self.register_load_state_dict_pre_hook(_drop_headless_block_keys)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = SlimMlp(dim, mlp_hidden, masked=masked)
        self.drop_path2 = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()

    @property
    def widths(self) -> dict[str, list[int] | int]:
        """The block's searched widths, as recorded in sliced plans."""
        return {"head_dims": list(self.attn.head_dims), "mlp_hidden": self.mlp.fc1.out_features}

    def forward(self, x: torch.Tensor, token_weight: torch.Tensor | None = None) -> torch.Tensor:
        """(B, N, D) -> (B, N, D); ``token_weight`` (N,) or (B, N), the search's token masks, multiplies the
        normalised input of attention and MLP (ViT-Slim), so the residual stream passes every token unchanged."""
        if token_weight is None:
            x = x + self.drop_path1(self.attn(self.norm1(x)))
            return x + self.drop_path2(self.mlp(self.norm2(x)))
        weight = token_weight.to(x.dtype).unsqueeze(-1)
        x = x + self.drop_path1(self.attn(self.norm1(x) * weight))
        return x + self.drop_path2(self.mlp(self.norm2(x) * weight))


def _drop_headless_block_keys(module: nn.Module, state_dict: dict, prefix: str, *_: object) -> None:
    for key in _HEADLESS_KEYS:
        state_dict.pop(prefix + key, None)


def drop_headless_keys(network: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` without the attention keys of ``network``'s head-less blocks, which have no attention."""
    stale = {f"{name}.{key}" for name, module in network.named_modules()
             if isinstance(module, SlimBlock) and not module.attn.head_dims for key in _HEADLESS_KEYS}
    return {k: v for k, v in state.items() if k not in stale}
