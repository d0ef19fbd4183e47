"""The SCD trainers as nnU-Net sees them: discovery, network rebuild, recipe, checkpoints."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest
import torch

from nnunet_scd.nnunet.token_config import PLANS_KEY
from nnunet_scd.trainers import catalog as tr
from nnunet_scd.trainers.epoch_timing import parse_epoch_breakdowns
from nnunet_scd.trainers.optim import WarmupPolyLRScheduler
from nnunet_scd.trainers.recipe import LENGTHS
from nnunet_scd.trainers.seeding import SEED_ENVIRONMENT_VARIABLE

DATASET_JSON = {
    "channel_names": {"0": "CT"},
    "labels": {"background": 0, "liver": 1, "spleen": 2},
    "numTraining": 4,
    "file_ending": ".nii.gz",
}


@pytest.fixture
def make_trainer(nnunet_env: Path, make_plans):
    """A CPU trainer of ``cls`` on fake plans (nnU-Net's folders in a temp dir)."""
    def make(cls: type, patch: list[int], spacing: list[float], configuration: str = "3d_fullres"):
        plans = make_plans(patch, spacing, configuration)
        plans["continue_training"] = False
        return cls(plans, configuration, 0, copy.deepcopy(DATASET_JSON), torch.device("cpu"))
    return make


def build(cls: type, plans: dict, configuration: str, deep_supervision: bool) -> torch.nn.Module:
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(plans)
    return cls.build_network_architecture(
        manager, manager.get_configuration(configuration), 1, 3, enable_deep_supervision=deep_supervision
    )


PUBLIC_API = ("nnUNetTrainerSCD", "nnUNetTrainerUNETR", "nnUNetTrainerSCD_MIM", "nnUNetTrainerSCDSearch",
              "nnUNetTrainerSCDSlim", "nnUNetTrainerSCD_RandomPruning")


def test_nnunet_finds_every_shipped_trainer_by_name_through_the_shim_folder(nnunet_env: Path) -> None:
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    assert {*PUBLIC_API, *(f"{n}_Tiny" for n in PUBLIC_API)} <= set(tr.TRAINERS)
    # As nnUNetv2_train and nnUNetv2_predict look each up: nnU-Net's own trainers first, then nnUNet_extTrainer.
    found = {name: recursive_find_trainer_class_by_name(name) for name in tr.TRAINERS}
    assert found == tr.TRAINERS
    assert all(cls.__name__ == name and cls.__qualname__ == name for name, cls in found.items())


def test_the_shim_folder_is_what_nnunet_ext_trainer_must_list(nnunet_env: Path) -> None:
    from nnunet_scd.trainers.ext_trainer import TRAINER_SHIM_DIR, ext_trainer_status

    assert ext_trainer_status() is None
    assert [p.name for p in TRAINER_SHIM_DIR.glob("*.py")] == ["nnunet_scd_trainers.py"]


def test_missing_ext_trainer_variable_gets_our_message(monkeypatch: pytest.MonkeyPatch) -> None:
    from nnunet_scd.trainers.ext_trainer import ext_trainer_status

    monkeypatch.delenv("nnUNet_extTrainer", raising=False)
    message = ext_trainer_status()
    assert message is not None and "export nnUNet_extTrainer=" in message


def test_trainer_writes_rounded_patch_and_tokens_into_configuration_and_plans(nnunet_env: Path, make_trainer) -> None:
    trainer = make_trainer(tr.nnUNetTrainerSCD_Tiny, [20, 44, 44], [2.5, 0.8, 0.8])
    assert trainer.configuration_manager.patch_size == [20, 48, 48]
    saved = trainer.plans_manager.plans["configurations"]["3d_fullres"]
    assert saved["patch_size"] == [20, 48, 48]
    assert saved[PLANS_KEY] == {"token_size": [2, 8, 8], "planned_patch_size": [20, 44, 44]}
    assert trainer.enable_deep_supervision is False
    assert type(trainer._build_loss()).__name__ == "DC_and_CE_loss"  # no deep supervision wrapper
    log = Path(trainer.log_file).read_text()
    assert "token size [2, 8, 8], patch [20, 48, 48] (rounded up from the planned [20, 44, 44])" in log


def test_two_dimensional_configuration_gets_2d_tokens(nnunet_env: Path, make_trainer) -> None:
    trainer = make_trainer(tr.nnUNetTrainerUNETR_Tiny, [28, 36], [0.8, 0.8], configuration="2d")
    assert trainer.configuration_manager.patch_size == [32, 40]
    net = build(tr.nnUNetTrainerUNETR_Tiny, trainer.plans_manager.plans, "2d", deep_supervision=False)
    assert net(torch.randn(1, 1, 32, 40)).shape == (1, 3, 32, 40)


@pytest.mark.parametrize("cls", [tr.nnUNetTrainerSCD_Tiny, tr.nnUNetTrainerUNETR_Tiny, tr.nnUNetTrainerSCD_MIM_Tiny])
def test_prediction_rebuilds_the_trained_network_exactly(nnunet_env: Path, cls: type, make_trainer) -> None:
    trainer = make_trainer(cls, [6, 20, 20], [2.5, 0.8, 0.8])
    trained = build(cls, trainer.plans_manager.plans, "3d_fullres", deep_supervision=True)
    # The predictor reads plans.json from the results folder and turns deep supervision off.
    results_plans = json.loads(json.dumps(trainer.plans_manager.plans))
    rebuilt = build(cls, results_plans, "3d_fullres", deep_supervision=False)
    trained_state, rebuilt_state = trained.state_dict(), rebuilt.state_dict()
    assert list(trained_state) == list(rebuilt_state)
    assert all(trained_state[k].shape == rebuilt_state[k].shape for k in trained_state)
    rebuilt.load_state_dict(trained_state, strict=True)
    trained.eval(), rebuilt.eval()
    x = torch.randn(1, 1, 6, 24, 24)
    with torch.no_grad():
        torch.testing.assert_close(trained(x), rebuilt(x))


def test_variants_change_only_what_their_name_says() -> None:
    base = tr.nnUNetTrainerSCD.network_kwargs()
    assert (base["embed_dim"], base["depth"], base["num_heads"]) == (768, 12, 12)
    assert base["prune_after"] == (3, 6, 9) and base["keep_ratios"] == (0.25, 0.25, 0.25)
    assert base["completion"] == "mta" and base["skip_assembly"] is None and not base["pooled_bottleneck"]
    expected = {
        "nnUNetTrainerUNETR": {"keep_ratios": None},
        "nnUNetTrainerSCD_MIM": {"completion": "mask"},
        "nnUNetTrainerSCD_SharedSkips": {"skip_assembly": "shared"},
        "nnUNetTrainerSCD_FullWidthCompletion": {"completion_dim": 768, "completion_heads": 12},
        "nnUNetTrainerSCD_Zhou2023Recipe": {"drop_path_rate": 0.1},  # ViT-B's already; the recipe is the optimiser
        "nnUNetTrainerSCD_keep0p5": {"keep_ratios": (0.5, 0.5, 0.5)},
        "nnUNetTrainerSCD_keep0p1": {"keep_ratios": (0.1, 0.1, 0.1)},
    }
    for name, change in expected.items():
        assert getattr(tr, name).network_kwargs() == {**base, **change}, name
    tiny = tr.nnUNetTrainerSCD_Tiny.network_kwargs()
    assert tr.nnUNetTrainerUNETR_Tiny.network_kwargs() == {**tiny, "keep_ratios": None}
    assert tr.nnUNetTrainerSCD_Tiny_5epochs.network_kwargs() == tiny
    five = tr.nnUNetTrainerSCD_Tiny_5epochs.recipe
    assert five == LENGTHS["5epochs"].apply(tr.nnUNetTrainerSCD_Tiny.recipe) and five.epochs == 5


@pytest.mark.parametrize("cls, lr, warmup", [
    (tr.nnUNetTrainerSCD_Tiny_cpuSmoke, 1e-3, 0.125),  # the row's lr and warm-up replace the trainer's
    (tr.nnUNetTrainerSCD_Zhou2023Recipe_Tiny_cpuStudy, 1.72e-2 * 2 / 256, 0.01),  # the row keeps the trainer's
])
def test_a_recipe_row_sets_length_checkpoints_mirroring_and_lr(nnunet_env: Path, cls: type, lr: float,
                                                                warmup: float, make_trainer) -> None:
    trainer = make_trainer(cls, [16, 32, 32], [1.0, 1.0, 1.0])
    recipe = cls.recipe
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch,
            trainer.save_every) == (recipe.epochs, recipe.iterations_per_epoch, recipe.val_iterations_per_epoch,
                                    recipe.checkpoint_every)
    assert trainer.initial_lr == pytest.approx(lr) and trainer.recipe.optimizer.warmup_fraction == warmup
    *_, mirror_axes = trainer.configure_rotation_dummyDA_mirroring_and_inital_patch_size()
    assert mirror_axes is None and trainer.inference_allowed_mirroring_axes is None
    mirrored = make_trainer(tr.nnUNetTrainerSCD_Tiny, [16, 32, 32], [1.0, 1.0, 1.0])
    assert mirrored.configure_rotation_dummyDA_mirroring_and_inital_patch_size()[-1] == (0, 1, 2)


