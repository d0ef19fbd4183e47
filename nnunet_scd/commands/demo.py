"""``nnunet-scd demo``: a short end-to-end training run of SCDNet next to its dense twin.

This is the foundation's demo: random volumes with a blob to segment, a few optimizer steps of a
CPU-sized SCDNet and the dense UNETR with the same encoder, then one prediction each. The full
nnU-Net demo on synthetic CT phantoms replaces it once the nnU-Net integration lands.
"""

from __future__ import annotations

import argparse
import time


def _blob_batch(batch: int, size: tuple[int, ...], generator):
    import torch

    grids = torch.meshgrid(*[torch.linspace(-1, 1, s) for s in size], indexing="ij")
    centres = torch.rand(batch, len(size), generator=generator) - 0.5
    radius = 0.25 + 0.2 * torch.rand(batch, generator=generator)
    dist = sum((g.unsqueeze(0) - centres[:, i].view(-1, *[1] * len(size))) ** 2 for i, g in enumerate(grids))
    labels = (dist.sqrt() < radius.view(-1, *[1] * len(size))).long()
    images = labels.float() + 0.5 * torch.randn(batch, *size, generator=generator)
    return images.unsqueeze(1), labels


def run(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from nnunet_scd import SCDNet

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    size = (32, 64, 64)
    common = dict(embed_dim=96, depth=8, num_heads=4, prune_after=(2, 4, 6), feature_size=8)
    nets = {
        "SCD (keep 0.25 x3)": SCDNet(1, 2, size, (4, 8, 8), keep_ratios=(0.25, 0.25, 0.25), **common),
        "dense UNETR": SCDNet(1, 2, size, (4, 8, 8), keep_ratios=None, **common),
    }
    optimizers = {name: torch.optim.AdamW(net.parameters(), lr=1e-3) for name, net in nets.items()}
    seconds = dict.fromkeys(nets, 0.0)
    losses: dict[str, float] = {}
    for _ in tqdm(range(args.steps), desc="training SCD and dense side by side", unit="step"):
        images, labels = _blob_batch(2, size, generator)
        for name, net in nets.items():
            start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(net(images), labels)
            optimizers[name].zero_grad(set_to_none=True)
            loss.backward()
            optimizers[name].step()
            seconds[name] += time.perf_counter() - start
            losses[name] = loss.item()

    images, labels = _blob_batch(1, size, generator)
    print(f"\n{'network':<20} {'params':>8} {'s/step':>8} {'last loss':>10} {'Dice':>6}")
    for name, net in nets.items():
        net.eval()
        with torch.no_grad():
            pred = net(images).argmax(1)
        dice = 2 * ((pred == 1) & (labels == 1)).sum() / ((pred == 1).sum() + (labels == 1).sum()).clamp(min=1)
        params = sum(p.numel() for p in net.parameters()) / 1e6
        print(f"{name:<20} {params:>7.2f}M {seconds[name] / args.steps:>8.3f} {losses[name]:>10.4f} {dice:>6.3f}")
    kept = nets["SCD (keep 0.25 x3)"].kept_indices
    print(f"tokens kept per stage: {[k.shape[1] for k in kept]} of {kept[0].shape[1] * 4}")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="train a small SCDNet and its dense twin side by side on random blob volumes",
        description=__doc__,
    )
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per network (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    parser.set_defaults(run=run)
