"""The comparison figure of ``clade demo``, ``clade evaluate --figure`` and the model cards.

For each LR plane (one block of rows per plane) and each volume (one column: the thick-slice
input, the spline baseline, each super-resolved volume, the reference when there is one):

1. the central LR-plane slice at its true aspect ratio, thick axis vertical, the input shown
   with nearest-neighbour interpolation so its thick slices show as the blocks they are; a
   yellow box marks the zoomed region and a cyan line the profile;
2. under it, the zoomed region (the same for every column, around the strongest edge along the
   thick axis), as its own panel beside the others rather than an inset over the anatomy, with
   the metrics of that volume under it;
3. a full-width plot of the intensity along the cyan line, across that edge, one curve per
   volume, with the thick slices' centres marked;
4. with an error map (:mod:`CLADE.error_map`, of the first super-resolved volume): the map
   under that volume's column, over it under the spline's, the true error ``|SR - reference|``
   under the reference's; one colour scale, its bar (the volumes' units) under the input's.

One grey window for all panels (from the reference, else the spline). Drawn with matplotlib's
Agg canvas (no display needed) at :data:`DPI`, at least :data:`MIN_WIDTH_PIXELS` wide; the PNG is
exactly :func:`figure_pixel_size` pixels.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter, uniform_filter

from .atomic_files import write_file
from .errors import CladeError
from .evaluation import Comparison, EvaluationReport
from .geometry import lr_slice_stack

DPI = 100
#: Wide enough to read on a slide or a laptop screen without zooming.
MIN_WIDTH_PIXELS = 1800
#: Width of one column in inches (below that, more columns widen the figure).
COLUMN_INCHES = 3.6
#: Heights in inches of the text rows: titles, metrics under the zooms, the profile plot.
TITLE_INCHES, METRICS_INCHES, PROFILE_INCHES, PLANE_GAP_INCHES = 0.55, 0.75, 2.6, 0.45
#: Fraction of the slice height the zoomed region covers, and its width : height ratio.
ZOOM_FRACTION, ZOOM_ASPECT = 0.4, 1.5
INPUT_NAME = "input"
_COLOURS = {"input": "0.55", "spline": "tab:blue", "reference": "black"}
#: CLADE's own rows in red, whatever their position; other methods from this cycle.
_CLADE_COLOUR = "tab:red"
_OTHER_COLOURS = ("tab:green", "tab:purple", "tab:orange", "tab:brown", "tab:pink", "tab:olive")


def figure_pixel_size(
    n_columns: int, slice_shapes: list[tuple[int, int]], error_rows: bool = False
) -> tuple[int, int]:
    """(width, height) in pixels of the figure for ``n_columns`` volumes (the input included)
    and one LR plane per entry of ``slice_shapes`` (rows, columns of its slice, isotropic grid).

    Example:
        >>> figure_pixel_size(3, [(84, 160)])
        (1800, 1062)
    """
    width, heights = _layout(n_columns, slice_shapes, error_rows)
    return int(round(width * DPI)), int(round(sum(heights) * DPI))


def _layout(n_columns: int, slice_shapes, error_rows: bool = False) -> tuple[float, list[float]]:
    width = max(MIN_WIDTH_PIXELS / DPI, n_columns * COLUMN_INCHES)
    column = width / n_columns
    heights: list[float] = []
    for index, (rows, columns) in enumerate(slice_shapes):
        gap = [PLANE_GAP_INCHES] if index else []
        slice_height = column * 0.94 * rows / columns
        zoom_height = column * 0.94 / ZOOM_ASPECT
        heights += gap + [TITLE_INCHES, slice_height, zoom_height, METRICS_INCHES, PROFILE_INCHES]
        if error_rows:
            heights += [TITLE_INCHES, slice_height]
    return width, heights


def save_evaluation_figure(
    comparison: Comparison,
    report: EvaluationReport,
    path: str | os.PathLike,
    error_map: sitk.Image | None = None,
) -> Path:
    """Draw the comparison figure and write it as PNG (atomically) to ``path``; ``error_map``
    (of the first super-resolved volume) adds its panels (module docstring, item 4)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    path = check_figure_path(path)
    names, arrays, rows = _columns(comparison, report)
    slices_per_plane = [
        [_central_slice(a, slice_axis, comparison.thick_axis) for a in arrays]
        for slice_axis in comparison.slice_axes
    ]
    error_slices = _error_slices(comparison, names, arrays, error_map)
    width, heights = _layout(
        len(names), [s[0].shape for s in slices_per_plane], error_map is not None
    )
    figure = Figure(figsize=(width, sum(heights)), dpi=DPI)
    FigureCanvasAgg(figure)
    grid = figure.add_gridspec(
        len(heights),
        len(names),
        height_ratios=heights,
        left=0.01,
        right=0.99,
        top=1.0,
        bottom=0.0,
        wspace=0.06,
        hspace=0.0,
    )
    spacing = comparison.images[0].GetSpacing()
    step = spacing[comparison.thick_axis]
    window_column = names.index(_window_source(comparison))
    row0 = 0
    for plane_index, (plane, slices) in enumerate(zip(comparison.planes, slices_per_plane)):
        row0 += 1 if plane_index else 0
        low, high = np.percentile(slices[window_column], (0.5, 99.5))
        high = high if high > low else low + 1.0
        box, line_column = _zoom_box(slices[window_column])
        (r0, r1), (c0, c1) = box
        shown = dict(cmap="gray", vmin=low, vmax=high, origin="lower", interpolation="nearest")
        for column, (name, image2d, row) in enumerate(zip(names, slices, rows)):
            title = figure.add_subplot(grid[row0, column])
            title.axis("off")
            title.text(
                0.5,
                0.25,
                _title(name, comparison, plane),
                ha="center",
                va="bottom",
                fontsize=13,
                fontweight="bold",
                transform=title.transAxes,
            )
            full = figure.add_subplot(grid[row0 + 1, column])
            full.imshow(image2d, **shown)
            full.add_patch(_rectangle(c0 - 0.5, r0 - 0.5, c1 - c0, r1 - r0, "yellow"))
            full.plot([line_column, line_column], [r0 - 0.5, r1 - 0.5], color="cyan", lw=1.2)
            _bare(full)
            if column == 0:
                _scale_bar(full, image2d.shape, step)
            zoom = figure.add_subplot(grid[row0 + 2, column])
            zoom.imshow(image2d[r0:r1, c0:c1], **shown)
            zoom.plot(
                [line_column - c0] * 2, [-0.5, r1 - r0 - 0.5], color="cyan", lw=1.0, ls=(0, (4, 4))
            )
            _bare(zoom, edge="yellow")
            text = figure.add_subplot(grid[row0 + 3, column])
            text.axis("off")
            text.text(
                0.5,
                0.9,
                _metrics_text(row, plane, comparison, name),
                ha="center",
                va="top",
                fontsize=12,
                linespacing=1.4,
                transform=text.transAxes,
            )
        # Room inside the profile's row for its tick labels and axis titles.
        cell = grid[row0 + 4, :].get_position(figure)
        inches = sum(heights)
        profile = figure.add_axes(
            [
                cell.x0 + 0.75 / width,
                cell.y0 + 0.6 / inches,
                cell.width - 0.95 / width,
                cell.height - 0.9 / inches,
            ]
        )
        _draw_profiles(profile, names, slices, box, line_column, step, comparison)
        row0 += 5
        if error_slices is not None:
            _draw_error_row(figure, grid, row0, names, error_slices[plane_index], plane)
            row0 += 2
    return write_file(path, lambda name: figure.savefig(name, dpi=DPI, format="png"), ".png")


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


