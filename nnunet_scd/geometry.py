"""The one table of network geometry: ViT sizes, the paper's benchmark settings and the plan presets.

The trainers build their encoder from a row of ``VIT_SIZES``, the SCD planner sizes its token budget
from the same row, the speed bench measures the rows of ``CONFIGS`` and ``nnunet-scd plan --preset``
pins the crops and tokens of ``PRESETS``, which are the bench's paper rows. Pure Python, so the
model package and the tools read it without importing nnU-Net.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

__all__ = ["CONFIGS", "PRESETS", "VIT_SIZES", "BenchConfig", "PaperFigures", "PlanPreset", "ViTSize"]


@dataclass(frozen=True)
class ViTSize:
    """One row of the model-size table: the ViT encoder, its pruning points and the decoder width."""

    embed_dim: int
    depth: int
    num_heads: int
    prune_after: tuple[int, ...]
    feature_size: int = 16
    mlp_ratio: float = 4.0
    drop_path_rate: float = 0.0


VIT_SIZES: dict[str, ViTSize] = {
    # B: the paper's encoder, ViT-B (768 wide, 12 deep, 12 heads), pruning after blocks 3, 6 and 9.
    "B": ViTSize(embed_dim=768, depth=12, num_heads=12, prune_after=(3, 6, 9), drop_path_rate=0.1),
    # Tiny: 192 wide, 6 deep, 4 heads, not a timm size. Small enough to train usefully on two CPU cores (the
    # full-resolution decoder convolutions dominate there, hence the narrow decoder); pruning at about B's
    # relative depths.
    "Tiny": ViTSize(embed_dim=192, depth=6, num_heads=4, prune_after=(2, 3, 5), feature_size=8),
    # Ti: timm's vit_tiny, 192 wide, 12 deep, 3 heads, with B's pruning points and Tiny's decoder: the demo's
    # network. At Tiny's depth the shared decoder is too large a share of a CPU step for pruning to show.
    "Ti": ViTSize(embed_dim=192, depth=12, num_heads=3, prune_after=(3, 6, 9), feature_size=8),
}


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

    @classmethod
    def of_size(cls, name: str, size: ViTSize, patch_size: tuple[int, ...], token_size: tuple[int, ...],
                **settings: Any) -> BenchConfig:
        """A row whose encoder is a row of ``VIT_SIZES`` (its width, depth, heads and pruning points)."""
        return cls(name, patch_size, token_size, size.embed_dim, size.depth, size.num_heads, size.prune_after,
                   **settings)

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


CONFIGS: dict[str, BenchConfig] = {
    # The authors' BTCV run: ViT-B, 96^3 crop, 1 channel, 8^3 tokens (1728), keep 0.1 after blocks 3/6/9.
    "paper-btcv": BenchConfig.of_size("paper-btcv", VIT_SIZES["B"], (96, 96, 96), (8, 8, 8), keep_ratio=0.1,
                                      paper=PaperFigures(gmacs_per_sample=146.6)),
    # The authors' MSD BraTS run: 128^3 crop, 4 channels (3 tumour regions out), 8^3 tokens (4096), keep 0.25.
    "paper-brats": BenchConfig.of_size("paper-brats", VIT_SIZES["B"], (128, 128, 128), (8, 8, 8), keep_ratio=0.25,
                                       input_channels=4, num_classes=3, paper=PaperFigures(gmacs_per_sample=439.4)),
    # The Ti encoder with B's decoder width on a 64^3 crop: a check that finishes in about a minute on 2 CPU cores.
    "quick": BenchConfig.of_size("quick", VIT_SIZES["Ti"], (64, 64, 64), (8, 8, 8)),
    # The network of `nnunet-scd demo` (nnUNetTrainerSCD_Ti_demo and its dense twin): Ti with its narrow decoder, on
    # the [28, 56, 56] patch nnU-Net plans for the demo's phantoms, with the 2 x 8 x 8 tokens the trainers choose for
    # their 2.5 mm slices at 0.8 mm in-plane, nnUNetTrainerSCD's keep 0.25, and the phantoms' 7 organs + background.
    "demo": BenchConfig.of_size("demo", VIT_SIZES["Ti"], (28, 56, 56), (2, 8, 8), keep_ratio=0.25, num_classes=8,
                                feature_size=VIT_SIZES["Ti"].feature_size),
    # For tests only: seconds on a CPU.
    "tiny": BenchConfig("tiny", (16, 16, 16), (4, 4, 4), 32, 4, 2, (1, 2, 3), batch_size=1, num_classes=3,
                        feature_size=4),
}


@dataclass(frozen=True)
class PlanPreset:
    """A fixed 3d_fullres geometry, e.g. a paper's: target spacing (z, y, x; None: nnU-Net's), patch and tokens."""

    name: str
    patch_size: tuple[int, ...]
    token_size: tuple[int, ...]
    target_spacing: tuple[float, ...] | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if len(self.patch_size) != len(self.token_size) or any(
                p % t for p, t in zip(self.patch_size, self.token_size)):
            raise ValueError(f"preset {self.name}: patch {list(self.patch_size)} is not a multiple of the token "
                             f"size {list(self.token_size)}")


# The paper's crops and tokens are the speed bench's rows, so the bench and the plans cannot drift apart.
PRESETS: dict[str, PlanPreset] = {
    "paper-btcv": PlanPreset(
        "paper-btcv", CONFIGS["paper-btcv"].patch_size, CONFIGS["paper-btcv"].token_size,
        target_spacing=(2.0, 1.5, 1.5),
        description="Zhou et al.'s BTCV setting: resampled to 1.5 x 1.5 x 2.0 mm (x, y, z), 96^3 crops, 8^3 tokens",
    ),
    "paper-brats": PlanPreset(
        "paper-brats", CONFIGS["paper-brats"].patch_size, CONFIGS["paper-brats"].token_size,
        description="Zhou et al.'s MSD BraTS setting: nnU-Net's spacing (1 mm isotropic for BraTS), 128^3 crops, "
                    "8^3 tokens",
    ),
}
