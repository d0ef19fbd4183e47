"""Training recipes: how long a trainer trains, with which optimiser, and the table of shorter lengths.

A trainer reads one ``Recipe`` (its class attribute ``recipe``) and nothing else for its length,
mirroring and optimiser, so each of them, the learning rate included, has one source. The shorter
variants (``..._Tiny_converge``, ``..._cpuShort``) apply one row of ``LENGTHS`` to their base's
recipe, and their class name ends in the row's name: changing a length changes one row here and no
name anywhere. The network never depends on the recipe, so prediction rebuilds the same network
whatever row trained it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

__all__ = ["CPU_OPTIMIZER", "LENGTHS", "OURS", "STOCK", "ZHOU2023", "AdamW", "Length", "Recipe"]


@dataclass(frozen=True)
class AdamW:
    """AdamW with a linear warm-up, then poly or cosine decay to zero: the ViT trainers' optimiser.

    Args:
        lr: peak learning rate; for batches of ``lr_batch`` samples if that is set.
        lr_batch: None: ``lr`` as it is. Otherwise ``lr`` is scaled linearly to the plans' batch size
            (``lr * batch / lr_batch``), as the SCD authors give theirs per 256 samples.
        betas, weight_decay: AdamW's; norms, biases and embeddings get no weight decay.
        layer_decay: layer-wise lr decay (``optim.adamw_param_groups``); None: one rate everywhere.
        schedule: after the warm-up, ``"poly"`` (nnU-Net, Primus) or ``"cosine"``.
        warmup_fraction: share of the epochs spent warming up.
        grad_clip: gradient-norm clipping; None: none.
        mask_lr_scale: search trainers only: the masks' learning rate as a multiple of the weights'.
    """

    lr: float = 3e-4
    lr_batch: int | None = None
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.05
    layer_decay: float | None = None
    schedule: str = "poly"
    warmup_fraction: float = 0.05  # 50 of 1000 epochs, as Primus
    grad_clip: float | None = 1.0
    mask_lr_scale: float = 1.0

    def lr_for(self, batch_size: int) -> float:
        """The peak learning rate at this batch size."""
        return self.lr if self.lr_batch is None else self.lr * batch_size / self.lr_batch


@dataclass(frozen=True)
class Recipe:
    """How a trainer trains.

    Args:
        epochs, iterations_per_epoch, val_iterations_per_epoch: nnU-Net's training length.
        checkpoint_every: epochs between checkpoints (1: a killed run loses at most one epoch).
        mirroring: mirroring as nnU-Net does it (augmentation and test-time); False as nnU-Net's
            ``nnUNetTrainerNoMirroring``, for 8x fewer forward passes in validation and prediction.
        final_validation: False skips nnU-Net's end-of-training validation, for runs that predict
            and evaluate by themselves (the demo).
        optimizer: the ViT trainers' AdamW; None keeps nnU-Net's own (SGD, deep supervision).
    """

    epochs: int = 1000
    iterations_per_epoch: int = 250
    val_iterations_per_epoch: int = 50
    checkpoint_every: int = 50
    mirroring: bool = True
    final_validation: bool = True
    optimizer: AdamW | None = AdamW()

    def with_optimizer(self, **changes: Any) -> Recipe:
        """This recipe with some of its optimiser's settings changed."""
        if self.optimizer is None:
            raise ValueError("this recipe keeps nnU-Net's own optimiser; there are no AdamW settings to change")
        return replace(self, optimizer=replace(self.optimizer, **changes))


# Our recommended recipe: AdamW (0.9, 0.95), weight decay 0.05, lr 3e-4, 5% warm-up then poly decay, clipping at 1.
OURS = Recipe()
# The SCD authors' recipe (Zhou et al., IPMI 2023; TokenSparse-for-MedSeg README): lr 1.72e-2 per 256 samples
# (1.3e-4 at nnU-Net's batch 2), layer-wise lr decay 0.75, warm-up over 1% of training (their 50 of 5000 epochs)
# then cosine decay, no gradient clipping. nnU-Net keeps the training length.
ZHOU2023 = OURS.with_optimizer(lr=1.72e-2, lr_batch=256, layer_decay=0.75, schedule="cosine", warmup_fraction=0.01,
                               grad_clip=None)
# Stock nnU-Net: its length and its own optimiser.
STOCK = Recipe(optimizer=None)
# Short runs on CPU: lr 1e-3 after a warm-up of 1/8 of the epochs (the shipped 3e-4 barely moves a Tiny network in a
# few hundred iterations).
CPU_OPTIMIZER = {"lr": 1e-3, "lr_batch": None, "warmup_fraction": 0.125}


