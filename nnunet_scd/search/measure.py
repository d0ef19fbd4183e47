"""Measured cost of an SCDNet, whole and for its ViT encoder: parameters, FLOPs and CPU/GPU latency.

FLOPs come from ``torch.utils.flop_counter`` (matmuls, convolutions and attention), per module,
so the encoder's share (patch embedding and blocks) is read off the same count. Latency is the
fastest of repeated, interleaved forward passes; the encoder's share is timed with hooks around the
patch embedding and each block, so token pruning between blocks is accounted for as it runs.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from nnunet_scd.flops import forward_flops

__all__ = ["Cost", "encoder_modules", "measure_costs"]

@dataclass(frozen=True)
class Cost:
    """One network's cost: FLOPs of one forward pass of ``x``; latency in milliseconds (fastest and median pass)."""

    params: int
    encoder_params: int
    flops: int
    encoder_flops: int
    latency_ms: float
    encoder_latency_ms: float
    latency_median_ms: float
    encoder_latency_median_ms: float

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


def _count(network: nn.Module, x: torch.Tensor) -> tuple[int, int, int, int]:
    """Parameters and FLOPs, whole and encoder."""
    _, name = _core(network)
    encoder_names = re.compile(rf"^{re.escape(name)}\.(patch_embed|blocks\.\d+)$")
    params = sum(p.numel() for p in network.parameters())
    encoder_params = sum(p.numel() for m in encoder_modules(network) for p in m.parameters())
    # On the meta device, so CPU attention is counted too (see nnunet_scd.flops).
    total, per_module = forward_flops(network, x.shape, per_module=True)
    encoder_flops = sum(flops for key, flops in per_module.items() if encoder_names.match(key))
    return params, encoder_params, total, encoder_flops


def _time(network: nn.Module, x: torch.Tensor, repeats: int, warmup: int) -> tuple[list[float], list[float]]:
    """Wall times of ``repeats`` forward passes, whole and the encoder's share (hooks on its modules)."""
    core, _ = _core(network)
    starts: dict[int, float] = {}
    spent = [0.0]

    def before(module: nn.Module, args: tuple) -> None:
        _sync(x.device)
        starts[id(module)] = time.perf_counter()

    def after(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        _sync(x.device)
        spent[0] += time.perf_counter() - starts.pop(id(module))

    timed = [core.patch_embed, *core.blocks]
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
    return totals, encoder


@torch.no_grad()
def measure_costs(
    networks: dict[str, nn.Module], x: torch.Tensor, repeats: int = 20, warmup: int = 2
) -> dict[str, Cost]:
    """Costs of several networks (SCDNets, possibly wrapped) on input ``x``.

    Latency: the networks take turns, one forward pass each, ``repeats`` times, so load from other
    processes on a shared machine hits all of them alike. The fastest pass is the estimate of a
    network's own cost (least disturbed by others); the median is kept beside it.
    """
    for network in networks.values():
        network.eval()
    counts = {name: _count(network, x) for name, network in networks.items()}
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in networks}
    for _ in range(warmup):
        for network in networks.values():
            network(x)
    for _ in range(max(1, repeats)):
        for name, network in networks.items():
            totals, encoder = _time(network, x, 1, 0)
            times[name][0].extend(totals)
            times[name][1].extend(encoder)
    return {
        name: Cost(
            *counts[name], latency_ms=1e3 * min(times[name][0]), encoder_latency_ms=1e3 * min(times[name][1]),
            latency_median_ms=1e3 * statistics.median(times[name][0]),
            encoder_latency_median_ms=1e3 * statistics.median(times[name][1]),
        )
        for name in networks
    }

