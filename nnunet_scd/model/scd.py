"""SCDNet: sparse encoding -> token completion -> dense decoding.

The forward pass reads as the data flows: patch embedding, ViT blocks that shed tokens at each
pruning stage, assembly of the full token grid, UNETR decoder. With ``keep_ratios=None`` no
scorer runs and the network is the dense UNETR with the same encoder.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch
from timm.layers import trunc_normal_
from torch import nn

from nnunet_scd.model.guidance import (
    class_presence,
    foreground_guidance_loss,
    guidance_target,
    token_foreground,
    token_voxel_counts,
)
from nnunet_scd.model.mta import MaskTokenCompletion, MultiLayerTokenAssembly
from nnunet_scd.model.stp import (
    SAMPLERS,
    PriorityTokenPruning,
    PrunedTokens,
    RandomTokenPruning,
    SoftTopKPruning,
    spread_priority,
)
from nnunet_scd.model.tokens import scatter_tokens
from nnunet_scd.model.unetr import UNETRDecoder
from nnunet_scd.model.vit import Block, LearnedPositionEmbedding, PatchEmbed, token_grid

__all__ = ["SCDNet"]

COMPLETIONS = {"mta": MultiLayerTokenAssembly, "mask": MaskTokenCompletion}
SKIP_ASSEMBLIES = ("per_depth", "shared")
TOKEN_SELECTIONS = ("stp", "random", "evenly", "oracle")


def _check_schedule(depth: int, prune_after: Sequence[int], keep_ratios: Sequence[float]) -> None:
    if not all(isinstance(b, numbers.Integral) for b in prune_after):  # int() would turn 1.5 into 1 silently
        raise ValueError(f"prune_after holds block indices, which are integers, got {tuple(prune_after)}.")
    if len(prune_after) != len(keep_ratios):
        raise ValueError(
            f"prune_after {tuple(prune_after)} and keep_ratios {tuple(keep_ratios)} must have the same length "
            "(one keep ratio per pruning stage)."
        )
    if not prune_after:
        raise ValueError("a sparse SCDNet needs at least one pruning stage; use keep_ratios=None for dense UNETR.")
    for ratio in keep_ratios:
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"every keep ratio must be in (0, 1], got {tuple(keep_ratios)}.")
    if any(b <= a for a, b in zip(prune_after, prune_after[1:])):
        raise ValueError(f"prune_after must be strictly increasing block indices, got {tuple(prune_after)}.")
    if prune_after[0] < 1 or prune_after[-1] >= depth:
        raise ValueError(
            f"prune_after holds 1-based block indices from 1 to depth - 1 = {depth - 1} (pruning after the last "
            f"block saves nothing), got {tuple(prune_after)}."
        )


def _check_sizes(**sizes: float | None) -> None:
    """A ValueError naming the first keyword out of range; the network would fail later and less clearly.

    ``name=value`` pairs; the name decides the rule: ``drop_path_rate`` in [0, 1), ``mlp_ratio`` above 0,
    ``completion_depth`` an integer >= 0 (0: token assembly without a completion block), anything else an
    integer >= 1. None (a default) passes.
    """
    for name, value in sizes.items():
        if value is None:
            continue
        if name == "drop_path_rate":
            ok, rule = 0.0 <= value < 1.0, "in [0, 1) (a probability of dropping a block)"
        elif name == "mlp_ratio":
            ok, rule = value > 0, "above 0"
        else:
            minimum = 0 if name == "completion_depth" else 1
            ok, rule = isinstance(value, numbers.Integral) and value >= minimum, f"an integer of at least {minimum}"
        if not ok:
            raise ValueError(f"{name} must be {rule}, got {value!r}.")


class SCDNet(nn.Module):
    """Token-sparse UNETR (SCD) for 2D and 3D segmentation.

    Args:
        input_channels: image channels C.
        num_classes: output channels.
        patch_size: the image crop the network is built for (2 or 3 ints).
        token_size: voxels per token along each axis, powers of two, dividing ``patch_size``.
        embed_dim, depth, num_heads, mlp_ratio, drop_path_rate: the ViT encoder.
        prune_after: 1-based blocks after which an STP stage prunes.
        keep_ratios: fraction of the remaining tokens kept at each stage; None for dense UNETR.
        completion: "mta" (Multi-layer Token Assembly) or "mask" (mask-token MIM baseline).
        completion_dim, completion_depth, completion_heads: the completion transformer. Defaults:
            1 block of width ``embed_dim // 4`` (at least 64, at most ``embed_dim``) with heads of
            64 channels where the width allows (ViT-B: 192 wide, 3 heads). Over the full token grid
            this block is what SCD adds to the dense UNETR, and at the encoder's width it costs 13-15%
            of SCD's FLOPs; at a quarter of it, 2%. The authors' published runs use the encoder's width
            and heads (``completion_dim=embed_dim, completion_heads=num_heads``).
        feature_size: UNETR decoder channels at full resolution.
        pooled_bottleneck: the authors' x8 decoder: the completed tokens are average-pooled to half
            the token grid and a fourth up-block climbs back (see ``unetr.py``); False: UNETR's
            bottleneck at the token grid.
        skip_assembly: how the sparse network feeds the decoder's hidden-state skips. "per_depth"
            builds each skip from the tokens that exist at its depth (each token at the deepest
            block it reached); "shared" feeds the completed tokens to every skip, as the authors'
            code does. None (default): "per_depth" with MTA; "shared" with the mask baseline, whose
            decoder may see nothing but the completed tokens, so "per_depth" is refused there.
        sampler, tau, sigma, num_samples: the training-time top-k sampler (see ``stp.py``).
        token_selection: "stp" (learned scorer), "random" (the ablation: uniform random tokens in
            training, a seeded random draw at inference), "evenly" (the no-learning baseline: an evenly
            spread subset of the grid, ``spread_priority``, the same in every tile) or "oracle" (the bound:
            the tokens holding the most ground-truth foreground). The oracle reads the label as one extra
            input channel after the image's ``input_channels``, a (B, 1, *S) foreground mask that only
            selection sees.
        context_fraction: STP only: the share of each stage's kept tokens reserved for evenly spread
            context before the scorer chooses the rest (0: none).
        class_quota: STP only: the share of each stage's kept tokens reserved for class quotas (0: none;
            see ``quota.py``). The scorers then also predict, per class, whether a token holds it, and every
            class predicted present keeps its most probable tokens before the usual score ranks the rest.
        quota_classes: how many classes the scorers predict presence of (``guidance_loss`` takes their
            voxels). None: ``num_classes - 1``, the foreground of softmax label targets, whose channel 0 is
            background; region targets (one sigmoid channel per region) pass ``num_classes``.

    Shapes: (B, C, *S) -> (B, num_classes, *S), S divisible by ``token_size``. After each forward,
    ``kept_indices`` holds, per stage, the (B, K) grid positions of the tokens kept, and
    ``scorer_logits`` / ``scored_positions`` the (B, N_s) logits of each STP stage's scorer and the
    grid positions they score (what ``guidance_loss`` supervises), and with class quotas
    ``scorer_class_logits`` their (B, N_s, quota_classes) per-class presence logits.

    ``token_gate`` (None by default) is the seam of the joint search's token dimension: a module
    called before block i as ``token_gate(i, tokens, positions)`` that returns ``GatedTokens``. It may
    weight the tokens' normalised inputs (the search masks; the blocks must then accept a
    ``token_weight``) or drop tokens (the sliced subnet). A dropped token joins the tokens of the next
    pruning stage (the final ones after the last stage), so it reaches the skips, the assembly and the
    decoder as the last block that kept it left it.
    """

    def __init__(
        self,
        input_channels: int,
        num_classes: int,
        patch_size: Sequence[int],
        token_size: Sequence[int],
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        prune_after: Sequence[int] = (3, 6, 9),
        keep_ratios: Sequence[float] | None = (0.25, 0.25, 0.25),
        completion: str = "mta",
        completion_dim: int | None = None,
        completion_depth: int = 1,
        completion_heads: int | None = None,
        feature_size: int = 16,
        pooled_bottleneck: bool = False,
        skip_assembly: str | None = None,
        sampler: str = "gumbel",
        tau: float = 1.0,
        sigma: float = 0.05,
        num_samples: int = 100,
        token_selection: str = "stp",
        context_fraction: float = 0.0,
        class_quota: float = 0.0,
        quota_classes: int | None = None,
    ) -> None:
        super().__init__()
        _check_sizes(input_channels=input_channels, num_classes=num_classes, embed_dim=embed_dim, depth=depth,
                     num_heads=num_heads, mlp_ratio=mlp_ratio, drop_path_rate=drop_path_rate,
                     completion_dim=completion_dim, completion_depth=completion_depth,
                     completion_heads=completion_heads, feature_size=feature_size)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.token_size = tuple(int(t) for t in token_size)
        self.token_grid = token_grid(self.patch_size, self.token_size)
        if embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}.")
        if depth < 4:
            raise ValueError(f"depth must be at least 4 (UNETR takes skips at depth/4, /2, 3/4), got {depth}.")
        if completion not in COMPLETIONS:
            raise ValueError(f"completion must be one of {tuple(COMPLETIONS)}, got {completion!r}.")
        skip_assembly = _resolve_skip_assembly(skip_assembly, completion)
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}.")
        if token_selection not in TOKEN_SELECTIONS:
            raise ValueError(f"token_selection must be one of {TOKEN_SELECTIONS}, got {token_selection!r}.")
        for name, share in (("context_fraction", context_fraction), ("class_quota", class_quota)):
            if share and token_selection != "stp":
                raise ValueError(f"{name} reserves part of the STP scorer's budget; token_selection "
                                 f"{token_selection!r} has no scorer, so leave {name} at 0.")
        quota_classes = num_classes - 1 if quota_classes is None else quota_classes
        if class_quota and not 1 <= quota_classes <= num_classes:
            raise ValueError(f"class quotas need 1 to num_classes={num_classes} quota classes, got {quota_classes} "
                             "(None: every output channel but the background).")
        self.input_channels = input_channels
        # The oracle's label channel rides behind the image channels; a dense net has no selection to feed.
        self.label_channels = 1 if token_selection == "oracle" and keep_ratios is not None else 0
        self.token_selection = token_selection
        self.context_fraction = context_fraction
        self.class_quota = class_quota
        self.quota_classes = quota_classes if class_quota else 0
        # The outputs of blocks d/4, d/2 and 3d/4 (1-based: 3/6/9 of 12), UNETR's z3, z6, z9, which are also the
        # pruning points, so each per-depth skip is the last full view before a stage removes tokens. MONAI's UNETR
        # indexes hidden_states_out[3/6/9], the outputs of blocks 4/7/10.
        self.skip_depths = (depth // 4, depth // 2, 3 * depth // 4)
        self.skip_assembly = skip_assembly

        self.patch_embed = PatchEmbed(input_channels, embed_dim, self.token_size)
        self.pos_embed = LearnedPositionEmbedding(self.token_grid, embed_dim)
        # Stochastic depth grows linearly with depth, as in ViT; plain floats so the net can be built on 'meta'.
        drop_path = [drop_path_rate * i / (depth - 1) for i in range(depth)]
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, drop_path=dp) for dp in drop_path
        )
        self.norm = nn.LayerNorm(embed_dim)

        if keep_ratios is None:
            self.prune_after: tuple[int, ...] = ()
            self.pruning = nn.ModuleList()
            self.completion = None
        else:
            _check_schedule(depth, tuple(prune_after), tuple(keep_ratios))
            self.prune_after = tuple(int(b) for b in prune_after)
            self.pruning = nn.ModuleList(
                SoftTopKPruning(embed_dim, r, sampler, tau, sigma, num_samples, context_fraction, class_quota,
                                self.quota_classes)
                if token_selection == "stp" else RandomTokenPruning(r, seed=stage) if token_selection == "random"
                else PriorityTokenPruning(r, seed=stage)
                for stage, r in enumerate(keep_ratios)
            )
            default_dim = min(embed_dim, max(64, embed_dim // 4))
            self.completion = COMPLETIONS[completion](
                self.token_grid,
                embed_dim,
                num_sources=len(self.prune_after) + 1,
                dim=completion_dim or default_dim,
                depth=completion_depth,
                num_heads=completion_heads or _default_heads(completion_dim or default_dim),
            )
        # The pooled bottleneck halves every even axis of the token grid; an odd axis is left unpooled.
        pool_strides = tuple(2 if g % 2 == 0 else 1 for g in self.token_grid) if pooled_bottleneck else None
        self.decoder = UNETRDecoder(
            input_channels, num_classes, embed_dim, self.token_size, feature_size, pool_strides=pool_strides
        )
        self.token_gate: nn.Module | None = None
        self.kept_indices: list[torch.Tensor] = []
        self.scorer_logits: list[torch.Tensor] = []
        self.scorer_class_logits: list[torch.Tensor] = []
        self.scored_positions: list[torch.Tensor] = []
        self.apply(_init_transformer_weights)
        for stage in self.pruning:  # the scorers keep their own initialisation (see TokenScorer)
            if isinstance(stage, SoftTopKPruning):
                stage.scorer.reset_parameters()

    def __getstate__(self) -> dict:
        # The last forward's scorer logits belong to its autograd graph, which cannot be copied or pickled;
        # a deep copy (FLOP counting) or a pickled module starts without them.
        state = self.__dict__.copy()
        state["scorer_logits"], state["scorer_class_logits"], state["scored_positions"] = [], [], []
        return state

    @property
    def is_sparse(self) -> bool:
        return self.completion is not None

    def no_weight_decay(self) -> set[str]:
        """Embedding tables that weight decay should leave alone."""
        return {n for n, _ in self.named_parameters() if n.endswith(("pos_embed", "source_embed", "mask_token"))}

    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter layers for timm's layer-wise lr decay (``param_groups_layer_decay``).

        The embeddings are layer 0 and block i is layer i + 1; everything after the encoder (final
        norm, scorers, completion, decoder) is unmatched, so it is the last layer and keeps the full
        learning rate, as in BEiT and the SCD authors' code.
        """
        return {"stem": r"^patch_embed|^pos_embed", "blocks": r"^blocks\.(\d+)"}

    def guidance_loss(self, foreground: torch.Tensor, valid: torch.Tensor | None = None,
                      target: str = "foreground", classes: torch.Tensor | None = None) -> torch.Tensor:
        """Guidance of the scorers for the last forward pass (see ``guidance.py``).

        Args:
            foreground: (B, *S) bool, voxels of any foreground class in the input patch.
            valid: (B, *S) bool, annotated voxels (None: all); tokens without any do not count.
            target: what each token's logit learns, one of ``GUIDANCE_TARGETS``.
            classes: (B, quota_classes, *S) bool, the voxels of each quota class (not ignore-label ones);
                needed with class quotas, whose per-class presence logits learn from it.

        Returns a scalar, zero when no scorer ran (dense or random pruning): with class quotas, the sum of the
        guidance and the per-class presence loss.
        """
        tokens_target = guidance_target(foreground, self.token_size, target, valid)
        tokens_valid = None if valid is None else token_foreground(valid, self.token_size)
        loss = foreground_guidance_loss(self.scorer_logits, self.scored_positions, tokens_target, tokens_valid)
        if not self.scorer_class_logits:
            return loss
        if classes is None or classes.shape[1] != self.quota_classes:
            raise ValueError(f"the class quotas' presence logits learn from (B, {self.quota_classes}, *S) voxels "
                             f"of each class; got {None if classes is None else tuple(classes.shape)}.")
        presence = class_presence(classes, self.token_size)
        return loss + foreground_guidance_loss(self.scorer_class_logits, self.scored_positions, presence,
                                               tokens_valid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes, *S) for images (B, C, *S)."""
        return self.forward_head(self.forward_features(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The decoder's full-resolution features (B, feature_size, *S), before its 1x1 output convolution.

        With ``forward_head`` this is ``forward`` in two steps (as timm models split it), so a wrapper that
        adds a head of its own (``search.WithPixelClassifier``) composes without hooks.
        """
        self._check_input(x)
        priority = None
        if self.label_channels:
            x, label = x[:, :self.input_channels], x[:, self.input_channels:]
            priority = token_voxel_counts(label[:, 0] > 0.5, self.token_size)
        grid = token_grid(x.shape[2:], self.token_size)
        tokens = self.patch_embed(x) + self.pos_embed(grid)
        if not self.is_sparse and self.token_gate is None:
            return self._forward_dense(x, tokens, grid)
        if self.token_selection == "evenly" or self.context_fraction:
            priority = spread_priority(grid, x.device).expand(x.shape[0], -1)
        return self._forward_sparse(x, tokens, grid, priority)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Logits from ``forward_features``' output: the decoder's 1x1 output convolution."""
        return self.decoder.out(features)

    def _forward_dense(self, x: torch.Tensor, tokens: torch.Tensor, grid: tuple[int, ...]) -> torch.Tensor:
        hidden_skips = []
        for depth, block in enumerate(self.blocks, start=1):
            tokens = block(tokens)
            if depth in self.skip_depths:
                hidden_skips.append(tokens)
        return self.decoder(x, self.norm(tokens), hidden_skips, grid, head=False)

    def _forward_sparse(self, x: torch.Tensor, tokens: torch.Tensor, grid: tuple[int, ...],
                        priority: torch.Tensor | None = None) -> torch.Tensor:
        """``priority``: (B, N) per grid position, what the oracle, the evenly spaced rule and STP's context rank by.

        Also the dense network's forward when a token gate may drop tokens: no stages, and the final
        tokens go back to the grid by a scatter instead of the completion.
        """
        batch, num_tokens, _ = tokens.shape
        positions = torch.arange(num_tokens, device=x.device).expand(batch, num_tokens)
        # Tokens that left the encoder, one source per stage: those the gate dropped since the previous stage,
        # then those the stage pruned. ``dropped`` collects the gate's since the last stage.
        left, left_positions, dropped, dropped_positions = [], [], [], []
        hidden_skips, kept_indices, scorer_logits, class_logits, scored_positions = [], [], [], [], []
        stages = iter(zip(self.prune_after, self.pruning))
        next_stage = next(stages, None)
        for depth, block in enumerate(self.blocks, start=1):
            if self.token_gate is None:
                tokens = block(tokens)
            else:
                gated = self.token_gate(depth - 1, tokens, positions)
                if gated.dropped is not None:
                    dropped.append(gated.dropped)
                    dropped_positions.append(gated.dropped_positions)
                positions = gated.positions
                tokens = block(gated.tokens) if gated.weight is None else block(gated.tokens, gated.weight)
            if depth in self.skip_depths and self.skip_assembly == "per_depth":
                hidden_skips.append(scatter_tokens([*left, *dropped, tokens],
                                                   [*left_positions, *dropped_positions, positions], num_tokens))
            if next_stage is not None and depth == next_stage[0]:
                scored = positions
                remaining_priority = None if priority is None else torch.gather(priority, 1, positions)
                # Any tuple in PrunedTokens' field order is a stage output (a wrapped stage may return a plain one).
                out = PrunedTokens(*next_stage[1](tokens, positions, remaining_priority))
                tokens, positions = out.kept, out.kept_positions
                if out.logits is not None:
                    scorer_logits.append(out.logits)
                    scored_positions.append(scored)
                if out.class_logits is not None:
                    class_logits.append(out.class_logits)
                left.append(_join([*dropped, out.pruned]))
                left_positions.append(_join([*dropped_positions, out.pruned_positions]))
                dropped, dropped_positions = [], []
                kept_indices.append(positions.detach())
                next_stage = next(stages, None)
        final = self.norm(_join([*dropped, tokens]))
        final_positions = _join([*dropped_positions, positions])
        if self.completion is None:  # dense with a gate: every token is where the last block that kept it left it
            completed = scatter_tokens([final], [final_positions], num_tokens)
        else:
            completed = self.completion([*left, final], [*left_positions, final_positions], grid)
        if self.skip_assembly == "shared":
            hidden_skips = [completed] * len(self.skip_depths)
        self.kept_indices = kept_indices
        self.scorer_logits, self.scorer_class_logits, self.scored_positions = scorer_logits, class_logits, \
            scored_positions
        return self.decoder(x, completed, hidden_skips, grid, head=False)

    def _check_input(self, x: torch.Tensor) -> None:
        ndim = len(self.token_size)
        if x.ndim != ndim + 2:
            raise ValueError(
                f"SCDNet was built for {ndim}D images and expects input of shape (B, C, {', '.join('S' * ndim)}), "
                f"got a tensor with {x.ndim} dimensions {tuple(x.shape)}."
            )
        if x.shape[0] == 0:
            raise ValueError(f"SCDNet got an empty batch {tuple(x.shape)}; pass at least one image.")
        if self.label_channels and x.shape[1] == self.input_channels:
            raise ValueError(
                f"this SCDNet selects tokens with the oracle, which reads the label as channel {x.shape[1]} after "
                f"the image's {self.input_channels}; the input has none. The oracle is an evaluation bound: train "
                "and validate it with nnUNetTrainerSCD_Oracle*, it cannot predict unlabelled images."
            )
        if x.shape[1] != self.input_channels + self.label_channels:
            raise ValueError(
                f"SCDNet was built for {self.input_channels} input channel(s) but the input has {x.shape[1]}; "
                "check that every image has the channels the plans expect."
            )


def _join(parts: list[torch.Tensor]) -> torch.Tensor:
    """Token sets (B, K_i, ...) as one (B, sum K_i, ...); a single set as it is (no copy)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)


def _resolve_skip_assembly(skip_assembly: str | None, completion: str) -> str:
    if skip_assembly is None:
        return "shared" if completion == "mask" else "per_depth"
    if skip_assembly not in SKIP_ASSEMBLIES:
        raise ValueError(f"skip_assembly must be one of {SKIP_ASSEMBLIES} or None, got {skip_assembly!r}.")
    if completion == "mask" and skip_assembly == "per_depth":
        raise ValueError(
            "completion='mask' is the MIM baseline, whose decoder sees only the final kept tokens and the mask token; "
            "per-depth skips would hand it the pruned tokens. Use skip_assembly='shared' (or None)."
        )
    return skip_assembly


def _default_heads(width: int) -> int:
    # Heads of 64 channels, the head size flash and memory-efficient SDPA kernels are fastest at.
    heads = max(1, width // 64)
    while width % heads:
        heads -= 1
    return heads


def _init_transformer_weights(module: nn.Module) -> None:
    # ViT initialisation; convolutions keep PyTorch's defaults as in UNETR.
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
