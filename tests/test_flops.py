from __future__ import annotations

import torch

from nnunet_scd.measure import count_flops
from nnunet_scd.model.vit import Block


def test_count_flops_counts_attention_and_every_linear_layer_of_a_block():
    n, d = 64, 32
    block = Block(d, num_heads=4, qkv_bias=True)
    linear = 2 * n * d * (3 * d + d + 4 * d + 4 * d)  # qkv, proj, fc1, fc2
    attention = 2 * (2 * n * n * d)  # q @ k^T and attn @ v
    assert count_flops(block, (1, n, d)) == linear + attention


def test_count_flops_leaves_the_model_on_its_device():
    block = Block(16, num_heads=2)
    count_flops(block, (1, 8, 16))
    assert all(p.device.type == "cpu" for p in block.parameters())
    assert torch.isfinite(block(torch.randn(1, 8, 16))).all()
