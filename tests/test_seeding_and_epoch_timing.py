"""Seeded training and the per-epoch time breakdown (pure parts; the trainers' use is in test_nnunet_trainers)."""

from __future__ import annotations

import time

import pytest

from nnunet_scd.nnunet.epoch_timing import _TimedLoader, parse_epoch_breakdowns
from nnunet_scd.nnunet.seeding import SEED_ENVIRONMENT_VARIABLE, resolve_seed, worker_seeds


def test_seed_comes_from_the_class_unless_the_environment_sets_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SEED_ENVIRONMENT_VARIABLE, raising=False)
    assert resolve_seed(0) == 0 and resolve_seed(None) is None
    monkeypatch.setenv(SEED_ENVIRONMENT_VARIABLE, " 7 ")
    assert resolve_seed(0) == 7
    monkeypatch.setenv(SEED_ENVIRONMENT_VARIABLE, "None")
    assert resolve_seed(0) is None


@pytest.mark.parametrize("value", ["-1", "1.5", "abc"])
def test_a_bad_seed_is_refused_with_what_to_set(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(SEED_ENVIRONMENT_VARIABLE, value)
    with pytest.raises(ValueError, match=f"{SEED_ENVIRONMENT_VARIABLE}=.*integer >= 0.*'none'"):
        resolve_seed(0)


def test_worker_seeds_are_reproducible_and_distinct_per_stream_rank_and_worker() -> None:
    assert worker_seeds(3, 0, 0, 4) == worker_seeds(3, 0, 0, 4)
    seeds = worker_seeds(3, 0, 0, 4) + worker_seeds(3, 1, 0, 4) + worker_seeds(3, 0, 1, 4) + worker_seeds(4, 0, 0, 4)
    assert len(set(seeds)) == len(seeds) == 16
    assert all(0 <= s < 2**32 for s in seeds)


def test_timed_loader_adds_up_the_waits_and_delegates() -> None:
    class SlowLoader:
        num_processes = 3

        def __next__(self) -> int:
            time.sleep(0.02)
            return 1

    loader = _TimedLoader(SlowLoader())
    assert [next(loader) for _ in range(3)] == [1, 1, 1]
    assert 0.06 <= loader.waited < 1.0
    assert loader.num_processes == 3


def test_epoch_breakdowns_are_read_back_from_a_log() -> None:
    text = ("2026-01-01 00:00:00.000000: Epoch time: 9.5 s\n2026-01-01 00:00:00.000001: Epoch breakdown: network "
            "steps 7.25 s, waiting for batches 0.50 s, validation 1.75 s, end of epoch 0.31 s\nnoise\n")
    assert parse_epoch_breakdowns(text * 2) == 2 * [{"network steps": 7.25, "waiting for batches": 0.5,
                                                     "validation": 1.75, "end of epoch": 0.31}]
    assert parse_epoch_breakdowns("Epoch time: 9.5 s") == []
