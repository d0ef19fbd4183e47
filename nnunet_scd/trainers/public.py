"""The public trainers: SCD, its dense twin, the MIM baseline, random pruning and the Zhou2023 reproductions.

Each has a ``_Tiny`` form (``geometry.VIT_SIZES["Tiny"]``) that trains on a CPU. The joint search and
slim trainers are in ``search``, the ablations in ``ablations``, and the shorter CPU lengths of all of
them in ``catalog``.
"""

from __future__ import annotations

from nnunet_scd.trainers.base import ViTTrainer
from nnunet_scd.trainers.recipe import ZHOU2023

__all__ = [
    "nnUNetTrainerSCD",
    "nnUNetTrainerSCD_MIM",
    "nnUNetTrainerSCD_MIM_Tiny",
    "nnUNetTrainerSCD_RandomPruning",
    "nnUNetTrainerSCD_RandomPruning_Tiny",
    "nnUNetTrainerSCD_Tiny",
    "nnUNetTrainerSCD_Zhou2023",
    "nnUNetTrainerSCD_Zhou2023BraTS",
    "nnUNetTrainerSCD_Zhou2023BraTS_Tiny",
    "nnUNetTrainerSCD_Zhou2023Recipe",
    "nnUNetTrainerSCD_Zhou2023Recipe_Tiny",
    "nnUNetTrainerSCD_Zhou2023_Tiny",
    "nnUNetTrainerUNETR",
    "nnUNetTrainerUNETR_Tiny",
]


class nnUNetTrainerSCD(ViTTrainer):
    """SCD, our recommended recipe: ViT-B, 8^3 tokens where the plan allows, keep 0.25 after blocks 3/6/9,
    Multi-layer Token Assembly, UNETR decoder, guided STP; AdamW with warm-up then poly decay (``recipe.OURS``)."""

    keep_ratios = (0.25, 0.25, 0.25)


class nnUNetTrainerUNETR(ViTTrainer):
    """Dense UNETR baseline: SCD's ViT-B encoder and decoder and its recipe, no pruning."""


class nnUNetTrainerSCD_MIM(nnUNetTrainerSCD):
    """The paper's MIM baseline instead of MTA: the decoder sees only the final kept tokens, with one learned mask
    token at every pruned position, through the bottleneck and every skip (SCDNet gives the mask baseline shared
    skips, so no pruned token reaches the output)."""

    completion = "mask"


class nnUNetTrainerSCD_RandomPruning(nnUNetTrainerSCD):
    """The ablation of STP: the same network and keep ratios, tokens drawn uniformly at random (seeded at inference)."""

    token_selection = "random"


class nnUNetTrainerSCD_Zhou2023Recipe(nnUNetTrainerSCD):
    """Our network with the SCD authors' training recipe (``recipe.ZHOU2023``) and drop path 0.1 instead of ours."""

    recipe = ZHOU2023
    drop_path_rate = 0.1


class nnUNetTrainerSCD_Zhou2023(nnUNetTrainerSCD_Zhou2023Recipe):
    """Reproduces the SCD authors' published BTCV run (Zhou et al., IPMI 2023; TokenSparse-for-MedSeg README).

    Network: ViT-B with 8^3 tokens where the plan allows, keep 0.1 after blocks 3/6/9, MTA (1 block, width 768),
    the completed tokens fed to every skip, the x8 decoder (average-pooled bottleneck, four up-blocks), and STP
    trained only by its straight-through gradient (no foreground guidance). Training: their recipe
    (``recipe.ZHOU2023``). Kept from nnU-Net, so the folds compare with stock nnU-Net: preprocessing, patch,
    augmentation, DiceCE loss, AMP and 1000 epochs x 250 iterations (their 5000 epochs are not nnU-Net epochs).
    """

    keep_ratios = (0.1, 0.1, 0.1)
    completion_full_width = True
    skip_assembly = "shared"
    pooled_bottleneck = True
    guidance_weight = 0.0


class nnUNetTrainerSCD_Zhou2023BraTS(nnUNetTrainerSCD_Zhou2023):
    """The authors' MSD BraTS run: keep 0.25 per stage and a warm-up of 13 of 533 epochs; the rest as their BTCV run."""

    keep_ratios = (0.25, 0.25, 0.25)
    recipe = ZHOU2023.with_optimizer(warmup_fraction=13 / 533)


# ---------------------------------------------------------------------- the same, sized for a CPU
class nnUNetTrainerSCD_Tiny(nnUNetTrainerSCD):
    vit_size = "Tiny"


class nnUNetTrainerUNETR_Tiny(nnUNetTrainerUNETR):
    vit_size = "Tiny"


class nnUNetTrainerSCD_MIM_Tiny(nnUNetTrainerSCD_MIM):
    vit_size = "Tiny"


class nnUNetTrainerSCD_RandomPruning_Tiny(nnUNetTrainerSCD_RandomPruning):
    vit_size = "Tiny"


class nnUNetTrainerSCD_Zhou2023Recipe_Tiny(nnUNetTrainerSCD_Zhou2023Recipe):
    vit_size = "Tiny"


class nnUNetTrainerSCD_Zhou2023_Tiny(nnUNetTrainerSCD_Zhou2023):
    vit_size = "Tiny"


class nnUNetTrainerSCD_Zhou2023BraTS_Tiny(nnUNetTrainerSCD_Zhou2023BraTS):
    vit_size = "Tiny"
