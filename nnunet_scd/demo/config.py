"""The demo's two settings (default and ``--quick``): dataset, trainers and training budget.

Both use the same phantom dataset, so ``--quick`` and the default share generation and
preprocessing; each budget has its own trainer classes (and so its own results folders).
"""

from __future__ import annotations

from dataclasses import dataclass

from nnunet_scd.trainers.recipe import LENGTHS, Length

__all__ = ["DEFAULT", "QUICK", "DemoConfig"]


@dataclass(frozen=True)
class DemoConfig:
    """Everything one demo run needs to know besides the work folder."""

    name: str
    scd_trainer: str
    dense_trainer: str
    stock_trainer: str
    budget: Length  # the trainers' length (SCD, dense UNETR and stock nnU-Net get the same)
    dataset_id: int = 990
    dataset_name: str = "SCDPhantom"
    num_cases: int = 12
    # Small volumes keep a CPU step short: nnU-Net plans a [28, 56, 56] patch for these, which the
    # ViT trainers tokenise as 14 x 7 x 7 = 686 tokens of 2 x 8 x 8 voxels.
    shape_zyx: tuple[int, int, int] = (24, 48, 48)
    seed: int = 0  # of the phantoms; training seeds are the demo's --seeds
    organ_contrast: float = 1.0  # of the phantoms (standard intensities)
    configuration: str = "3d_fullres"
    fold: int = 0

    @property
    def trainers(self) -> dict[str, str]:
        """Display name -> trainer class name: sparse, its dense twin, stock nnU-Net."""
        return {"SCD": self.scd_trainer, "dense UNETR": self.dense_trainer, "nnU-Net": self.stock_trainer}


DEFAULT = DemoConfig(
    name="default",
    scd_trainer="nnUNetTrainerSCD_Ti_demo",
    dense_trainer="nnUNetTrainerUNETR_Ti_demo",
    stock_trainer="nnUNetTrainer_demo",
    budget=LENGTHS["demo"],
)
QUICK = DemoConfig(
    name="quick",
    scd_trainer="nnUNetTrainerSCD_Ti_demoQuick",
    dense_trainer="nnUNetTrainerUNETR_Ti_demoQuick",
    stock_trainer="nnUNetTrainer_demoQuick",
    budget=LENGTHS["demoQuick"],
)
