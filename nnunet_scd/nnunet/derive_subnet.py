"""From a search run to slim plans: load the checkpoint, derive widths, slice, write plans and weights.

Used by ``nnunet-scd slim``. The search run's own plans.json (results folder) is the source of the
new plans, so the token geometry the masks were learnt with is kept exactly.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nnunet_scd.datasets.raw import write_text_atomic
from nnunet_scd.nnunet import search_trainers
from nnunet_scd.nnunet.slim_plans import SLIM_PLANS_KEY, _normalise, plans_identifier
from nnunet_scd.search import (
    Cost,
    WithPixelClassifier,
    block_widths,
    check_budget,
    derive_keep,
    fit_keep,
    measure_costs,
    slice_blocks,
)

__all__ = ["SlimResult", "derive_slim_plans"]


@dataclass
class SlimResult:
    plans_identifier: str
    plans_file: Path
    weights_file: Path
    widths: list[dict[str, Any]]
    reused_widths: bool
    costs: dict[str, Cost]
    max_output_change: float


def _env_folder(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"the environment variable {name} is not set; nnunet-scd slim reads nnU-Net's folders.")
    return Path(value)


def _search_trainer(name: str) -> type:
    trainer = getattr(search_trainers, name, None)
    if trainer is None:  # a user's variant, found the way nnU-Net finds it (nnUNet_extTrainer)
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        try:
            trainer = recursive_find_trainer_class_by_name(name)
        except RuntimeError:
            trainer = None
    if trainer is None or not issubclass(trainer, search_trainers._SearchMixin):
        choices = sorted(n for n in search_trainers.__all__ if "Search" in n)
        raise ValueError(f"{name!r} is not a joint-search trainer; use one of {choices}.")
    return trainer


def _save_atomically(state: dict, path: Path) -> None:
    """``torch.save`` through a temporary file renamed into place: an interrupted run leaves no half-written file."""
    tmp = path.with_name(f"{path.name}.tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def derive_slim_plans(
    dataset: str | int,
    configuration: str,
    fold: int,
    budget: float,
    trainer_name: str = "nnUNetTrainerSCDSearch",
    plans: str = "nnUNetPlans",
    checkpoint: str = "checkpoint_final.pth",
    repeats: int = 20,
    rederive: bool = False,
    plans_name: str | None = None,
    equal_heads: bool = True,
) -> SlimResult:
    """Slice one fold's search run at ``budget`` and write ``<plans>_slim<budget>`` (or ``plans_name``) plans
    plus weights."""
    from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    budget = check_budget(budget)
    trainer = _search_trainer(trainer_name)
    dataset_name = maybe_convert_to_dataset_name(dataset)
    run = _env_folder("nnUNet_results") / dataset_name / f"{trainer_name}__{plans}__{configuration}"
    checkpoint_file = run / f"fold_{fold}" / checkpoint
    if not checkpoint_file.is_file():
        raise ValueError(
            f"no search checkpoint {checkpoint_file}. Train it first: nnUNetv2_train {dataset} {configuration} {fold} "
            f"-tr {trainer_name} -p {plans} (or pass --checkpoint checkpoint_latest.pth / checkpoint_best.pth)."
        )
    plans_dict = json.loads((run / "plans.json").read_text())
    dataset_json = json.loads((run / "dataset.json").read_text())
    plans_manager = PlansManager(plans_dict)
    if configuration not in plans_dict["configurations"]:
        raise ValueError(f"the search run's plans have no configuration {configuration!r}.")
    config_manager = plans_manager.get_configuration(configuration)
    channels = determine_num_input_channels(plans_manager, config_manager, dataset_json)
    classes = plans_manager.get_label_manager(dataset_json).num_segmentation_heads
    args = (plans_manager, config_manager, channels, classes, False)

    network = trainer.build_network_architecture(*args)
    saved = torch.load(checkpoint_file, map_location="cpu", weights_only=False)
    if saved.get("trainer_name") not in (None, trainer_name):
        raise ValueError(f"{checkpoint_file} was written by {saved['trainer_name']}, not by {trainer_name}.")
    try:
        network.load_state_dict(saved["network_weights"])
    except RuntimeError as error:
        raise ValueError(
            f"{checkpoint_file} does not match the network {trainer_name} builds from {run / 'plans.json'}: "
            f"{str(error).splitlines()[0]}"
        ) from None
    network.eval()

    new_id = plans_name or plans_identifier(plans, budget)
    preprocessed = _env_folder("nnUNet_preprocessed") / dataset_name
    plans_file = preprocessed / f"{new_id}.json"
    recorded = None
    if plans_file.is_file() and not rederive:
        recorded = json.loads(plans_file.read_text())["configurations"].get(configuration, {}).get(SLIM_PLANS_KEY)
        if recorded is not None and recorded["search_trainer"] != trainer_name:
            raise ValueError(
                f"{plans_file} was derived from {recorded['search_trainer']}, not {trainer_name}; pass --rederive "
                "to overwrite it, or --plans-name to write the slim plans of this trainer under another name."
            )
    keep = fit_keep(network, recorded["blocks"]) if recorded else derive_keep(network, budget, equal_heads)

    x = torch.randn(1, channels, *config_manager.patch_size)
    masked_output = network(x)
    slice_blocks(network, keep)
    change = (network(x) - masked_output).abs().max().item()
    widths = block_widths(network)

    weights_dir = f"{new_id}_sliced_weights"
    (preprocessed / weights_dir).mkdir(parents=True, exist_ok=True)
    weights_file = preprocessed / weights_dir / f"fold_{fold}.pth"
    _save_atomically(network.state_dict(), weights_file)
    if not recorded:
        new_plans = json.loads(json.dumps(plans_dict))
        new_plans["plans_name"] = new_id
        new_plans["configurations"][configuration][SLIM_PLANS_KEY] = {
            "budget": budget, "search_trainer": trainer_name, "source_plans": plans, "source_fold": fold,
            "network": _normalise(trainer.network_kwargs()), "blocks": widths, "weights": weights_dir,
        }
        write_text_atomic(json.dumps(new_plans, indent=4), plans_file)

    # The same trainer's network without the masks (dense timm blocks): what the search run would have been.
    dense = super(search_trainers._SearchMixin, trainer).build_network_architecture(*args)
    networks = {"dense": dense, "slim": network, "slim + pixel classifier": WithPixelClassifier(network)}
    costs = measure_costs(networks, x, repeats)
    return SlimResult(new_id, plans_file, weights_file, widths, recorded is not None, costs, change)
