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
from ..training.loss_terms import ADVERSARIAL_KINDS
from ..training.presets import BEST_METRICS, PRESETS, SETTING_NAMES, UPSAMPLING
from .arguments import (
    float_in,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)

#: A thickness ratio (slice spacing over in-plane spacing) is at least 1.
_ratio = float_in(1.0)
#: Any finite number (an intensity window may be negative, e.g. HU).
_finite = float_in()


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train CLADE networks on thick-slice volumes",
        description=(
            "Train CLADE (unpaired CycleGAN with gradient-mapping loss) on anisotropic volumes: "
            "32x32 patches from their LR and HR planes. Writes checkpoints, events, a plot (with "
            "matplotlib) and the final and best generators (CLADE model files) into --out. Under "
            "torchrun it trains with DistributedDataParallel on every process."
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
        choices=tuple(PRESETS),
        default=None,
        help="mri (loss weights 1,1,5), ct (1,1,10) or paper (the paper's exact "
        "recipe, batch 1, no background filter); default mri",
    )
    group = parser.add_argument_group("training")
    group.add_argument("--epochs", type=positive_int, help="epochs (default 10)")
    group.add_argument("--batch-size", type=positive_int, help="pairs per step per process")
    group.add_argument("--lambda-cyc", type=non_negative_float, help="cycle-consistency weight")
    group.add_argument("--lambda-ident", type=non_negative_float, help="identity weight")
    group.add_argument("--lambda-gmap", type=non_negative_float, help="gradient-mapping weight")
    group.add_argument(
        "--lambda-paired",
        type=non_negative_float,
        help="weight of the self-supervised paired L1 term on HR patches degraded like thick "
        "slices (fidelity safeguard beyond the paper; default 0 = off)",
    )
    group.add_argument(
        "--lambda-dc",
        type=non_negative_float,
        help="weight of data consistency: G_X(x) blurred with the slice profile must match x "
        "blurred the same way (fidelity safeguard beyond the paper; default 0 = off)",
    )
    group.add_argument(
        "--warmup-epochs",
        type=non_negative_int,
        help="first epochs train G_X on the paired term alone, ~7x cheaper per pair than a "
        "full step (needs --lambda-paired; default 0)",
    )
    group.add_argument(
        "--paired-ratios",
        nargs=2,
        type=_ratio,
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
        choices=ADVERSARIAL_KINDS,
        help="adversarial loss (default bce, as the paper)",
    )
    group.add_argument("--lr", type=positive_float, help="Adam learning rate (default 2e-4)")
    group.add_argument("--seed", type=non_negative_int, help="random seed (default 0)")
    group.add_argument("--device", help="auto (default), cpu, cuda or cuda:N")
    group.add_argument(
        "--checkpoint-minutes",
        type=positive_float,
        help="also checkpoint every this many minutes (default 15)",
    )
    group.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its last checkpoint"
    )
    patches = parser.add_argument_group("patches")
    patches.add_argument(
        "--patches-per-slice", type=positive_int, help="patches per slice (default 4)"
    )
    patches.add_argument(
        "--max-patches",
        type=positive_int,
        help="keep at most this many patches per domain (random subset)",
    )
    patches.add_argument(
        "--min-foreground",
        type=float_in(0.0, 1.0),
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
        type=_finite,
        metavar=("LOW", "HIGH"),
        help="fixed intensity window mapped to [-1, 1] (e.g. HU for CT) "
        "instead of the 0.5/99.5 percentiles of each volume",
    )
    arch = parser.add_argument_group("architecture")
    arch.add_argument(
        "--base-filters", type=positive_int, help="generator base filters (default 64)"
    )
    arch.add_argument(
        "--n-blocks", type=non_negative_int, help="generator residual blocks (default 6)"
    )
    arch.add_argument(
        "--upsample",
        choices=UPSAMPLING,
        help="generator upsampling (default transpose, as the paper)",
    )
    arch.add_argument(
        "--disc-filters", type=positive_int, help="discriminator base filters (default 64)"
    )
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
    val.add_argument("--val-stride", type=positive_int, help="inference stride for validation")
    val.add_argument(
        "--best-metric",
        choices=BEST_METRICS,
        help="metric choosing the best epoch (auto: ssim with references, else piqe)",
    )
    output = parser.add_argument_group("output")
    output.add_argument(
        "--events", metavar="FILE", help="JSON-lines progress file (default DIR/events.jsonl)"
    )
    output.add_argument(
        "--log-every", type=positive_int, help="steps between step events (default 10)"
    )
    output.add_argument("--modality", help="modality recorded in the model files (MR, CT)")
    output.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(func=run)


def overrides(args: argparse.Namespace) -> dict:
    """The settings the options give, by flat name (the rest: the preset's, or the run's).

    Options carry the names of :class:`CLADE.training.presets.TrainingConfig`'s settings
    (``--lambda-gmap`` is ``lambda_gmap``), so the overrides are read off the setting names.

    Example:
        >>> from CLADE.cli.main import build_parser
        >>> args = build_parser().parse_args(["train", "a.nrrd", "--out", "r", "--epochs", "3"])
        >>> overrides(args)
        {'epochs': 3}
    """
    given = {
        name: getattr(args, name)
        for name in SETTING_NAMES
        if name != "preset" and getattr(args, name, None) is not None
    }
    if args.window is not None:
        given["normalisation"] = {"kind": "fixed", "low": args.window[0], "high": args.window[1]}
    return given


def run(args: argparse.Namespace) -> int:
    from ..training.distributed import end_process, launched_by_torchrun
    from ..training.sampling import VolumeSkipped
    from ..training.trainer import train

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
                overrides=overrides(args),
                preset=args.preset,
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
