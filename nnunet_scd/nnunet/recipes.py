"""Training recipes as a table: how long a trainer trains, at what learning rate, and with what mirroring.

A trainer variant names one row (``recipe = RECIPES["cpuShort"]``) and its class name ends in the
row's name (``nnUNetTrainerSCDSearch_Tiny_cpuShort``), so changing a length changes one row here
and no name anywhere. The network never depends on the recipe, so prediction rebuilds the same
network whatever row trained it. Why each short row is what it is: README, "Trainers".
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

__all__ = ["RECIPES", "Recipe", "RecipeTraining"]


@dataclass(frozen=True)
class Recipe:
    """One row of the recipe table.

    Args:
        epochs: nnU-Net epochs.
        iterations_per_epoch: training iterations per epoch.
        val_iterations_per_epoch: validation iterations per epoch.
        checkpoint_every: epochs between checkpoints (1: a killed run loses at most one epoch).
        lr: peak learning rate; None keeps the trainer's own optimiser recipe (3e-4, or the authors'
            per-256-samples rate of the Zhou2023 trainers).
        warmup_fraction: share of the epochs spent warming up; None keeps the trainer's.
        mirroring: mirroring as nnU-Net does it (augmentation and test-time); False as nnU-Net's
            ``nnUNetTrainerNoMirroring``, for 8x fewer forward passes in validation and prediction.
        mask_lr_scale: search trainers only: the masks' learning rate as a multiple of the weights'.
    """

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    checkpoint_every: int = 50
    lr: float | None = None
    warmup_fraction: float | None = None
    mirroring: bool = True
    mask_lr_scale: float = 1.0


# Short runs on CPU: lr 1e-3 after a warm-up of 1/8 of the epochs (the shipped 3e-4 barely moves a
# Tiny network in a few hundred iterations), a checkpoint every epoch, no mirroring.
_CPU = Recipe(checkpoint_every=1, lr=1e-3, warmup_fraction=0.125, mirroring=False)
_CPU_SHORT = replace(_CPU, epochs=12, iterations_per_epoch=25, val_iterations_per_epoch=5, mask_lr_scale=10.0)

RECIPES: dict[str, Recipe] = {
    # nnU-Net's length: 1000 epochs of 250 iterations.
    "default": Recipe(),
    # nnU-Net's own shortening (nnUNetTrainer_5epochs), with a checkpoint every epoch.
    "5epochs": Recipe(epochs=5, checkpoint_every=1),
    # The CPU smoke test of the end-to-end test: the shortest length at which the dense Tiny UNETR learned
    # the phantoms in every run.
    "cpuSmoke": replace(_CPU, epochs=10, iterations_per_epoch=40, val_iterations_per_epoch=5),
    # The README's STP, reproduction and completion studies: the shipped lr and warm-up share, 360 iterations.
    "cpuStudy": Recipe(epochs=12, iterations_per_epoch=30, val_iterations_per_epoch=5, mirroring=False),
    # One stage of the CPU search-then-fine-tune walk-through; the masks at 10x the weights' lr, because in
    # 300 Adam steps at 1e-3 a mask cannot travel far enough from 1 to separate the channels.
    "cpuShort": _CPU_SHORT,
    # The unsliced reference of that walk-through: search plus fine-tuning, twice cpuShort's epochs.
    "cpuShort2x": replace(_CPU_SHORT, epochs=2 * _CPU_SHORT.epochs),
    # The convergence study (docs/studies): 3000 iterations, long enough that the dense Tiny UNETR's validation Dice
    # plateaus on the study's phantoms (2000 left it 2.7 points short), about 10 minutes on 2 CPU cores.
    "converge": replace(_CPU, epochs=30, iterations_per_epoch=100, val_iterations_per_epoch=10, checkpoint_every=5),
    # Stock nnU-Net in that study (its own optimiser), with as many iterations as the dense Tiny UNETR's time buys it:
    # its training step took 4.9x the dense one's (the study's plans, one process, interleaved, one CPU thread).
    "convergeStock": Recipe(epochs=30, iterations_per_epoch=20, val_iterations_per_epoch=10, checkpoint_every=5,
                            mirroring=False),
}


class RecipeTraining:
    """Mixin for an nnU-Net trainer: length, checkpoint interval and mirroring from the class's ``recipe``.

    The learning rate, warm-up and mask lr of a row are read by the trainers that have them
    (``nnUNetTrainerSCD``, the search trainers); a stock nnU-Net trainer keeps its own.
    """

    recipe: Recipe = RECIPES["default"]

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):  # noqa: B008 - nnU-Net's signature and default
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.recipe.epochs
        self.num_iterations_per_epoch = self.recipe.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.recipe.val_iterations_per_epoch
        self.save_every = self.recipe.checkpoint_every

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):  # noqa: ANN201 - nnU-Net's signature
        configured = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        rotation, dummy_2d, initial_patch_size, mirror_axes = configured
        if not self.recipe.mirroring:
            self.inference_allowed_mirroring_axes = None
            mirror_axes = None
        return rotation, dummy_2d, initial_patch_size, mirror_axes
