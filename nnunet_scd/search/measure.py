"""Measured cost of an SCDNet, whole and for its ViT encoder: parameters, FLOPs and CPU/GPU latency.

FLOPs are counted per module (``nnunet_scd.measure``), so the encoder's share (patch embedding and
blocks) is read off the same count. Latency is the fastest of repeated, interleaved forward passes;
the encoder's share is timed with hooks around the patch embedding and each block, so token
pruning between blocks is accounted for as it runs.
"""

from __future__ import annotations

import re
import statistics
import time
from dataclasses import asdict, dataclass
from functools import partial

import torch
from torch import nn

from nnunet_scd.measure import count_flops, count_parameters, synchronize, time_interleaved
from nnunet_scd.unwrap import unwrap

__all__ = ["Cost", "encoder_modules", "measure_costs"]


@dataclass(frozen=True)
class Cost:
    """One network's cost: FLOPs of one forward pass of ``x``; latency in milliseconds (fastest and median pass).

    ``block_*``: per encoder block, the tokens it processed, its parameters, FLOPs and fastest latency.
    """

    params: int
    encoder_params: int
    flops: int
    encoder_flops: int
    latency_ms: float
    encoder_latency_ms: float
    latency_median_ms: float
    encoder_latency_median_ms: float
    block_tokens: tuple[int, ...] = ()
    block_params: tuple[int, ...] = ()
    block_flops: tuple[int, ...] = ()
    block_latency_ms: tuple[float, ...] = ()

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def encoder_modules(network: nn.Module) -> list[nn.Module]:
    """The ViT encoder of an SCDNet (possibly wrapped): patch embedding, position table, blocks and final norm."""
    core = unwrap(network, core=True)
    return [core.patch_embed, core.pos_embed, *core.blocks, core.norm]


def _counts(network: nn.Module, x: torch.Tensor) -> tuple[int, int, int, int, tuple[int, ...], tuple[int, ...]]:
    """Parameters and FLOPs, whole and encoder, and per block."""
    # The flop counter names modules by their path from the outermost module's class name.
    prefix = type(network).__name__ + (".network" if unwrap(network, core=True) is not network else "")
    encoder_names = re.compile(rf"^{re.escape(prefix)}\.(patch_embed|blocks\.\d+)$")
    encoder_params = sum(count_parameters(m) for m in encoder_modules(network))
    total, per_module = count_flops(network, x.shape, per_module=True)
    encoder_flops = sum(flops for key, flops in per_module.items() if encoder_names.match(key))
    blocks = unwrap(network, core=True).blocks
    block_params = tuple(count_parameters(b) for b in blocks)
    block_flops = tuple(per_module.get(f"{prefix}.blocks.{i}", 0) for i in range(len(blocks)))
    return count_parameters(network), encoder_params, total, encoder_flops, block_params, block_flops


class _EncoderClock:
    """Seconds one forward pass spends in the encoder's patch embedding and blocks (hooks around each).

    Also records, per pass, each block's seconds, and the tokens each block received.
    """

    def __init__(self, network: nn.Module, device: torch.device) -> None:
        self.device, self.spent, self.passes = device, 0.0, []
        self.block_passes: list[list[float]] = []
        self._starts: dict[int, float] = {}
        core = unwrap(network, core=True)
        self._blocks = {id(b): i for i, b in enumerate(core.blocks)}
        self.block_tokens = [0] * len(core.blocks)
        self._spent_blocks = [0.0] * len(core.blocks)
        self._handles = [h for m in (core.patch_embed, *core.blocks)
                         for h in (m.register_forward_pre_hook(self._before), m.register_forward_hook(self._after))]

    def _before(self, module: nn.Module, args: tuple) -> None:
        if id(module) in self._blocks:
            self.block_tokens[self._blocks[id(module)]] = args[0].shape[1]
        synchronize(self.device)
        self._starts[id(module)] = time.perf_counter()

    def _after(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        synchronize(self.device)
        seconds = time.perf_counter() - self._starts.pop(id(module))
        self.spent += seconds
        if id(module) in self._blocks:
            self._spent_blocks[self._blocks[id(module)]] = seconds

    def run(self, network: nn.Module, x: torch.Tensor) -> None:
        self.spent = 0.0
        network(x)
        self.passes.append(self.spent)
        self.block_passes.append(list(self._spent_blocks))

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


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
    counts = {name: _counts(network, x) for name, network in networks.items()}
    clocks = {name: _EncoderClock(network, x.device) for name, network in networks.items()}
    try:
        totals = time_interleaved(
            {name: (None, partial(clocks[name].run, network, x)) for name, network in networks.items()},
            max(1, repeats), warmup, x.device)
    finally:
        for clock in clocks.values():
            clock.remove()
    costs = {}
    for name in networks:
        clock = clocks[name]
        encoder = clock.passes[warmup:]  # the clock also ran in the untimed warm-up rounds
        params, encoder_params, flops, encoder_flops, block_params, block_flops = counts[name]
        costs[name] = Cost(
            params, encoder_params, flops, encoder_flops, latency_ms=1e3 * min(totals[name]),
            encoder_latency_ms=1e3 * min(encoder), latency_median_ms=1e3 * statistics.median(totals[name]),
            encoder_latency_median_ms=1e3 * statistics.median(encoder), block_tokens=tuple(clock.block_tokens),
            block_params=block_params, block_flops=block_flops,
            block_latency_ms=tuple(1e3 * min(times) for times in zip(*clock.block_passes[warmup:])),
        )
    return costs
