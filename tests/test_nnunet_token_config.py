"""Token size choice, patch rounding and the write-back into nnU-Net's plans."""

from __future__ import annotations

import copy
import json

import pytest

from nnunet_scd.nnunet.token_config import (
    PLANS_KEY,
    apply_token_config,
    choose_token_size,
    resolve_token_config,
    round_up_to_multiple,
)

# nnU-Net's cascade stage inherits everything, patch included, from 3d_fullres.
CASCADE = {"3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}}


def test_isotropic_spacing_gives_base_tokens_on_every_axis() -> None:
    assert choose_token_size([1.0, 1.0, 1.0], [64, 64, 64]) == (8, 8, 8)


@pytest.mark.parametrize(
    ("spacing", "expected"),
    [
        ([2.5, 0.8, 0.8], (2, 8, 8)),
        ([1.6, 0.8, 0.8], (4, 8, 8)),
        ([5.0, 0.8, 0.8], (1, 8, 8)),
        ([3.0, 0.76, 0.76], (2, 8, 8)),
    ],
)
def test_thick_slice_axis_gets_finer_tokens(spacing: list[float], expected: tuple[int, ...]) -> None:
    assert choose_token_size(spacing, [40, 160, 160]) == expected


def test_token_never_exceeds_the_planned_patch() -> None:
    assert choose_token_size([1.0, 1.0, 1.0], [4, 64, 6]) == (4, 8, 4)


def test_two_dimensional_configuration() -> None:
    assert choose_token_size([0.8, 0.8], [64, 80]) == (8, 8)
    assert choose_token_size([0.8, 0.8], [64, 80], base=16) == (16, 16)


def test_token_budget_coarsens_finest_physical_axis_up_to_base() -> None:
    spacing, patch = [3.0, 0.76, 0.76], [80, 160, 160]
    assert choose_token_size(spacing, patch) == (2, 8, 8)  # 40 * 20 * 20 = 16000 tokens
    assert choose_token_size(spacing, patch, max_tokens=8000) == (4, 8, 8)
    assert choose_token_size(spacing, patch, max_tokens=4096) == (8, 8, 8)
    # Never beyond the base: a budget below 8^3 tokens leaves the base token size.
    assert choose_token_size(spacing, patch, max_tokens=10) == (8, 8, 8)


def test_bad_spacing_or_base_is_rejected_with_a_reason() -> None:
    with pytest.raises(ValueError, match="one spacing per patch axis"):
        choose_token_size([1.0, 1.0], [64, 64, 64])
    with pytest.raises(ValueError, match="power of two"):
        choose_token_size([1.0, 1.0, 1.0], [64, 64, 64], base=6)


def test_round_up_to_multiple() -> None:
    assert round_up_to_multiple([28, 60, 80], [2, 8, 8]) == (28, 64, 80)
    assert round_up_to_multiple([5, 9], [4, 8]) == (8, 16)


def test_resolve_rounds_the_patch_up_and_remembers_the_planned_one() -> None:
    config = {"patch_size": [20, 60, 52], "spacing": [1.0, 1.0, 1.0]}
    tokens = resolve_token_config(config, "3d_fullres")
    assert tokens.token_size == (8, 8, 8)
    assert tokens.patch_size == (24, 64, 56)
    assert tokens.planned_patch_size == (20, 60, 52)
    assert tokens.grid == (3, 8, 7)
    assert tokens.num_tokens == 168


def test_patch_smaller_than_a_forced_token_is_a_clear_error() -> None:
    config = {"patch_size": [8, 64, 64], "spacing": [1.0, 1.0, 1.0]}
    with pytest.raises(ValueError, match=r"smaller than one token \[16, 16, 16\] along axis \[0\]"):
        resolve_token_config(config, "3d_fullres", fixed_token_size=(16, 16, 16))


def test_forced_token_with_wrong_dimensionality_is_a_clear_error() -> None:
    config = {"patch_size": [64, 64], "spacing": [1.0, 1.0]}
    with pytest.raises(ValueError, match="Use a 2D token size"):
        resolve_token_config(config, "2d", fixed_token_size=(8, 8, 8))


def test_apply_writes_configuration_and_plans_and_survives_json(make_plans) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = make_plans([28, 60, 80], [2.5, 0.8, 0.8], other_configurations=CASCADE)
    manager = PlansManager(plans)
    configuration = manager.get_configuration("3d_fullres")
    tokens = resolve_token_config(configuration.configuration, "3d_fullres")
    apply_token_config(manager.plans, "3d_fullres", configuration.configuration, tokens)

    assert configuration.patch_size == [28, 64, 80]
    saved = json.loads(json.dumps(manager.plans))  # what nnU-Net writes to the results folder
    reloaded = PlansManager(saved).get_configuration("3d_fullres")
    assert reloaded.patch_size == [28, 64, 80]
    assert reloaded.configuration[PLANS_KEY] == {"token_size": [2, 8, 8], "planned_patch_size": [28, 60, 80]}


def test_recorded_tokens_win_over_a_fresh_choice() -> None:
    # Prediction reads the results folder's plans: the recorded geometry must be rebuilt even if
    # a fresh choice (here: a capped token on a small planned patch) would now differ.
    config = {"patch_size": [6, 64, 64], "spacing": [1.0, 1.0, 1.0]}
    first = resolve_token_config(config, "3d_fullres")
    assert first.token_size == (4, 8, 8) and first.patch_size == (8, 64, 64)
    plans = {"configurations": {"3d_fullres": copy.deepcopy(config)}}
    apply_token_config(plans, "3d_fullres", config, first)
    assert choose_token_size(config["spacing"], config["patch_size"]) == (8, 8, 8)
    assert resolve_token_config(config, "3d_fullres") == first
    assert resolve_token_config(plans["configurations"]["3d_fullres"], "3d_fullres") == first


def test_resolution_from_the_preprocessed_plans_is_deterministic(make_plans) -> None:
    # `--c` rebuilds the trainer from the untouched preprocessed plans: same answer every time.
    plans = make_plans([28, 60, 80], [2.5, 0.8, 0.8], other_configurations=CASCADE)
    a = resolve_token_config(copy.deepcopy(plans["configurations"]["3d_fullres"]), "3d_fullres")
    b = resolve_token_config(copy.deepcopy(plans["configurations"]["3d_fullres"]), "3d_fullres")
    assert a == b


def test_inherited_configuration_is_overridden_without_touching_its_parent(make_plans) -> None:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans = make_plans([20, 60, 60], [1.0, 1.0, 1.0], other_configurations=CASCADE)
    manager = PlansManager(plans)
    cascade = manager.get_configuration("3d_cascade_fullres")
    tokens = resolve_token_config(cascade.configuration, "3d_cascade_fullres")
    apply_token_config(manager.plans, "3d_cascade_fullres", cascade.configuration, tokens)

    assert plans["configurations"]["3d_fullres"]["patch_size"] == [20, 60, 60]
    assert PLANS_KEY not in plans["configurations"]["3d_fullres"]
    rebuilt = PlansManager(json.loads(json.dumps(plans))).get_configuration("3d_cascade_fullres")
    assert rebuilt.patch_size == [24, 64, 64]


def test_hand_edited_patch_that_breaks_the_record_is_rejected() -> None:
    config = {
        "patch_size": [28, 60, 80],
        "spacing": [2.5, 0.8, 0.8],
        PLANS_KEY: {"token_size": [2, 8, 8], "planned_patch_size": [28, 60, 80]},
    }
    with pytest.raises(ValueError, match="not a multiple"):
        resolve_token_config(config, "3d_fullres")
