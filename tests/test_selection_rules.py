"""The token-selection designs beside foreground guidance: evenly spaced, reserved context, top-k in training,
boundary targets. Each selects at inference from the image alone."""

from __future__ import annotations

import pytest
import torch

from nnunet_scd.model.guidance import guidance_target
from nnunet_scd.model.stp import SoftTopKPruning, spread_priority
from nnunet_scd.trainers import catalog as tr
from nnunet_scd.trainers.recipe import LENGTHS

GRID = (4, 8, 8)


def _coords(positions: torch.Tensor) -> torch.Tensor:
    return torch.stack([positions // 64, positions // 8 % 8, positions % 8], dim=-1)


def test_spread_priority_first_eighth_is_the_even_lattice_and_prefixes_nest() -> None:
    order = torch.argsort(spread_priority(GRID), descending=True)
    first = _coords(order[:32])
    assert (first % 2 == 0).all() and len({tuple(c.tolist()) for c in first}) == 32
    quarter = _coords(order[:64])  # the next eighth fills in the last axis
    assert ((quarter[:, 0] % 2 == 0) & (quarter[:, 1] % 2 == 0)).all()
    assert torch.equal(torch.sort(spread_priority(GRID)).values.unique(), torch.sort(spread_priority(GRID)).values)


def test_spread_priority_covers_a_grid_that_is_not_a_power_of_two() -> None:
    priority = spread_priority((3, 5))
    assert priority.shape == (15,) and priority.unique().numel() == 15
    first = torch.argsort(priority, descending=True)[:4]
    assert all(r % 2 == 0 and c % 2 == 0 for r, c in (divmod(p, 5) for p in first.tolist()))  # even rows, columns


@pytest.mark.parametrize("training", [False, True])
def test_evenly_spaced_network_keeps_the_same_spread_set_for_any_image(tiny_scdnet, training: bool) -> None:
    net = tiny_scdnet(1, 3, (8, 32, 32), (2, 4, 4), keep_ratios=(0.25, 0.5, 0.5), token_selection="evenly")
    net.train(training)
    net(torch.randn(2, 1, 8, 32, 32))
    first = [k.clone() for k in net.kept_indices]
    net(torch.randn(2, 1, 8, 32, 32) * 5)
    assert all(torch.equal(a, b) for a, b in zip(first, net.kept_indices, strict=True))
    assert torch.equal(first[0][0], first[0][1])  # the same subset in every image (and tile)
    coords = _coords(first[0][0])
    assert (coords[:, 0] % 2 == 0).all() and (coords[:, 1] % 2 == 0).all()
    assert set(first[1][0].tolist()) <= set(first[0][0].tolist())


@pytest.mark.parametrize("training", [False, True])
def test_reserved_context_comes_first_and_the_scorer_fills_the_rest(training: bool) -> None:
    stage = SoftTopKPruning(dim=8, keep_ratio=0.25, context_fraction=0.25).train(training)
    x, positions = torch.randn(2, 64, 8), torch.arange(64).expand(2, 64)
    priority = torch.arange(64.0).flip(0).expand(2, 64)  # tokens 0, 1, 2, 3 are the best spread
    out = stage(x, positions, priority)
    assert out.kept_positions.shape == (2, 16)
    assert out.kept_positions[:, :4].tolist() == [[0, 1, 2, 3]] * 2
    with torch.no_grad():
        scores = stage.scorer.logits(x)
    if not training:  # the rest: the scorer's top 12 among the other 60
        expected = torch.topk(scores[:, 4:], 12).indices + 4
        assert torch.equal(torch.sort(out.kept_positions[:, 4:]).values, torch.sort(expected).values)


def test_context_needs_its_priority_and_a_scorer(tiny_scdnet) -> None:
    with pytest.raises(ValueError, match="needs the per-token priority"):
        SoftTopKPruning(dim=8, keep_ratio=0.5, context_fraction=0.5)(torch.randn(1, 8, 8), torch.arange(8)[None])
    with pytest.raises(ValueError, match="has no scorer, so leave context_fraction at 0"):
        tiny_scdnet(1, 3, (8, 32, 32), (2, 4, 4), token_selection="random", context_fraction=0.25)
    with pytest.raises(ValueError, match="context_fraction must be in"):
        SoftTopKPruning(dim=8, keep_ratio=0.5, context_fraction=1.0)


def test_topk_sampler_trains_on_the_set_inference_keeps_and_passes_gradient_to_the_scorer() -> None:
    stage = SoftTopKPruning(dim=8, keep_ratio=0.25, sampler="topk")
    x, positions = torch.randn(2, 32, 8, requires_grad=True), torch.arange(32).expand(2, 32)
    trained = stage.train()(x, positions)
    assert torch.equal(trained.kept_positions, stage.eval()(x, positions).kept_positions)
    assert torch.allclose(trained.kept, torch.gather(x, 1, trained.kept_positions[..., None].expand(-1, -1, 8)))
    trained.kept.sum().backward()
    assert stage.scorer.head[-1].weight.grad.abs().sum() > 0


def test_boundary_target_ranks_surface_above_interior_above_background() -> None:
    foreground = torch.zeros(1, 4, 4, dtype=torch.bool)
    foreground[0, :2, :2] = True  # token (0, 0): interior, all foreground
    foreground[0, 2, 3] = True  # token (1, 1): one foreground voxel among background, a surface
    target = guidance_target(foreground, (2, 2), "boundary")
    assert target.tolist() == [[0.5, 0.0, 0.0, 1.0]]
    assert guidance_target(foreground, (2, 2), "foreground").tolist() == [[1.0, 0.0, 0.0, 1.0]]
    annotated = torch.zeros_like(foreground)
    annotated[0, 2, 3] = True  # only the foreground voxel is annotated there: no background seen, an interior
    assert guidance_target(foreground, (2, 2), "boundary", annotated)[0, 3] == 0.5
    with pytest.raises(ValueError, match="guidance target must be one of"):
        guidance_target(foreground, (2, 2), "centre")


def test_boundary_guidance_loss_reaches_the_scorers(tiny_scdnet) -> None:
    net = tiny_scdnet(1, 3, (8, 32, 32), (2, 4, 4)).train()
    net(torch.randn(2, 1, 8, 32, 32))
    foreground = torch.zeros(2, 8, 32, 32, dtype=torch.bool)
    foreground[:, :, 10:20, 10:20] = True
    loss = net.guidance_loss(foreground, target="boundary")
    loss.backward()
    assert torch.isfinite(loss) and net.pruning[0].scorer.head[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("cls", "changed"), [
    (tr.nnUNetTrainerSCD_EvenlySpaced_Tiny, {"token_selection": "evenly"}),
    (tr.nnUNetTrainerSCD_Context_Tiny, {"context_fraction": 0.25}),
    (tr.nnUNetTrainerSCD_TopKTraining_Tiny, {"sampler": "topk"}),
    (tr.nnUNetTrainerSCD_BoundaryGuidance_Tiny, {}),
])
def test_each_design_trainer_changes_only_its_one_thing(cls: type, changed: dict) -> None:
    assert cls.network_kwargs() == {**tr.nnUNetTrainerSCD_Tiny.network_kwargs(), **changed}
    assert cls.guidance_target == ("boundary" if cls is tr.nnUNetTrainerSCD_BoundaryGuidance_Tiny else "foreground")
    for name in (f"{cls.__name__}_converge", f"{cls.__name__.replace('_Tiny', '_keep0p1_Tiny')}_converge"):
        variant = getattr(tr, name)
        assert variant.recipe == LENGTHS["converge"].apply(cls.recipe) and issubclass(variant, cls)


@pytest.mark.parametrize("cls", [tr.nnUNetTrainerSCD_EvenlySpaced_Tiny, tr.nnUNetTrainerSCD_Context_Tiny,
                                 tr.nnUNetTrainerSCD_TopKTraining_Tiny, tr.nnUNetTrainerSCD_BoundaryGuidance_Tiny])
def test_every_design_predicts_from_the_image_alone(cls: type) -> None:
    from nnunet_scd import SCDNet

    net = SCDNet(1, 3, (8, 32, 32), (2, 4, 4), **{**cls.network_kwargs(), "embed_dim": 32, "num_heads": 2}).eval()
    assert net.label_channels == 0
    with torch.no_grad():
        assert net(torch.randn(1, 1, 8, 32, 32)).shape == (1, 3, 8, 32, 32)
