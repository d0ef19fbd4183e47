"""Does an STP scorer learn which tokens matter? A toy where the answer is known, and the candidate fixes.

The toy: 2D noise images on an 8 x 8 token grid; the target is "bright voxels", but only inside 10
fixed token cells, so those cells are the only tokens the segmentation depends on. After a short
training, the eval-mode stage-1 kept set (16 of 64 tokens) should hold them: recall 1 is perfect,
random pruning gives 0.25 in expectation. ``python -m nnunet_scd.bench.scorer_study`` measures each
candidate over several seeds; the test suite uses the same toy to pin the shipped default.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import trunc_normal_
from torch import nn
from tqdm import tqdm

from nnunet_scd.model import stp
from nnunet_scd.model.scd import SCDNet

__all__ = ["CANDIDATES", "ScorerCandidate", "known_cells_recall"]

TOY_NET = dict(embed_dim=32, depth=4, num_heads=2, prune_after=(1, 2, 3), feature_size=4)


@dataclass(frozen=True)
class ScorerCandidate:
    """One way of training the scorer (defaults: what ships)."""

    name: str
    token_selection: str = "stp"
    guidance_weight: float = 1.0
    sampler: str = "gumbel"
    vit_scorer_init: bool = False  # std-0.02 like the rest of the ViT (as before the fix) instead of Xavier
    sigmoid_relaxation: bool = False  # soft mask sigmoid((s - threshold) / tau) instead of softmax(s / tau)
    scorer_lr_scale: float = 1.0
    scorer_eps: float | None = None


CANDIDATES = (
    ScorerCandidate("STP as on main (softmax straight-through, std-0.02 scorer)", guidance_weight=0.0,
                    vit_scorer_init=True),
    ScorerCandidate("+ Xavier scorer init", guidance_weight=0.0),
    ScorerCandidate("+ Xavier, scorer lr x10 and AdamW eps 1e-12", guidance_weight=0.0, scorer_lr_scale=10.0,
                    scorer_eps=1e-12),
    ScorerCandidate("+ Xavier, sigmoid relaxation at the k-th score", guidance_weight=0.0, sigmoid_relaxation=True),
    ScorerCandidate("+ Xavier, Gaussian perturbed top-k (Berthet)", guidance_weight=0.0, sampler="gaussian"),
    ScorerCandidate("foreground guidance, std-0.02 scorer", vit_scorer_init=True),
    ScorerCandidate("foreground guidance, Xavier scorer (shipped)"),
    ScorerCandidate("random pruning", token_selection="random", guidance_weight=0.0),
)


def _gumbel_sigmoid_topk(scores: torch.Tensor, k: int, tau: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    # Soft weights of order one around the top-k boundary, instead of softmax's 1/N everywhere.
    perturbed = scores - torch.empty_like(scores).exponential_().log()
    order = torch.sort(perturbed, dim=-1, descending=True, stable=True).indices
    ranked = perturbed.gather(-1, order)
    threshold = ranked[:, k - 1: k + 1].mean(-1, keepdim=True).detach()
    soft = torch.sigmoid((perturbed - threshold) / tau)
    hard = torch.zeros_like(soft).scatter(-1, order[:, :k], 1.0)
    return order, hard - soft.detach() + soft


@contextlib.contextmanager
def _sampler_override(candidate: ScorerCandidate) -> Iterator[None]:
    if not candidate.sigmoid_relaxation:
        yield
        return
    original = stp.gumbel_soft_topk
    stp.gumbel_soft_topk = _gumbel_sigmoid_topk
    try:
        yield
    finally:
        stp.gumbel_soft_topk = original


def known_cells_recall(candidate: ScorerCandidate, seed: int = 0, steps: int = 150) -> float:
    """Train the toy with ``candidate`` and return the recall of the 10 known cells in the stage-1 kept set."""
    torch.manual_seed(seed)
    known = torch.randperm(64, generator=torch.Generator().manual_seed(123))[:10]
    cells = torch.zeros(64, dtype=torch.bool)
    cells[known] = True
    region = cells.reshape(8, 8).repeat_interleave(8, 0).repeat_interleave(8, 1)
    net = SCDNet(1, 2, (64, 64), (8, 8), keep_ratios=(0.25, 0.5, 0.5), token_selection=candidate.token_selection,
                 sampler=candidate.sampler, **TOY_NET)
    scorer_params = [p for name, p in net.named_parameters() if ".scorer." in name]
    if candidate.vit_scorer_init:
        for module in net.modules():
            if isinstance(module, stp.TokenScorer):
                for layer in module.modules():
                    if isinstance(layer, nn.Linear):
                        trunc_normal_(layer.weight, std=0.02)
    scorer_ids = {id(p) for p in scorer_params}
    groups = [{"params": [p for p in net.parameters() if id(p) not in scorer_ids]}]
    if scorer_params:
        groups.append({"params": scorer_params, "lr": 1e-3 * candidate.scorer_lr_scale,
                       "eps": candidate.scorer_eps or 1e-8})
    optimizer = torch.optim.AdamW(groups, lr=1e-3)
    with _sampler_override(candidate):
        for _ in range(steps):
            x = torch.randn(4, 1, 64, 64)
            target = (x[:, 0] > 0) & region
            loss = F.cross_entropy(net(x), target.long())
            if candidate.guidance_weight:
                loss = loss + candidate.guidance_weight * net.guidance_loss(target)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        net(torch.randn(8, 1, 64, 64))
    return cells[net.kept_indices[0]].float().sum(1).mean().item() / len(known)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m nnunet_scd.bench.scorer_study",
        description="Recall of the known cells in STP's stage-1 kept set on the toy, per scorer candidate "
                    "(mean ± sd over seeds; random pruning gives 0.25).")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per candidate (default 3)")
    parser.add_argument("--steps", type=int, default=150, help="training steps per run (default 150)")
    args = parser.parse_args(argv)
    print(f"| candidate | recall of the 10 known cells, mean ± sd over {args.seeds} seeds | per seed |")
    print("|---|---|---|")
    for candidate in tqdm(CANDIDATES, desc="candidates", leave=False):
        recalls = [known_cells_recall(candidate, seed, args.steps) for seed in range(args.seeds)]
        spread = statistics.stdev(recalls) if len(recalls) > 1 else float("nan")
        print(f"| {candidate.name} | {statistics.mean(recalls):.2f} ± {spread:.2f} | "
              f"{', '.join(f'{r:.2f}' for r in recalls)} |", flush=True)


if __name__ == "__main__":
    main()