def _columns(comparison: Comparison, report: EvaluationReport):
    """Names, arrays and metric rows of the columns: the input first (when known)."""
    names = list(comparison.names)
    arrays = [sitk.GetArrayViewFromImage(image) for image in comparison.images]
    rows = list(report.rows)
    if comparison.input_image is not None:
        # Nearest neighbour onto the common grid: every thick slice stays one flat block.
        nearest = sitk.Resample(
            sitk.Cast(comparison.input_image, sitk.sitkFloat32),
            comparison.images[0],
            sitk.Transform(),
            sitk.sitkNearestNeighbor,
            0.0,
            sitk.sitkFloat32,
        )
        names.insert(0, INPUT_NAME)
        # A copy, not a view: ``nearest`` dies with this function, and a view of its buffer read
        # freed memory (it crashed model_quality.py with a segmentation fault).
        arrays.insert(0, sitk.GetArrayFromImage(nearest))
        rows.insert(0, {})
    return names, arrays, rows


def _error_slices(comparison, names, arrays, error_map):
    """Per plane, ``{column: (title, slice, grey slice under it or None)}``: the estimated error
    of the first super-resolved volume, alone and over that volume (under the spline's
    column), and with a reference its true error; None without a map."""
    if error_map is None:
        return None
    if len(comparison.names) < 2:
        raise CladeError("An error map needs a super-resolved volume to belong to.")
    grid = comparison.images[0]
    same = error_map.GetSize() == grid.GetSize() and np.allclose(
        error_map.GetOrigin(), grid.GetOrigin(), atol=1e-3
    )
    if not same:  # e.g. a map of a volume on another grid: put it on the common one
        error_map = sitk.Resample(error_map, grid, sitk.Transform(), sitk.sitkLinear, 0.0)
    sr_column = names.index(comparison.names[1])
    estimate = sitk.GetArrayViewFromImage(error_map)
    panels = {
        names.index(comparison.names[0]): ("Error map over the result", estimate),
        sr_column: ("Estimated error (error map)", estimate),
    }
    if comparison.reference_index is not None:
        reference = arrays[names.index(comparison.names[comparison.reference_index])]
        truth = np.abs(np.asarray(arrays[sr_column], np.float64) - reference)
        panels[names.index(comparison.names[comparison.reference_index])] = (
            f"True error |{_label(comparison.names[1])} - reference|",
            truth,
        )
    overlay_column = names.index(comparison.names[0])
    planes = []
    for slice_axis in comparison.slice_axes:
        under = _central_slice(arrays[sr_column], slice_axis, comparison.thick_axis)
        planes.append(
            {
                column: (
                    title,
                    _central_slice(array, slice_axis, comparison.thick_axis),
                    under if column == overlay_column else None,
                )
                for column, (title, array) in panels.items()
            }
        )
    return planes


