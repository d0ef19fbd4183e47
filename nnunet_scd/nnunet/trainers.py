"""nnU-Net trainers for SCDNet (token-sparse UNETR) and its dense UNETR baseline.

nnU-Net finds a trainer by class name, at training and again at prediction time, and rebuilds
the network with ``build_network_architecture`` from the trainer class and the results folder's
plans.json. So everything the network needs is either a class attribute of the trainer (model
size, keep ratios, completion) or recorded in the plans by ``token_config`` (token size and
patch). Variants are small subclasses whose name says the one thing they change, as in
nnU-Net's ``variants/`` folder: ``nnUNetTrainer<model>[<method>][_<variant>][_<size>][_<recipe>]``.
Model sizes live in the ``VIT_SIZES`` table and training lengths in ``recipes.RECIPES``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn

from nnunet_scd.atomic import atomic_target
from nnunet_scd.model.guidance import class_presence, enrichment, enrichment_counts, token_foreground
from nnunet_scd.model.scd import SCDNet
from nnunet_scd.nnunet.checkpoints import CorruptCheckpointError, check_checkpoint_readable, fallback_checkpoints
from nnunet_scd.nnunet.epoch_timing import EpochTimeBreakdown
from nnunet_scd.nnunet.label_channel import dataset_with_label_channel, with_label_channel
from nnunet_scd.nnunet.optim import WarmupCosineLRScheduler, WarmupPolyLRScheduler, adamw_param_groups
from nnunet_scd.nnunet.recipes import RECIPES, Recipe, RecipeTraining
from nnunet_scd.nnunet.seeding import SeededTraining
from nnunet_scd.nnunet.token_config import TokenConfig, apply_token_config, resolve_token_config
from nnunet_scd.nnunet.token_diagnostics import (
    class_masks,
    class_names,
    foreground_masks,
    plot_token_selection,
    scorer_grad_ratios,
)
from nnunet_scd.unwrap import unwrap

_CUDA = torch.device("cuda")  # nnU-Net's default device for trainer constructors
LR_SCHEDULES = {"poly": WarmupPolyLRScheduler, "cosine": WarmupCosineLRScheduler}


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
    # The paper's encoder: ViT-B, pruning after blocks 3, 6 and 9 of 12.
    "B": ViTSize(embed_dim=768, depth=12, num_heads=12, prune_after=(3, 6, 9), drop_path_rate=0.1),
    # Small enough to train usefully on two CPU cores (the full-resolution decoder convolutions dominate
    # there, hence the narrow decoder); pruning at about the same relative depths as B.
    "Tiny": ViTSize(embed_dim=192, depth=6, num_heads=4, prune_after=(2, 3, 5), feature_size=8),
    # timm's ViT-Ti encoder with B's depth and pruning points and Tiny's decoder: the demo's network. At
    # Tiny's depth the shared decoder is too large a share of a CPU step for pruning to show in an epoch.
    "Ti": ViTSize(embed_dim=192, depth=12, num_heads=3, prune_after=(3, 6, 9), feature_size=8),
}


class nnUNetTrainerSCD(RecipeTraining, SeededTraining, EpochTimeBreakdown, nnUNetTrainer):
    """SCD, our recommended recipe: ViT-B, 8^3 tokens where the plan allows, keep 0.25 after blocks 3/6/9,
    Multi-layer Token Assembly, UNETR decoder; AdamW with warm-up then poly decay, gradient clipping 1,
    no deep supervision (as nnU-Net's Primus). AMP on CUDA comes from nnU-Net's own GradScaler/autocast.
    Seeded (``seed``, or the ``nnUNet_SCD_seed`` environment variable; see ``nnunet_scd.nnunet.seeding``),
    so that a rerun on the CPU reproduces its Dice. Each epoch's log has an "Epoch breakdown" line.

    Beyond the paper, the STP scorers are trained with foreground guidance (``guidance_weight``; see
    ``nnunet_scd.model.guidance``): the straight-through gradient alone leaves the scorer at random-pruning
    quality. Each epoch logs and plots (``token_selection.png``) the kept tokens' foreground enrichment on
    the validation batches and the scorer's gradient norm relative to the rest of the network.
    """

    # --- network (read by build_network_architecture, so prediction rebuilds the same net) ---
    vit_size: str = "B"
    keep_ratios: tuple[float, ...] | None = (0.25, 0.25, 0.25)
    completion: str = "mta"
    completion_full_width: bool = False  # True: the completion block at the encoder's width and heads (the authors')
    skip_assembly: str | None = None  # SCDNet's default: per-depth skips with MTA, shared with the MIM baseline
    pooled_bottleneck: bool = False  # True: the authors' x8 decoder
    drop_path_rate: float | None = None  # None: the ViT size's
    token_selection: str = "stp"  # "random": the ablation that tells whether STP learns
    context_fraction: float = 0.0  # share of each stage's kept tokens reserved for evenly spread context (STP)
    sampler: str = "gumbel"  # STP's training-time top-k; "topk" selects as inference does
    class_quota: float = 0.0  # share of each stage's kept tokens for the classes the scorer predicts present (STP)
    # --- foreground guidance of the scorers: weight of their BCE next to nnU-Net's loss (0: the paper's STP) ---
    guidance_weight: float = 1.0
    guidance_target: str = "foreground"  # what each scorer logit learns (model.guidance.GUIDANCE_TARGETS)
    token_base: int = 8  # token size along the finest axis; coarser spacing gets finer tokens
    token_size: tuple[int, ...] | None = None  # set to force one token size on every configuration
    max_tokens: int | None = 4096  # coarsen anisotropic tokens (up to token_base) beyond this many tokens
    # --- training length and mirroring: a row of the recipe table (its lr and warm-up, if set, win) ---
    recipe: Recipe = RECIPES["default"]
    # --- optimiser ---
    lr: float = 3e-4
    lr_per_256_samples: float | None = None  # set: lr = this x batch size / 256 (linear scaling), instead of lr
    betas: tuple[float, float] = (0.9, 0.95)
    wd: float = 0.05
    layer_decay: float | None = None  # layer-wise lr decay (see optim.adamw_param_groups)
    lr_schedule: str = "poly"  # after the warm-up: "poly" (nnU-Net, Primus) or "cosine"
    warmup_fraction: float = 0.05  # 50 of 1000 epochs, as Primus
    grad_clip: float | None = 1.0  # None: no gradient clipping

    def __init__(
        self,
        plans: dict,
        configuration: str,
        fold: int,
        dataset_json: dict,
        device: torch.device = _CUDA,
    ):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"{type(self).__name__}.lr_schedule must be one of {tuple(LR_SCHEDULES)}, "
                             f"got {self.lr_schedule!r}.")
        if self.recipe.lr is not None:
            self.initial_lr = self.recipe.lr
        elif self.lr_per_256_samples is not None:
            self.initial_lr = self.lr_per_256_samples * self.configuration_manager.batch_size / 256
        else:
            self.initial_lr = self.lr
        self.warmup_fraction = self.warmup_fraction if self.recipe.warmup_fraction is None \
            else self.recipe.warmup_fraction
        self.weight_decay = self.wd
        self.enable_deep_supervision = False
        if self.class_quota and self.label_manager.has_regions:
            # build_network_architecture, a classmethod, sees only the channel count: it takes channel 0 for background.
            raise ValueError(f"{type(self).__name__} gives quotas to label classes and cannot tell regions from "
                             "labels when nnU-Net rebuilds it; this dataset.json defines regions, so use another "
                             "trainer.")

        tokens = self.token_config(self.configuration_manager, configuration)
        planned = list(self.configuration_manager.patch_size)
        resolved = self.configuration_manager.configuration
        apply_token_config(self.plans_manager.plans, configuration, resolved, tokens)
        changed = "" if list(tokens.patch_size) == planned else f" (rounded up from the planned {planned})"
        self.print_to_log_file(
            f"SCD tokens: token size {list(tokens.token_size)}, patch {list(tokens.patch_size)}{changed}, "
            f"token grid {list(tokens.grid)} = {tokens.num_tokens} tokens; spacing "
            f"{list(self.configuration_manager.spacing)}; network {self.network_kwargs()}"
        )

    # ------------------------------------------------------------------ network
    @classmethod
    def token_config(
        cls, configuration_manager: ConfigurationManager, name: str | None = None
    ) -> TokenConfig:
        """Token size and patch for this trainer class on one plans configuration."""
        return resolve_token_config(
            configuration_manager.configuration,
            name or configuration_manager.data_identifier,
            base=cls.token_base,
            fixed_token_size=cls.token_size,
            max_tokens=cls.max_tokens,
        )

    @classmethod
    def network_kwargs(cls) -> dict[str, Any]:
        """SCDNet keyword arguments that this trainer class fixes (everything but data geometry)."""
        size = asdict(VIT_SIZES[cls.vit_size])
        if cls.drop_path_rate is not None:
            size["drop_path_rate"] = cls.drop_path_rate
        return {
            **size,
            "keep_ratios": None if cls.keep_ratios is None else tuple(cls.keep_ratios),
            "completion": cls.completion,
            **({"completion_dim": size["embed_dim"], "completion_heads": size["num_heads"]}
               if cls.completion_full_width else {}),
            "skip_assembly": cls.skip_assembly,
            "pooled_bottleneck": cls.pooled_bottleneck,
            "token_selection": cls.token_selection,
            # Only where set, so the records of existing slim plans still match their trainers.
            **({"context_fraction": cls.context_fraction} if cls.context_fraction else {}),
            **({"sampler": cls.sampler} if cls.sampler != "gumbel" else {}),
            **({"class_quota": cls.class_quota} if cls.class_quota else {}),
        }

    @classmethod
    def build_network_architecture(
        cls,
        plans_manager: PlansManager,
        configuration_manager: ConfigurationManager,
        num_input_channels: int,
        num_output_channels: int,
        enable_deep_supervision: bool = True,
    ) -> nn.Module:
        """Build SCDNet from this class's settings and the plans' token record.

        A classmethod, so that variants differ by class attributes; nnU-Net calls it on the class
        (at prediction time too) with the signature it inspects. Deep supervision does not exist in
        this network, so the flag changes nothing, state-dict keys included.
        """
        tokens = cls.token_config(configuration_manager)
        return SCDNet(
            input_channels=num_input_channels,
            num_classes=num_output_channels,
            patch_size=tokens.patch_size,
            token_size=tokens.token_size,
            **cls.network_kwargs(),
        )

    def set_deep_supervision_enabled(self, enabled: bool) -> None:
        """The ViT decoders have one output; nnU-Net's deep supervision switch is a no-op (as Primus)."""

    # ------------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> tuple[torch.optim.Optimizer, WarmupPolyLRScheduler]:
        network = unwrap(self.network)
        optimizer = torch.optim.AdamW(
            adamw_param_groups(network, self.weight_decay, self.layer_decay),
            lr=self.initial_lr,
            betas=self.betas,
            fused=self.device.type == "cuda",
        )
        warmup = min(max(0, round(self.warmup_fraction * self.num_epochs)), self.num_epochs - 1)
        scheduler = LR_SCHEDULES[self.lr_schedule](optimizer, self.initial_lr, self.num_epochs, warmup)
        lr_source = "" if self.lr_per_256_samples is None or self.recipe.lr is not None \
            else f" (= {self.lr_per_256_samples} per 256 samples x batch {self.configuration_manager.batch_size})"
        self.print_to_log_file(
            f"AdamW lr {self.initial_lr:.4g}{lr_source} betas {self.betas} weight decay {self.weight_decay}; "
            f"layer-wise lr decay {self.layer_decay}; {warmup} warm-up epochs then {self.lr_schedule} decay over "
            f"{self.num_epochs} epochs; grad clip {self.grad_clip}"
        )
        return optimizer, scheduler

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"].to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        network = unwrap(self.network, core=True)
        # Autocast only on CUDA, as nnU-Net does: on CPU it is slow and on MPS unsupported.
        with autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context():
            loss = self.loss(self.network(data), target)
            guidance = None
            if self.guidance_weight and network.scorer_logits:
                classes = class_masks(target, self.label_manager) if network.quota_classes else None
                guidance = network.guidance_loss(*foreground_masks(target, self.label_manager), self.guidance_target,
                                                 classes)
        total = loss if guidance is None else loss + self.guidance_weight * guidance
        if self.grad_scaler is not None:
            self.grad_scaler.scale(total).backward()
            self.grad_scaler.unscale_(self.optimizer)
        else:
            total.backward()
        grad_ratios = scorer_grad_ratios(network)
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.grad_clip)
        if self.grad_scaler is not None:
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            self.optimizer.step()
        # 'loss' stays nnU-Net's task loss, so progress.png compares with stock trainers and with val loss.
        out = {"loss": loss.detach().cpu().numpy()}
        if grad_ratios:
            out["scorer_grad_ratio"] = np.array(grad_ratios)
        if guidance is not None:
            out["guidance_loss"] = guidance.detach().cpu().numpy()
        return out

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        ratios = [o.pop("scorer_grad_ratio") for o in train_outputs if "scorer_grad_ratio" in o]
        guidance = [o.pop("guidance_loss") for o in train_outputs if "guidance_loss" in o]
        super().on_train_epoch_end(train_outputs)
        if ratios:
            mean_ratios = np.nanmean(ratios, axis=0).tolist()  # an AMP step that overflowed has no finite ratio
            self._log_token_selection("scorer_grad_ratio", mean_ratios)
            self.print_to_log_file(
                "STP scorer grad norm / rest of network, per stage: " + ", ".join(f"{r:.2e}" for r in mean_ratios)
                + (f"; foreground guidance loss {np.mean(guidance):.4f}" if guidance else "")
            )

    # ------------------------------------------------------------------ token-selection diagnostics
    def validation_step(self, batch: dict) -> dict:
        # Before nnU-Net's step, which zeroes ignore-label voxels of the target in place.
        foreground, _ = foreground_masks(batch["target"], self.label_manager)
        classes = class_masks(batch["target"], self.label_manager)
        out = super().validation_step(batch)
        network = unwrap(self.network, core=True)
        if network.kept_indices:
            tokens_fg = token_foreground(foreground, network.token_size)
            out["token_counts"] = enrichment_counts(network.kept_indices, tokens_fg).numpy()
            tokens_classes = class_presence(classes, network.token_size)
            out["class_token_counts"] = enrichment_counts(network.kept_indices, tokens_classes).numpy()
        return out

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        counts = [o.pop("token_counts") for o in val_outputs if "token_counts" in o]
        class_counts = [o.pop("class_token_counts") for o in val_outputs if "class_token_counts" in o]
        super().on_validation_epoch_end(val_outputs)
        if not counts:
            return
        per_stage = enrichment(torch.from_numpy(np.sum(counts, axis=0)))
        self._log_token_selection("stp_enrichment", per_stage)
        self.print_to_log_file(
            "STP foreground enrichment of kept tokens (validation; random pruning = 1), per stage: "
            + ", ".join(f"{e:.2f}" for e in per_stage)
        )
        # Per class: the foreground figure is dominated by the large organs and can hide a small one left out.
        per_class = enrichment(torch.from_numpy(np.sum(class_counts, axis=0)))
        self._log_token_selection("stp_class_enrichment", per_class)
        names = class_names(self.label_manager)
        self.print_to_log_file("STP per-class enrichment of kept tokens (validation; nan: class absent), per stage: "
                               + "; ".join(", ".join(f"{n} {e:.2f}" for n, e in zip(names, stage, strict=True))
                                           for stage in per_class))

    def on_epoch_end(self) -> None:
        # Plotted here, after nnU-Net's epoch timestamp as its own progress.png is, so that "Epoch time"
        # compares the sparse and dense networks' epochs and not a plot only the sparse one draws.
        plot = self.local_rank == 0 and "stp_enrichment" in self.logger.local_logger.my_fantastic_logging
        super().on_epoch_end()
        if plot:
            try:
                plot_token_selection(self.logger.local_logger.my_fantastic_logging,
                                     os.path.join(self.output_folder, "token_selection.png"),
                                     title=f"{self.__class__.__name__}: STP token selection")
            except Exception as error:  # a failed plot must never stop a training run
                self.print_to_log_file(f"token selection plot failed: {error}")

    def _log_token_selection(self, key: str, value: list[float]) -> None:
        # nnU-Net plots progress.png up to the shortest logged list, so a key that a checkpoint from an older
        # version lacks starts padded to the current epoch.
        self.logger.local_logger.my_fantastic_logging.setdefault(key, [None] * self.current_epoch)
        self.logger.log(key, value, self.current_epoch)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, filename: str) -> None:
        """nnU-Net's checkpoint, written to a temporary file and renamed into place.

        nnU-Net writes with ``torch.save`` straight into the target, so a kill during the write
        leaves a truncated checkpoint that ``--c`` then fails on. The rename is atomic, so the
        target is always either the previous or the new complete checkpoint.
        """
        if self.local_rank != 0 or self.disable_checkpointing:
            super().save_checkpoint(filename)  # writes nothing (and says so where nnU-Net does)
            return
        with atomic_target(filename, fsync=True) as tmp:
            super().save_checkpoint(tmp)

    def load_checkpoint(self, filename_or_checkpoint: dict | str) -> None:
        """nnU-Net's loading, but an unreadable checkpoint is named instead of torch's anonymous error.

        With ``--c`` nnU-Net picks ``checkpoint_latest.pth``; if that one is corrupt, training
        continues from ``checkpoint_best.pth`` (an earlier epoch) with a line in the log. Otherwise
        the run stops with one line naming the file and what to do.
        """
        if isinstance(filename_or_checkpoint, str):
            filename_or_checkpoint = self._readable_checkpoint(filename_or_checkpoint)
        super().load_checkpoint(filename_or_checkpoint)

    def _readable_checkpoint(self, filename: str) -> str:
        try:
            check_checkpoint_readable(filename)
            return filename
        except CorruptCheckpointError as error:
            for fallback in fallback_checkpoints(filename):
                try:
                    check_checkpoint_readable(fallback)
                except CorruptCheckpointError:
                    continue
                self.print_to_log_file(f"WARNING: {error}. Continuing from {fallback} instead, which holds an "
                                       "earlier epoch.")
                return str(fallback)
            # SystemExit: nnUNetv2_train prints its message alone, where any other exception ends in a traceback.
            raise SystemExit(
                f"nnunet-scd: {error}. Move it away and rerun: with --c nnU-Net then continues from the next "
                "checkpoint it finds (checkpoint_latest.pth, checkpoint_best.pth), without --c it starts over."
            ) from None


