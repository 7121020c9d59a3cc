"""``clade train DATA... --out DIR``: train CLADE networks on anisotropic volumes.

Runs on one CPU or GPU as is, and on many GPUs or nodes under torchrun
(``torchrun --nproc_per_node 4 -m CLADE train ...``). Ctrl-C or SIGTERM writes a checkpoint
and stops; ``--resume`` continues. See :mod:`CLADE.training`.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import warnings

from ..geometry import PLANE_NAMES

#: Options whose value comes from the preset (or, on --resume, from the run) unless given.
_OVERRIDES = {
    "epochs": "epochs",
    "batch_size": "batch_size",
    "lambda_cyc": "lambda_cyc",
    "lambda_ident": "lambda_ident",
    "lambda_gmap": "lambda_gmap",
    "lambda_paired": "lambda_paired",
    "residual": "residual",
    "warmup_epochs": "warmup_epochs",
    "lambda_dc": "lambda_dc",
    "paired_ratios": "paired_ratios",
    "adversarial": "adversarial",
    "patches_per_slice": "patches_per_slice",
    "max_patches": "max_patches",
    "min_foreground": "min_foreground",
    "plane": "plane",
    "seed": "seed",
    "device": "device",
    "base_filters": "base_filters",
    "n_blocks": "n_blocks",
    "upsample": "upsample",
    "disc_filters": "disc_filters",
    "checkpoint_minutes": "checkpoint_minutes",
    "log_every": "log_every",
    "best_metric": "best_metric",
    "val_stride": "val_stride",
    "lr": "lr",
    "modality": "modality",
}


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train CLADE networks on thick-slice volumes",
        description=(
            "Train CLADE (unpaired CycleGAN with gradient-mapping loss) on anisotropic volumes: "
            "32x32 patches from their LR and HR planes. Writes checkpoints, events, a plot and "
            "the final and best generators (CLADE model files) into --out. Under torchrun it "
            "trains with DistributedDataParallel on every process."
        ),
    )
    parser.add_argument(
        "data",
        nargs="*",
        metavar="DATA",
        help="training volume files or folders of them (optional with --resume)",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder of the run")
    parser.add_argument(
        "--preset",
        choices=("mri", "ct", "paper"),
        default=None,
        help="mri (loss weights 1,1,5), ct (1,1,10) or paper (the paper's exact "
        "recipe, batch 1, no background filter); default mri",
    )
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=int, help="epochs (default 10)")
    group.add_argument("--batch-size", type=int, help="pairs per step per process")
    group.add_argument("--lambda-cyc", type=float, help="cycle-consistency weight")
    group.add_argument("--lambda-ident", type=float, help="identity weight")
    group.add_argument("--lambda-gmap", type=float, help="gradient-mapping weight")
    group.add_argument(
        "--lambda-paired",
        type=float,
        help="weight of the self-supervised paired L1 term on HR patches degraded like thick "
        "slices (fidelity safeguard beyond the paper; default 0 = off)",
    )
    group.add_argument(
        "--lambda-dc",
        type=float,
        help="weight of data consistency: G_X(x) blurred with the slice profile must match x "
        "blurred the same way (fidelity safeguard beyond the paper; default 0 = off)",
    )
    group.add_argument(
        "--warmup-epochs",
        type=int,
        help="first epochs train G_X on the paired term alone, ~7x cheaper per pair than a "
        "full step (needs --lambda-paired; default 0)",
    )
    group.add_argument(
        "--paired-ratios",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="draw the paired term's simulated slice-thickness ratio per HR slice from this "
        "range instead of each volume's own (teaches thicknesses the cohort lacks)",
    )
    group.add_argument(
        "--residual",
        action="store_true",
        default=None,
        help="generator adds a learnt correction to its input (starts as the identity)",
    )
    group.add_argument(
        "--adversarial",
        choices=("bce", "lsgan"),
        help="adversarial loss (default bce, as the paper)",
    )
    group.add_argument("--lr", type=float, help="Adam learning rate (default 2e-4)")
    group.add_argument("--seed", type=int, help="random seed (default 0)")
    group.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    group.add_argument(
        "--checkpoint-minutes",
        type=float,
        help="also checkpoint every this many minutes (default 15)",
    )
    group.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    patches = parser.add_argument_group("patches")
    patches.add_argument("--patches-per-slice", type=int, help="patches per slice (default 4)")
    patches.add_argument(
        "--max-patches", type=int, help="keep at most this many patches per domain (random subset)"
    )
    patches.add_argument(
        "--min-foreground",
        type=float,
        help="least fraction of a patch above background (default 0.25; 0 "
        "keeps all patches, as the paper)",
    )
    patches.add_argument(
        "--plane",
        choices=("auto", "both") + PLANE_NAMES,
        help="LR plane for domain X (default auto: sagittal when possible)",
    )
    patches.add_argument(
        "--window",
        nargs=2,
        type=float,
        metavar=("LOW", "HIGH"),
        help="fixed intensity window mapped to [-1, 1] (e.g. HU for CT) "
        "instead of the 0.5/99.5 percentiles of each volume",
    )
    arch = parser.add_argument_group("architecture")
    arch.add_argument("--base-filters", type=int, help="generator base filters (default 64)")
    arch.add_argument("--n-blocks", type=int, help="generator residual blocks (default 6)")
    arch.add_argument(
        "--upsample",
        choices=("transpose", "resize"),
        help="generator upsampling (default transpose, as the paper)",
    )
    arch.add_argument("--disc-filters", type=int, help="discriminator base filters (default 64)")
    val = parser.add_argument_group("validation")
    val.add_argument(
        "--val",
        action="append",
        default=[],
        metavar="VOLUME",
        help="held-out thick-slice volume scored every epoch (repeatable)",
    )
    val.add_argument(
        "--val-reference",
        action="append",
        default=[],
        metavar="ISO",
        help="isotropic truth of the matching --val volume: adds PSNR and SSIM",
    )
    val.add_argument("--val-stride", type=int, help="inference stride for validation")
    val.add_argument(
        "--best-metric",
        choices=("auto", "piqe", "psnr", "ssim"),
        help="metric choosing the best epoch (auto: ssim with references, else piqe)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--events", metavar="FILE", help="JSON-lines progress file (default DIR/events.jsonl)"
    )
    output.add_argument("--log-every", type=int, help="steps between step events (default 10)")
    output.add_argument("--modality", help="modality recorded in the model files (MR, CT)")
    output.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(func=run)


def build_config(args: argparse.Namespace):
    """The :class:`TrainingConfig` the arguments ask for (``None``: the run's own, on resume)."""
    from ..training.checkpoint import read_run_record
    from ..training.presets import TrainingConfig

    overrides = {
        field: getattr(args, name)
        for name, field in _OVERRIDES.items()
        if getattr(args, name, None) is not None
    }
    if args.window is not None:
        overrides["normalisation"] = {
            "kind": "fixed",
            "low": args.window[0],
            "high": args.window[1],
        }
    if args.resume:
        record = read_run_record(args.out) if os.path.isdir(args.out) else None
        if record is None:
            return None
        stored = dict(record["config"])
        if args.preset is not None and args.preset != stored["preset"]:
            return TrainingConfig.from_preset(args.preset, **overrides)
        return TrainingConfig.from_dict({**stored, **overrides})
    return TrainingConfig.from_preset(args.preset or "mri", **overrides)


def run(args: argparse.Namespace) -> int:
    from ..training.distributed import end_process, launched_by_torchrun
    from ..training.sampling import VolumeSkipped
    from ..training.trainer import train

    config = build_config(args)
    main_rank = os.environ.get("RANK", "0") == "0"
    stop = {"requested": False}

    def request_stop(signum, frame) -> None:
        if stop["requested"]:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        stop["requested"] = True
        if main_rank:
            print("\nclade: stopping after this step and writing a checkpoint...", file=sys.stderr)

    previous = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[signum] = signal.signal(signum, request_stop)
        except ValueError:  # not the main thread (e.g. called from a GUI worker thread)
            pass

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if main_rank and not args.quiet:
            prefix = "warning" if category is VolumeSkipped else category.__name__
            print(f"clade: {prefix}: {message}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = show
            result = train(
                args.data,
                args.out,
                config,
                val=args.val,
                val_reference=args.val_reference,
                resume=args.resume,
                events=args.events,
                cancel=lambda: stop["requested"],
                progress_bar=not args.quiet,
            )
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if main_rank and not args.quiet:
        print(f"clade: trained {len(result.history)} epochs; final model: {result.final_model}")
        if result.best_model is not None:
            best = result.history[result.best_epoch - 1]["metrics"]
            scores = ", ".join(f"{k} {v:.4g}" for k, v in best.items())
            print(f"clade: best epoch {result.best_epoch} ({scores}): {result.best_model}")
    if launched_by_torchrun():
        end_process(0)
    return 0