def test_dense_and_sparse_networks_differ_only_in_pruning(nnunet_env: Path, make_trainer) -> None:
    trainer = make_trainer(tr.nnUNetTrainerSCD_Tiny, [16, 32, 32], [1.0, 1.0, 1.0])
    plans = trainer.plans_manager.plans
    sparse = build(tr.nnUNetTrainerSCD_Tiny, plans, "3d_fullres", False)
    dense = build(tr.nnUNetTrainerUNETR_Tiny, plans, "3d_fullres", False)
    assert sparse.is_sparse and not dense.is_sparse
    sparse.eval()
    with torch.no_grad():
        sparse(torch.randn(1, 1, 16, 32, 32))
    grid_tokens = 2 * 4 * 4
    assert [k.shape[1] for k in sparse.kept_indices][0] < grid_tokens


def test_image_with_the_wrong_number_of_channels_is_a_clear_error(nnunet_env: Path, make_trainer) -> None:
    trainer = make_trainer(tr.nnUNetTrainerSCD_Tiny, [16, 32, 32], [1.0, 1.0, 1.0])
    net = build(tr.nnUNetTrainerSCD_Tiny, trainer.plans_manager.plans, "3d_fullres", False)
    with pytest.raises(ValueError, match="1 input channel"):
        net(torch.randn(1, 2, 16, 32, 32))


