"""The convergence study: arms that differ only in token selection, trained until the dense twin plateaus.

Every arm is the Tiny ViT (192 wide, 6 blocks, pruning after blocks 2/3/5) with the same decoder,
recipe (``LENGTHS["converge"]``), phantoms, fold and training seeds; only the rule that picks the kept
tokens changes. Stock nnU-Net runs beside them for scale, with as many iterations as the dense arm's
wall time buys it on 2 idle CPU cores.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ARMS", "CONVERGENCE", "LOW_CONTRAST", "SETTINGS", "Arm", "StudySetting"]


@dataclass(frozen=True)
class Arm:
    """One arm: a display name, its nnU-Net trainer, its keep ratio per stage (None: dense) and its token rule.

    A joint-search arm names its ``search`` trainer and ``budget`` too: the search trains first, ``nnunet-scd slim``
    slices it at the budget into plans of its own, and ``trainer`` (a slim trainer) fine-tunes the sliced subnet.
    """

    name: str
    trainer: str
    keep: float | None
    selection: str
    label_free: bool = True  # False: the arm reads the label to select (the oracle), so it is a bound
    default: bool = False  # the project's default selection at this keep ratio, which other rules must beat
    baseline: bool = False  # one of the three rules (guided, un-guided, random) whose spread says if selection matters
    search: str | None = None
    budget: float | None = None


ARMS: tuple[Arm, ...] = (
    Arm("dense", "nnUNetTrainerUNETR_Tiny_converge", None, "every token kept"),
    Arm("guided", "nnUNetTrainerSCD_Tiny_converge", 0.25, "STP with foreground guidance (the default)",
        default=True, baseline=True),
    Arm("unguided", "nnUNetTrainerSCD_NoGuidance_Tiny_converge", 0.25, "STP trained as in the paper", baseline=True),
    Arm("random", "nnUNetTrainerSCD_RandomPruning_Tiny_converge", 0.25, "uniformly random tokens", baseline=True),
    Arm("oracle", "nnUNetTrainerSCD_Oracle_Tiny_converge", 0.25, "most ground-truth foreground", label_free=False),
    Arm("guided@0.1", "nnUNetTrainerSCD_keep0p1_Tiny_converge", 0.1, "STP with foreground guidance",
        default=True, baseline=True),
    Arm("random@0.1", "nnUNetTrainerSCD_RandomPruning_keep0p1_Tiny_converge", 0.1, "uniformly random tokens",
        baseline=True),
    Arm("unguided@0.1", "nnUNetTrainerSCD_NoGuidance_keep0p1_Tiny_converge", 0.1, "STP trained as in the paper",
        baseline=True),
    Arm("oracle@0.1", "nnUNetTrainerSCD_Oracle_keep0p1_Tiny_converge", 0.1, "most ground-truth foreground",
        label_free=False),
    Arm("nnU-Net", "nnUNetTrainer_converge", None, "stock nnU-Net, the dense arm's wall time"),
    # The scorer designs beside guidance (the scorer issue), at both keep ratios.
    Arm("evenly", "nnUNetTrainerSCD_EvenlySpaced_Tiny_converge", 0.25, "evenly spread subset of the grid"),
    Arm("boundary", "nnUNetTrainerSCD_BoundaryGuidance_Tiny_converge", 0.25, "STP guided to organ surfaces"),
    Arm("context", "nnUNetTrainerSCD_Context_Tiny_converge", 0.25, "guided STP, a quarter kept as even context"),
    Arm("topk", "nnUNetTrainerSCD_TopKTraining_Tiny_converge", 0.25, "guided STP, top-k in training as at inference"),
    Arm("evenly@0.1", "nnUNetTrainerSCD_EvenlySpaced_keep0p1_Tiny_converge", 0.1, "evenly spread subset of the grid"),
    Arm("boundary@0.1", "nnUNetTrainerSCD_BoundaryGuidance_keep0p1_Tiny_converge", 0.1, "STP guided to organ surfaces"),
    Arm("context@0.1", "nnUNetTrainerSCD_Context_keep0p1_Tiny_converge", 0.1,
        "guided STP, a quarter kept as even context"),
    Arm("topk@0.1", "nnUNetTrainerSCD_TopKTraining_keep0p1_Tiny_converge", 0.1,
        "guided STP, top-k in training as at inference"),
    Arm("quota", "nnUNetTrainerSCD_ClassQuota_Tiny_converge", 0.25, "guided STP, half kept as per-class quotas"),
    Arm("quota@0.1", "nnUNetTrainerSCD_ClassQuota_keep0p1_Tiny_converge", 0.1,
        "guided STP, half kept as per-class quotas"),
    # The joint search (ViT-Slim's three dimensions) against the unsearched dense arm, at one FLOP budget.
    Arm("search-channels", "nnUNetTrainerUNETRSlim_Tiny_converge", None,
        "dense UNETR, attention channels and MLP neurons searched, sliced at 0.7, fine-tuned",
        search="nnUNetTrainerUNETRSearch_Tiny_converge", budget=0.7),
    Arm("search-position", "nnUNetTrainerUNETRSlim_Tiny_converge", None,
        "as search-channels, with token masks per grid position",
        search="nnUNetTrainerUNETRSearchPositionTokens_Tiny_converge", budget=0.7),
    Arm("search-rank", "nnUNetTrainerUNETRSlim_Tiny_converge", None,
        "as search-channels, with token masks per rank of the evenly spaced order",
        search="nnUNetTrainerUNETRSearchRankTokens_Tiny_converge", budget=0.7),
)


@dataclass(frozen=True)
class StudySetting:
    """The data and split of a study: phantoms, nnU-Net configuration, fold and the arms' training seeds."""

    name: str
    dataset_id: int
    num_cases: int
    shape_zyx: tuple[int, int, int]
    seeds: tuple[int, ...]
    dataset_name: str = "SCDPhantom"
    seed: int = 0  # of the phantoms
    organ_contrast: float = 1.0  # of the phantoms: 1, the standard intensities; lower, organs that look alike
    configuration: str = "3d_fullres"
    fold: int = 0
    arms: tuple[Arm, ...] = ARMS

    def arm(self, name: str) -> Arm:
        for arm in self.arms:
            if arm.name == name:
                return arm
        raise KeyError(f"no arm {name!r} in study {self.name!r}; arms: {', '.join(a.name for a in self.arms)}")