# ---------------------------------------------------------------------- variants
# Named model[method]_[variant]_[size]_[recipe]: one thing changed per tag, sizes from VIT_SIZES, lengths from RECIPES.
class nnUNetTrainerUNETR(nnUNetTrainerSCD):
    """Dense UNETR baseline: the same ViT-B encoder and decoder, no pruning."""

    keep_ratios = None


class nnUNetTrainerSCD_MIM(nnUNetTrainerSCD):
    """The paper's MIM baseline instead of MTA: the decoder sees only the final kept tokens, with one learned mask
    token at every pruned position, through the bottleneck and every skip (SCDNet gives the mask baseline shared
    skips, so no pruned token reaches the output)."""

    completion = "mask"


class nnUNetTrainerSCD_SharedSkips(nnUNetTrainerSCD):
    """The completed tokens feed every decoder skip, as in the authors' code, instead of our per-depth skips."""

    skip_assembly = "shared"


class Zhou2023TrainingRecipe:
    """Mixin: the SCD authors' optimiser recipe (Zhou et al., IPMI 2023; TokenSparse-for-MedSeg README).

    AdamW (0.9, 0.95), weight decay 0.05, lr 1.72e-2 per 256 samples (1.3e-4 at nnU-Net's batch 2), layer-wise lr
    decay 0.75, linear warm-up over 1% of training (their 50 of 5000 epochs) then cosine decay, drop path 0.1, no
    gradient clipping. nnU-Net keeps the training length, loss, augmentation and AMP.
    """

    lr_per_256_samples = 1.72e-2
    layer_decay = 0.75
    lr_schedule = "cosine"
    warmup_fraction = 0.01
    grad_clip = None
    drop_path_rate = 0.1


