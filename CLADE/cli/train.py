"""``clade train DATA... --out DIR``: train CLADE networks on anisotropic volumes.

Train CLADE (unpaired CycleGAN with gradient-mapping loss) on anisotropic volumes: patches from
their LR and HR planes. Writes checkpoints, events, a plot (with matplotlib) and the final and
best generators (CLADE model files) into --out. Under torchrun it trains with
DistributedDataParallel on every process.

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
from ..training.presets import BEST_METRICS, LR_SCHEDULES, PRESETS, SETTING_NAMES, UPSAMPLING
from .arguments import (
    float_in,
    int_at_least,
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from .signals import handled

#: A thickness ratio (slice spacing over in-plane spacing) is at least 1.
_ratio = float_in(1.0)
#: Any finite number (an intensity window may be negative, e.g. HU).
_finite = float_in()


class _WindowAction(argparse.Action):
    """``--window LOW HIGH``: refused at the parser unless LOW < HIGH (an empty window would
    map every volume to one value, and training would skip them all)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        low, high = values
        if not low < high:
            raise argparse.ArgumentError(self, f"LOW must be below HIGH, got {low:g} {high:g}")
        setattr(namespace, self.dest, values)


def _typed(kind, help: str) -> dict:
    return {"type": kind, "help": help}


def _choice(choices, help: str) -> dict:
    return {"choices": tuple(choices), "help": help}


#: The options of ``clade train`` by help section; a setting's option is its name with dashes.
_OPTIONS = {
    "training": (
        ("--epochs", _typed(positive_int, "epochs (default 10)")),
        ("--batch-size", _typed(positive_int, "pairs per step per process")),
        ("--lambda-cyc", _typed(non_negative_float, "cycle-consistency weight")),
        ("--lambda-ident", _typed(non_negative_float, "identity weight")),
        ("--lambda-gmap", _typed(non_negative_float, "gradient-mapping weight")),
        (
            "--lambda-paired",
            _typed(
                non_negative_float,
                "weight of the self-supervised paired L1 term on HR patches degraded like thick "
                "slices (fidelity safeguard beyond the paper; default 0 = off)",
            ),
        ),
        (
            "--lambda-dc",
            _typed(
                non_negative_float,
                "weight of data consistency: G_X(x) blurred with the slice profile must match x "
                "blurred the same way (fidelity safeguard beyond the paper; default 0 = off)",
            ),
        ),
        (
            "--warmup-epochs",
            _typed(
                non_negative_int,
                "first epochs train G_X on the paired term alone, ~7x cheaper per pair than a "
                "full step (needs --lambda-paired; default 0)",
            ),
        ),
        (
            "--paired-ratios",
            {
                "nargs": 2,
                "type": _ratio,
                "metavar": ("LOW", "HIGH"),
                "help": "draw the paired term's simulated slice-thickness ratio per HR slice from "
                "this range instead of each volume's own (teaches thicknesses the cohort lacks)",
            },
        ),
        (
            "--residual",
            {
                "action": "store_true",
                "default": None,
                "help": "generator adds a learnt correction to its input (starts as the identity)",
            },
        ),
        (
            "--adversarial",
            _choice(ADVERSARIAL_KINDS, "adversarial loss (default bce, as the paper)"),
        ),
        ("--lr", _typed(positive_float, "Adam learning rate (default 2e-4)")),
        (
            "--lr-schedule",
            _choice(
                LR_SCHEDULES,
                "constant (default, the paper's) or cosine: the rate falls along half a cosine "
                "to 0 at the last step",
            ),
        ),
        (
            "--init-model",
            {
                "metavar": "MODEL",
                "help": "start G_X from this CLADE model file or shipped model (mri, ct) to "
                "fine-tune it, instead of from random weights; the architecture options must "
                "match it",
            },
        ),
        ("--seed", _typed(non_negative_int, "random seed (default 0)")),
        ("--device", {"help": "auto (default), cpu, cuda or cuda:N"}),
        (
            "--checkpoint-minutes",
            _typed(positive_float, "also checkpoint every this many minutes (default 15)"),
        ),
        (
            "--resume",
            {"action": "store_true", "help": "continue the run in --out from its last checkpoint"},
        ),
    ),
    "patches": (
        ("--patches-per-slice", _typed(positive_int, "patches per slice (default 4)")),
        (
            "--patch-size",
            _typed(
                int_at_least(32, 128),
                "side of the training patches in pixels, a multiple of 4 from 32 to 128 "
                "(default 32, the paper's)",
            ),
        ),
        (
            "--max-patches",
            _typed(positive_int, "keep at most this many patches per domain (random subset)"),
        ),
        (
            "--min-foreground",
            _typed(
                float_in(0.0, 1.0),
                "least fraction of a patch above background (default 0.25; 0 keeps all "
                "patches, as the paper)",
            ),
        ),
        (
            "--plane",
            _choice(
                ("auto", "both") + PLANE_NAMES,
                "LR plane for domain X (default auto: sagittal when possible)",
            ),
        ),
        (
            "--window",
            {
                "nargs": 2,
                "action": _WindowAction,
                "type": _finite,
                "metavar": ("LOW", "HIGH"),
                "help": "fixed intensity window mapped to [-1, 1] (e.g. HU for CT) instead of "
                "the 0.5/99.5 percentiles of each volume",
            },
        ),
    ),
    "architecture": (
        ("--base-filters", _typed(positive_int, "generator base filters (default 64)")),
        ("--n-blocks", _typed(non_negative_int, "generator residual blocks (default 6)")),
        (
            "--upsample",
            _choice(UPSAMPLING, "generator upsampling (default transpose, as the paper)"),
        ),
        ("--disc-filters", _typed(positive_int, "discriminator base filters (default 64)")),
    ),
    "validation": (
        (
            "--val",
            {
                "action": "append",
                "default": [],
                "metavar": "VOLUME",
                "help": "held-out thick-slice volume scored every epoch (repeatable)",
            },
        ),
        (
            "--val-reference",
            {
                "action": "append",
                "default": [],
                "metavar": "ISO",
                "help": "isotropic truth of the matching --val volume: adds PSNR and SSIM",
            },
        ),
        ("--val-stride", _typed(positive_int, "inference stride for validation")),
        (
            "--best-metric",
            _choice(
                BEST_METRICS,
                "metric choosing the best epoch (auto: ssim with references, else piqe)",
            ),
        ),
    ),
    "output": (
        (
            "--events",
            {"metavar": "FILE", "help": "JSON-lines progress file (default DIR/events.jsonl)"},
        ),
        ("--log-every", _typed(positive_int, "steps between step events (default 10)")),
        ("--modality", {"help": "modality recorded in the model files (MR, CT)"}),
        ("--quiet", {"action": "store_true", "help": "no progress bar or summary"}),
    ),
}