def test_recipe_adamw_without_decay_on_embeddings_and_biases(nnunet_env: Path, make_trainer) -> None:
    trainer = make_trainer(tr.nnUNetTrainerSCD_Tiny, [16, 32, 32], [1.0, 1.0, 1.0])
    trainer.network = build(tr.nnUNetTrainerSCD_Tiny, trainer.plans_manager.plans, "3d_fullres", False)
    optimizer, scheduler = trainer.configure_optimizers()
    assert isinstance(optimizer, torch.optim.AdamW) and isinstance(scheduler, WarmupPolyLRScheduler)
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    assert len(optimizer.param_groups) == 2
    decay, no_decay = sorted(optimizer.param_groups, key=lambda g: -g["weight_decay"])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert all(g.get("lr_scale", 1.0) == 1.0 for g in optimizer.param_groups)  # no layer-wise decay in our recipe
    by_id = {id(p): n for n, p in trainer.network.named_parameters()}
    undecayed = {by_id[id(p)] for p in no_decay["params"]}
    assert any(n.endswith("pos_embed") for n in undecayed)
    assert all(p.ndim >= 2 for p in decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(by_id)


def test_search_masks_get_their_own_group_without_decay_at_the_mask_lr(nnunet_env: Path, make_trainer) -> None:
    cls = tr.nnUNetTrainerUNETRSearch_Tiny_cpuShort
    trainer = make_trainer(cls, [16, 32, 32], [1.0, 1.0, 1.0])
    trainer.network = build(cls, trainer.plans_manager.plans, "3d_fullres", False)
    optimizer, scheduler = trainer.configure_optimizers()
    *weights, masks = optimizer.param_groups
    mask_names = {n for n, _ in trainer.network.named_parameters() if n.endswith("_mask")}
    by_id = {id(p): n for n, p in trainer.network.named_parameters()}
    assert {by_id[id(p)] for p in masks["params"]} == mask_names and len(mask_names) == 2 * 6
    assert not any(by_id[id(p)] in mask_names for g in weights for p in g["params"])
    assert masks["weight_decay"] == 0.0 and masks["lr_scale"] == cls.recipe.optimizer.mask_lr_scale == 10.0
    scheduler.step(3)
    assert masks["lr"] == pytest.approx(10 * weights[0]["lr"]) and weights[0]["lr"] == pytest.approx(
        scheduler.lr_at(3))


def test_token_mask_logits_learn_at_their_multiple_of_the_mask_lr(nnunet_env: Path, make_trainer) -> None:
    from nnunet_scd.search import LOGIT_LR_SCALE

    cls = tr.nnUNetTrainerUNETRSearchPositionTokens_Tiny_converge
    trainer = make_trainer(cls, [16, 32, 32], [1.0, 1.0, 1.0])
    trainer.network = build(cls, trainer.plans_manager.plans, "3d_fullres", False)
    optimizer, scheduler = trainer.configure_optimizers()
    *weights, masks, logits = optimizer.param_groups
    logit_ids = {id(p) for p in trainer.network.token_gate.logits}
    assert {id(p) for p in logits["params"]} == logit_ids and len(logit_ids) == 6
    assert not logit_ids & {id(p) for g in (*weights, masks) for p in g["params"]}
    assert LOGIT_LR_SCALE == 3.0 and logits["weight_decay"] == 0.0
    scheduler.step(300)
    assert logits["lr"] == pytest.approx(LOGIT_LR_SCALE * masks["lr"]) and masks["lr"] == pytest.approx(
        cls.recipe.optimizer.mask_lr_scale * scheduler.lr_at(300))


def test_train_step_updates_weights_with_clipped_gradients(nnunet_env: Path, make_trainer) -> None:
    trainer = make_trainer(tr.nnUNetTrainerSCD_Tiny, [8, 16, 16], [1.0, 1.0, 1.0])
    trainer.network = build(tr.nnUNetTrainerSCD_Tiny, trainer.plans_manager.plans, "3d_fullres", False)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.loss = trainer._build_loss()
    before = trainer.network.patch_embed.proj.weight.detach().clone()
    batch = {"data": torch.randn(2, 1, 8, 16, 16), "target": torch.randint(0, 3, (2, 1, 8, 16, 16)).float()}
    out = trainer.train_step(batch)
    assert torch.isfinite(torch.as_tensor(out["loss"]))
    assert not torch.equal(before, trainer.network.patch_embed.proj.weight)
    norm = torch.nn.utils.get_total_norm([p.grad for p in trainer.network.parameters() if p.grad is not None])
    assert norm <= trainer.recipe.optimizer.grad_clip + 1e-4


def test_warmup_then_poly_schedule_is_stateless_in_the_epoch() -> None:
    param = torch.nn.Parameter(torch.zeros(1))
    scheduler = WarmupPolyLRScheduler(torch.optim.AdamW([param], lr=1.0), 1.0, num_epochs=100, warmup_epochs=10)
    assert scheduler.lr_at(0) == pytest.approx(0.1)
    assert scheduler.lr_at(9) == pytest.approx(1.0)
    assert scheduler.lr_at(10) == pytest.approx(1.0)
    lrs = [scheduler.lr_at(e) for e in range(10, 100)]
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False)) and 0 < lrs[-1] < 0.1
    scheduler.step(57)  # a resumed run at epoch 57
    assert scheduler.optimizer.param_groups[0]["lr"] == pytest.approx(scheduler.lr_at(57))
    with pytest.raises(ValueError, match="warmup_epochs"):
        WarmupPolyLRScheduler(torch.optim.AdamW([param], lr=1.0), 1.0, num_epochs=5, warmup_epochs=5)