class nnUNetTrainerSCD_FullWidthCompletion(nnUNetTrainerSCD):
    """The completion block at the encoder's width and heads (768 wide, 12 heads for ViT-B), as in the authors'
    published runs, instead of SCDNet's quarter-width default."""

    completion_full_width = True


class nnUNetTrainerSCD_Zhou2023Recipe(Zhou2023TrainingRecipe, nnUNetTrainerSCD):
    """Our network with the authors' training recipe instead of ours (see ``Zhou2023TrainingRecipe``)."""


class nnUNetTrainerSCD_Zhou2023(Zhou2023TrainingRecipe, nnUNetTrainerSCD):
    """Reproduces the SCD authors' published BTCV run (Zhou et al., IPMI 2023; TokenSparse-for-MedSeg README).

    Network: ViT-B with 8^3 tokens where the plan allows, keep 0.1 after blocks 3/6/9, MTA (1 block, width 768),
    the completed tokens fed to every skip, the x8 decoder (average-pooled bottleneck, four up-blocks), and STP
    trained only by its straight-through gradient (no foreground guidance). Training: their recipe
    (``Zhou2023TrainingRecipe``). Kept from nnU-Net, so the folds compare with stock nnU-Net: preprocessing, patch,
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
    warmup_fraction = 13 / 533


class nnUNetTrainerSCD_RandomPruning(nnUNetTrainerSCD):
    """The ablation of STP: the same network and keep ratios, tokens drawn uniformly at random (seeded at inference)."""

    token_selection = "random"


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


class nnUNetTrainerSCD_NoGuidance(nnUNetTrainerSCD):
    """STP as the paper trains it: the scorer learns only from the task loss's straight-through gradient."""

    guidance_weight = 0.0


