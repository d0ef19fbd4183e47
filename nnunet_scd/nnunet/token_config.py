"""Token size and patch size for a ViT trainer, derived from nnU-Net's plans.

nnU-Net plans a patch that is divisible by 2**(number of poolings) per axis, which says nothing
about a ViT token size. Here the token size is chosen per axis from the voxel spacing (finer
tokens along the thick-slice axis, so a token covers a roughly isotropic physical extent), the
patch is rounded up to a token multiple, and both are written back into the configuration and
the plans. The plans.json that nnU-Net copies into the results folder then carries the exact
geometry, so prediction rebuilds the identical network.

nnU-Net orders axes z first (the axis with the largest spacing comes first after transposition).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "PLANS_KEY",
    "TokenConfig",
    "apply_token_config",
    "choose_token_size",
    "resolve_token_config",
    "round_up_to_multiple",
]

# Key under plans["configurations"][name] that records what this module decided.
PLANS_KEY = "scd_tokens"


@dataclass(frozen=True)
class TokenConfig:
    """Geometry of one ViT configuration: token size, the (rounded) patch and nnU-Net's planned patch."""

    token_size: tuple[int, ...]
    patch_size: tuple[int, ...]
    planned_patch_size: tuple[int, ...]

    @property
    def grid(self) -> tuple[int, ...]:
        """Tokens per axis."""
        return tuple(p // t for p, t in zip(self.patch_size, self.token_size, strict=True))

    @property
    def num_tokens(self) -> int:
        return math.prod(self.grid)

    def to_plans(self) -> dict[str, list[int]]:
        return {
            "token_size": list(self.token_size),
            "planned_patch_size": list(self.planned_patch_size),
        }


def _is_power_of_two(n: int) -> bool:
    return n >= 1 and n & (n - 1) == 0


def _floor_power_of_two(n: int) -> int:
    return 1 << (int(n).bit_length() - 1)


def round_up_to_multiple(patch_size: Sequence[int], token_size: Sequence[int]) -> tuple[int, ...]:
    """Round each patch axis up to the next multiple of the token size on that axis."""
    return tuple(int(math.ceil(p / t) * t) for p, t in zip(patch_size, token_size, strict=True))


def choose_token_size(
    spacing: Sequence[float],
    patch_size: Sequence[int],
    base: int = 8,
    max_tokens: int | None = None,
) -> tuple[int, ...]:
    """Pick a power-of-two token size per axis.

    The finest axis gets ``base``; an axis with spacing ``s`` gets about ``base * min(spacing) / s``
    (so 2.5 x 0.8 x 0.8 mm with base 8 gives 2 x 8 x 8). No axis gets a token larger than its
    patch. If ``max_tokens`` is given and the patch would hold more tokens than that, the axis
    whose tokens cover the smallest physical extent is coarsened (never beyond ``base``) until
    the budget holds or every axis is at ``base``.

    Args:
        spacing: voxel spacing per axis, nnU-Net order (z first).
        patch_size: nnU-Net's planned patch size, same order.
        base: token size along the finest axis; a power of two.
        max_tokens: optional cap on the number of tokens per patch.
    """
    if len(spacing) != len(patch_size) or len(patch_size) not in (2, 3):
        raise ValueError(
            f"Expected 2 or 3 axes with one spacing per patch axis, got spacing {list(spacing)} and patch "
            f"{list(patch_size)}."
        )
    if not _is_power_of_two(base):
        raise ValueError(f"The base token size must be a power of two, got {base}.")
    if any(p < 1 for p in patch_size) or any(s <= 0 for s in spacing):
        raise ValueError(
            f"Invalid plans: patch size {list(patch_size)} and spacing {list(spacing)} must be positive."
        )

    finest = min(spacing)
    tokens = []
    for s, p in zip(spacing, patch_size, strict=True):
        ideal = base * finest / s
        t = min(base, max(1, 2 ** round(math.log2(ideal))))
        tokens.append(min(t, _floor_power_of_two(p)))

    if max_tokens is not None:
        while math.prod(math.ceil(p / t) for p, t in zip(patch_size, tokens, strict=True)) > max_tokens:
            growable = [i for i, t in enumerate(tokens) if t < base and 2 * t <= patch_size[i]]
            if not growable:
                break
            # Coarsen where a token covers the least physical extent; ties go to the axis with more tokens.
            axis = min(growable, key=lambda i: (tokens[i] * spacing[i], -patch_size[i] / tokens[i]))
            tokens[axis] *= 2
    return tuple(tokens)


def _check_token_fits(token_size: Sequence[int], patch_size: Sequence[int], configuration_name: str) -> None:
    if len(token_size) != len(patch_size):
        raise ValueError(
            f"Token size {list(token_size)} has {len(token_size)} axes but the patch of configuration "
            f"'{configuration_name}' is {list(patch_size)}. Use a {len(patch_size)}D token size for this "
            "configuration."
        )
    if not all(_is_power_of_two(t) for t in token_size):
        raise ValueError(f"Token sizes must be powers of two per axis, got {list(token_size)}.")
    too_small = [i for i, (p, t) in enumerate(zip(patch_size, token_size, strict=True)) if p < t]
    if too_small:
        raise ValueError(
            f"The planned patch {list(patch_size)} of configuration '{configuration_name}' is smaller than "
            f"one token {list(token_size)} along axis {too_small}. Use a trainer with a smaller token size, "
            "or plan a larger patch (edit patch_size in the plans, or re-plan with more GPU memory)."
        )


def resolve_token_config(
    configuration: dict[str, Any],
    configuration_name: str,
    base: int = 8,
    fixed_token_size: Sequence[int] | None = None,
    max_tokens: int | None = None,
) -> TokenConfig:
    """Token geometry for one plans configuration (a dict as in ``ConfigurationManager.configuration``).

    A configuration that already carries a record, from :func:`apply_token_config` (the plans.json
    of a results folder) or from the SCD planner (``nnUNetPlans_SCD``), is taken as recorded, so
    prediction rebuilds the network it was trained with and planned tokens are not re-derived.
    Otherwise the token size comes from ``fixed_token_size`` if given, else from
    :func:`choose_token_size`, and the patch is rounded up to a token multiple.
    """
    patch = tuple(int(p) for p in configuration["patch_size"])
    record = configuration.get(PLANS_KEY)
    if record is not None:
        token = tuple(int(t) for t in record["token_size"])
        _check_token_fits(token, patch, configuration_name)
        if round_up_to_multiple(patch, token) != patch:
            raise ValueError(
                f"Configuration '{configuration_name}' records token size {list(token)} but its patch "
                f"{list(patch)} is not a multiple of it; the plans were edited by hand. Restore patch_size "
                f"to a multiple of the token size or delete the '{PLANS_KEY}' entry to let the trainer "
                "re-derive both."
            )
        return TokenConfig(token, patch, tuple(int(p) for p in record["planned_patch_size"]))

    if fixed_token_size is not None:
        token = tuple(int(t) for t in fixed_token_size)
    else:
        token = choose_token_size(configuration["spacing"], patch, base=base, max_tokens=max_tokens)
    _check_token_fits(token, patch, configuration_name)
    return TokenConfig(token, round_up_to_multiple(patch, token), patch)


def apply_token_config(
    plans: dict[str, Any], configuration_name: str, configuration: dict[str, Any], config: TokenConfig
) -> None:
    """Write the patch size and the token record into the resolved configuration and into the plans.

    ``configuration`` is the resolved dict the trainer uses (``configuration_manager.configuration``);
    ``plans`` is what nnU-Net saves as the results folder's plans.json. The entry of the named
    configuration is overridden, so a configuration that inherits its patch from another keeps the
    parent untouched. Other keys of an existing record (how a planner chose the tokens) are kept.
    """
    for target in (configuration, plans["configurations"][configuration_name]):
        target["patch_size"] = list(config.patch_size)
        target[PLANS_KEY] = {**target.get(PLANS_KEY, {}), **config.to_plans()}
