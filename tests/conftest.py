"""Shared fixtures: small, fast model configurations for CPU tests."""

from __future__ import annotations

import pytest
import torch

# Small enough for a CPU test, deep enough for three pruning stages and UNETR skips at 1/2/3.
TINY = dict(embed_dim=32, depth=4, num_heads=2, prune_after=(1, 2, 3), feature_size=4)


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