@dataclass(frozen=True)
class Length:
    """One row of the length table: a shorter run, and what it changes in the recipe it shortens.

    Args:
        epochs, iterations_per_epoch, val_iterations_per_epoch, checkpoint_every, mirroring,
            final_validation: replace the recipe's.
        cpu_optimizer: True gives the recipe's optimiser ``CPU_OPTIMIZER``'s lr and warm-up; False
            keeps the trainer's own.
        mask_lr_scale: set: the search masks' learning-rate multiple.
    """

    epochs: int
    iterations_per_epoch: int
    val_iterations_per_epoch: int
    checkpoint_every: int = 1
    mirroring: bool = False
    final_validation: bool = True
    cpu_optimizer: bool = False
    mask_lr_scale: float | None = None

    @property
    def train_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def apply(self, recipe: Recipe) -> Recipe:
        """``recipe`` at this length; a recipe without AdamW (stock nnU-Net) keeps its optimiser."""
        shortened = replace(recipe, epochs=self.epochs, iterations_per_epoch=self.iterations_per_epoch,
                            val_iterations_per_epoch=self.val_iterations_per_epoch,
                            checkpoint_every=self.checkpoint_every, mirroring=self.mirroring,
                            final_validation=self.final_validation)
        if shortened.optimizer is None:
            return shortened
        changes = {**(CPU_OPTIMIZER if self.cpu_optimizer else {}),
                   **({"mask_lr_scale": self.mask_lr_scale} if self.mask_lr_scale is not None else {})}
        return shortened.with_optimizer(**changes) if changes else shortened


LENGTHS: dict[str, Length] = {
    # nnU-Net's own shortening (nnUNetTrainer_5epochs), with a checkpoint every epoch.
    "5epochs": Length(epochs=5, iterations_per_epoch=250, val_iterations_per_epoch=50, mirroring=True),
    # The CPU smoke test of the end-to-end test: the shortest length at which the dense Tiny UNETR learned the
    # phantoms in every run.
    "cpuSmoke": Length(epochs=10, iterations_per_epoch=40, val_iterations_per_epoch=5, cpu_optimizer=True),
    # The STP, reproduction and completion studies: the trainer's own lr and warm-up share, 360 iterations.
    "cpuStudy": Length(epochs=12, iterations_per_epoch=30, val_iterations_per_epoch=5, checkpoint_every=50),
    # One stage of the CPU search-then-fine-tune walk-through; the masks at 10x the weights' lr, because in 300 Adam
    # steps at 1e-3 a mask cannot travel far enough from 1 to separate the channels.
    "cpuShort": Length(epochs=12, iterations_per_epoch=25, val_iterations_per_epoch=5, cpu_optimizer=True,
                       mask_lr_scale=10.0),
    # The unsliced reference of that walk-through: search plus fine-tuning, twice cpuShort's epochs.
    "cpuShort2x": Length(epochs=24, iterations_per_epoch=25, val_iterations_per_epoch=5, cpu_optimizer=True,
                         mask_lr_scale=10.0),
    # The convergence study (docs/studies): 3000 iterations, long enough that the dense Tiny UNETR's validation Dice
    # plateaus on the study's phantoms (2000 left it 2.7 points short).
    "converge": Length(epochs=30, iterations_per_epoch=100, val_iterations_per_epoch=10, checkpoint_every=5,
                       cpu_optimizer=True),
    # Stock nnU-Net in that study, with as many iterations as the dense Tiny UNETR's time buys it: its training step
    # took 4.9x the dense one's (the study's plans, one process, interleaved, one CPU thread).
    "convergeStock": Length(epochs=30, iterations_per_epoch=20, val_iterations_per_epoch=10, checkpoint_every=5),
    # `nnunet-scd demo` and `demo --quick`: cpuShort's optimiser at the demo's length. The demo predicts and
    # evaluates the validation cases itself, so nnU-Net's final validation is skipped.
    "demo": Length(epochs=12, iterations_per_epoch=25, val_iterations_per_epoch=2, final_validation=False,
                   cpu_optimizer=True, mask_lr_scale=10.0),
    "demoQuick": Length(epochs=2, iterations_per_epoch=10, val_iterations_per_epoch=1, final_validation=False,
                        cpu_optimizer=True, mask_lr_scale=10.0),
}
