"""Benchmark configurations: one row per setting, so every command and test names its row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class PaperFigures:
    """What the SCD paper and its authors' README report for one setting (Zhou et al., IPMI 2023).

    The speed-ups are the paper's best case ("up to"), measured on an A100; the GMACs are the
    authors' expected cost of one sample's forward pass, with their 768-wide completion and x8 decoder.
    """

    train_speedup: float = 2.2
    infer_speedup: float = 1.61
    gmacs_per_sample: float | None = None


@dataclass(frozen=True)
class BenchConfig:
    """Network and batch for one benchmark; ``keep_ratio`` applies at every pruning stage."""

    name: str
    patch_size: tuple[int, ...]
    token_size: tuple[int, ...]
    embed_dim: int
    depth: int
    num_heads: int
    prune_after: tuple[int, ...]
    keep_ratio: float = 0.25
    batch_size: int = 2
    input_channels: int = 1
    num_classes: int = 14
    feature_size: int = 16
    completion: str = "mta"
    extra: dict[str, Any] = field(default_factory=dict)  # further SCDNet keywords, e.g. completion_dim
    paper: PaperFigures | None = None  # what Zhou et al. report for this setting, shown beside ours

    def network_kwargs(self, keep_ratio: float | None) -> dict[str, Any]:
        """SCDNet keywords; ``keep_ratio=None`` gives the dense UNETR with the same ViT."""
        return dict(
            input_channels=self.input_channels,
            num_classes=self.num_classes,
            patch_size=self.patch_size,
            token_size=self.token_size,
            embed_dim=self.embed_dim,
            depth=self.depth,
            num_heads=self.num_heads,
            prune_after=self.prune_after,
            keep_ratios=None if keep_ratio is None else (keep_ratio,) * len(self.prune_after),
            completion=self.completion,
            feature_size=self.feature_size,
            **self.extra,
        )

    def with_extra(self, **extra: Any) -> BenchConfig:
        return replace(self, extra={**self.extra, **extra})

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# Before paper-btcv and paper-brats existed, "paper" was the BTCV geometry at keep 0.25; it now names the
# authors' BTCV run (keep 0.1). `--config paper-btcv --keep 0.25` gives the old row.
ALIASES = {"paper": "paper-btcv"}


CONFIGS: dict[str, BenchConfig] = {
    # The authors' BTCV run: ViT-B, 96^3 crop, 1 channel, 8^3 tokens (1728), keep 0.1 after blocks 3/6/9.
    "paper-btcv": BenchConfig("paper-btcv", (96, 96, 96), (8, 8, 8), 768, 12, 12, (3, 6, 9), keep_ratio=0.1,
                              paper=PaperFigures(gmacs_per_sample=146.6)),
    # The authors' MSD BraTS run: 128^3 crop, 4 channels (3 tumour regions out), 8^3 tokens (4096), keep 0.25.
    "paper-brats": BenchConfig("paper-brats", (128, 128, 128), (8, 8, 8), 768, 12, 12, (3, 6, 9), keep_ratio=0.25,
                               input_channels=4, num_classes=3, paper=PaperFigures(gmacs_per_sample=439.4)),
    # Same schedule, narrower and smaller: a check that finishes in about a minute on 2 CPU cores.
    "quick": BenchConfig("quick", (64, 64, 64), (8, 8, 8), 192, 12, 3, (3, 6, 9)),
    # For tests only: seconds on a CPU.
    "tiny": BenchConfig("tiny", (16, 16, 16), (4, 4, 4), 32, 4, 2, (1, 2, 3), batch_size=1, num_classes=3,
                        feature_size=4),
}
