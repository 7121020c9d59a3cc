"""``clade simulate ISO OUT --thickness MM``: thick slices simulated from an isotropic volume.

Blur an isotropic volume along one axis with a slice profile and keep one slice every SPACING
mm, with a header that puts each thick slice where it belongs, so the result can be
super-resolved and compared with the original (``clade evaluate --reference``).
"""

from __future__ import annotations

import argparse

from ..simulate import PROFILES
from .arguments import positive_float


def add_arguments(parser) -> None:
    parser.add_argument("iso", help="isotropic volume (file or DICOM series folder)")
    parser.add_argument("output", help="output file (.nrrd, .nii, .nii.gz, .mha, .mhd)")
    parser.add_argument(
        "--thickness",
        type=positive_float,
        required=True,
        help="slice thickness in mm (profile FWHM)",
    )
    parser.add_argument(
        "--spacing",
        type=positive_float,
        default=None,
        help="slice spacing in mm (default: the thickness); a whole multiple of the isotropic "
        "spacing keeps the exact grid correspondence",
    )
    parser.add_argument(
        "--axis", type=int, choices=(0, 1, 2), default=2, help="index axis to thicken (default 2)"
    )
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default="gaussian",
        help="slice profile: gaussian with FWHM = thickness (default) or box",
    )
    parser.add_argument("--quiet", action="store_true", help="no summary line")


def run(args: argparse.Namespace) -> int:
    from ..simulate import simulate_thick_slices
    from ..volume_io import check_output_path, read_volume, write_volume

    output = check_output_path(args.output, inputs=(args.iso,))
    iso = read_volume(args.iso)
    thick = simulate_thick_slices(iso, args.thickness, args.spacing, args.axis, args.profile)
    write_volume(thick, output)
    if not args.quiet:
        used = thick.GetSize()[args.axis]
        factor = thick.GetSpacing()[args.axis] / iso.GetSpacing()[args.axis]
        print(
            f"clade: wrote {output}: {used} slices of {args.thickness:g} mm every "
            f"{thick.GetSpacing()[args.axis]:g} mm along axis {args.axis} "
            f"({args.profile} profile), from {round(used * factor)} of "
            f"{iso.GetSize()[args.axis]} isotropic slices."
        )
    return 0