def test_a_group_with_an_lr_scale_follows_the_schedule_at_that_multiple() -> None:
    weights, masks = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.ones(1))
    optimizer = torch.optim.AdamW([{"params": [weights]}, {"params": [masks], "lr_scale": 10.0}], lr=1.0)
    scheduler = WarmupPolyLRScheduler(optimizer, 1e-3, num_epochs=12, warmup_epochs=2)
    for epoch in (0, 5, 11):
        scheduler.step(epoch)
        assert optimizer.param_groups[0]["lr"] == pytest.approx(scheduler.lr_at(epoch))
        assert optimizer.param_groups[1]["lr"] == pytest.approx(10 * scheduler.lr_at(epoch))


def test_checkpoint_write_is_atomic_when_killed_mid_write(
    nnunet_env: Path, monkeypatch: pytest.MonkeyPatch, make_trainer
) -> None:
    trainer = make_trainer(tr.nnUNetTrainerSCD_Tiny_5epochs, [16, 32, 32], [1.0, 1.0, 1.0])
    trainer.network = build(tr.nnUNetTrainerSCD_Tiny, trainer.plans_manager.plans, "3d_fullres", False)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    target = Path(trainer.output_folder) / "checkpoint_latest.pth"
    trainer.save_checkpoint(str(target))
    good = target.read_bytes()
    assert torch.load(target, weights_only=False)["trainer_name"] == "nnUNetTrainerSCD_Tiny_5epochs"

    def dies_half_way(obj: object, f: str) -> None:
        Path(f).write_bytes(good[: len(good) // 2])  # a partial write, then the process dies
        raise KeyboardInterrupt

    trainer.current_epoch = 3
    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        trainer.save_checkpoint(str(target))
    monkeypatch.undo()
    assert target.read_bytes() == good
    checkpoint = torch.load(target, weights_only=False)
    assert checkpoint["current_epoch"] == 1
    trainer.network.load_state_dict(checkpoint["network_weights"])
    assert [p.name for p in Path(trainer.output_folder).iterdir() if "tmp" in p.name] == []  # its own temp removed


def _trainer_with_checkpoints(make_trainer, epochs: dict[str, int]):
    """A CPU trainer ready to load (no dataset needed) and, per file name, a checkpoint saved at that epoch."""
    trainer = make_trainer(tr.nnUNetTrainerSCD_Tiny_5epochs, [16, 32, 32], [1.0, 1.0, 1.0])
    trainer.network = build(tr.nnUNetTrainerSCD_Tiny, trainer.plans_manager.plans, "3d_fullres", False)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.was_initialized = True
    for name, epoch in epochs.items():
        trainer.current_epoch = epoch - 1  # nnU-Net saves the epoch to continue at
        trainer.save_checkpoint(str(Path(trainer.output_folder) / name))
    trainer.current_epoch = 0
    return trainer


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_continue_with_a_corrupt_latest_checkpoint_falls_back_to_best(nnunet_env: Path, make_trainer) -> None:
    from nnunetv2.run.run_training import maybe_load_checkpoint

    trainer = _trainer_with_checkpoints(make_trainer, {"checkpoint_best.pth": 2, "checkpoint_latest.pth": 4})
    _truncate(Path(trainer.output_folder) / "checkpoint_latest.pth")
    maybe_load_checkpoint(trainer, continue_training=True, validation_only=False)  # nnUNetv2_train --c
    assert trainer.current_epoch == 2
    log = Path(trainer.log_file).read_text()
    assert "checkpoint_latest.pth is truncated or corrupt" in log and "checkpoint_best.pth instead" in log


@pytest.mark.parametrize("present,corrupt", [
    ({"checkpoint_latest.pth": 4}, "checkpoint_latest.pth"),  # nothing to fall back to
    ({"checkpoint_final.pth": 5, "checkpoint_best.pth": 2}, "checkpoint_final.pth"),  # final never falls back
])
def test_a_corrupt_checkpoint_without_fallback_stops_with_one_line_naming_it(
    nnunet_env: Path, present: dict[str, int], corrupt: str, make_trainer
) -> None:
    from nnunetv2.run.run_training import maybe_load_checkpoint

    trainer = _trainer_with_checkpoints(make_trainer, present)
    _truncate(Path(trainer.output_folder) / corrupt)
    with pytest.raises(SystemExit) as exit_info:
        maybe_load_checkpoint(trainer, continue_training=True, validation_only=False)
    message = str(exit_info.value.code)
    assert f"{corrupt} is truncated or corrupt" in message and "Move it away" in message
    assert len(message.splitlines()) == 1


def test_random_pruning_and_no_guidance_trainers_change_only_their_one_thing() -> None:
    base = tr.nnUNetTrainerSCD_Tiny.network_kwargs()
    assert base["token_selection"] == "stp" and tr.nnUNetTrainerSCD_Tiny.guidance_weight == 1.0
    assert tr.nnUNetTrainerSCD_RandomPruning_Tiny.network_kwargs() == {**base, "token_selection": "random"}
    assert tr.nnUNetTrainerSCD_NoGuidance_Tiny.network_kwargs() == base
    assert tr.nnUNetTrainerSCD_NoGuidance_Tiny.guidance_weight == 0.0
    for name in ("nnUNetTrainerSCD_keep0p1_Tiny_cpuStudy", "nnUNetTrainerSCD_RandomPruning_keep0p1_Tiny_cpuStudy"):
        cls = getattr(tr, name)
        assert cls.keep_ratios == (0.1, 0.1, 0.1) and cls.recipe.epochs * cls.recipe.iterations_per_epoch == 360
        assert cls.recipe.optimizer == tr.nnUNetTrainerSCD_Tiny.recipe.optimizer  # the shipped lr and warm-up share


def test_foreground_masks_follow_labels_ignore_label_and_regions() -> None:
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from nnunet_scd.nnunet.label_masks import foreground_masks

    labels = torch.tensor([0, 1, 2, 3]).reshape(1, 1, 4)
    fg, valid = foreground_masks(labels, LabelManager({"background": 0, "a": 1, "b": 2, "c": 3}, None))
    assert fg.tolist() == [[False, True, True, True]] and valid is None
    fg, valid = foreground_masks(labels, LabelManager({"background": 0, "a": 1, "b": 2, "ignore": 3}, None))
    assert fg.tolist() == [[False, True, True, False]] and valid.tolist() == [[True, True, True, False]]
    regions = torch.tensor([[[0, 1, 1, 0], [0, 0, 1, 0]]])  # two region channels
    fg, valid = foreground_masks(regions, LabelManager({"background": 0, "whole": (1, 2), "core": 2}, [1, 2]))
    assert fg.tolist() == [[False, True, True, False]] and valid is None


def _trainer_with_network(make_trainer, cls: type):
    trainer = make_trainer(cls, [8, 32, 32], [1.0, 1.0, 1.0])
    trainer.network = build(cls, trainer.plans_manager.plans, "3d_fullres", False)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.loss = trainer._build_loss()
    return trainer


def _batch() -> dict:
    target = torch.zeros(2, 1, 8, 32, 32)
    target[:, :, 2:6, 4:20, 8:24] = 1.0
    target[:, :, 4:6, 20:28, 8:16] = 2.0
    return {"data": torch.randn(2, 1, 8, 32, 32) + target, "target": target}


def test_train_step_adds_guidance_and_reports_scorer_gradients(nnunet_env: Path, make_trainer) -> None:
    guided = _trainer_with_network(make_trainer, tr.nnUNetTrainerSCD_Tiny)
    out = guided.train_step(_batch())
    assert len(out["scorer_grad_ratio"]) == 3 and (out["scorer_grad_ratio"] > 0).all()
    assert 0 < float(out["guidance_loss"]) < 5
    unguided = _trainer_with_network(make_trainer, tr.nnUNetTrainerSCD_NoGuidance_Tiny)
    out_unguided = unguided.train_step(_batch())
    assert "guidance_loss" not in out_unguided
    # The task loss alone hardly reaches the scorer; guidance gives it a gradient of its own.
    assert out["scorer_grad_ratio"][0] > 10 * out_unguided["scorer_grad_ratio"][0]
    random = _trainer_with_network(make_trainer, tr.nnUNetTrainerSCD_RandomPruning_Tiny)
    assert set(random.train_step(_batch())) == {"loss"}


@pytest.mark.parametrize("cls", [tr.nnUNetTrainerSCD_Tiny, tr.nnUNetTrainerSCD_RandomPruning_Tiny])
def test_each_epoch_logs_and_plots_the_kept_tokens_enrichment(nnunet_env: Path, cls: type, make_trainer) -> None:
    trainer = _trainer_with_network(make_trainer, cls)
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    trainer.on_train_epoch_end([trainer.train_step(_batch())])
    trainer.on_validation_epoch_start()
    outputs = [trainer.validation_step(_batch()) for _ in range(2)]
    assert all(o["token_counts"].shape == (3, 4) for o in outputs)
    trainer.on_validation_epoch_end(outputs)
    assert not (Path(trainer.output_folder) / "token_selection.png").exists()  # drawn after the epoch's timestamp
    trainer.on_epoch_end()
    logged = trainer.logger.local_logger.my_fantastic_logging
    assert len(logged["stp_enrichment"]) == len(logged["mean_fg_dice"]) == 1
    assert len(logged["stp_enrichment"][0]) == 3 and all(e >= 0 for e in logged["stp_enrichment"][0])
    assert ("scorer_grad_ratio" in logged) == (cls is tr.nnUNetTrainerSCD_Tiny)
    assert (Path(trainer.output_folder) / "token_selection.png").stat().st_size > 10_000
    assert not list(Path(trainer.output_folder).glob("*.tmp.png"))
    log = Path(trainer.log_file).read_text()
    assert "STP foreground enrichment of kept tokens" in log
    (breakdown,) = parse_epoch_breakdowns(log)
    assert breakdown["network steps"] > 0 and breakdown["validation"] > 0 and breakdown["end of epoch"] > 0


@pytest.mark.parametrize("cls", [tr.nnUNetTrainerSCD_Tiny, tr.nnUNetTrainerUNETR_Tiny])
def test_trainers_are_seeded_so_a_rerun_starts_from_the_same_weights(
    nnunet_env: Path, monkeypatch: pytest.MonkeyPatch, cls: type, make_trainer
) -> None:
    def initial_weights() -> dict[str, torch.Tensor]:
        trainer = make_trainer(cls, [8, 32, 32], [1.0, 1.0, 1.0])
        preprocessed = Path(trainer.preprocessed_dataset_folder)  # initialize() infers the dataset format here
        preprocessed.mkdir(parents=True, exist_ok=True)
        (preprocessed / "case_0.b2nd").touch()
        trainer.initialize()
        assert trainer.run_seed == int(os.environ.get(SEED_ENVIRONMENT_VARIABLE, cls.seed))
        assert f"Seed: {trainer.run_seed}" in Path(trainer.log_file).read_text()
        return {k: v.clone() for k, v in trainer.network.state_dict().items()}

    first, again = initial_weights(), initial_weights()
    assert all(torch.equal(first[k], again[k]) for k in first)
    monkeypatch.setenv(SEED_ENVIRONMENT_VARIABLE, "1")
    other = initial_weights()
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_dense_trainer_logs_no_token_selection(nnunet_env: Path, make_trainer) -> None:
    trainer = _trainer_with_network(make_trainer, tr.nnUNetTrainerUNETR_Tiny)
    assert set(trainer.train_step(_batch())) == {"loss"}
    trainer.on_validation_epoch_start()
    out = trainer.validation_step(_batch())
    assert "token_counts" not in out
    trainer.on_validation_epoch_end([out])
    assert "stp_enrichment" not in trainer.logger.local_logger.my_fantastic_logging


def test_mim_trainers_build_a_decoder_that_sees_only_completed_tokens(nnunet_env: Path, make_trainer) -> None:
    for cls in (tr.nnUNetTrainerSCD_MIM, tr.nnUNetTrainerSCD_MIM_Tiny, tr.nnUNetTrainerSCD_MIM_Tiny_cpuStudy):
        trainer = make_trainer(cls, [16, 32, 32], [1.0, 1.0, 1.0])
        net = build(cls, trainer.plans_manager.plans, "3d_fullres", False)
        assert net.skip_assembly == "shared" and type(net.completion).__name__ == "MaskTokenCompletion", cls
    trainer = make_trainer(tr.nnUNetTrainerSCD_Tiny, [16, 32, 32], [1.0, 1.0, 1.0])
    mta = build(tr.nnUNetTrainerSCD_Tiny, trainer.plans_manager.plans, "3d_fullres", False)
    assert mta.skip_assembly == "per_depth"


def test_zhou2023_trainers_carry_the_authors_network_and_recipe(nnunet_env: Path, make_trainer) -> None:
    btcv, brats = tr.nnUNetTrainerSCD_Zhou2023, tr.nnUNetTrainerSCD_Zhou2023BraTS
    assert btcv.network_kwargs() == {**tr.nnUNetTrainerSCD.network_kwargs(), "keep_ratios": (0.1, 0.1, 0.1),
                                     "completion_dim": 768, "completion_heads": 12, "skip_assembly": "shared",
                                     "pooled_bottleneck": True}
    assert brats.network_kwargs() == {**btcv.network_kwargs(), "keep_ratios": (0.25, 0.25, 0.25)}
    assert tr.nnUNetTrainerSCD_Zhou2023_Tiny.network_kwargs()["drop_path_rate"] == 0.1
    for cls in (btcv, brats, tr.nnUNetTrainerSCD_Zhou2023Recipe):
        adamw = cls.recipe.optimizer
        assert (adamw.betas, adamw.weight_decay, adamw.layer_decay, adamw.schedule, adamw.grad_clip) == (
            (0.9, 0.95), 0.05, 0.75, "cosine", None)
    assert btcv.guidance_weight == 0.0 and tr.nnUNetTrainerSCD_Zhou2023Recipe.guidance_weight == 1.0
    assert (btcv.recipe.optimizer.warmup_fraction, brats.recipe.optimizer.warmup_fraction) == (0.01, 13 / 533)
    trainer = make_trainer(tr.nnUNetTrainerSCD_Zhou2023_Tiny, [16, 32, 32], [1.0, 1.0, 1.0])
    assert trainer.initial_lr == pytest.approx(1.72e-2 * 2 / 256)  # 1.3e-4 at nnU-Net's batch 2, as their README
    net = build(tr.nnUNetTrainerSCD_Zhou2023_Tiny, trainer.plans_manager.plans, "3d_fullres", False)
    assert net.skip_assembly == "shared" and net.decoder.pool_strides is not None and len(net.decoder.decoders) == 4
    assert net.completion.transformer.blocks[0].attn.qkv.in_features == 192  # Tiny's encoder width: the full block


def _layer_of(name: str, depth: int) -> int:
    """BEiT's layer ids, written out independently of timm: embeddings 0, block i -> i + 1, the rest depth + 1."""
    if name.startswith(("patch_embed", "pos_embed")):
        return 0
    if name.startswith("blocks."):
        return int(name.split(".")[1]) + 1
    return depth + 1


def test_layer_decay_and_cosine_give_each_parameter_its_lr_at_every_epoch(nnunet_env: Path, make_trainer) -> None:
    import math

    cls = tr.nnUNetTrainerSCD_Zhou2023_Tiny
    trainer = make_trainer(cls, [16, 32, 32], [1.0, 1.0, 1.0])
    trainer.network = build(cls, trainer.plans_manager.plans, "3d_fullres", False)
    optimizer, scheduler = trainer.configure_optimizers()
    depth, peak, warmup = len(trainer.network.blocks), trainer.initial_lr, 10  # warm-up: 1% of 1000 epochs
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    named = dict(trainer.network.named_parameters())
    assert len(lr_of) == len(named)
    for epoch in (0, 9, 10, 500, 999):
        scheduler.step(epoch)
        lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
        base = peak * (epoch + 1) / warmup if epoch < warmup else \
            peak * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / (1000 - warmup)))
        for name, param in named.items():
            expected = base * 0.75 ** (depth + 1 - _layer_of(name, depth))
            assert lr_of[id(param)] == pytest.approx(expected, rel=1e-9), (epoch, name)
    # Spot values: halfway through the cosine the decoder has half the peak rate, the first block 0.75^depth of that.
    scheduler.step(505)
    lr_of = {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}
    assert lr_of[id(named["decoder.out.weight"])] == pytest.approx(peak / 2)
    assert lr_of[id(named["blocks.0.attn.qkv.weight"])] == pytest.approx(peak / 2 * 0.75**depth)


