"""``clade demo``: the main job on the shipped sample, in one command.

Super-resolve the shipped thick-slice pelvic T2 MRI with the shipped mri model and write the
volume, its error map, the spline baseline, a metrics table and a comparison figure.
"""

from __future__ import annotations

import argparse
import sys

from .arguments import patch_stride


def add_arguments(parser) -> None:
    parser.add_argument("--out", default="clade-demo", help="output folder (default: clade-demo)")
    parser.add_argument("--model", default="mri", help="model name or file (default: mri)")
    parser.add_argument(
        "--stride", type=patch_stride, default=None, help="patch stride 1-32 (default: the model's)"
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..demo import run_demo
    from .super_resolve import ProgressBar

    bar = None if args.quiet else ProgressBar()
    try:
        result = run_demo(
            args.out, args.model, args.stride, args.device, progress=bar.update if bar else None
        )
    finally:
        if bar:
            bar.close()
    print(result.table)
    print(f"\nSuper-resolution: {result.summary}")
    print(
        f"Volume:   {result.volume}\nErrors:   {result.error_map}\nSpline:   {result.spline}\n"
        f"Figure:   {result.figure}"
    )
    print(f"Metrics:  {result.report_json}, {result.report_csv}")
    print(f"Done in {result.seconds:.0f} s.")
    if not result.model_trained:
        print(
            "clade: warning: the model has random (untrained) weights: the output is NOT a "
            "super-resolved image.",
            file=sys.stderr,
        )
    return 0