class nnUNetTrainerSCD_keep0p5(nnUNetTrainerSCD):
    keep_ratios = (0.5, 0.5, 0.5)


class nnUNetTrainerSCD_keep0p1(nnUNetTrainerSCD):
    keep_ratios = (0.1, 0.1, 0.1)


# ---------------------------------------------------------------------- Tiny: the same variants, sized for CPU
class nnUNetTrainerSCD_Tiny(nnUNetTrainerSCD):
    """SCD with the Tiny ViT (192 wide, 6 blocks) for CPU."""

    vit_size = "Tiny"


class nnUNetTrainerUNETR_Tiny(nnUNetTrainerUNETR):
    vit_size = "Tiny"


class nnUNetTrainerSCD_MIM_Tiny(nnUNetTrainerSCD_MIM):
    vit_size = "Tiny"


class nnUNetTrainerSCD_RandomPruning_Tiny(nnUNetTrainerSCD_RandomPruning):
    vit_size = "Tiny"


class nnUNetTrainerSCD_SharedSkips_Tiny(nnUNetTrainerSCD_SharedSkips):
    vit_size = "Tiny"


class nnUNetTrainerSCD_FullWidthCompletion_Tiny(nnUNetTrainerSCD_FullWidthCompletion):
    vit_size = "Tiny"


