from __future__ import annotations

import pytest
import torch

from nnunet_scd.model.vit import LearnedPositionEmbedding, PatchEmbed, sincos_position_embedding, token_grid


def test_token_grid_is_patch_over_token_per_axis():
    assert token_grid((32, 96, 80), (4, 16, 8)) == (8, 6, 10)
    assert token_grid((64, 48), (16, 8)) == (4, 6)


def test_token_size_that_does_not_divide_names_the_axis_and_a_fix():
    with pytest.raises(ValueError, match=r"along axis 2 \(x\).*e\.g\. 64"):
        token_grid((32, 64, 60), (4, 8, 8))
    with pytest.raises(ValueError, match=r"axis 0 \(y\)"):
        token_grid((20, 64), (8, 8))


def test_token_size_needs_one_entry_per_axis():
    with pytest.raises(ValueError, match="one token size per spatial axis"):
        token_grid((32, 64, 64), (8, 8))


def test_patch_embed_flattens_in_grid_c_order():
    embed = PatchEmbed(in_channels=2, embed_dim=5, token_size=(2, 4, 4))
    x = torch.randn(3, 2, 8, 16, 12)
    tokens = embed(x)
    assert tokens.shape == (3, 4 * 4 * 3, 5)
    # Token at grid coordinate (1, 2, 0) is computed from the voxels of that cell only.
    cell = x[:, :, 2:4, 8:12, 0:4]
    expected = embed.proj(cell).flatten(1)
    index = 1 * (4 * 3) + 2 * 3 + 0
    torch.testing.assert_close(tokens[:, index], expected)


def test_position_embedding_is_returned_as_is_for_its_own_grid_and_resampled_otherwise():
    pos = LearnedPositionEmbedding((4, 6, 6), embed_dim=8)
    assert pos((4, 6, 6)) is pos.pos_embed
    resampled = pos((8, 6, 12))
    assert resampled.shape == (1, 8 * 6 * 12, 8)
    resampled.sum().backward()
    assert pos.pos_embed.grad is not None and pos.pos_embed.grad.abs().sum() > 0


def test_sincos_embedding_gives_every_position_a_distinct_code():
    table = sincos_position_embedding((3, 4, 5), dim=24)
    assert table.shape == (1, 60, 24)
    distances = torch.cdist(table[0], table[0]) + torch.eye(60) * 1e3
    assert distances.min() > 1e-3
