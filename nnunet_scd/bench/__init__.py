"""``nnunet-scd bench``: interleaved timing, FLOPs and memory of SCDNet against the dense UNETR."""

from nnunet_scd.bench.configs import CONFIGS, BenchConfig

__all__ = ["CONFIGS", "BenchConfig"]
