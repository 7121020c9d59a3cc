"""PSNR of each output slice across the thick axis: where along it a method wins or loses.

A whole-volume PSNR hides where the error sits. This prints one row per method (spline first,
then each OUTPUT) and one column per slice of the isotropic grid across the thick axis, each the
PSNR of that slice against the reference. The data range is the whole reference's, as in
``clade evaluate``, so the slices' figures are comparable with each other and with its table;
``*`` marks the slices at the centres of the acquired thick slices. Volumes are put on the common
grid exactly as ``clade evaluate`` does (:func:`CLADE.evaluation.prepare_comparison`).

Usage:
    python benchmarks/slice_psnr.py THICK REFERENCE NAME=OUTPUT [NAME=OUTPUT ...] [--json FILE]
        [--resample-to-reference]

Example (the abdominal MR of ``benchmarks/prepare_eval_data.py``, CLADE against ECLARE):
    python benchmarks/slice_psnr.py runs/eval-data/mri-abdomen-mr-9mm_thick.nii.gz \\
        runs/eval-data/abdomen-mr_iso.nii.gz clade=out.nii.gz \\
        eclare=runs/eval-data/eclare/mri-abdomen-mr-9mm/mri-abdomen-mr-9mm_thick_eclare.nii.gz
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from CLADE.errors import CladeError  # noqa: E402
from CLADE.evaluation import prepare_comparison  # noqa: E402
from CLADE.metrics.reference import data_range, psnr  # noqa: E402


def slice_psnrs(reference: np.ndarray, test: np.ndarray, numpy_axis: int) -> list[float]:
    """PSNR of each slice of ``test`` across ``numpy_axis``, with the whole reference's range.

    Example:
        >>> ref = np.arange(8.0).reshape(2, 2, 2)
        >>> [round(v, 2) for v in slice_psnrs(ref, ref + [[[0.0]], [[1.0]]], 0)]
        [inf, 16.9]
    """
    value = data_range(reference)
    return [
        psnr(np.take(reference, i, numpy_axis), np.take(test, i, numpy_axis), value)
        for i in range(reference.shape[numpy_axis])
    ]


def acquired_slices(thick: sitk.Image, grid: sitk.Image, axis: int) -> list[int]:
    """Indices of ``grid`` (along ``axis``) that lie on a thick slice's centre (to 0.1 voxel)."""
    centres = []
    for k in range(thick.GetSize()[axis]):
        index = [0, 0, 0]
        index[axis] = k
        point = thick.TransformIndexToPhysicalPoint(index)
        position = grid.TransformPhysicalPointToContinuousIndex(point)[axis]
        if abs(position - round(position)) < 0.1 and 0 <= round(position) < grid.GetSize()[axis]:
            centres.append(int(round(position)))
    return centres


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("thick", type=Path, help="the thick-slice input")
    parser.add_argument("reference", type=Path, help="the isotropic reference")
    parser.add_argument("outputs", nargs="+", metavar="NAME=OUTPUT")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument(
        "--resample-to-reference",
        action="store_true",
        help="measure on the reference's grid when it differs (cubic B-spline, as clade evaluate)",
    )
    args = parser.parse_args(argv)
    paths = []
    for item in args.outputs:
        name, _, path = item.partition("=")
        if not name or not path:
            parser.error(f"{item!r} is not NAME=OUTPUT")
        paths.append((name, Path(path)))
    for path in (args.thick, args.reference, *(p for _, p in paths)):
        if not path.is_file():
            parser.error(f"{path} is not a file: give the path of a volume.")
    try:
        thick = sitk.ReadImage(str(args.thick), sitk.sitkFloat32)
        reference = sitk.ReadImage(str(args.reference), sitk.sitkFloat32)
        named = [(name, sitk.ReadImage(str(path), sitk.sitkFloat32)) for name, path in paths]
        comparison = prepare_comparison(
            thick, named, reference, resample_to_reference=args.resample_to_reference
        )
    except (CladeError, RuntimeError) as error:  # SimpleITK raises RuntimeError on bad files
        parser.exit(2, f"slice_psnr: {str(error).strip().splitlines()[-1]}\n")
    axis = comparison.thick_axis
    numpy_axis = 2 - axis
    arrays = [sitk.GetArrayViewFromImage(image) for image in comparison.images]
    truth = np.asarray(arrays[comparison.reference_index], dtype=np.float64)
    centres = set(acquired_slices(thick, comparison.images[0], axis))
    rows = {}
    for index, (name, array) in enumerate(zip(comparison.names, arrays)):
        if index == comparison.reference_index:
            continue
        test = np.asarray(array, dtype=np.float64)
        rows[name] = {
            "volume": psnr(truth, test),
            "slices": slice_psnrs(truth, test, numpy_axis),
        }
    count = truth.shape[numpy_axis]
    width = max(len(name) for name in rows) + 2
    print(f"PSNR (dB) of each slice across axis {axis}; * = an acquired slice's centre")
    header = "".join(f"{i}{'*' if i in centres else ' '}".rjust(6) for i in range(count))
    print(f"{'method':<{width}}{'volume':>7}{header}")
    for name, row in rows.items():
        cells = "".join(f"{value:6.1f}" for value in row["slices"])
        print(f"{name:<{width}}{row['volume']:7.2f}{cells}")
    for note in comparison.notes:
        print(f"note: {note}")
    if args.json:
        record = {"thick_axis": axis, "acquired": sorted(centres), "rows": rows}
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
