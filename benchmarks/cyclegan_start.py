"""What the first CycleGAN steps do to a warmed-up G_X, with one loss term changed at a time.

A model warmed up on the paired term (``clade train --warmup-epochs``) already restores degraded
HR-plane patches. This measures, for each variant of the CycleGAN step, how much of that it keeps:
G_X's paired L1 (mean |G_X(degraded y) - y| on a fixed set of held-back patches) after each step,
next to the same L1 for the identity (spline) and for the warmed-up model. Every variant starts
from the same weights (G_Y and the discriminators from the trainer's seeded initialisation) and
sees the same batches, so the rows differ only in the loss term named.

The ``mri-large`` model card (mri.md) quotes this table (why validation chose the warm-up epoch).

A developer tool: the card's table was measured on three full-size volumes that are not part of
the repository (the tests use crops of them in ``Testing/data``): the MONAI pelvic T2
``pelvis_mr_t2_0p5x0p5x3mm_monai.nii.gz`` and the pyradiomics brains
``mr_brain_t1gd_0p78x0p78x6p5mm_pyradiomics_brain{1,2}.nrrd``; any thick-slice volumes work.

Usage::

    python benchmarks/cyclegan_start.py --model runs/train-mri/model_warmup.pt \\
        PELVIS.nii.gz BRAIN1.nrrd BRAIN2.nrrd
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from CLADE.model_file import load_model
from CLADE.training.presets import SETTING_NAMES, TrainingConfig
from CLADE.training.sampling import build_patch_bank
from CLADE.training.step import TrainStep, build_networks

# name -> (config overrides, pre-train G_Y on the degradation first)
VARIANTS = {
    "paper weights + paired": ({}, False),
    "same, G_Y pre-trained on the degradation": ({}, True),
    "same, learning rate 2e-5": ({"lr": 2e-5}, False),
    "no identity term": ({"lambda_ident": 0.0}, False),
    "no gradient-mapping term": ({"lambda_gmap": 0.0}, False),
    "gradient mapping 0.5": ({"lambda_gmap": 0.5}, False),
    "adversarial + paired only": (
        {"lambda_cyc": 0.0, "lambda_ident": 0.0, "lambda_gmap": 0.0},
        False,
    ),
}


def batch(patches: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(patches[indices]).float().unsqueeze(1)


def paired_l1(g_x: torch.nn.Module, bank, held: np.ndarray) -> float:
    with torch.no_grad():
        return (g_x(batch(bank.y_degraded, held)) - batch(bank.y, held)).abs().mean().item()


def pretrain_g_y(g_y: torch.nn.Module, bank, steps: int, config: TrainingConfig) -> None:
    """G_Y learns the degradation (HR patch -> degraded patch) on its own, like G_X's warm-up."""
    rng = np.random.default_rng(1)
    o = config.optimiser
    optimiser = torch.optim.Adam(g_y.parameters(), lr=o.lr, betas=(o.beta1, o.beta2))
    for _ in range(steps):
        idx = rng.integers(0, len(bank.y), o.batch_size)
        loss = (g_y(batch(bank.y, idx)) - batch(bank.y_degraded, idx)).abs().mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()


def run_variant(base: TrainingConfig, overrides: dict, pretrain: bool, args, bank, held) -> list:
    config = base.with_settings(**overrides)
    torch.manual_seed(config.optimiser.seed)
    networks = build_networks(config)
    networks["g_x"].load_state_dict(load_model(args.model).generator.state_dict())
    if pretrain:
        pretrain_g_y(networks["g_y"], bank, args.g_y_steps, config)
    step = TrainStep(networks, config, torch.device("cpu"))
    rng = np.random.default_rng(0)
    trace = []
    for _ in range(args.steps):
        x_idx = rng.integers(0, len(bank.x), config.optimiser.batch_size)
        y_idx = rng.integers(0, len(bank.y), config.optimiser.batch_size)
        ratios = torch.from_numpy(bank.x_ratios(x_idx))
        step(batch(bank.x, x_idx), batch(bank.y, y_idx), batch(bank.y_degraded, y_idx), ratios)
        trace.append(paired_l1(networks["g_x"], bank, held))
    return trace


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="A developer tool: the usage example reads the volumes in shared/data beside the "
        "repository (not part of it).",
    )
    parser.add_argument("volumes", nargs="+", help="training volumes (the model's own)")
    parser.add_argument("--model", required=True, help="a warmed-up model (model_warmup.pt)")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--g-y-steps", type=int, default=300)
    parser.add_argument("--patches", type=int, default=400, help="patches per domain")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    trained = load_model(args.model).metadata["training"]["config"]
    base = TrainingConfig.from_dict({k: v for k, v in trained.items() if k in SETTING_NAMES})
    base = base.with_settings(lambda_dc=base.loss.lambda_dc or 10.0)
    s = base.sampling
    bank = build_patch_bank(
        args.volumes,
        seed=base.optimiser.seed,
        patches_per_slice=s.patches_per_slice,
        normalisation=s.normalisation,
        min_foreground=s.min_foreground,
        max_patches=args.patches,
        paired=True,
        paired_ratios=s.paired_ratios,
    )
    held = np.arange(min(64, len(bank.y)))
    identity = (batch(bank.y_degraded, held) - batch(bank.y, held)).abs().mean().item()
    warmed = paired_l1(load_model(args.model).generator, bank, held)
    w = base.loss
    print(
        f"paired L1 on {len(held)} patches: identity (spline) {identity:.4f}, "
        f"warmed-up G_X {warmed:.4f}; weights of the base step: adversarial 1, "
        f"cycle {w.lambda_cyc:g}, identity {w.lambda_ident:g}, gradient mapping "
        f"{w.lambda_gmap:g}, paired {w.lambda_paired:g}, data consistency {w.lambda_dc:g}"
    )
    print(f"\n| variant | after 10 steps | after {args.steps} steps | kept |")
    print("|---|---:|---:|---:|")
    for name, (overrides, pretrain) in VARIANTS.items():
        trace = run_variant(base, overrides, pretrain, args, bank, held)
        # The share of the warm-up's gain over the identity still there at the end.
        kept = (identity - trace[-1]) / max(identity - warmed, 1e-12)
        print(
            f"| {name} | {trace[min(9, len(trace) - 1)]:.4f} | {trace[-1]:.4f} | {kept:.0%} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