def _draw_error_row(figure, grid, row0, names, panels, plane) -> None:
    top = max(float(np.percentile(s, 99.0)) for _, s, _ in panels.values())
    top = top if top > 0 else 1.0
    shown = dict(cmap="inferno", vmin=0.0, vmax=top, origin="lower", interpolation="nearest")
    image = None
    for column, (title, image2d, under) in panels.items():
        label = figure.add_subplot(grid[row0, column])
        label.axis("off")
        label.text(0.5, 0.25, f"{title}, {plane}", ha="center", va="bottom", fontsize=12,
                   fontweight="bold", transform=label.transAxes)  # fmt: skip
        axes = figure.add_subplot(grid[row0 + 1, column])
        if under is not None:  # as the Slicer module shows it: a colour overlay on the result
            low, high = np.percentile(under, (0.5, 99.5))
            axes.imshow(under, cmap="gray", vmin=low, vmax=max(high, low + 1e-6), origin="lower")
            axes.imshow(image2d, **shown, alpha=0.5)
        else:
            image = axes.imshow(image2d, **shown)
        _bare(axes)
    free = [c for c in range(len(names)) if c not in panels]
    if image is not None and free:
        bar = figure.add_subplot(grid[row0 + 1, free[0]])
        bar.axis("off")
        colour_bar = figure.colorbar(image, ax=bar, fraction=0.5, aspect=12)
        colour_bar.set_label("absolute error (the volumes' units)", fontsize=11)


def _window_source(comparison: Comparison) -> str:
    if comparison.reference_index is not None:
        return comparison.names[comparison.reference_index]
    return comparison.names[0]


