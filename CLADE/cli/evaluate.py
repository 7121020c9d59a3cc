"""``clade evaluate INPUT SR [SR ...]``: metrics table (and figure) of SR volumes vs the spline.

Measure PIQE, edge sharpness (and SNR, PSNR, SSIM when asked) of the cubic-spline upsampling of
INPUT and of each super-resolved volume, on INPUT's isotropic grid. Prints a table; optionally
writes it as JSON/CSV and draws a comparison figure (with ``--error-map``, the first volume's
error map beside its true error when a reference is given).
"""

from __future__ import annotations

import argparse
import math

from ..errors import CladeError
from ..evaluation import ORIENTATIONS
from .arguments import add_thick_axis, fraction, int_at_least, thick_axis_of


def add_arguments(parser) -> None:
    parser.add_argument("input", help="the thick-slice volume that was super-resolved")
    parser.add_argument("sr", nargs="+", help="super-resolved volume(s) to compare")
    parser.add_argument("--reference", help="isotropic ground truth (e.g. before `clade simulate`)")
    parser.add_argument(
        "--orientation",
        choices=ORIENTATIONS,
        default="auto",
        help="LR plane(s) whose slices PIQE and the figure use (default: auto, as super-resolve)",
    )
    add_thick_axis(parser, "INPUT's thick slices")
    parser.add_argument(
        "--central-fraction",
        type=fraction,
        default=1.0,
        help="keep only this central fraction of the slices for PIQE (default 1 = all)",
    )
    parser.add_argument(
        "--resample-to-reference",
        action="store_true",
        help="resample volumes on other grids (cubic B-spline) onto the reference's grid",
    )
    parser.add_argument("--signal-box", help="SNR signal box x0,y0,z0,x1,y1,z1")
    parser.add_argument("--background-box", help="SNR background box x0,y0,z0,x1,y1,z1")
    parser.add_argument(
        "--boxes-in-mm",
        action="store_true",
        help="box corners are physical points in mm (default: voxel indices of the isotropic "
        "grid, upper corner excluded)",
    )
    parser.add_argument(
        "--edges", type=int_at_least(1, 10000), default=16, help="edge profiles to average (16)"
    )
    parser.add_argument("--report", help="write the table to FILE.json or FILE.csv")
    parser.add_argument("--figure", help="write the comparison figure to FILE.png")
    parser.add_argument(
        "--error-map",
        metavar="MAP",
        help="the error map of the first SR volume (clade super-resolve --error-map): shown "
        "in the figure, beside the true error when --reference is given",
    )


def run(args: argparse.Namespace) -> int:
    from ..evaluation import check_report_path, measure, prepare_comparison, volume_name
    from ..evaluation_figure import check_figure_path, save_evaluation_figure
    from ..volume_io import read_volume

    # Refuse bad output names before the (slower) work starts.
    if args.report:
        check_report_path(args.report)
    if args.figure:
        check_figure_path(args.figure)
    elif args.error_map:
        raise CladeError("--error-map is shown in the figure: add --figure FILE.png.")
    signal_box = _parse_box(args.signal_box, "--signal-box")
    background_box = _parse_box(args.background_box, "--background-box")

    input_image = read_volume(args.input)
    names = _unique([volume_name(path) for path in args.sr])
    sr_images = [(name, read_volume(path)) for name, path in zip(names, args.sr)]
    reference = read_volume(args.reference) if args.reference else None
    error_map = read_volume(args.error_map) if args.error_map else None
    comparison = prepare_comparison(
        input_image,
        sr_images,
        reference,
        thick_axis=thick_axis_of(args),
        orientation=args.orientation,
        resample_to_reference=args.resample_to_reference,
    )
    report = measure(
        comparison,
        central_fraction=args.central_fraction,
        signal_box=signal_box,
        background_box=background_box,
        boxes_in_mm=args.boxes_in_mm,
        edge_count=args.edges,
    )
    paths = [args.input] + list(args.sr) + ([args.reference] if args.reference else [])
    for row, path in zip(report.rows, paths):
        row["path"] = str(path)
    print(report.format_table())
    for note in report.notes:
        print(f"note: {note}")
    if args.report:
        print(f"clade: wrote {report.write(args.report)}")
    if args.figure:
        print(f"clade: wrote {save_evaluation_figure(comparison, report, args.figure, error_map)}")
    return 0


def _parse_box(text: str | None, option: str):
    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) != 6 or not all(math.isfinite(v) for v in values):
        raise CladeError(
            f"{option} needs six comma-separated finite numbers x0,y0,z0,x1,y1,z1, not {text!r}."
        )
    return (tuple(values[:3]), tuple(values[3:]))


def _unique(names: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    result = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        result.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return result
