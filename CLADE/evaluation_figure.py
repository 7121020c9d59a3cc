"""The evaluation figure: the same LR-plane slice of every volume side by side.

One row per LR orientation, one column per volume (spline baseline, each SR, reference), the
thick axis vertical, one grey window for all panels (from the reference, else the baseline), a
zoomed inset around the strongest edge of the slice and the metrics under each panel. Drawn with
matplotlib's Agg canvas (no display needed). The PNG is exactly ``figure_pixel_size(...)`` pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter

from .atomic_files import write_atomically
from .errors import CladeError
from .evaluation import Comparison, EvaluationReport
from .geometry import lr_slice_stack

PANEL_INCHES = (3.2, 3.8)
DPI = 100


def figure_pixel_size(n_columns: int, n_rows: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure with that many panels.

    Example:
        >>> figure_pixel_size(3, 1)
        (960, 380)
    """
    return (
        int(round(n_columns * PANEL_INCHES[0] * DPI)),
        int(round(n_rows * PANEL_INCHES[1] * DPI)),
    )


def save_evaluation_figure(
    comparison: Comparison, report: EvaluationReport, path: str | os.PathLike
) -> Path:
    """Draw the comparison figure and write it as PNG (atomically) to ``path``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = check_figure_path(path)
    n_columns, n_rows = len(comparison.images), len(comparison.slice_axes)
    figure = Figure(figsize=(n_columns * PANEL_INCHES[0], n_rows * PANEL_INCHES[1]), dpi=DPI)
    FigureCanvasAgg(figure)
    window_index = comparison.reference_index if comparison.reference_index is not None else 0
    arrays = [sitk.GetArrayViewFromImage(image) for image in comparison.images]
    spacing = comparison.images[0].GetSpacing()
    for row, (plane, slice_axis) in enumerate(zip(comparison.planes, comparison.slice_axes)):
        slices = [_central_slice(a, slice_axis, comparison.thick_axis) for a in arrays]
        low, high = np.percentile(slices[window_index], (0.5, 99.5))
        high = high if high > low else low + 1.0
        zoom = _zoom_box(slices[window_index])
        other = 3 - slice_axis - comparison.thick_axis
        aspect = spacing[comparison.thick_axis] / spacing[other]
        for column, (name, image2d) in enumerate(zip(comparison.names, slices)):
            axes = figure.add_subplot(n_rows, n_columns, row * n_columns + column + 1)
            shown = dict(
                cmap="gray",
                vmin=low,
                vmax=high,
                origin="lower",
                aspect=aspect,
                interpolation="nearest",
            )
            axes.imshow(image2d, **shown)
            axes.set_title(f"{name} ({plane})", fontsize=9)
            axes.set_xticks([])
            axes.set_yticks([])
            axes.set_xlabel(_metrics_text(report.rows[column], plane), fontsize=7)
            inset = axes.inset_axes(_inset_place(zoom, image2d.shape))
            inset.imshow(image2d, **shown)
            (r0, r1), (c0, c1) = zoom
            inset.set_xlim(c0 - 0.5, c1 - 0.5)
            inset.set_ylim(r0 - 0.5, r1 - 0.5)
            inset.set_xticks([])
            inset.set_yticks([])
            for spine in inset.spines.values():
                spine.set_edgecolor("yellow")
            axes.indicate_inset_zoom(inset, edgecolor="yellow")
    figure.subplots_adjust(
        left=0.01, right=0.99, top=0.93, bottom=0.2 / n_rows + 0.02, wspace=0.05, hspace=0.35
    )
    try:
        write_atomically(path, lambda name: figure.savefig(name, dpi=DPI, format="png"), ".png")
    except OSError as error:
        raise CladeError(f"Could not write {path}: {error.strerror or error}.") from None
    return path


def check_figure_path(path: str | os.PathLike) -> Path:
    """Refuse a figure name not ending in .png, or an unwritable folder.

    Example:
        >>> check_figure_path("/tmp/figure.jpg")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: The figure is written as PNG: end its name with .png, not figure.jpg.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise CladeError(f"The figure is written as PNG: end its name with .png, not {path.name}.")
    folder = path.resolve().parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        raise CladeError(
            f"The folder {folder} does not exist or cannot be written: choose another path."
        )
    return path


def _central_slice(array: np.ndarray, slice_axis: int, thick_axis: int) -> np.ndarray:
    stack = lr_slice_stack(array, slice_axis, thick_axis)
    return np.asarray(stack[stack.shape[0] // 2], dtype=np.float64)


def _zoom_box(image2d: np.ndarray) -> tuple[tuple[int, int], tuple[int, int]]:
    """A square quarter-size window around the strongest vertical (thick-axis) edge."""
    rows, columns = image2d.shape
    side = max(8, min(rows, columns) // 4)
    strength = np.abs(np.gradient(gaussian_filter(image2d, 1.0), axis=0))
    r, c = np.unravel_index(int(np.argmax(strength)), strength.shape)
    r0 = int(np.clip(r - side // 2, 0, max(0, rows - side)))
    c0 = int(np.clip(c - side // 2, 0, max(0, columns - side)))
    return (r0, min(rows, r0 + side)), (c0, min(columns, c0 + side))


def _inset_place(zoom, shape) -> list[float]:
    """Inset bounds (axes fraction) in the corner farthest from the zoomed region."""
    (r0, r1), (c0, c1) = zoom
    # origin="lower": row 0 is at the bottom of the panel.
    bottom = 0.02 if (r0 + r1) / 2 > shape[0] / 2 else 0.58
    left = 0.02 if (c0 + c1) / 2 > shape[1] / 2 else 0.58
    return [left, bottom, 0.4, 0.4]


def _metrics_text(row: dict, plane: str) -> str:
    parts = []
    for key, value in row.items():
        if key in ("name", "path", "piqe_mean") or value is None:
            continue
        if key.startswith("piqe_") and key != f"piqe_{plane}":
            continue
        label = {"edge_sharpness": "ES", "psnr": "PSNR", "ssim": "SSIM", "snr": "SNR"}.get(
            key, "PIQE"
        )
        unit = {"edge_sharpness": " /mm", "psnr": " dB"}.get(key, "")
        parts.append(f"{label} {value:.3g}{unit}" if key != "ssim" else f"{label} {value:.3f}")
    lines = [", ".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]
    return "\n".join(lines)