def test_layer_decay_needs_a_network_that_names_its_layers() -> None:
    from nnunet_scd.trainers.optim import adamw_param_groups

    with pytest.raises(ValueError, match="group_matcher"):
        adamw_param_groups(torch.nn.Linear(2, 2), 0.05, layer_decay=0.75)
    with pytest.raises(ValueError, match="layer_decay must be in"):
        adamw_param_groups(torch.nn.Linear(2, 2), 0.05, layer_decay=1.5)


def test_warmup_then_cosine_schedule_reaches_half_at_mid_decay_and_zero_at_the_end() -> None:
    from nnunet_scd.trainers.optim import WarmupCosineLRScheduler

    param = torch.nn.Parameter(torch.zeros(1))
    scheduler = WarmupCosineLRScheduler(torch.optim.AdamW([param], lr=1.0), 2.0, num_epochs=110, warmup_epochs=10)
    assert scheduler.lr_at(0) == pytest.approx(0.2) and scheduler.lr_at(9) == pytest.approx(2.0)
    assert scheduler.lr_at(10) == pytest.approx(2.0) and scheduler.lr_at(60) == pytest.approx(1.0)
    assert scheduler.lr_at(110) == pytest.approx(0.0, abs=1e-12)
    lrs = [scheduler.lr_at(e) for e in range(10, 110)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))