class nnUNetTrainerSCD_Zhou2023Recipe_Tiny(nnUNetTrainerSCD_Zhou2023Recipe):
    vit_size = "Tiny"


class nnUNetTrainerSCD_Zhou2023_Tiny(nnUNetTrainerSCD_Zhou2023):
    vit_size = "Tiny"


class nnUNetTrainerSCD_Zhou2023BraTS_Tiny(nnUNetTrainerSCD_Zhou2023BraTS):
    vit_size = "Tiny"


class nnUNetTrainerSCD_NoGuidance_Tiny(nnUNetTrainerSCD_NoGuidance):
    vit_size = "Tiny"


class nnUNetTrainerSCD_keep0p5_Tiny(nnUNetTrainerSCD_keep0p5):
    vit_size = "Tiny"


# ---------------------------------------------------------------------- recipes: one row of RECIPES each
class nnUNetTrainerSCD_Tiny_5epochs(nnUNetTrainerSCD_Tiny):
    recipe = RECIPES["5epochs"]


class nnUNetTrainerUNETR_Tiny_5epochs(nnUNetTrainerUNETR_Tiny):
    recipe = RECIPES["5epochs"]


class nnUNetTrainerSCD_Tiny_cpuSmoke(nnUNetTrainerSCD_Tiny):
    recipe = RECIPES["cpuSmoke"]


