"""Whole-volume mode: time nnU-Net's own sliding-window prediction of one synthetic volume.

The networks are handed to ``nnUNetPredictor.manual_initialization`` (the path nnU-Net's trainer
uses for its final validation), so tiling, Gaussian weighting and logit accumulation are
nnU-Net's, and only the network differs: SCD, the dense UNETR, and stock nnU-Net's PlainConvUNet
planned for the same patch (32 features doubling to 320, pooling down to a 4-voxel bottleneck).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_scd.bench.scan import bench_dataset_json, bench_plans, bench_predictor
from nnunet_scd.bench.timing import build_network, configure_backends
from nnunet_scd.geometry import BenchConfig
from nnunet_scd.measure import time_interleaved

__all__ = ["plain_conv_unet", "time_sliding_window"]


def plain_conv_unet(config: BenchConfig) -> nn.Module:
    """Stock nnU-Net 3d_fullres topology for ``config.patch_size`` (no deep supervision)."""
    # nnU-Net pools an axis while it stays >= 8 before pooling (bottleneck >= 4), max 5 poolings here.
    strides = [[1] * len(config.patch_size)]
    size = list(config.patch_size)
    while len(strides) < 6:
        step = [2 if s >= 8 else 1 for s in size]
        if not any(s == 2 for s in step):
            break
        strides.append(step)
        size = [s // st for s, st in zip(size, step)]
    n = len(strides)
    conv, norm = (nn.Conv3d, nn.InstanceNorm3d) if len(size) == 3 else (nn.Conv2d, nn.InstanceNorm2d)
    return PlainConvUNet(
        config.input_channels, n, [min(32 * 2**i, 320) for i in range(n)], conv, 3, strides, 2, config.num_classes,
        2, conv_bias=True, norm_op=norm, norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=False,
    )


def time_sliding_window(
    config: BenchConfig,
    device: torch.device,
    volume_scale: float = 1.5,
    repeats: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Seconds to predict one random volume of ``volume_scale`` x the patch, per network (median of repeats)."""
    configure_backends(device)
    shape = tuple(int(round(p * volume_scale)) for p in config.patch_size)
    volume = torch.randn(config.input_channels, *shape, generator=torch.Generator().manual_seed(0))
    networks = {
        "scd": build_network(config, config.keep_ratio, device),
        "unetr": build_network(config, None, device),
        "nnunet": plain_conv_unet(config).to(device),
    }
    plans, dataset_json = bench_plans(config), bench_dataset_json(config)
    predictors = {name: bench_predictor(net, plans, dataset_json, device) for name, net in networks.items()}
    log(f"whole volume {shape}, patch {config.patch_size}, tile step 0.5, no mirroring, on {device}")
    predictors["scd"].predict_sliding_window_return_logits(volume)  # warm-up
    seconds = time_interleaved(
        {name: (None, partial(predictor.predict_sliding_window_return_logits, volume))
         for name, predictor in predictors.items()}, repeats, warmup=0, device=device)
    medians = {name: statistics.median(s) for name, s in seconds.items()}
    return {
        "volume_shape": shape,
        "seconds": seconds,
        "median_s": medians,
        "speedup_vs_unetr": {name: medians["unetr"] / m for name, m in medians.items()},
    }