@pytest.mark.parametrize("cls, clips", [(tr.nnUNetTrainerSCD_Zhou2023_Tiny, False), (tr.nnUNetTrainerSCD_Tiny, True)])
def test_gradients_are_clipped_only_when_the_recipe_says_so(
    nnunet_env: Path, monkeypatch: pytest.MonkeyPatch, cls: type, clips: bool, make_trainer
) -> None:
    trainer = make_trainer(cls, [8, 16, 16], [1.0, 1.0, 1.0])
    trainer.network = build(cls, trainer.plans_manager.plans, "3d_fullres", False)
    trainer.optimizer, trainer.lr_scheduler = trainer.configure_optimizers()
    trainer.loss = trainer._build_loss()
    calls = []
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: calls.append(a) or clip(*a, **k))
    batch = {"data": torch.randn(2, 1, 8, 16, 16), "target": torch.randint(0, 3, (2, 1, 8, 16, 16)).float()}
    out = trainer.train_step(batch)
    assert torch.isfinite(torch.as_tensor(out["loss"])) and bool(calls) == clips
    assert ("guidance_loss" in out) == (cls.guidance_weight > 0)


def test_stock_demo_trainer_is_nnunet_with_only_the_length_changed(nnunet_env: Path, make_trainer) -> None:
    from nnunet_scd.trainers.catalog import nnUNetTrainer_demo

    trainer = make_trainer(nnUNetTrainer_demo, [8, 32, 32], [1.0, 1.0, 1.0])
    recipe = nnUNetTrainer_demo.recipe
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch, trainer.num_val_iterations_per_epoch) == (
        recipe.epochs, recipe.iterations_per_epoch, recipe.val_iterations_per_epoch)
    assert trainer.initial_lr == 1e-2 and trainer.enable_deep_supervision  # nnU-Net's own recipe


