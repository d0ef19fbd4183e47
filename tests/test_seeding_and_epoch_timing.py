"""Seeded training and the per-epoch time breakdown of ``RecipeTrainer`` (real trainers: test_nnunet_trainers)."""

from __future__ import annotations

import time

import pytest

from nnunet_scd.trainers.base import RecipeTrainer
from nnunet_scd.trainers.epoch_timing import TimedLoader, format_epoch_breakdown, parse_epoch_breakdowns
from nnunet_scd.trainers.seeding import SEED_ENVIRONMENT_VARIABLE, resolve_seed, worker_seeds


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

    loader = TimedLoader(SlowLoader())
    assert [next(loader) for _ in range(3)] == [1, 1, 1]
    assert 0.06 <= loader.waited < 1.0
    assert loader.num_processes == 3


def test_epoch_breakdowns_are_read_back_from_a_log() -> None:
    text = ("2026-01-01 00:00:00.000000: Epoch time: 9.5 s\n2026-01-01 00:00:00.000001: Epoch breakdown: network "
            "steps 7.25 s, waiting for batches 0.50 s, validation 1.75 s, end of epoch 0.31 s\nnoise\n")
    assert parse_epoch_breakdowns(text * 2) == 2 * [{"network steps": 7.25, "waiting for batches": 0.5,
                                                     "validation": 1.75, "end of epoch": 0.31}]
    assert parse_epoch_breakdowns("Epoch time: 9.5 s") == []
    assert parse_epoch_breakdowns(format_epoch_breakdown(7.25, 0.5, 1.75, 0.31)) == parse_epoch_breakdowns(text)[:1]


class _FakeAugmenter:
    """Stands in for nnU-Net's NonDetMultiThreadedAugmenter: workers started with seeds, restartable."""

    num_processes = 2

    def __init__(self) -> None:
        self.seeds: list[int] | None = None
        self.restarts = 0

    def restart(self) -> None:
        self.restarts += 1

    def __next__(self) -> int:
        return 1


def _bare_trainer(monkeypatch: pytest.MonkeyPatch, seed: int) -> RecipeTrainer:
    """A ``RecipeTrainer`` whose nnU-Net parts are stand-ins: no plans, no data, fake augmenters."""
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    def on_train_start(self: nnUNetTrainer) -> None:
        self.dataloader_train, self.dataloader_val = self.get_dataloaders()

    monkeypatch.setattr(nnUNetTrainer, "initialize", lambda self: None)
    monkeypatch.setattr(nnUNetTrainer, "get_dataloaders", lambda self: (_FakeAugmenter(), _FakeAugmenter()))
    monkeypatch.setattr(nnUNetTrainer, "on_train_start", on_train_start)
    monkeypatch.setattr(nnUNetTrainer, "print_to_log_file", lambda self, *args, **kwargs: None)
    trainer = object.__new__(type("Trainer", (RecipeTrainer,), {"seed": seed}))
    trainer.local_rank = 0
    return trainer


def test_worker_seeds_reach_nnunets_own_loaders_under_the_epoch_timing(monkeypatch: pytest.MonkeyPatch) -> None:
    # Regression: the timing wrapper once received the seeds instead of the augmenter, which then restarted
    # its workers unseeded.
    monkeypatch.delenv(SEED_ENVIRONMENT_VARIABLE, raising=False)
    trainer = _bare_trainer(monkeypatch, seed=3)
    trainer.initialize()
    trainer.on_train_start()
    assert isinstance(trainer.dataloader_train, TimedLoader)
    train, val = trainer.dataloader_train.loader, trainer.dataloader_val
    assert train.seeds == worker_seeds(3, 0, 0, 2) and train.restarts == 1
    assert val.seeds == worker_seeds(3, 1, 0, 2) and val.restarts == 1
    assert next(trainer.dataloader_train) == 1


@pytest.mark.parametrize("value", ["abc", str(2**64), "-3"])
def test_a_bad_or_overflowing_seed_stops_the_training_in_one_line_naming_variable_value_and_range(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    # Regression: abc gave no range, and 2**64 passed here and overflowed in torch.manual_seed (a traceback).
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

    trainer = _bare_trainer(monkeypatch, seed=0)

    def went_on(self: nnUNetTrainer) -> None:
        raise AssertionError("the training went on with a bad seed")

    monkeypatch.setattr(nnUNetTrainer, "initialize", went_on)
    monkeypatch.setenv(SEED_ENVIRONMENT_VARIABLE, value)
    with pytest.raises(SystemExit) as exit_info:
        trainer.initialize()
    message = str(exit_info.value.code)
    assert len(message.splitlines()) == 1
    assert f"{SEED_ENVIRONMENT_VARIABLE}={value!r}" in message and ">= 0 and <= 9223372036854775807" in message
