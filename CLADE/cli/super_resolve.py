"""``clade super-resolve INPUT OUTPUT``: the main job, with a progress bar and a summary line."""

from __future__ import annotations

import argparse
import logging
import sys

from ..geometry import PLANE_NAMES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "super-resolve",
        help="super-resolve a thick-slice volume to isotropic",
        description=(
            "Super-resolve an anisotropic (thick-slice) MRI or CT volume onto an isotropic grid "
            "with a CLADE generator. Reads NRRD, NIfTI, MetaImage or a DICOM series folder."
        ),
    )
    parser.add_argument("input", help="thick-slice volume file or DICOM series folder")
    parser.add_argument("output", help="output file (.nrrd, .nii, .nii.gz, .mha, .mhd)")
    parser.add_argument(
        "--model",
        default="mri",
        help="shipped model name (see `clade models`) or model file (default: mri)",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=None,
        help="patch stride in pixels, 1-32 (default: the model's own, 12 for the shipped models)",
    )
    parser.add_argument(
        "--plane",
        default="auto",
        choices=("auto", "both") + PLANE_NAMES,
        help="LR plane to super-resolve in: auto = sagittal if it contains the "
        "thick axis, else coronal; both = average of the two LR planes",
    )
    parser.add_argument(
        "--thick-axis",
        default="auto",
        choices=("auto", "0", "1", "2"),
        help="index axis of the thick slices (default: the largest spacing)",
    )
    parser.add_argument(
        "--adapt",
        type=int,
        nargs="?",
        const=500,
        default=0,
        metavar="STEPS",
        help="first fine-tune the model on this volume's own sharp in-plane slices, degraded "
        "like its thick slices, for STEPS steps (default 500 when given; about a minute on one "
        "CPU core); kept only if it restores held-back slices better",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="patches per forward pass (default: 64 on CPU, 1024 on CUDA)",
    )
    parser.add_argument(
        "--output-type",
        choices=("float32", "input"),
        default="float32",
        help="float32 (default) or the input's pixel type, rounded and clipped",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    # Imports here so `clade --help` does not pay for torch.
    from ..errors import CladeError
    from ..inference import super_resolve
    from ..registry import resolve_model
    from ..volume_io import cast_like, check_output_path, read_volume, write_volume

    logging.basicConfig(level=logging.WARNING, format="clade: %(message)s")
    output = check_output_path(args.output, inputs=(args.input,))
    image = read_volume(args.input)
    model = resolve_model(args.model)
    thick_axis = None if args.thick_axis == "auto" else int(args.thick_axis)
    if not model.trained and not args.quiet:
        print(
            f"clade: warning: model {model.name!r} has random (untrained) weights: the output "
            "shows the pipeline works but is NOT a super-resolved image.",
            file=sys.stderr,
        )
    if args.adapt < 0:
        raise CladeError(f"--adapt takes a number of steps of at least 1, not {args.adapt}.")
    if args.adapt:
        model = _adapt(image, model, args, thick_axis)
    bar = None if args.quiet else ProgressBar()
    try:
        result = super_resolve(
            image,
            model,
            stride=args.stride,
            plane=args.plane,
            thick_axis=thick_axis,
            device=args.device,
            batch_size=args.batch_size,
            progress=bar.update if bar else None,
        )
    finally:
        if bar:
            bar.close()
    out_image = result.image
    if args.output_type == "input":
        out_image = cast_like(out_image, image.GetPixelID())
    write_volume(out_image, output)
    if not args.quiet:
        print(f"{output}: {result.summary()}")
    return 0


def _adapt(image, model, args, thick_axis):
    from ..adaptation import adapt_to_volume

    bar = None
    if not args.quiet:
        from tqdm import tqdm

        bar = tqdm(total=args.adapt, unit="step", file=sys.stderr, dynamic_ncols=True,
                   desc="adapting")
    try:
        adapted = adapt_to_volume(
            image,
            model,
            steps=args.adapt,
            thick_axis=thick_axis,
            device=args.device,
            progress=(lambda info: bar.update(info.done_steps - bar.n)) if bar else None,
        )
    finally:
        if bar:
            bar.close()
    if not args.quiet:
        print(f"clade: {adapted.summary()}", file=sys.stderr)
    return adapted.model


class ProgressBar:
    """tqdm bar counting patches; created lazily so its total is known."""

    def __init__(self) -> None:
        self.bar = None

    def update(self, info) -> None:
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(
                total=info.total_patches,
                unit="patch",
                file=sys.stderr,
                dynamic_ncols=True,
                desc="super-resolving",
            )
        self.bar.update(info.done_patches - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
