"""UNETR decoder for 2D and 3D, for any power-of-two token size per axis.

The decoder climbs from the token grid (level L, with 2**L the largest token size) to the image
(level 0) one factor of two at a time; an axis with a smaller token size stops doubling once it
has reached full resolution, so anisotropic tokens such as 4x16x16 just work.

With ``pool_strides`` the bottleneck starts one level below the token grid (level L + 1): the
bottleneck tokens are average-pooled (kernel 3, stride 2) and a fourth up-block climbs back, as
in the SCD authors' x8 decoder (``UNETRx8_decoderv2``) for 8^3 tokens. The skip at the token grid
then gets its own residual conv block instead of being fused into the bottleneck.

Skip wiring, as in UNETR: the raw image feeds level 0 (``encoder1``); the hidden states from
depth d/4, d/2 and 3d/4 feed levels 1, 2 and 3 (``encoder2..4``), each brought up from the token
grid by transposed convolutions. With 16^3 tokens (L = 4) this is exactly UNETR. With 8^3 tokens
(L = 3) the 3d/4 skip sits at the token grid itself and is fused with the bottleneck there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InstanceNorm", "ResidualConvBlock", "UNETRDecoder", "tokens_to_feature_map"]


def tokens_to_feature_map(tokens: torch.Tensor, grid: Sequence[int]) -> torch.Tensor:
    """(B, N, D) in grid C order -> (B, D, *grid)."""
    return tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], *grid)


class InstanceNorm(nn.GroupNorm):
    """Instance normalisation with affine parameters, for 2D and 3D feature maps.

    One group per channel makes GroupNorm exactly instance norm. Its kernel is about twice as fast
    as ``InstanceNorm3d``'s on CPU and keeps channels-last inputs channels-last; the parameters are
    the same ``weight`` and ``bias``, so checkpoints load either way.

    Shapes: (B, C, *S) -> (B, C, *S).
    """

    def __init__(self, num_channels: int) -> None:
        super().__init__(num_channels, num_channels, eps=1e-5, affine=True)


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """The feature map in channels-last layout (a no-op when it already is one).

    The decoder's convolutions below the token grid have few channels and large maps; oneDNN and
    cuDNN run those about a third faster channels-last.
    """
    return x.contiguous(memory_format=torch.channels_last_3d if x.ndim == 5 else torch.channels_last)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that uses oneDNN for a single fp32 volume on the CPU, where PyTorch would not.

    For a batch of one, PyTorch's CPU dispatcher picks its native im2col kernel whenever
    N x C x D x H <= 20480, a threshold meant for small 2D inputs. The Tiny decoder's 8-channel
    maps fall under it at every sliding-window tile, and there the native kernel is about 20x slower
    than oneDNN (31 vs 1.5 ms for 8 -> 8 channels at 28x56x56). The parameters are ``nn.Conv3d``'s.

    Shapes: (B, C_in, D, H, W) -> (B, C_out, D', H', W').
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Inductor chooses its own kernels; asked first, because dynamo cannot trace the mkldnn queries and would
        # break the graph at every convolution.
        if (not torch.compiler.is_compiling() and x.shape[0] == 1 and x.device.type == "cpu"
                and x.dtype == torch.float32 and self.padding_mode == "zeros" and not isinstance(self.padding, str)
                and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled):
            return torch.mkldnn_convolution(x, self.weight, self.bias, self.padding, self.stride, self.dilation,
                                            self.groups)
        return super().forward(x)


def _layers(ndim: int) -> tuple[type[nn.Module], type[nn.Module]]:
    if ndim == 2:
        return nn.Conv2d, nn.ConvTranspose2d
    return Conv3d, nn.ConvTranspose3d


class ResidualConvBlock(nn.Module):
    """Two 3x3(x3) convs with instance norm and LeakyReLU, plus a (1x1 projected) residual.

    Shapes: (B, C_in, *S) -> (B, C_out, *S).
    """

    def __init__(self, ndim: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        conv, _ = _layers(ndim)
        self.body = nn.Sequential(
            conv(in_channels, out_channels, 3, padding=1, bias=False),
            InstanceNorm(out_channels),
            nn.LeakyReLU(0.01, inplace=True),
            conv(out_channels, out_channels, 3, padding=1, bias=False),
            InstanceNorm(out_channels),
        )
        self.shortcut = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Sequential(conv(in_channels, out_channels, 1, bias=False), InstanceNorm(out_channels))
        )
        self.act = nn.LeakyReLU(0.01, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class _TokenUpsampler(nn.Module):
    """Brings a token feature map up through several levels (UNETR's ``PrUp`` block).

    Shapes: (B, D, *grid) -> (B, C, *grid * prod(strides)).
    """

    def __init__(self, ndim: int, embed_dim: int, channels: int, strides: Sequence[Sequence[int]]) -> None:
        super().__init__()
        _, transp = _layers(ndim)
        first, *rest = strides
        self.stem = transp(embed_dim, channels, kernel_size=first, stride=first, bias=False)
        self.stages = nn.Sequential(
            *[
                nn.Sequential(
                    transp(channels, channels, kernel_size=s, stride=s, bias=False),
                    ResidualConvBlock(ndim, channels, channels),
                )
                for s in rest
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))


class _UpBlock(nn.Module):
    """Transposed conv up one level, concatenate the skips of that level, residual conv block."""

    def __init__(self, ndim: int, in_channels: int, out_channels: int, stride: Sequence[int], num_skips: int) -> None:
        super().__init__()
        _, transp = _layers(ndim)
        self.up = transp(in_channels, out_channels, kernel_size=stride, stride=stride, bias=False)
        self.fuse = ResidualConvBlock(ndim, out_channels * (1 + num_skips), out_channels)

    def forward(self, x: torch.Tensor, skips: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fuse(torch.cat([channels_last(t) for t in (self.up(x), *skips)], dim=1))


class UNETRDecoder(nn.Module):
    """UNETR decoder.

    Args:
        in_channels: image channels (for the level-0 skip from the raw image).
        num_classes: output channels.
        embed_dim: token width D.
        token_size: per-axis token size, powers of two.
        feature_size: channels at full resolution; level l has feature_size * 2**l.
        num_hidden_skips: hidden-state skips (3 in UNETR), shallow to deep.
        pool_strides: None for UNETR's bottleneck at the token grid; per-axis strides (2, or 1 for
            an axis that is not pooled) for the average-pooled bottleneck one level below it.

    Shapes: image (B, C, *S), bottleneck (B, N, D), skips [(B, N, D)] -> (B, num_classes, *S).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        embed_dim: int,
        token_size: Sequence[int],
        feature_size: int = 16,
        num_hidden_skips: int = 3,
        pool_strides: Sequence[int] | None = None,
    ) -> None:
        super().__init__()
        token_size = tuple(int(t) for t in token_size)
        if any(t < 1 or t & (t - 1) for t in token_size):
            raise ValueError(f"the UNETR decoder needs power-of-two token sizes (1, 2, 4, 8, ...), got {token_size}.")
        if max(token_size) < 2:
            raise ValueError(f"the UNETR decoder needs a token size of at least 2 along one axis, got {token_size}.")
        ndim = len(token_size)
        self.num_levels = levels = int(math.log2(max(token_size)))
        # up_strides[l] takes level l + 1 to level l.
        up_strides = [tuple(min(2 ** (lv + 1), t) // min(2**lv, t) for t in token_size) for lv in range(levels)]
        channels = [feature_size * 2**lv for lv in range(levels + 1)]
        self.skip_levels = [min(j + 1, levels) for j in range(num_hidden_skips)]
        skips_at = [self.skip_levels.count(lv) for lv in range(levels + 1)]

        self.encoder1 = ResidualConvBlock(ndim, in_channels, channels[0])
        self.pool_strides = None if pool_strides is None else tuple(int(s) for s in pool_strides)
        if self.pool_strides is not None:
            if len(self.pool_strides) != ndim or any(s not in (1, 2) for s in self.pool_strides):
                raise ValueError(f"pool_strides must be 1 or 2 per axis ({ndim} axes), got {pool_strides}.")
            # The token-grid skip is a feature map of its own below the grid, so it gets a conv block.
            top_skip = partial(ResidualConvBlock, ndim, embed_dim, channels[levels])
            self.bottleneck = nn.Identity()  # the pooling has no parameters; see _pool_bottleneck
            top_channels, up_strides = embed_dim, [*up_strides, self.pool_strides]
        else:
            top_skip = nn.Identity
            if skips_at[levels]:
                self.bottleneck = ResidualConvBlock(ndim, embed_dim * (1 + skips_at[levels]), channels[levels])
                top_channels = channels[levels]
            else:
                self.bottleneck = nn.Identity()
                top_channels = embed_dim
        self.hidden_skip_proj = nn.ModuleList(
            top_skip() if lv == levels else _TokenUpsampler(ndim, embed_dim, channels[lv], up_strides[lv:levels][::-1])
            for lv in self.skip_levels
        )
        # decoders[l] climbs from level l + 1 to level l and fuses the skips of level l.
        num_up = len(up_strides)
        self.decoders = nn.ModuleList(
            _UpBlock(ndim, top_channels if lv == num_up - 1 else channels[lv + 1], channels[lv], up_strides[lv],
                     skips_at[lv] + (lv == 0))
            for lv in range(num_up)
        )
        conv, _ = _layers(ndim)
        self.out = conv(channels[0], num_classes, kernel_size=1)

    def forward(
        self,
        image: torch.Tensor,
        bottleneck: torch.Tensor,
        hidden_skips: Sequence[torch.Tensor],
        grid: Sequence[int],
        head: bool = True,
    ) -> torch.Tensor:
        """Logits (B, num_classes, *S), or with ``head=False`` the full-resolution features (B, feature_size, *S)
        that the 1x1 output convolution ``out`` turns into logits (what a wrapper fusing its own head needs)."""
        levels = self.num_levels
        skips_by_level: list[list[torch.Tensor]] = [[] for _ in range(levels + 1)]
        skips_by_level[0].append(channels_last(self.encoder1(channels_last(image))))
        for tokens, proj, lv in zip(hidden_skips, self.hidden_skip_proj, self.skip_levels):
            skips_by_level[lv].append(proj(tokens_to_feature_map(tokens, grid)))
        x = tokens_to_feature_map(bottleneck, grid)
        if self.pool_strides is not None:
            if any(g % s for g, s in zip(grid, self.pool_strides)):
                raise ValueError(
                    f"the pooled bottleneck halves the token grid along the axes with pool stride 2 "
                    f"{self.pool_strides}, so those axes need an even grid; got {tuple(grid)}."
                )
            x = self._pool_bottleneck(x)
        elif skips_by_level[levels]:
            # Made contiguous: a feature map of tokens is a channels-last view, and oneDNN runs this wide
            # convolution faster on the plain layout.
            x = self.bottleneck(torch.cat([x, *skips_by_level[levels]], dim=1).contiguous())
        for lv in reversed(range(len(self.decoders))):
            x = self.decoders[lv](x, skips_by_level[lv])
        return self.out(x) if head else x

    def _pool_bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        # Kernel 3, stride 2, padding 1 as in the authors' decoder; an axis of 2 tokens (too short for kernel 3)
        # is averaged pairwise, and an unpooled axis is left alone.
        kernel = tuple(3 if s == 2 and g >= 3 else s for s, g in zip(self.pool_strides, x.shape[2:]))
        pool = F.avg_pool3d if x.ndim == 5 else F.avg_pool2d
        return pool(x, kernel, stride=self.pool_strides, padding=tuple(int(k == 3) for k in kernel))
