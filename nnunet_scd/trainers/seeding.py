"""Seeds for a training run, so that a rerun on the CPU reproduces its Dice.

nnU-Net seeds nothing: weights, patch sampling and augmentation differ on every run, and its
data-augmentation workers reseed themselves from the operating system. ``base.RecipeTrainer`` seeds
the main process before the network is built and gives every augmentation worker its own seed derived
from the run's seed, the stream (train or validation), the DDP rank and the worker index.

The seed is the trainer's ``seed`` attribute unless the environment variable ``nnUNet_SCD_seed``
says otherwise (an integer, or ``none`` for nnU-Net's unseeded behaviour): ``nnUNetv2_train`` has no
seed option, and an environment variable is how nnU-Net itself takes run settings.

What it does not make reproducible: a run resumed with ``--c`` (RNG states are not checkpointed),
more than one augmentation worker (their batches interleave in arrival order, as the name of
nnU-Net's ``NonDetMultiThreadedAugmenter`` says), and CUDA kernels that are nondeterministic.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

__all__ = ["MAX_SEED", "SEED_ENVIRONMENT_VARIABLE", "resolve_seed", "seed_everything", "worker_seeds"]

SEED_ENVIRONMENT_VARIABLE = "nnUNet_SCD_seed"
# torch.manual_seed takes at most 2**64 - 1, and the main process is seeded with seed + DDP rank.
MAX_SEED = 2**63 - 1


def resolve_seed(default: int | None) -> int | None:
    """The run's seed: ``nnUNet_SCD_seed`` if set (an integer 0..MAX_SEED, or ``none``), else ``default``.

    Raises:
        ValueError: a one-line message naming the variable, its value and the accepted range.
    """
    value = os.environ.get(SEED_ENVIRONMENT_VARIABLE, "").strip()
    if not value:
        return default
    if value.lower() == "none":
        return None
    try:
        seed = int(value)
    except ValueError:
        seed = -1
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"{SEED_ENVIRONMENT_VARIABLE}={value[:40]!r} is not a seed: set it to an integer >= 0 and "
                         f"<= {MAX_SEED} (2**63 - 1), or to 'none' for nnU-Net's unseeded runs.")
    return seed


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (the ones nnU-Net and its transforms draw from)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def worker_seeds(seed: int, stream: int, rank: int, num_workers: int) -> list[int]:
    """One independent 32-bit seed per augmentation worker of one stream (0: train, 1: validation) and rank."""
    states = np.random.SeedSequence([seed, stream, rank]).spawn(num_workers)
    return [int(s.generate_state(1)[0]) for s in states]
