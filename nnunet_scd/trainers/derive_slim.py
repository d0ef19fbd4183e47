"""From a search run to slim plans: load the checkpoint, derive widths, slice, write plans and weights.

Used by ``nnunet-scd slim``. The search run's own plans.json (results folder) is the source of the
new plans, so the token geometry the masks were learnt with is kept exactly.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from nnunetv2.utilities.dataset_name_id_conversion import maybe_convert_to_dataset_name
from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
from torch import nn

from nnunet_scd.atomic import atomic_target, write_text_atomic
from nnunet_scd.nnunet.checkpoints import CorruptCheckpointError, read_checkpoint
from nnunet_scd.nnunet.slim_plans import SLIM_PLANS_KEY, network_record, plans_identifier
from nnunet_scd.search import (
    Cost,
    Selection,
    WithPixelClassifier,
    block_widths,
    check_budget,
    derive_selection,
    fit_keep,
    keep_widths,
    measure_costs,
    slice_blocks,
)
from nnunet_scd.trainers.catalog import TRAINERS
from nnunet_scd.trainers.search import SearchTrainer, SlimTrainer

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
    slim_trainer: str | None  # the slim trainer to fine-tune with, None if the search trainer names none that fits
    tokens: dict[str, Any] | None = None  # the token schedule, if the search had token masks


def _env_folder(name: str) -> Path:
    value = os.environ.get(name)
    if not value:
        raise ValueError(f"the environment variable {name} is not set; nnunet-scd slim reads nnU-Net's folders.")
    return Path(value)


def _trainer_class(name: str) -> type | None:
    trainer = TRAINERS.get(name)
    if trainer is None:  # a user's variant, found the way nnU-Net finds it (nnUNet_extTrainer)
        try:
            trainer = recursive_find_trainer_class_by_name(name)
        except RuntimeError:
            trainer = None
    return trainer


def _search_trainer(name: str) -> type:
    trainer = _trainer_class(name)
    if trainer is None or not issubclass(trainer, SearchTrainer):
        choices = sorted(n for n, cls in TRAINERS.items() if issubclass(cls, SearchTrainer))
        raise ValueError(f"{name!r} is not a joint-search trainer; use one of {choices}.")
    return trainer


def _slim_trainer(search_trainer: type) -> str | None:
    """The slim trainer ``search_trainer`` names, if it builds the searched network (a user's subclass inherits
    its parent's name, which may not fit)."""
    name = search_trainer.slim_trainer
    slim = _trainer_class(name) if name else None
    if slim is None or not issubclass(slim, SlimTrainer) or \
            network_record(slim.network_kwargs()) != network_record(search_trainer.network_kwargs()):
        return None
    return name


def _dataset_name(dataset: str | int) -> str:
    try:
        return maybe_convert_to_dataset_name(dataset)
    except RuntimeError:  # nnU-Net's message lists every folder over several lines
        raise ValueError(
            f"nnU-Net knows no dataset {dataset!r}: no Dataset{dataset}_* folder in nnUNet_raw or nnUNet_preprocessed "
            "(check the id and those environment variables)."
        ) from None


def _recorded(plans_file: Path, configuration: str, trainer_name: str) -> dict | None:
    """The slim record of ``configuration`` in existing slim plans (None if none), from the same search trainer."""
    if not plans_file.is_file():
        return None
    recorded = json.loads(plans_file.read_text())["configurations"].get(configuration, {}).get(SLIM_PLANS_KEY)
    if recorded is not None and recorded["search_trainer"] != trainer_name:
        raise ValueError(
            f"{plans_file} was derived from {recorded['search_trainer']}, not {trainer_name}; pass --rederive "
            "to overwrite it, or --plans-name to write the slim plans of this trainer under another name."
        )
    return recorded


def _keep_for(network: nn.Module, recorded: dict | None, fold: int, budget: float, equal_heads: bool) -> Selection:
    """The channels (and token schedule) to keep: derived at ``budget``, or fitted to what the plans record.

    The fold the recorded widths were derived from derives them again, so a rerun keeps the very
    channels the first run kept (``fit_keep`` ranks heads differently and would pick others). The
    token schedule is architecture, like the widths: every other fold takes the recorded one.
    """
    if recorded is None:
        return derive_selection(network, budget, equal_heads)
    if recorded.get("source_fold") == fold:
        selection = derive_selection(network, recorded["budget"], recorded.get("equal_heads", equal_heads))
        if keep_widths(selection.channels) == recorded["blocks"] and selection.tokens == recorded.get("tokens"):
            return selection
    return Selection(fit_keep(network, recorded["blocks"]), recorded.get("tokens"))


def _save_weights(state: dict[str, torch.Tensor], path: Path, overwrite: bool) -> bool:
    """Save the sliced weights atomically; False when identical weights are already there.

    Different weights already saved for this fold (from another checkpoint, budget or derivation)
    may be what a slim training started from, so they are replaced only when ``overwrite``.
    """
    if path.is_file():
        try:
            old = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # unreadable: nothing worth keeping
            old = None
        if old is not None and old.keys() == state.keys() and all(torch.equal(old[k], state[k]) for k in state):
            return False
        if old is not None and not overwrite:
            raise ValueError(
                f"{path} already holds other sliced weights for this fold; a slim training may have started from "
                "them. Pass --overwrite to replace them, or --plans-name to write the slim plans under another name."
            )
    with atomic_target(path) as tmp:
        torch.save(state, tmp)
    return True


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
    overwrite: bool = False,
) -> SlimResult:
    """Slice one fold's search run at ``budget`` and write ``<plans>_slim<budget>`` (or ``plans_name``) plans
    plus weights.

    A rerun on the same fold and checkpoint keeps the same channels and leaves the saved weights as
    they are; weights that would differ replace the saved ones only with ``overwrite`` (or ``rederive``).
    """
    budget = check_budget(budget)
    trainer = _search_trainer(trainer_name)
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1 (timed passes per network), got {repeats}.")
    dataset_name = _dataset_name(dataset)
    run = _env_folder("nnUNet_results") / dataset_name / f"{trainer_name}__{plans}__{configuration}"
    checkpoint_file = run / f"fold_{fold}" / checkpoint
    if not checkpoint_file.is_file():
        raise ValueError(
            f"no search checkpoint {checkpoint_file}. Train it first: nnUNetv2_train {dataset} {configuration} {fold} "
            f"-tr {trainer_name} -p {plans} (or pass --checkpoint checkpoint_latest.pth / checkpoint_best.pth)."
        )
    new_id = plans_name or plans_identifier(plans, budget)
    preprocessed = _env_folder("nnUNet_preprocessed") / dataset_name
    plans_file = preprocessed / f"{new_id}.json"
    existed = plans_file.is_file()  # before reading: plans another run writes from now on must not be replaced
    recorded = None if rederive else _recorded(plans_file, configuration, trainer_name)
    if recorded is not None and not math.isclose(recorded["budget"], budget, rel_tol=1e-9):
        # Reusing the recorded widths is right for another fold, but not when the budget asked for differs.
        raise ValueError(
            f"{plans_file} holds widths derived at budget {recorded['budget']:g}, not {budget:g}; every fold reuses "
            f"them. Pass --rederive to derive widths at {budget:g} and replace those plans, or --plans-name to write "
            "the slim plans of this budget under another name."
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
    try:
        saved = read_checkpoint(checkpoint_file)
    except CorruptCheckpointError as error:
        raise ValueError(f"{error}. Use another checkpoint of the run (--checkpoint checkpoint_best.pth or "
                         "checkpoint_latest.pth) or train the search again.") from None
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

    keep = _keep_for(network, recorded, fold, budget, equal_heads)
    weights_dir = f"{new_id}_sliced_weights"
    if recorded is None:
        new_plans = json.loads(json.dumps(plans_dict))
        new_plans["plans_name"] = new_id
        new_plans["configurations"][configuration][SLIM_PLANS_KEY] = {
            "budget": budget, "search_trainer": trainer_name, "slim_trainer": _slim_trainer(trainer),
            "source_plans": plans, "source_fold": fold,
            "equal_heads": equal_heads, "network": network_record(trainer.network_kwargs()),
            "blocks": keep_widths(keep.channels), "tokens": keep.tokens, "weights": weights_dir,
        }
        try:  # another fold's run may have written these plans since: then its widths are the ones to take
            write_text_atomic(json.dumps(new_plans, indent=4), plans_file, exclusive=not existed)
        except FileExistsError:
            recorded = _recorded(plans_file, configuration, trainer_name)
            keep = _keep_for(network, recorded, fold, budget, equal_heads)

    x = torch.randn(1, channels, *config_manager.patch_size)
    masked_output = network(x)
    slice_blocks(network, keep.channels, keep.tokens)
    change = (network(x) - masked_output).abs().max().item()
    widths = block_widths(network)
    weights_file = preprocessed / weights_dir / f"fold_{fold}.pth"
    _save_weights(network.state_dict(), weights_file, overwrite or rederive)

    # The same trainer's network without the masks (dense timm blocks): what the search run would have been.
    dense = trainer.build_unmasked_network_architecture(*args)
    networks = {"dense": dense, "slim": network, "slim + pixel classifier": WithPixelClassifier(network)}
    costs = measure_costs(networks, x, repeats)
    return SlimResult(new_id, plans_file, weights_file, widths, recorded is not None, costs, change,
                      _slim_trainer(trainer), keep.tokens)
