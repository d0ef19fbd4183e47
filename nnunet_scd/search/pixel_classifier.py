"""Pixel classification module: a light full-resolution voxel-wise branch fused into the decoder's last stage.

Compression costs boundary accuracy first: the decoder's full-resolution logits come through
upsampled token features. The branch classifies each voxel from the decoder's full-resolution
features and the raw image with a few 1x1(x1) convolutions and adds its logits to the decoder's.
Its last convolution starts at zero, so attaching it to a trained or freshly sliced network
changes nothing until fine-tuning teaches it something.

It is attached by composition: ``WithPixelClassifier`` wraps the network and takes the decoder's
full-resolution features from the network's ``forward_features``, then adds its logits to those of
``forward_head``; no hook, and the wrapped network's state-dict keys stay ``network.*``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["PixelClassifier", "WithPixelClassifier"]


class PixelClassifier(nn.Module):
    """Voxel-wise MLP as 1x1 convolutions: in -> hidden -> hidden -> classes, LeakyReLU between.

    Args:
        ndim: 2 or 3 spatial dimensions.
        in_channels: decoder feature channels plus image channels.
        num_classes: logits per voxel.
        hidden: hidden width.
    """

    def __init__(self, ndim: int, in_channels: int, num_classes: int, hidden: int = 16) -> None:
        super().__init__()
        conv = {2: nn.Conv2d, 3: nn.Conv3d}[ndim]
        self.body = nn.Sequential(
            conv(in_channels, hidden, 1), nn.LeakyReLU(0.01, inplace=True),
            conv(hidden, hidden, 1), nn.LeakyReLU(0.01, inplace=True),
        )
        self.out = conv(hidden, num_classes, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class WithPixelClassifier(nn.Module):
    """``network(x) + PixelClassifier([decoder full-res features, x])`` for an SCDNet.

    The network must offer ``forward_features`` (full-resolution features) and ``forward_head`` (their
    logits), and its decoder's output convolution ``decoder.out`` gives the branch its sizes.

    Args:
        network: an SCDNet (sliced or not); its attributes stay reachable as ``self.network``.
        hidden: hidden width of the branch.
    """

    def __init__(self, network: nn.Module, hidden: int = 16) -> None:
        super().__init__()
        out = network.decoder.out
        self.network = network
        self.pixel_classifier = PixelClassifier(
            out.weight.ndim - 2, out.in_channels + network.input_channels, out.out_channels, hidden
        )

    def no_weight_decay(self) -> set[str]:
        inner = self.network.no_weight_decay() if hasattr(self.network, "no_weight_decay") else set()
        return {f"network.{name}" for name in inner}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.network.forward_features(x)
        return self.network.forward_head(features) + self.pixel_classifier(torch.cat([features, x], dim=1))