def _central_slice(array: np.ndarray, slice_axis: int, thick_axis: int) -> np.ndarray:
    stack = lr_slice_stack(array, slice_axis, thick_axis)
    return np.asarray(stack[stack.shape[0] // 2], dtype=np.float64)


def _zoom_box(image2d: np.ndarray) -> tuple[tuple[tuple[int, int], tuple[int, int]], int]:
    """The window (rows, columns) richest in edges along the thick axis (the rows), and the
    column of the profile line: through the strongest such edge inside the window.

    Example:
        >>> image = np.zeros((40, 60)); image[20:, 30:40] = 1.0
        >>> box, column = _zoom_box(image)
        >>> box[0][0] <= 20 < box[0][1] and 30 <= column < 40
        True
    """
    rows, columns = image2d.shape
    height = max(8, min(rows, int(rows * ZOOM_FRACTION)))
    width = max(8, min(columns, int(round(height * ZOOM_ASPECT))))
    strength = np.abs(np.gradient(gaussian_filter(image2d, 1.0), axis=0))
    # Sum of edge strength over every window position (a box filter of the window's size).
    density = uniform_filter(strength, (height, width), mode="constant")
    # A mild preference for the middle of the slice, where the anatomy is, over its borders.
    across = np.linspace(-1.0, 1.0, rows)[:, None] ** 2 + np.linspace(-1.0, 1.0, columns) ** 2
    density = density * (1.0 - 0.3 * across)
    centre_r = np.clip(np.arange(rows), height // 2, rows - (height - height // 2))
    centre_c = np.clip(np.arange(columns), width // 2, columns - (width - width // 2))
    r, c = np.unravel_index(int(np.argmax(density)), density.shape)
    r0, c0 = int(centre_r[r]) - height // 2, int(centre_c[c]) - width // 2
    window = strength[r0 : r0 + height, c0 : c0 + width]
    line = c0 + int(np.unravel_index(int(np.argmax(window)), window.shape)[1])
    return ((r0, r0 + height), (c0, c0 + width)), line


def _scale_bar(axes, shape, step: float) -> None:
    # A round length near a fifth of the slice width.
    millimetres = min((5, 10, 20, 50, 100, 200), key=lambda v: abs(v - shape[1] * step / 5))
    length = millimetres / step
    x0, y0 = shape[1] * 0.04, shape[0] * 0.06
    axes.plot([x0, x0 + length], [y0, y0], color="white", lw=3, solid_capstyle="butt")
    axes.text(
        x0 + length / 2,
        y0 + shape[0] * 0.03,
        f"{millimetres:g} mm",
        color="white",
        ha="center",
        va="bottom",
        fontsize=10,
        fontweight="bold",
    )


def _rectangle(x, y, w, h, colour):
    from matplotlib.patches import Rectangle

    return Rectangle((x, y), w, h, fill=False, edgecolor=colour, lw=1.6)


def _bare(axes, edge: str | None = None) -> None:
    axes.set_xticks([])
    axes.set_yticks([])
    for spine in axes.spines.values():
        spine.set_edgecolor(edge or "none")
        spine.set_linewidth(2.0)


def _label(name: str) -> str:
    return {
        INPUT_NAME: "Thick-slice input",
        "spline": "Cubic spline",
        "reference": "Reference",
    }.get(name, name)


def _title(name: str, comparison: Comparison, plane: str) -> str:
    if name == INPUT_NAME:
        return f"{_label(name)}, {comparison.input_thick_spacing:g} mm, {plane}"
    return f"{_label(name)}, {plane}"


def _draw_profiles(axes, names, slices, box, line_column, step, comparison) -> None:
    (r0, r1), _ = box
    # Across the edge: the zoomed rows, widened to at least three thick slices each side.
    half = max((r1 - r0) // 2, int(round(3 * comparison.input_thick_spacing / step)))
    centre = (r0 + r1) // 2
    start, stop = max(0, centre - half), min(slices[0].shape[0], centre + half)
    positions = np.arange(start, stop) * step
    others = iter(_OTHER_COLOURS)
    for name, image2d in zip(names, slices):
        values = image2d[start:stop, line_column]
        if name in _COLOURS:
            colour = _COLOURS[name]
        elif name.upper().startswith("CLADE"):
            colour = _CLADE_COLOUR
        else:
            colour = next(others, "tab:gray")
        if name == INPUT_NAME:
            axes.step(positions, values, where="mid", color=colour, lw=2.2, label=_label(name))
        else:
            style = "--" if name == "reference" else "-"
            axes.plot(positions, values, style, color=colour, lw=1.8, label=_label(name))
    axes.axvspan(r0 * step, (r1 - 1) * step, color="yellow", alpha=0.12, lw=0)
    axes.set_xlim(positions[0], positions[-1])
    axes.set_xlabel("position along the thick axis (mm; the cyan line, bottom to top)", fontsize=11)
    axes.set_ylabel("intensity", fontsize=11)
    axes.tick_params(labelsize=10)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=10.5, loc="best", ncol=min(len(names), 6), framealpha=0.85)
    axes.set_title(
        "Intensity along the cyan line, across the edge (shaded: the zoomed rows).   "
        "PIQE: blind image quality, lower is better; ES: edge sharpness along the thick axis, "
        "higher is sharper"
        + (
            "; PSNR, SSIM: against the reference."
            if comparison.reference_index is not None
            else "."
        ),
        fontsize=10.5,
        loc="left",
    )


def _metrics_text(row: dict, plane: str, comparison: Comparison, name: str) -> str:
    """Two metrics a line, short labels (the profile's title explains them).

    Example:
        >>> print(_metrics_text({"piqe_sagittal": 56.94, "edge_sharpness": 0.0771,
        ...                      "psnr": 32.611, "ssim": 0.9123}, "sagittal", None, "sr"))
        PIQE 56.9   ES 0.077 /mm
        PSNR 32.61 dB   SSIM 0.912
    """
    if name == INPUT_NAME:
        return f"as acquired: {comparison.input_thick_spacing:g} mm slices,\nno interpolation"
    parts = []
    labels = (
        (f"piqe_{plane}", "PIQE {:.1f}"),
        ("edge_sharpness", "ES {:.3f} /mm"),
        ("snr", "SNR {:.1f}"),
        ("psnr", "PSNR {:.2f} dB"),
        ("ssim", "SSIM {:.3f}"),
    )
    for key, label in labels:
        value = row.get(key)
        if value is not None and np.isfinite(value):
            parts.append(label.format(value))
    lines = ["   ".join(parts[i : i + 2]) for i in range(0, len(parts), 2)]
    return "\n".join(lines)
