"""The two bases of every trainer here: ``RecipeTrainer`` (any nnU-Net network) and ``ViTTrainer`` (SCDNet).

nnU-Net finds a trainer by class name, at training and again at prediction time, and rebuilds the
network with ``build_network_architecture`` from the trainer class and the results folder's
plans.json. So everything the network needs is either a class attribute of the trainer (model size,
keep ratios, completion) or recorded in the plans by ``token_config`` (token size and patch), and
everything about training is the class's ``recipe`` (``recipe.Recipe``). Variants are small
subclasses whose name says the one thing they change, as in nnU-Net's ``variants/`` folder:
``nnUNetTrainer<model>[<method>][_<variant>][_<size>][_<length>]``.

What a run needs besides the network (its length, seed and epoch breakdown) lives in one class,
``RecipeTrainer``, in one order, rather than in mixins whose order would matter.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager, PlansManager
from torch import autocast, nn

from nnunet_scd.atomic import atomic_target
from nnunet_scd.geometry import VIT_SIZES
from nnunet_scd.model.guidance import class_presence, enrichment, enrichment_counts, token_foreground
from nnunet_scd.model.scd import SCDNet
from nnunet_scd.nnunet.checkpoints import CorruptCheckpointError, check_checkpoint_readable, fallback_checkpoints
from nnunet_scd.nnunet.label_masks import class_masks, class_names, foreground_masks
from nnunet_scd.nnunet.token_config import TokenConfig, apply_token_config, resolve_token_config
from nnunet_scd.trainers.epoch_timing import TimedLoader, format_epoch_breakdown
from nnunet_scd.trainers.optim import WarmupCosineLRScheduler, WarmupPolyLRScheduler, adamw_param_groups
from nnunet_scd.trainers.recipe import OURS, STOCK, Recipe
from nnunet_scd.trainers.seeding import SEED_ENVIRONMENT_VARIABLE, resolve_seed, seed_everything, worker_seeds
from nnunet_scd.trainers.token_diagnostics import plot_token_selection, scorer_grad_ratios
from nnunet_scd.unwrap import unwrap

__all__ = ["LR_SCHEDULES", "RecipeTrainer", "ViTTrainer"]

_CUDA = torch.device("cuda")  # nnU-Net's default device for trainer constructors
LR_SCHEDULES = {"poly": WarmupPolyLRScheduler, "cosine": WarmupCosineLRScheduler}


class RecipeTrainer(nnUNetTrainer):
    """nnU-Net's trainer with the length and mirroring of ``recipe``, a seed, and an epoch breakdown.

    Seeded (``seed``, or the ``nnUNet_SCD_seed`` environment variable; see ``seeding``), so that a
    rerun on the CPU reproduces its Dice. Each epoch's log has an "Epoch breakdown" line
    (``epoch_timing``). Its own network and optimiser are nnU-Net's: with ``STOCK`` it is stock
    nnU-Net at another length.
    """

    recipe: Recipe = STOCK
    seed: int | None = 0  # None: nnU-Net's unseeded runs

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = self.recipe.epochs
        self.num_iterations_per_epoch = self.recipe.iterations_per_epoch
        self.num_val_iterations_per_epoch = self.recipe.val_iterations_per_epoch
        self.save_every = self.recipe.checkpoint_every

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):  # noqa: ANN201 - nnU-Net's signature
        rotation, dummy_2d, initial_patch_size, mirror_axes = \
            super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        if not self.recipe.mirroring:
            self.inference_allowed_mirroring_axes = None
            mirror_axes = None
        return rotation, dummy_2d, initial_patch_size, mirror_axes

    def perform_actual_validation(self, save_probabilities: bool = False) -> None:
        if self.recipe.final_validation:
            super().perform_actual_validation(save_probabilities)
            return
        self.print_to_log_file("Skipping nnU-Net's end-of-training validation: this recipe's runs predict the "
                               "validation cases with nnUNetv2_predict and evaluate them themselves.")

    # ------------------------------------------------------------------ seeding
    def initialize(self) -> None:
        try:
            self.run_seed = resolve_seed(self.seed)
        except ValueError as error:
            # SystemExit: stock nnUNetv2_train prints its message alone, where any other exception ends in a traceback.
            raise SystemExit(f"nnunet-scd: {error}") from None
        if self.run_seed is not None:
            seed_everything(self.run_seed + self.local_rank)
        self.print_to_log_file(f"Seed: {self.run_seed} (class attribute `seed`, or {SEED_ENVIRONMENT_VARIABLE})")
        super().initialize()

    def get_dataloaders(self):  # noqa: ANN201 - nnU-Net's signature
        train, val = super().get_dataloaders()
        seed = getattr(self, "run_seed", None)
        if seed is not None:
            for stream, augmenter in enumerate((train, val)):
                # nnU-Net starts its workers with seeds=None (each draws from the OS); restart them seeded.
                if hasattr(augmenter, "seeds") and hasattr(augmenter, "restart"):
                    augmenter.seeds = worker_seeds(seed, stream, self.local_rank, augmenter.num_processes)
                    augmenter.restart()
        return train, val

    # ------------------------------------------------------------------ epoch breakdown
    def on_train_start(self) -> None:
        super().on_train_start()  # builds the loaders through get_dataloaders, so they are seeded by now
        self.dataloader_train = TimedLoader(self.dataloader_train)

    def on_train_end(self) -> None:
        # nnU-Net shuts its workers down only for a loader of its own types, so hand back the real one.
        if isinstance(self.dataloader_train, TimedLoader):
            self.dataloader_train = self.dataloader_train.loader
        super().on_train_end()

    def on_train_epoch_start(self) -> None:
        super().on_train_epoch_start()
        if isinstance(self.dataloader_train, TimedLoader):
            self.dataloader_train.waited = 0.0
        self._train_started = time.perf_counter()

    def on_train_epoch_end(self, train_outputs: list[dict]) -> None:
        self._train_seconds = time.perf_counter() - self._train_started
        super().on_train_epoch_end(train_outputs)

    def on_validation_epoch_start(self) -> None:
        self._validation_started = time.perf_counter()
        super().on_validation_epoch_start()

    def on_validation_epoch_end(self, val_outputs: list[dict]) -> None:
        super().on_validation_epoch_end(val_outputs)
        self._validation_seconds = time.perf_counter() - self._validation_started

    def on_epoch_end(self) -> None:
        start = time.perf_counter()
        super().on_epoch_end()
        end_seconds = time.perf_counter() - start
        waited = self.dataloader_train.waited if isinstance(self.dataloader_train, TimedLoader) else 0.0
        self.print_to_log_file(format_epoch_breakdown(self._train_seconds - waited, waited, self._validation_seconds,
                                                      end_seconds))


class ViTTrainer(RecipeTrainer):
    """A ViT encoder, UNETR decoder and AdamW: the base of the sparse SCD trainers and their dense twins.

    The network is ``SCDNet`` built from the class attributes below; ``keep_ratios = None`` (this
    base) is the dense UNETR, and ``nnUNetTrainerSCD`` sets the pruning. Training: the recipe's
    AdamW, gradient clipping, no deep supervision (as nnU-Net's Primus); AMP on CUDA comes from
    nnU-Net's own GradScaler/autocast.

    Beyond the paper, the STP scorers are trained with foreground guidance (``guidance_weight``; see
    ``nnunet_scd.model.guidance``): the straight-through gradient alone leaves the scorer at
    random-pruning quality. Each epoch logs and plots (``token_selection.png``) the kept tokens'
    foreground enrichment on the validation batches and the scorer's gradient norm relative to the
    rest of the network. Checkpoints are written atomically, and an unreadable one is named.
    """

    # --- network (read by build_network_architecture, so prediction rebuilds the same net) ---
    vit_size: str = "B"  # a row of geometry.VIT_SIZES
    keep_ratios: tuple[float, ...] | None = None  # per pruning stage; None: dense
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
    # --- tokens ---
    token_base: int = 8  # token size along the finest axis; coarser spacing gets finer tokens
    token_size: tuple[int, ...] | None = None  # set to force one token size on every configuration
    max_tokens: int | None = 4096  # coarsen anisotropic tokens (up to token_base) beyond this many tokens
    # --- training: length, mirroring and AdamW ---
    recipe: Recipe = OURS

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = _CUDA) -> None:
        super().__init__(plans, configuration, fold, dataset_json, device)
        optimizer = self.recipe.optimizer
        if optimizer is None or optimizer.schedule not in LR_SCHEDULES:
            raise ValueError(f"{type(self).__name__}.recipe needs an AdamW optimiser with a schedule in "
                             f"{tuple(LR_SCHEDULES)}, got {optimizer!r}.")
        self.initial_lr = optimizer.lr_for(self.configuration_manager.batch_size)
        self.weight_decay = optimizer.weight_decay
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
    def token_config(cls, configuration_manager: ConfigurationManager, name: str | None = None) -> TokenConfig:
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
        recipe = self.recipe.optimizer
        optimizer = torch.optim.AdamW(
            adamw_param_groups(unwrap(self.network), self.weight_decay, recipe.layer_decay),
            lr=self.initial_lr,
            betas=recipe.betas,
            fused=self.device.type == "cuda",
        )
        warmup = min(max(0, round(recipe.warmup_fraction * self.num_epochs)), self.num_epochs - 1)
        scheduler = LR_SCHEDULES[recipe.schedule](optimizer, self.initial_lr, self.num_epochs, warmup)
        lr_source = "" if recipe.lr_batch is None else \
            f" (= {recipe.lr} per {recipe.lr_batch} samples x batch {self.configuration_manager.batch_size})"
        self.print_to_log_file(
            f"AdamW lr {self.initial_lr:.4g}{lr_source} betas {recipe.betas} weight decay {self.weight_decay}; "
            f"layer-wise lr decay {recipe.layer_decay}; {warmup} warm-up epochs then {recipe.schedule} decay over "
            f"{self.num_epochs} epochs; grad clip {recipe.grad_clip}"
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
        if self.recipe.optimizer.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), self.recipe.optimizer.grad_clip)
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
        # nnU-Net plots progress.png up to the shortest logged list, so a key that a resumed checkpoint lacks starts
        # padded to the current epoch.
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
