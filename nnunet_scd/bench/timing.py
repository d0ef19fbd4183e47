"""What the benchmark runs and measures: networks, training and inference steps, FLOPs, peak memory.

Counting and interleaved timing themselves live in ``nnunet_scd.measure``.

Inputs are random tensors and labels: the cost of a step does not depend on image content,
except through which tokens are kept, and the number kept is fixed by the keep ratio.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing as mp
import os
import statistics
from collections.abc import Sequence
from queue import Empty
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from nnunet_scd.geometry import BenchConfig
from nnunet_scd.measure import count_flops
from nnunet_scd.model.scd import SCDNet

__all__ = [
    "PeakMemory",
    "Runner",
    "available_cores",
    "build_network",
    "configure_backends",
    "config_flops",
    "peak_training_memory",
    "set_keep_ratio",
    "summarize",
]


def available_cores() -> int:
    """CPU cores this process may use (respects affinity masks and cgroup-pinned sets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def configure_backends(device: torch.device) -> dict[str, Any]:
    """Set torch.backends for speed on ``device`` and return what was set (for the report)."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        return {"cudnn.benchmark": True, "tf32": True, "autocast": "bfloat16"}
    threads = available_cores()
    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)  # denormals are slow on x86 and carry no information here
    return {"threads": threads, "flush_denormal": True, "mkldnn": torch.backends.mkldnn.is_available()}


def autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; CPU stays fp32 (CPU autocast is slow on CPUs without native bf16)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_network(config: BenchConfig, keep_ratio: float | None, device: torch.device, seed: int = 0) -> SCDNet:
    torch.manual_seed(seed)
    return SCDNet(**config.network_kwargs(keep_ratio)).to(device)


def set_keep_ratio(net: SCDNet, keep_ratio: float) -> None:
    """Change the keep ratio of every pruning stage in place (the weights do not depend on it)."""
    for stage in net.pruning:
        stage.keep_ratio = keep_ratio


def make_batch(config: BenchConfig, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (config.batch_size, *config.patch_size)
    x = torch.randn(config.batch_size, config.input_channels, *config.patch_size, generator=gen)
    y = torch.randint(0, config.num_classes, shape, generator=gen)
    return x.to(device), y.to(device)


class Runner:
    """One network with its AdamW optimizer; ``train_step`` and ``infer_step`` are what gets timed.

    ``train_step``: forward in train mode, cross-entropy on the labels plus ``guidance_weight`` x the STP
    scorers' foreground guidance (as the SCD trainers train; nothing for a dense net), backward, AdamW step.
    ``infer_step``: forward in eval mode under ``torch.inference_mode``.
    """

    def __init__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                 guidance_weight: float = 1.0) -> None:
        self.net, self.x, self.y, self.device = net, x, y, device
        self.guidance_weight = guidance_weight
        self.optimizer = torch.optim.AdamW(net.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.05)

    def train_step(self) -> None:
        self.net.train()
        with autocast(self.device):
            loss = F.cross_entropy(self.net(self.x), self.y)
            if self.guidance_weight and self.net.scorer_logits:
                loss = loss + self.guidance_weight * self.net.guidance_loss(self.y > 0)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()

    def infer_step(self) -> None:
        self.net.eval()
        with torch.inference_mode(), autocast(self.device):
            self.net(self.x)


def summarize(seconds: Sequence[float], batch_size: int) -> dict[str, float]:
    """Median seconds per step, its interquartile range relative to the median, and patches/s."""
    median = statistics.median(seconds)
    if len(seconds) >= 2:
        q1, _, q3 = statistics.quantiles(seconds, n=4, method="inclusive")
    else:
        q1 = q3 = median
    return {"median_s": median, "iqr_rel": (q3 - q1) / median, "patches_per_s": batch_size / median, "n": len(seconds)}


def config_flops(config: BenchConfig, keep_ratio: float | None, training: bool) -> int:
    """FLOPs of one forward (eval mode) or one training forward + backward of the config's network.

    Built on the meta device, which runs no arithmetic, so counting ViT-B at 96^3 costs milliseconds.
    """
    with torch.device("meta"):
        net = SCDNet(**config.network_kwargs(keep_ratio))
    return count_flops(net, (config.batch_size, config.input_channels, *config.patch_size), training=training)


def _current_rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """This process's peak RSS (VmHWM).

    Not ``getrusage(RUSAGE_SELF).ru_maxrss``: Linux carries that over from before ``execve``, so a
    spawned child reports the parent's peak (the benchmark process's, with both networks in it)
    and every network measured the same. VmHWM belongs to the current address space only.
    """
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # reported in kB
    raise RuntimeError("/proc/self/status has no VmHWM line; peak RSS cannot be measured on this system.")


def _reset_peak_rss() -> bool:
    """Set this process's VmHWM back to its current RSS (Linux >= 4.0: ``5`` to ``/proc/self/clear_refs``)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def _return_free_heap() -> None:
    """Give heap pages that malloc keeps after ``free`` back to the system (glibc only; elsewhere nothing).

    Without it an earlier run's freed memory stays resident, the next run reuses it without its
    RSS growing, and that run's peak above its start reads too low.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakMemory:
    """Peak memory of one stretch of work in this process: ``start()`` before it, ``peak()`` after.

    On CPU: the peak resident set size (VmHWM) above the RSS at ``start()``, where ``start()`` first
    collects garbage, returns freed heap pages and resets VmHWM, so that the peak belongs to this
    stretch and not to whatever ran before it in the process. Memory the process still holds from
    before (other networks, their weights) is in the baseline, not in the figure. Where VmHWM cannot
    be reset (not Linux, or /proc/self/clear_refs not writable) the CPU figure is None.
    On CUDA: also ``torch.cuda.max_memory_allocated`` above what was allocated at ``start()``.
    """

    CPU_KIND = "cpu peak RSS above the RSS at the volume's start (VmHWM reset)"
    CUDA_KIND = "cuda max_memory_allocated above the allocation at the volume's start"

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._rss_start: int | None = None
        self._cuda_start = 0

    def start(self) -> None:
        gc.collect()
        _return_free_heap()
        self._rss_start = _current_rss_bytes() if _reset_peak_rss() else None
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._cuda_start = torch.cuda.memory_allocated(self.device)

    def peak(self) -> dict[str, int | None]:
        """``cpu_bytes`` (None where not measurable) and, on CUDA, ``cuda_bytes``."""
        out: dict[str, int | None] = {
            "cpu_bytes": None if self._rss_start is None else max(_peak_rss_bytes() - self._rss_start, 0)}
        if self.device.type == "cuda":
            out["cuda_bytes"] = torch.cuda.max_memory_allocated(self.device) - self._cuda_start
        return out


def _memory_child(config: BenchConfig, keep_ratio: float | None, device_name: str, steps: int, queue: Any) -> None:
    try:
        device = torch.device(device_name)
        configure_backends(device)
        baseline = _current_rss_bytes()
        x, y = make_batch(config, device)
        runner = Runner(build_network(config, keep_ratio, device), x, y, device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            start = torch.cuda.memory_allocated(device)
        for _ in range(steps):
            runner.train_step()
        if device.type == "cuda":
            queue.put({"peak_bytes": torch.cuda.max_memory_allocated(device) - start, "kind": "cuda allocated"})
        else:
            peak = _peak_rss_bytes()
            queue.put({"peak_bytes": peak - baseline, "peak_rss_bytes": peak, "baseline_rss_bytes": baseline,
                       "kind": "cpu peak RSS above the process baseline"})
    except BaseException as error:  # report to the parent instead of dying silently
        queue.put({"error": f"{type(error).__name__}: {error}"})


def peak_training_memory(config: BenchConfig, keep_ratio: float | None, device: torch.device, steps: int = 2
                         ) -> dict[str, Any]:
    """Peak memory of ``steps`` training steps, measured in a fresh spawned process.

    A fresh process makes the CPU peak RSS belong to this network alone. On CPU the number is the
    peak RSS minus the RSS of the process before the network and batch existed (the torch
    import); on CUDA it is ``max_memory_allocated`` above what was allocated before the first step
    (model, batch and, after the first step, optimizer state included from the second step on).
    """
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    child = ctx.Process(target=_memory_child, args=(config, keep_ratio, str(device), steps, queue))
    child.start()
    while True:  # a child killed (e.g. out of memory) puts nothing: do not wait for it forever
        try:
            result = queue.get(timeout=5)
            break
        except Empty:
            if not child.is_alive():
                result = {"error": f"the measuring process exited with code {child.exitcode} without a result"}
                break
    child.join()
    if "error" in result:
        raise RuntimeError(f"memory measurement for keep_ratio={keep_ratio} failed: {result['error']}")
    return result