# 30 phantoms of about 13 x 60 x 60 voxels: nnU-Net plans a [16, 64, 64] patch at 2.0 x 0.79 x 0.79 mm, which the
# trainers cut into 4 x 8 x 8 tokens (256). Fold 0 holds out 6 cases. The small organs stay: the gallbladder has
# 26 voxels on average (12 at least), the aorta 135, the kidneys about 118.
CONVERGENCE = StudySetting(name="convergence", dataset_id=991, num_cases=30, shape_zyx=(13, 60, 60), seeds=(0, 1, 2))

# The same phantoms with the organs' mean intensities pulled to 30 % of their spread: neighbours such as kidney and
# spleen, aorta and vena cava, or gallbladder and liver then differ by about one noise sd, so a voxel's class must
# come from where it is and what surrounds it, which is what the encoder's deep blocks add. In the convergence
# setting the arms' Dice did not depend on which tokens were kept; this one asks whether it does once the decoder
# cannot segment from local intensity alone.
LOW_CONTRAST = StudySetting(name="low-contrast", dataset_id=992, num_cases=30, shape_zyx=(13, 60, 60),
                            seeds=(0, 1, 2), organ_contrast=0.3)

SETTINGS: dict[str, StudySetting] = {s.name: s for s in (CONVERGENCE, LOW_CONTRAST)}
