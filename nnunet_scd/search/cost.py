"""Analytic cost of a ViT encoder per attention channel, MLP neuron and token, for budget-aware derivation.

Slicing removes, per attention head-dim channel, one row each of q, k and v and one column of the
output projection; per MLP neuron, one row of fc1 and one column of fc2. What it removes in
FLOPs depends on how many tokens the block sees: after token pruning a late block processes a
fraction of the grid, so its channels are cheap, and the attention's N^2 terms shrink faster still.
The rest (patch embedding, position table, norms, output biases) stays whatever the budget.

FLOPs follow ``torch.utils.flop_counter``'s convention (2 per multiply-add, matmuls, convolutions
and attention only), for one patch (batch 1) of the network's training size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from nnunet_scd.model.stp import keep_count
from nnunet_scd.search.masked_vit import SlimBlock

__all__ = ["EncoderCost", "block_tokens", "encoder_cost"]


@dataclass(frozen=True)
class EncoderCost:
    """Parameters and FLOPs of an encoder as fixed part + per-channel costs of each block.

    ``attn_params[i]``: what one head-dim channel of block i costs; ``mlp_params[i]``: one MLP neuron;
    ``dims[i]``: block i's token width; ``tokens[i]``: the tokens block i sees in the unsliced network.
    A channel's FLOPs depend on the tokens its block processes (``attn_flops``/``mlp_flops`` at
    ``tokens``, ``of`` at any counts); its parameters do not, and tokens cost no parameters.
    """

    fixed_params: int
    fixed_flops: int
    attn_params: tuple[int, ...]
    mlp_params: tuple[int, ...]
    dims: tuple[int, ...]
    tokens: tuple[int, ...]

    @staticmethod
    def attn_channel_flops(tokens: int, dim: int) -> int:
        # q, k, v and proj: 2 * n * dim each; q.k^T and attention x v: 2 * n^2 each.
        return 8 * tokens * dim + 4 * tokens * tokens

    @staticmethod
    def mlp_neuron_flops(tokens: int, dim: int) -> int:
        return 4 * tokens * dim  # fc1 row and fc2 column

    @property
    def attn_flops(self) -> tuple[int, ...]:
        """Per block, the FLOPs of one head-dim channel at the unsliced network's tokens."""
        return tuple(self.attn_channel_flops(n, d) for n, d in zip(self.tokens, self.dims))

    @property
    def mlp_flops(self) -> tuple[int, ...]:
        """Per block, the FLOPs of one MLP neuron at the unsliced network's tokens."""
        return tuple(self.mlp_neuron_flops(n, d) for n, d in zip(self.tokens, self.dims))

    def of(
        self, attn_channels: Sequence[int], mlp_neurons: Sequence[int], tokens: Sequence[int] | None = None
    ) -> tuple[int, int]:
        """(params, FLOPs) of the encoder with these per-block channel, neuron and token counts (tokens:
        default the unsliced network's)."""
        tokens = self.tokens if tokens is None else tokens
        params = self.fixed_params + sum(a * pa + m * pm for a, m, pa, pm in
                                         zip(attn_channels, mlp_neurons, self.attn_params, self.mlp_params))
        flops = self.fixed_flops + sum(
            a * self.attn_channel_flops(n, d) + m * self.mlp_neuron_flops(n, d)
            for a, m, n, d in zip(attn_channels, mlp_neurons, tokens, self.dims))
        return params, flops


def block_tokens(network: nn.Module) -> list[int]:
    """Tokens each encoder block of an SCDNet processes on one training patch.

    The full grid up to the first pruning point, then ``keep_count`` of the remaining tokens after
    each block in ``prune_after`` (1-based); a dense network (no pruning) sees the grid everywhere.
    """
    tokens = math.prod(network.token_grid)
    ratios = {after: stage.keep_ratio for after, stage in zip(network.prune_after, network.pruning)}
    counts = []
    for depth in range(1, len(network.blocks) + 1):
        counts.append(tokens)
        if depth in ratios:
            tokens = keep_count(tokens, ratios[depth])
    return counts


def _params(*modules: nn.Module) -> int:
    return sum(p.numel() for m in modules for p in m.parameters())


def _block_fixed_params(block: SlimBlock) -> int:
    """Parameters of a block that no slicing removes: both norms and the two output biases."""
    return _params(block.norm1, block.norm2) + block.attn.proj.bias.numel() + block.mlp.fc2.bias.numel()


def encoder_cost(network: nn.Module) -> EncoderCost:
    """The analytic cost model of an SCDNet's encoder whose blocks are ``SlimBlock``s (masked or sliced)."""
    blocks = list(network.blocks)
    if not all(isinstance(b, SlimBlock) for b in blocks):
        raise ValueError("encoder_cost needs SlimBlocks (a search or slim network); call mask_blocks first.")
    tokens = block_tokens(network)
    embed = network.patch_embed.proj
    # A convolution with stride = kernel: every grid position multiplies the whole kernel once.
    fixed_flops = 2 * tokens[0] * embed.weight.numel()
    fixed_params = _params(network.patch_embed, network.pos_embed, network.norm) + sum(
        _block_fixed_params(b) for b in blocks)
    attn_params, mlp_params, dims = [], [], []
    for block in blocks:
        dim = block.norm2.normalized_shape[0]  # norm1 is gone in a block without heads
        qkv_bias = 3 if block.attn.qkv_bias else 0
        attn_params.append(4 * dim + qkv_bias)  # q, k, v rows and a proj column
        mlp_params.append(2 * dim + 1)  # fc1 row and bias, fc2 column
        dims.append(dim)
    return EncoderCost(fixed_params, fixed_flops, tuple(attn_params), tuple(mlp_params), tuple(dims), tuple(tokens))
