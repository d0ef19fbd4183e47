from __future__ import annotations

import math

import pytest
import torch

from nnunet_scd.model.mta import MaskTokenCompletion, MultiLayerTokenAssembly
from nnunet_scd.model.stp import SoftTopKPruning
from nnunet_scd.model.tokens import gather_tokens, scatter_tokens


def _split_positions(batch: int, num_tokens: int, sizes: list[int]) -> list[torch.Tensor]:
    perms = torch.stack([torch.randperm(num_tokens) for _ in range(batch)])
    return list(perms.split(sizes, dim=1))


def test_gather_scatter_round_trip_restores_every_token_to_its_position():
    tokens = torch.randn(3, 60, 7)
    positions = _split_positions(3, 60, [30, 20, 10])
    parts = [gather_tokens(tokens, p) for p in positions]
    assert torch.equal(scatter_tokens(parts, positions, 60), tokens)


def test_pruning_stages_then_scatter_restore_the_grid_exactly():
    tokens = torch.randn(2, 64, 16)
    positions = torch.arange(64).expand(2, 64)
    current, parts, part_positions = tokens, [], []
    for keep in (0.5, 0.25):
        out = SoftTopKPruning(16, keep).eval()(current, positions)
        parts.append(out.pruned)
        part_positions.append(out.pruned_positions)
        current, positions = out.kept, out.kept_positions
    restored = scatter_tokens([*parts, current], [*part_positions, positions], 64)
    assert torch.equal(restored, tokens)


def test_scatter_fills_uncovered_positions_with_the_fill_token():
    fill = torch.tensor([7.0, -7.0])
    kept = torch.randn(2, 3, 2)
    positions = torch.tensor([[0, 4, 2], [5, 1, 3]])
    grid = scatter_tokens([kept], [positions], 6, fill=fill)
    for b in range(2):
        uncovered = sorted(set(range(6)) - set(positions[b].tolist()))
        assert torch.equal(grid[b, uncovered], fill.expand(len(uncovered), 2))
        assert torch.equal(grid[b, positions[b]], kept[b])


@pytest.mark.parametrize("completion", [MultiLayerTokenAssembly, MaskTokenCompletion])
@pytest.mark.parametrize("grid", [(4, 4, 4), (6, 8)])
def test_completion_returns_the_full_grid_at_encoder_width(completion, grid):
    n = math.prod(grid)
    module = completion(grid, embed_dim=24, num_sources=3, dim=16, depth=2, num_heads=2)
    positions = _split_positions(2, n, [n // 2, n // 4, n - n // 2 - n // 4])
    sources = [torch.randn(2, p.shape[1], 24) for p in positions]
    out = module(sources, positions, grid)
    assert out.shape == (2, n, 24)
    out.sum().backward()
    assert all(p.grad is not None for p in module.parameters() if p.requires_grad)


def test_mta_gives_every_source_its_own_norm_projection_and_embedding():
    mta = MultiLayerTokenAssembly((2, 2, 2), embed_dim=8, num_sources=4, dim=8, depth=1, num_heads=2)
    assert len(mta.source_proj) == 4 and mta.source_embed.shape == (4, 8)
    assert len({id(p[1].weight) for p in mta.source_proj}) == 4


def test_mta_uses_every_source_while_mask_completion_uses_only_the_last():
    grid, n = (2, 4, 4), 32
    positions = _split_positions(1, n, [16, 8, 8])
    sources = [torch.randn(1, p.shape[1], 12, requires_grad=True) for p in positions]
    expectations = ((MultiLayerTokenAssembly, [True, True, True]), (MaskTokenCompletion, [False, False, True]))
    for cls, expect_grad in expectations:
        for s in sources:
            s.grad = None
        cls(grid, embed_dim=12, num_sources=3, dim=8, depth=1, num_heads=2)(sources, positions, grid).sum().backward()
        assert [s.grad is not None and s.grad.abs().sum().item() > 0 for s in sources] == expect_grad


def test_mta_rejects_a_wrong_number_of_sources():
    mta = MultiLayerTokenAssembly((2, 2), embed_dim=8, num_sources=3, dim=8, depth=1, num_heads=2)
    with pytest.raises(ValueError, match="expected 3 token sources, got 2"):
        mta([torch.randn(1, 2, 8)] * 2, [torch.tensor([[0, 1]]), torch.tensor([[2, 3]])], (2, 2))