class nnUNetTrainerUNETR_Tiny_cpuSmoke(nnUNetTrainerUNETR_Tiny):
    recipe = RECIPES["cpuSmoke"]


# The STP study (README): guided STP against random pruning, at keep 0.25 and 0.1.
class nnUNetTrainerSCD_Tiny_cpuStudy(nnUNetTrainerSCD_Tiny):
    recipe = RECIPES["cpuStudy"]


class nnUNetTrainerSCD_RandomPruning_Tiny_cpuStudy(nnUNetTrainerSCD_RandomPruning_Tiny):
    recipe = RECIPES["cpuStudy"]


class nnUNetTrainerSCD_keep0p1_Tiny_cpuStudy(nnUNetTrainerSCD_Tiny_cpuStudy):
    keep_ratios = (0.1, 0.1, 0.1)


class nnUNetTrainerSCD_RandomPruning_keep0p1_Tiny_cpuStudy(nnUNetTrainerSCD_RandomPruning_Tiny_cpuStudy):
    keep_ratios = (0.1, 0.1, 0.1)


# The reproduction study (README): MTA against the faithful MIM baseline, per-depth against shared skips, and our
# recipe against the authors', at keep 0.25; nnUNetTrainerSCD_Tiny_cpuStudy is the reference.
class nnUNetTrainerSCD_MIM_Tiny_cpuStudy(nnUNetTrainerSCD_MIM_Tiny):
    recipe = RECIPES["cpuStudy"]


