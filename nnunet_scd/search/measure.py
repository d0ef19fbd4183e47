"""Measured cost of an SCDNet, whole and for its ViT encoder: parameters, FLOPs and CPU/GPU latency.

FLOPs come from ``torch.utils.flop_counter`` (matmuls, convolutions and attention), per module,
so the encoder's share (patch embedding and blocks) is read off the same count. Latency is the
median wall time of repeated forward passes; the encoder's share is timed with hooks around the
patch embedding and each block, so token pruning between blocks is accounted for as it runs.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

__all__ = ["Cost", "encoder_modules", "measure_cost"]

@dataclass(frozen=True)
class Cost:
    """One network's cost; FLOPs of one forward pass at batch 1, latency in milliseconds."""

    params: int
    encoder_params: int
    flops: int
    encoder_flops: int
    latency_ms: float
    encoder_latency_ms: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _core(network: nn.Module) -> tuple[nn.Module, str]:
    """The SCDNet inside a ``WithPixelClassifier`` wrapper (or the network itself) and its flop-counter name."""
    inner = getattr(network, "network", None)
    if isinstance(inner, nn.Module) and hasattr(inner, "blocks"):
        return inner, f"{type(network).__name__}.network"
    return network, type(network).__name__


def encoder_modules(network: nn.Module) -> list[nn.Module]:
    """The ViT encoder of an SCDNet: patch embedding, position table, blocks and final norm."""
    core, _ = _core(network)
    return [core.patch_embed, core.pos_embed, *core.blocks, core.norm]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def measure_cost(network: nn.Module, x: torch.Tensor, repeats: int = 10, warmup: int = 2) -> Cost:
    """Parameters, FLOPs and median latency of ``network`` (an SCDNet, possibly wrapped) on input ``x``."""
    network.eval()
    core, name = _core(network)
    encoder_names = re.compile(rf"^{re.escape(name)}\.(patch_embed|blocks\.\d+)$")
    params = sum(p.numel() for p in network.parameters())
    encoder_params = sum(p.numel() for m in encoder_modules(network) for p in m.parameters())
    with FlopCounterMode(display=False) as counter:
        network(x)
    counts = counter.get_flop_counts()
    encoder_flops = sum(sum(ops.values()) for key, ops in counts.items() if encoder_names.match(key))

    timed = [core.patch_embed, *core.blocks]
    starts: dict[int, float] = {}
    spent = [0.0]

    def before(module: nn.Module, args: tuple) -> None:
        _sync(x.device)
        starts[id(module)] = time.perf_counter()

    def after(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        _sync(x.device)
        spent[0] += time.perf_counter() - starts.pop(id(module))

    handles = [h for m in timed for h in (m.register_forward_pre_hook(before), m.register_forward_hook(after))]
    totals, encoder = [], []
    try:
        for i in range(warmup + repeats):
            spent[0] = 0.0
            _sync(x.device)
            start = time.perf_counter()
            network(x)
            _sync(x.device)
            if i >= warmup:
                totals.append(time.perf_counter() - start)
                encoder.append(spent[0])
    finally:
        for handle in handles:
            handle.remove()
    return Cost(
        params=params, encoder_params=encoder_params, flops=counter.get_total_flops(), encoder_flops=encoder_flops,
        latency_ms=1e3 * statistics.median(totals), encoder_latency_ms=1e3 * statistics.median(encoder),
    )