def add_arguments(parser) -> None:
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
    for title, options in _OPTIONS.items():
        group = parser.add_argument_group(title)
        for flag, settings in options:
            group.add_argument(flag, **settings)


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
    from ..errors import CladeError
    from ..training.distributed import end_process, launched_by_torchrun
    from ..training.sampling import VolumeSkipped
    from ..training.trainer import train

    if args.val_reference and not args.val:
        raise CladeError(
            "--val-reference gives the isotropic truth of a --val volume, but no --val was "
            "given: add --val VOLUME (one per reference, in the same order) or leave "
            "--val-reference out."
        )
    main_rank = os.environ.get("RANK", "0") == "0"
    stop = {"requested": False}

    def request_stop(signum, frame) -> None:
        if stop["requested"]:  # a second Ctrl-C: give up at once
            raise KeyboardInterrupt
        stop["requested"] = True
        if main_rank:
            print("\nclade: stopping after this step and writing a checkpoint...", file=sys.stderr)

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if main_rank and not args.quiet:
            prefix = "warning" if category is VolumeSkipped else category.__name__
            print(f"clade: {prefix}: {message}", file=sys.stderr)

    with handled(request_stop, (signal.SIGINT, signal.SIGTERM)), warnings.catch_warnings():
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
    if main_rank and not args.quiet:
        print(f"clade: trained {len(result.history)} epochs; final model: {result.final_model}")
        if result.best_model is not None:
            best = result.history[result.best_epoch - 1]["metrics"]
            scores = ", ".join(f"{k} {v:.4g}" for k, v in best.items())
            print(f"clade: best epoch {result.best_epoch} ({scores}): {result.best_model}")
    if launched_by_torchrun():
        end_process(0)
    return 0
