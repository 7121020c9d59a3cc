"""Compare super-resolved volumes with the cubic-spline baseline (and a reference when known).

Every volume is brought onto one common grid first, because PIQE, SSIM and PSNR depend on it:
the isotropic grid of the thick-slice input (where the spline baseline and CLADE's outputs lie,
see :mod:`CLADE.geometry`). A volume on a larger grid that contains it sample for sample (e.g. the
full isotropic volume thick slices were simulated from, when ``N`` was not a multiple of ``k``)
is cropped to it, losslessly. Any other grid is refused unless ``resample_to_reference`` is set,
in which case every volume is resampled (cubic B-spline) onto the reference's grid (or, without
a reference, onto the input's isotropic grid).

Metrics per volume: PIQE (mean over the LR-plane slices, thick axis vertical), edge sharpness
(mean over lines along the thick axis through the strongest edges of the reference, or of the
spline baseline when there is no reference), SNR when two boxes are given, PSNR and SSIM against
the reference. Use :func:`evaluate` from Python; ``clade evaluate`` is its command line.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic_files import write_file
from .errors import CladeError
from .geometry import (
    PLANE_NAMES,
    detect_thick_axis,
    lr_slice_axes,
    lr_slice_stack,
    plane_slice_axis,
    resample_to_isotropic,
)
from .json_values import json_safe
from .metrics import find_edge_lines, mean_edge_sharpness, psnr, snr, ssim, volume_piqe
from .metrics.reference import WINDOW
from .simulate import isotropic_spacing

ORIENTATIONS = ("auto", "both") + PLANE_NAMES
BASELINE_NAME = "spline"
REFERENCE_NAME = "reference"

CONVENTIONS = {
    "piqe": "PIQE (MATLAB piqe as in pypiqe, 0-100, lower is better): mean over the 2D slices of "
    "each LR plane on the common isotropic grid, thick axis vertical, constant slices skipped.",
    "edge_sharpness": "Max slope of the intensity profile after Savitzky-Golay (5, 3), "
    "normalised by its max-min, in 1/mm; mean over lines along the thick axis through the "
    "strongest edges of the reference (or of the spline baseline without a reference).",
    "snr": "Mean of the signal box over the sample std of the background box.",
    "psnr": "10 log10(R^2 / MSE) in dB, R = reference max - min.",
    "ssim": f"Uniform {WINDOW}x{WINDOW}x{WINDOW} window, K1 0.01, K2 0.03, sample covariance, "
    "mean over window-valid voxels (scikit-image defaults), data range R as for PSNR.",
}

#: Relative tolerance when deciding that two grids are the same.
GRID_TOLERANCE = 1e-4


@dataclass
class Comparison:
    """Volumes on one common grid, ready to be measured (first: the spline baseline)."""

    names: list[str]
    images: list[sitk.Image]
    thick_axis: int
    input_thick_spacing: float
    slice_axes: list[int]
    planes: list[str]
    reference_index: int | None = None
    notes: list[str] = field(default_factory=list)
    #: The thick-slice input as read (the figure shows it with nearest-neighbour interpolation).
    input_image: sitk.Image | None = None


@dataclass
class EvaluationReport:
    """The metrics table: one row (a dict) per volume, plus the conventions used."""

    rows: list[dict]
    columns: list[str]
    thick_axis: int
    planes: list[str]
    notes: list[str]
    conventions: dict = field(default_factory=lambda: dict(CONVENTIONS))

    def to_dict(self) -> dict:
        """JSON-ready dictionary (non-finite numbers become None)."""
        return {
            "thick_axis": self.thick_axis,
            "planes": self.planes,
            "columns": self.columns,
            "rows": [json_safe(row) for row in self.rows],
            "notes": self.notes,
            "conventions": self.conventions,
        }

    def format_table(self) -> str:
        """A plain-text table for the terminal.

        Example:
            >>> report = EvaluationReport([{"name": "spline", "piqe_sagittal": 61.234}],
            ...                           ["name", "piqe_sagittal"], 2, ["sagittal"], [])
            >>> print(report.format_table())
            name    piqe_sagittal
            spline          61.23
        """
        header = self.columns
        lines = [
            [str(row.get(c, "")) if c == "name" else _cell(row.get(c)) for c in header]
            for row in self.rows
        ]
        widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(header)]
        out = [
            "  ".join(
                h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths))
            )
        ]
        for line in lines:
            out.append(
                "  ".join(
                    v.ljust(w) if i == 0 else v.rjust(w)
                    for i, (v, w) in enumerate(zip(line, widths))
                )
            )
        return "\n".join(out)

    def write(self, path: str | os.PathLike) -> Path:
        """Write the report as JSON or CSV, chosen by the file ending."""
        path = check_report_path(path)

        def write(name: str) -> None:
            if path.suffix.lower() == ".json":
                text = json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"
                Path(name).write_text(text, encoding="utf-8")
                return
            with open(name, "w", newline="", encoding="utf-8") as handle:
                writer = csv.DictWriter(
                    handle, fieldnames=self.columns + ["path"], extrasaction="ignore"
                )
                writer.writeheader()
                for row in self.rows:
                    writer.writerow(json_safe(row))

        return write_file(path, write)


def check_report_path(path: str | os.PathLike) -> Path:
    """Refuse a report name that is neither .json nor .csv, or an unwritable folder.

    Example:
        >>> check_report_path("/tmp/report.txt")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: Cannot tell the report format of report.txt: end its name with .json or .csv.
    """
    path = Path(path)
    if path.suffix.lower() not in (".json", ".csv"):
        raise CladeError(
            f"Cannot tell the report format of {path.name}: end its name with .json or .csv."
        )
    _check_folder(path)
    return path


def _check_folder(path: Path) -> None:
    folder = path.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CladeError(
            f"The folder {folder} does not exist or cannot be written: choose another path."
        )


def prepare_comparison(
    input_image: sitk.Image,
    sr_images: Sequence[tuple[str, sitk.Image]],
    reference: sitk.Image | None = None,
    *,
    thick_axis: int | None = None,
    orientation: str = "auto",
    resample_to_reference: bool = False,
) -> Comparison:
    """Compute the spline baseline of ``input_image`` and put every volume on the common grid.

    Example:
        >>> thick = sitk.Image([16, 16, 4], sitk.sitkFloat32); thick.SetSpacing((1.0, 1.0, 4.0))
        >>> sr = resample_to_isotropic(thick, 2)
        >>> comparison = prepare_comparison(thick, [("sr", sr)])
        >>> comparison.names, comparison.planes, comparison.images[1].GetSize()
        (['spline', 'sr'], ['sagittal'], (16, 16, 16))
    """
    if orientation not in ORIENTATIONS:
        raise CladeError(f"Unknown orientation {orientation!r}: use {', '.join(ORIENTATIONS)}.")
    axis = detect_thick_axis(input_image.GetSpacing(), thick_axis)
    spline = resample_to_isotropic(input_image, axis)
    target = spline
    notes: list[str] = []
    if reference is not None:
        isotropic_spacing(reference, "The reference")
        if resample_to_reference:
            target = reference
    names = [BASELINE_NAME] + [name for name, _ in sr_images]
    originals = [spline] + [image for _, image in sr_images]
    if reference is not None:
        names.append(REFERENCE_NAME)
        originals.append(reference)
    images = [
        _onto_grid(image, target, name, resample_to_reference, notes)
        for name, image in zip(names, originals)
    ]
    slice_axes = lr_slice_axes(images[0], axis, orientation)
    planes = [
        next(p for p in PLANE_NAMES if plane_slice_axis(images[0], p) == a) for a in slice_axes
    ]
    return Comparison(
        names=names,
        images=images,
        thick_axis=axis,
        input_thick_spacing=float(input_image.GetSpacing()[axis]),
        slice_axes=slice_axes,
        planes=planes,
        reference_index=len(names) - 1 if reference is not None else None,
        notes=notes,
        input_image=input_image,
    )


def edge_profile_lines(comparison: Comparison, edge_count: int = 16) -> list:
    """The lines along which :func:`measure` takes edge sharpness: through the ``edge_count``
    strongest thick-axis edges of the reference (the spline without one), each as long as
    the larger of one thick slice and 8 voxels.

    Example:
        >>> thick = sitk.GetImageFromArray(np.repeat(np.eye(8, dtype=np.float32)[:, :, None], 8, 2))
        >>> thick.SetSpacing((1.0, 1.0, 4.0))
        >>> len(edge_profile_lines(prepare_comparison(thick, []), edge_count=2))
        2
    """
    ref_index = comparison.reference_index
    edge_source = comparison.images[ref_index if ref_index is not None else 0]
    half_length = max(
        comparison.input_thick_spacing, 4.0 * edge_source.GetSpacing()[comparison.thick_axis]
    )
    return find_edge_lines(edge_source, comparison.thick_axis, edge_count, half_length)


def reported_piqe(row: dict, planes: Sequence[str]) -> float | None:
    """The one PIQE figure a report gives for a :func:`measure` row: the mean over the LR
    planes when several were measured, else the single plane's.

    Example:
        >>> reported_piqe({"piqe_sagittal": 60.0}, ["sagittal"])
        60.0
        >>> reported_piqe({"piqe_sagittal": 60.0, "piqe_coronal": 70.0, "piqe_mean": 65.0},
        ...               ["sagittal", "coronal"])
        65.0
    """
    return row.get("piqe_mean", row.get(f"piqe_{planes[0]}"))


def measure(
    comparison: Comparison,
    *,
    central_fraction: float = 1.0,
    signal_box=None,
    background_box=None,
    boxes_in_mm: bool = False,
    edge_count: int = 16,
) -> EvaluationReport:
    """Every metric for every volume of ``comparison``.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> thick = sitk.GetImageFromArray(rng.normal(100, 10, (6, 32, 32)).astype(np.float32))
        >>> thick.SetSpacing((1.0, 1.0, 4.0))
        >>> report = measure(prepare_comparison(thick, [("sr", resample_to_isotropic(thick, 2))]))
        >>> report.columns
        ['name', 'piqe_sagittal', 'edge_sharpness']
        >>> report.rows[0]["piqe_sagittal"] == report.rows[1]["piqe_sagittal"]
        True
    """
    if (signal_box is None) != (background_box is None):
        raise CladeError("SNR needs both a signal box and a background box: give both or neither.")
    ref_index = comparison.reference_index
    lines = edge_profile_lines(comparison, edge_count)
    reference_array = (
        sitk.GetArrayViewFromImage(comparison.images[ref_index]) if ref_index is not None else None
    )
    columns = ["name"] + [f"piqe_{p}" for p in comparison.planes]
    if len(comparison.planes) > 1:
        columns.append("piqe_mean")
    columns.append("edge_sharpness")
    if signal_box is not None:
        columns.append("snr")
    if ref_index is not None:
        columns += ["psnr", "ssim"]

    rows = []
    for index, (name, image) in enumerate(zip(comparison.names, comparison.images)):
        array = sitk.GetArrayViewFromImage(image)
        row: dict = {"name": name}
        scores = []
        for plane, slice_axis in zip(comparison.planes, comparison.slice_axes):
            stack = lr_slice_stack(array, slice_axis, comparison.thick_axis)
            scores.append(volume_piqe(stack, 0, central_fraction))
            row[f"piqe_{plane}"] = scores[-1]
        if len(scores) > 1:
            row["piqe_mean"] = float(np.mean(scores))
        row["edge_sharpness"] = mean_edge_sharpness(image, lines)
        if signal_box is not None:
            row["snr"] = snr(image, signal_box, background_box, boxes_in_mm)
        if ref_index is not None:
            if index == ref_index:
                row["psnr"] = row["ssim"] = None
            else:
                row["psnr"] = psnr(reference_array, array)
                row["ssim"] = ssim(reference_array, array)
        rows.append(row)
    notes = list(comparison.notes)
    length = float(np.linalg.norm(np.subtract(lines[0][1], lines[0][0])))
    notes.append(f"Edge sharpness measured along {len(lines)} lines of {length:.3g} mm.")
    return EvaluationReport(rows, columns, comparison.thick_axis, comparison.planes, notes)


def evaluate(
    input_image: sitk.Image,
    sr_images: Sequence[tuple[str, sitk.Image]],
    reference: sitk.Image | None = None,
    *,
    measure_options: dict | None = None,
    **comparison_options,
) -> EvaluationReport:
    """:func:`prepare_comparison` then :func:`measure`, in one call.

    ``comparison_options`` are :func:`prepare_comparison`'s (``thick_axis``, ``orientation``,
    ``resample_to_reference``), ``measure_options`` :func:`measure`'s.

    Example:
        >>> from CLADE.simulate import simulate_thick_slices
        >>> rng = np.random.default_rng(1)
        >>> truth = sitk.GetImageFromArray(rng.normal(100, 10, (24, 32, 32)).astype(np.float32))
        >>> thick = simulate_thick_slices(truth, 4.0)
        >>> report = evaluate(thick, [("same", resample_to_isotropic(thick, 2))], truth)
        >>> [row["name"] for row in report.rows], report.columns[-2:]
        (['spline', 'same', 'reference'], ['psnr', 'ssim'])
    """
    comparison = prepare_comparison(input_image, sr_images, reference, **comparison_options)
    return measure(comparison, **(measure_options or {}))


def volume_name(path: str | os.PathLike) -> str:
    """A short row name for a volume file: its name without the image ending.

    Example:
        >>> volume_name("/data/case1_clade.nii.gz")
        'case1_clade'
    """
    from .volume_files import volume_stem

    return volume_stem(path)


def _onto_grid(image, target, name, resample, notes):
    if _same_grid(image, target):
        return image
    crop = _subgrid_offset(image, target)
    if crop is not None:
        notes.append(f"{name} was cropped to the common grid (no interpolation).")
        return sitk.RegionOfInterest(image, list(target.GetSize()), crop)
    if resample:
        overlap = _overlap_fraction(image, target)
        if overlap == 0.0:
            raise CladeError(
                f"The {name} volume ({_grid_text(image)}) and the comparison grid "
                f"({_grid_text(target)}) do not overlap in space, so there is nothing to compare: "
                "check that the volumes show the same scan and that their headers keep its "
                "geometry (origin, direction)."
            )
        notes.append(f"{name} was resampled (cubic B-spline) onto the common grid.")
        return sitk.Resample(
            sitk.Cast(image, sitk.sitkFloat32),
            target,
            sitk.Transform(),
            sitk.sitkBSpline,
            0.0,
            sitk.sitkFloat32,
        )
    raise CladeError(
        f"The {name} volume is on a different grid ({_grid_text(image)}) from the comparison grid "
        f"({_grid_text(target)}), so full-reference and PIQE numbers would not be comparable: "
        "pass --resample-to-reference to resample it (cubic B-spline) onto one grid."
    )


def _overlap_fraction(image: sitk.Image, target: sitk.Image) -> float:
    """Fraction of ``target``'s voxel centres that fall inside ``image`` (on a coarse lattice).

    Resampling a volume that does not overlap the target fills it with zeros, which would then
    be measured (and blamed on PIQE) instead of being called a geometry problem.

    Example:
        >>> a = sitk.Image([8, 8, 8], sitk.sitkFloat32)
        >>> b = sitk.Image(a); b.SetOrigin((4.0, 0.0, 0.0))
        >>> _overlap_fraction(a, b)
        0.5
    """
    size = np.array(target.GetSize())
    steps = [np.unique(np.linspace(0, n - 1, min(n, 16)).round()) for n in size]
    grid = np.stack(np.meshgrid(*steps, indexing="ij"), -1).reshape(-1, 3)
    origin = np.array(target.GetOrigin())
    to_physical = np.array(target.GetDirection()).reshape(3, 3) * np.array(target.GetSpacing())
    points = origin + grid @ to_physical.T
    to_index = np.linalg.inv(
        np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())
    )
    index = (points - np.array(image.GetOrigin())) @ to_index.T
    inside = np.all((index >= -0.5) & (index <= np.array(image.GetSize()) - 0.5), axis=1)
    return float(inside.mean())


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    if a.GetSize() != b.GetSize():
        return False
    return _same_axes(a, b) and np.allclose(
        a.GetOrigin(), b.GetOrigin(), rtol=0, atol=GRID_TOLERANCE * 10 * min(b.GetSpacing())
    )


def _same_axes(a: sitk.Image, b: sitk.Image) -> bool:
    return np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=GRID_TOLERANCE, atol=0) and np.allclose(
        a.GetDirection(), b.GetDirection(), rtol=0, atol=GRID_TOLERANCE
    )


def _subgrid_offset(image: sitk.Image, target: sitk.Image) -> list[int] | None:
    """Index of ``target``'s first voxel in ``image`` when ``target`` is a sub-grid of it."""
    if not _same_axes(image, target):
        return None
    offset = np.array(image.TransformPhysicalPointToContinuousIndex(target.GetOrigin()))
    rounded = np.round(offset)
    if np.abs(offset - rounded).max() > 1e-3:
        return None
    end = rounded + np.array(target.GetSize())
    if (rounded < 0).any() or (end > np.array(image.GetSize())).any():
        return None
    return [int(v) for v in rounded]


def _grid_text(image: sitk.Image) -> str:
    size = "x".join(str(v) for v in image.GetSize())
    spacing = " x ".join(f"{v:.4g}" for v in image.GetSpacing())
    origin = ", ".join(f"{v:.4g}" for v in image.GetOrigin())
    return f"{size} voxels of {spacing} mm at ({origin})"


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "inf" if value > 0 else "-"
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.2f}"
    return str(value)