class nnUNetTrainerSCD_SharedSkips_Tiny_cpuStudy(nnUNetTrainerSCD_SharedSkips_Tiny):
    recipe = RECIPES["cpuStudy"]


class nnUNetTrainerSCD_Zhou2023Recipe_Tiny_cpuStudy(nnUNetTrainerSCD_Zhou2023Recipe_Tiny):
    recipe = RECIPES["cpuStudy"]


class nnUNetTrainerSCD_Zhou2023BraTS_Tiny_cpuStudy(nnUNetTrainerSCD_Zhou2023BraTS_Tiny):
    recipe = RECIPES["cpuStudy"]


# The completion study (README): quarter-width against full-width completion; nnUNetTrainerSCD_Tiny_cpuStudy is
# the default.
class nnUNetTrainerSCD_FullWidthCompletion_Tiny_cpuStudy(nnUNetTrainerSCD_FullWidthCompletion_Tiny):
    recipe = RECIPES["cpuStudy"]


# The unsliced references of the CPU search-then-fine-tune walk-through (README, "Joint search compression").
class nnUNetTrainerSCD_Tiny_cpuShort2x(nnUNetTrainerSCD_Tiny):
    recipe = RECIPES["cpuShort2x"]


class nnUNetTrainerUNETR_Tiny_cpuShort2x(nnUNetTrainerUNETR_Tiny):
    recipe = RECIPES["cpuShort2x"]


# The convergence study (docs/studies/convergence.md): arms that differ only in token selection, at keep 0.25 and 0.1.
class nnUNetTrainerSCD_Oracle_Tiny(nnUNetTrainerSCD_Oracle):
    vit_size = "Tiny"


