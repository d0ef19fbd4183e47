"""Ablations of SCD: each changes one thing, so its Dice against ``nnUNetTrainerSCD`` says what that thing is worth.

- token selection: the oracle bound and the evenly spaced no-learning baseline (random pruning, the
  ablation that tells whether STP learns, is public: ``public.nnUNetTrainerSCD_RandomPruning``);
- the scorer's training: no guidance (the paper's STP), boundary guidance, class-balanced quotas, a
  reserved context budget, top-k in training as at inference;
- the network, against the authors': shared skips, full-width completion;
- the keep ratio.
"""

from __future__ import annotations

from nnunet_scd.trainers.label_channel import dataset_with_label_channel, with_label_channel
from nnunet_scd.trainers.public import nnUNetTrainerSCD

__all__ = [
    "nnUNetTrainerSCD_BoundaryGuidance",
    "nnUNetTrainerSCD_BoundaryGuidance_Tiny",
    "nnUNetTrainerSCD_ClassQuota",
    "nnUNetTrainerSCD_ClassQuota_Tiny",
    "nnUNetTrainerSCD_Context",
    "nnUNetTrainerSCD_Context_Tiny",
    "nnUNetTrainerSCD_EvenlySpaced",
    "nnUNetTrainerSCD_EvenlySpaced_Tiny",
    "nnUNetTrainerSCD_FullWidthCompletion",
    "nnUNetTrainerSCD_FullWidthCompletion_Tiny",
    "nnUNetTrainerSCD_NoGuidance",
    "nnUNetTrainerSCD_NoGuidance_Tiny",
    "nnUNetTrainerSCD_Oracle",
    "nnUNetTrainerSCD_Oracle_Tiny",
    "nnUNetTrainerSCD_SharedSkips",
    "nnUNetTrainerSCD_SharedSkips_Tiny",
    "nnUNetTrainerSCD_TopKTraining",
    "nnUNetTrainerSCD_TopKTraining_Tiny",
    "nnUNetTrainerSCD_keep0p1",
    "nnUNetTrainerSCD_keep0p5",
    "nnUNetTrainerSCD_keep0p5_Tiny",
]


class nnUNetTrainerSCD_Oracle(nnUNetTrainerSCD):
    """The bound of token selection: the same network keeps the tokens that hold the most ground-truth foreground.

    It reads the label, in training and in nnU-Net's validation, as an extra input channel that only the selection
    sees (``label_channel``), so it cannot predict unlabelled images. Its Dice bounds what a scorer could reach, and
    includes a leak: MTA's per-source embeddings let the decoder read "kept late" as "foreground".
    """

    token_selection = "oracle"

    def train_step(self, batch: dict) -> dict:
        return super().train_step(with_label_channel(batch, self.label_manager))

    def validation_step(self, batch: dict) -> dict:
        return super().validation_step(with_label_channel(batch, self.label_manager))

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        self.dataset_class = dataset_with_label_channel(self.dataset_class, self.label_manager)
        super().perform_actual_validation(save_probabilities)


class nnUNetTrainerSCD_EvenlySpaced(nnUNetTrainerSCD):
    """The no-learning baseline: an evenly spread subset of the token grid at every stage (``stp.spread_priority``),
    the same in training, at inference and in every sliding-window tile."""

    token_selection = "evenly"


class nnUNetTrainerSCD_NoGuidance(nnUNetTrainerSCD):
    """STP as the paper trains it: the scorer learns only from the task loss's straight-through gradient."""

    guidance_weight = 0.0


class nnUNetTrainerSCD_BoundaryGuidance(nnUNetTrainerSCD):
    """The scorers learn to rank tokens on an organ's surface (foreground and background in one token) above organ
    interiors above background, instead of "holds any foreground"."""

    guidance_target = "boundary"


class nnUNetTrainerSCD_Context(nnUNetTrainerSCD):
    """A reserved context budget: a quarter of each stage's kept tokens is evenly spread; the scorer picks the rest."""

    context_fraction = 0.25


class nnUNetTrainerSCD_TopKTraining(nnUNetTrainerSCD):
    """The same selection rule in training as at inference: the scorer's deterministic top-k, without Gumbel noise
    (the straight-through softmax mask stays)."""

    sampler = "topk"


class nnUNetTrainerSCD_ClassQuota(nnUNetTrainerSCD):
    """Class-balanced quotas: the scorers also predict per-class presence, and half of each stage's kept tokens is
    shared among the classes predicted present (each its most probable tokens) before guidance ranks the rest.
    Label targets only (not nnU-Net regions)."""

    class_quota = 0.5


class nnUNetTrainerSCD_SharedSkips(nnUNetTrainerSCD):
    """The completed tokens feed every decoder skip, as in the authors' code, instead of our per-depth skips."""

    skip_assembly = "shared"


class nnUNetTrainerSCD_FullWidthCompletion(nnUNetTrainerSCD):
    """The completion block at the encoder's width and heads (768 wide, 12 heads for ViT-B), as in the authors'
    published runs, instead of SCDNet's quarter-width default."""

    completion_full_width = True


class nnUNetTrainerSCD_keep0p5(nnUNetTrainerSCD):
    keep_ratios = (0.5, 0.5, 0.5)


class nnUNetTrainerSCD_keep0p1(nnUNetTrainerSCD):
    keep_ratios = (0.1, 0.1, 0.1)


# ---------------------------------------------------------------------- the same, sized for a CPU
class nnUNetTrainerSCD_Oracle_Tiny(nnUNetTrainerSCD_Oracle):
    vit_size = "Tiny"


class nnUNetTrainerSCD_EvenlySpaced_Tiny(nnUNetTrainerSCD_EvenlySpaced):
    vit_size = "Tiny"


class nnUNetTrainerSCD_NoGuidance_Tiny(nnUNetTrainerSCD_NoGuidance):
    vit_size = "Tiny"


class nnUNetTrainerSCD_BoundaryGuidance_Tiny(nnUNetTrainerSCD_BoundaryGuidance):
    vit_size = "Tiny"


class nnUNetTrainerSCD_Context_Tiny(nnUNetTrainerSCD_Context):
    vit_size = "Tiny"


class nnUNetTrainerSCD_TopKTraining_Tiny(nnUNetTrainerSCD_TopKTraining):
    vit_size = "Tiny"


class nnUNetTrainerSCD_ClassQuota_Tiny(nnUNetTrainerSCD_ClassQuota):
    vit_size = "Tiny"


class nnUNetTrainerSCD_SharedSkips_Tiny(nnUNetTrainerSCD_SharedSkips):
    vit_size = "Tiny"


class nnUNetTrainerSCD_FullWidthCompletion_Tiny(nnUNetTrainerSCD_FullWidthCompletion):
    vit_size = "Tiny"


class nnUNetTrainerSCD_keep0p5_Tiny(nnUNetTrainerSCD_keep0p5):
    vit_size = "Tiny"