def test_class_quota_trainer_guides_the_per_class_head_and_every_trainer_logs_class_enrichment(
    nnunet_env: Path, make_trainer
) -> None:
    trainer = _trainer_with_network(make_trainer, tr.nnUNetTrainerSCD_ClassQuota_Tiny)
    assert trainer.network.quota_classes == 2  # liver and spleen: every output channel but the background
    out = trainer.train_step(_batch())
    assert 0 < float(out["guidance_loss"]) < 10
    assert trainer.network.pruning[0].scorer.head[-1].weight.grad[1:].abs().sum() > 0
    trainer.on_epoch_start()
    trainer.on_train_epoch_start()
    trainer.on_train_epoch_end([out])
    trainer.on_validation_epoch_start()
    outputs = [trainer.validation_step(_batch())]
    assert outputs[0]["class_token_counts"].shape == (3, 2, 4)
    trainer.on_validation_epoch_end(outputs)
    (per_stage,) = trainer.logger.local_logger.my_fantastic_logging["stp_class_enrichment"]
    assert len(per_stage) == 3 and all(len(classes) == 2 for classes in per_stage)
    assert "STP per-class enrichment of kept tokens (validation; nan: class absent), per stage: liver " \
        in Path(trainer.log_file).read_text()


def test_class_quota_trainer_refuses_region_targets_in_one_line(nnunet_env: Path, make_plans) -> None:
    plans = {**make_plans([8, 32, 32], [1.0, 1.0, 1.0], "3d_fullres"), "continue_training": False}
    dataset = {**copy.deepcopy(DATASET_JSON), "labels": {"background": 0, "whole": [1, 2], "core": 2},
               "regions_class_order": [1, 2]}
    with pytest.raises(ValueError, match="this dataset.json defines regions") as error:
        tr.nnUNetTrainerSCD_ClassQuota_Tiny(plans, "3d_fullres", 0, dataset, torch.device("cpu"))
    assert len(str(error.value).splitlines()) == 1


def test_class_masks_follow_labels_ignore_label_and_regions() -> None:
    from nnunetv2.utilities.label_handling.label_handling import LabelManager

    from nnunet_scd.nnunet.label_masks import class_masks, class_names

    labels = torch.tensor([0, 1, 2, 3]).reshape(1, 1, 4)
    manager = LabelManager({"background": 0, "a": 1, "b": 2, "ignore": 3}, None)
    assert class_masks(labels, manager)[0].tolist() == [[False, True, False, False], [False, False, True, False]]
    assert class_names(manager) == ["a", "b"]
    regions = torch.tensor([[[0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 1]]])  # two regions, then the ignore mask
    manager = LabelManager({"background": 0, "whole": (1, 2), "core": 2, "ignore": 3}, [1, 2])
    assert class_masks(regions, manager)[0].tolist() == [[False, True, True, False], [False, False, True, False]]
    assert class_names(manager) == ["whole", "core"]