class nnUNetTrainerUNETR_Tiny_converge(nnUNetTrainerUNETR_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_Tiny_converge(nnUNetTrainerSCD_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_NoGuidance_Tiny_converge(nnUNetTrainerSCD_NoGuidance_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_RandomPruning_Tiny_converge(nnUNetTrainerSCD_RandomPruning_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_Oracle_Tiny_converge(nnUNetTrainerSCD_Oracle_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_keep0p1_Tiny_converge(nnUNetTrainerSCD_Tiny_converge):
    keep_ratios = (0.1, 0.1, 0.1)


class nnUNetTrainerSCD_RandomPruning_keep0p1_Tiny_converge(nnUNetTrainerSCD_RandomPruning_Tiny_converge):
    keep_ratios = (0.1, 0.1, 0.1)


class nnUNetTrainerSCD_Oracle_keep0p1_Tiny_converge(nnUNetTrainerSCD_Oracle_Tiny_converge):
    keep_ratios = (0.1, 0.1, 0.1)


# The scorer study (docs/studies/convergence.md): designs beside guidance, in the convergence study's regime.
class nnUNetTrainerSCD_EvenlySpaced_Tiny(nnUNetTrainerSCD_EvenlySpaced):
    vit_size = "Tiny"


class nnUNetTrainerSCD_BoundaryGuidance_Tiny(nnUNetTrainerSCD_BoundaryGuidance):
    vit_size = "Tiny"


class nnUNetTrainerSCD_Context_Tiny(nnUNetTrainerSCD_Context):
    vit_size = "Tiny"


class nnUNetTrainerSCD_TopKTraining_Tiny(nnUNetTrainerSCD_TopKTraining):
    vit_size = "Tiny"


class nnUNetTrainerSCD_ClassQuota_Tiny(nnUNetTrainerSCD_ClassQuota):
    vit_size = "Tiny"


class nnUNetTrainerSCD_EvenlySpaced_Tiny_converge(nnUNetTrainerSCD_EvenlySpaced_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_BoundaryGuidance_Tiny_converge(nnUNetTrainerSCD_BoundaryGuidance_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_Context_Tiny_converge(nnUNetTrainerSCD_Context_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_TopKTraining_Tiny_converge(nnUNetTrainerSCD_TopKTraining_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_ClassQuota_Tiny_converge(nnUNetTrainerSCD_ClassQuota_Tiny):
    recipe = RECIPES["converge"]


class nnUNetTrainerSCD_EvenlySpaced_keep0p1_Tiny_converge(nnUNetTrainerSCD_EvenlySpaced_Tiny_converge):
    keep_ratios = (0.1, 0.1, 0.1)


class nnUNetTrainerSCD_BoundaryGuidance_keep0p1_Tiny_converge(nnUNetTrainerSCD_BoundaryGuidance_Tiny_converge):
    keep_ratios = (0.1, 0.1, 0.1)


class nnUNetTrainerSCD_Context_keep0p1_Tiny_converge(nnUNetTrainerSCD_Context_Tiny_converge):
    keep_ratios = (0.1, 0.1, 0.1)


class nnUNetTrainerSCD_TopKTraining_keep0p1_Tiny_converge(nnUNetTrainerSCD_TopKTraining_Tiny_converge):
    keep_ratios = (0.1, 0.1, 0.1)


class nnUNetTrainerSCD_ClassQuota_keep0p1_Tiny_converge(nnUNetTrainerSCD_ClassQuota_Tiny_converge):
    keep_ratios = (0.1, 0.1, 0.1)


class nnUNetTrainer_converge(RecipeTraining, SeededTraining, EpochTimeBreakdown, nnUNetTrainer):
    """Stock nnU-Net (its U-Net, SGD, deep supervision) with the study's validation length and as many iterations
    as the dense Tiny UNETR of the study takes in the same wall time on 2 idle CPU cores."""

    recipe = RECIPES["convergeStock"]


def defined_trainers(namespace: dict[str, Any]) -> list[str]:
    """The nnU-Net trainer classes a module defines (not those it imports), by name, for its ``__all__``.

    The shim (``trainers/nnunet_scd_trainers.py``) star-imports each trainer module, so a trainer is
    written once, as its class, and nnU-Net finds it by that name.
    """
    return sorted(name for name, obj in namespace.items()
                  if isinstance(obj, type) and issubclass(obj, nnUNetTrainer) and name.startswith("nnUNetTrainer")
                  and obj.__module__ == namespace["__name__"])


__all__ = ["RECIPES", "VIT_SIZES", "Recipe", "ViTSize", "Zhou2023TrainingRecipe", "defined_trainers",
           *defined_trainers(globals())]
