"""Where things are: the thick axis, the LR plane, and the isotropic grid CLADE writes.

Axes are SimpleITK's index axes (0 = i/x, 1 = j/y, 2 = k/z); numpy arrays from
``sitk.GetArrayFromImage`` hold them reversed (array axis ``2 - axis``).

The isotropic grid (the rule every output follows)
-------------------------------------------------
Let ``t`` be the thick axis with ``N`` samples at spacing ``S``, origin ``o`` and unit direction
column ``d_t``; let ``s`` be the finest in-plane spacing.

* The physical extent along ``t`` is kept exactly, voxel edge to voxel edge: ``N * S`` mm.
* The number of output samples along ``t`` is ``M = max(1, round(N * S / s))``, and the output
  spacing along ``t`` is ``S' = N * S / M`` (equal to ``s`` whenever ``N * S / s`` is a whole
  number, otherwise within ``s / (2M)`` of it).
* The output origin moves along ``d_t`` only: ``o' = o + d_t * (S' - S) / 2``, so the first output
  voxel's outer edge coincides with the first input voxel's outer edge.
* Direction, the in-plane sizes, spacings and positions are unchanged.

So a thick-slice volume simulated from an isotropic one by averaging ``k`` consecutive slices
comes back exactly onto the isotropic grid it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import CladeError

#: Below this ratio of thick to fine spacing a volume is treated as already isotropic.
MIN_ANISOTROPY = 1.2

#: LR-plane names accepted on the command line, besides "auto" and "both".
PLANE_NAMES = ("sagittal", "coronal", "axial")

# World axis (LPS/RAS share axes: x = left-right, y = anterior-posterior, z = inferior-superior)
# whose normal defines each anatomical plane.
_PLANE_NORMAL_WORLD_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def detect_thick_axis(spacing, override: int | None = None) -> int:
    """Return the index axis with the largest spacing, or ``override`` when given.

    Raises :class:`CladeError` when the volume is already (nearly) isotropic, since there is
    nothing to super-resolve.

    Example:
        >>> detect_thick_axis((0.8, 0.8, 5.0))
        2
        >>> detect_thick_axis((5.0, 0.8, 0.8))
        0
    """
    spacing = tuple(float(s) for s in spacing)
    if override is not None:
        if override not in (0, 1, 2):
            raise CladeError(f"The thick axis must be 0, 1 or 2, not {override}.")
        axis = override
    else:
        axis = int(np.argmax(spacing))
    finest_in_plane = min(s for i, s in enumerate(spacing) if i != axis)
    if spacing[axis] < MIN_ANISOTROPY * finest_in_plane:
        thickest = int(np.argmax(spacing))
        if override is not None and spacing[thickest] >= MIN_ANISOTROPY * min(spacing):
            raise CladeError(
                f"The thick axis {axis} you gave has slices no thicker than the others (spacing "
                f"{_fmt(spacing)} mm): the thick slices run along axis {thickest}, so give "
                f"--thick-axis {thickest} or leave it out."
            )
        raise CladeError(
            f"The volume is already nearly isotropic (spacing {_fmt(spacing)} mm, thick axis "
            f"{axis}): there are no thick slices to super-resolve; use it as it is."
        )
    return axis


def _fmt(values) -> str:
    return " x ".join(f"{v:.3g}" for v in values)


@dataclass(frozen=True)
class IsotropicGrid:
    """The output grid of :func:`isotropic_grid` (SimpleITK order: x, y, z)."""

    size: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]
    thick_axis: int

    def reference_image(self) -> sitk.Image:
        """An empty image on this grid, for SimpleITK's resampler."""
        image = sitk.Image(list(self.size), sitk.sitkUInt8)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


def isotropic_grid(image: sitk.Image, thick_axis: int) -> IsotropicGrid:
    """Compute the isotropic output grid for ``image`` by the rule in this module's docstring.

    Example:
        >>> img = sitk.Image([10, 10, 4], sitk.sitkFloat32)
        >>> img.SetSpacing((1.0, 1.0, 3.0))
        >>> grid = isotropic_grid(img, 2)
        >>> grid.size, grid.spacing, grid.origin
        ((10, 10, 12), (1.0, 1.0, 1.0), (0.0, 0.0, -1.0))
    """
    size = list(image.GetSize())
    spacing = list(image.GetSpacing())
    in_plane = [spacing[i] for i in range(3) if i != thick_axis]
    extent = size[thick_axis] * spacing[thick_axis]
    samples = max(1, int(round(extent / min(in_plane))))
    new_spacing = extent / samples
    direction = np.array(image.GetDirection()).reshape(3, 3)
    shift = (new_spacing - spacing[thick_axis]) / 2.0
    origin = np.array(image.GetOrigin()) + direction[:, thick_axis] * shift
    size[thick_axis] = samples
    spacing[thick_axis] = new_spacing
    return IsotropicGrid(
        size=tuple(int(v) for v in size),
        spacing=tuple(float(v) for v in spacing),
        origin=tuple(float(v) for v in origin),
        direction=tuple(float(v) for v in image.GetDirection()),
        thick_axis=thick_axis,
    )


def resample_to_isotropic(image: sitk.Image, thick_axis: int) -> sitk.Image:
    """Cubic B-spline interpolation of ``image`` onto its isotropic grid, as float32.

    In-plane samples fall on the input's own grid points, so in-plane values are unchanged by the
    (interpolating) spline; only the thick axis is really interpolated.

    Example:
        >>> img = sitk.Image([6, 6, 3], sitk.sitkFloat32)
        >>> img.SetSpacing((1.0, 1.0, 2.0))
        >>> resample_to_isotropic(img, 2).GetSize()
        (6, 6, 6)
    """
    grid = isotropic_grid(image, thick_axis)
    # The outermost half input voxel lies beyond the last sample centre; mirror the edge slice
    # there instead of filling with a default value, by padding one slice each side first.
    padded = _pad_thick_axis(sitk.Cast(image, sitk.sitkFloat32), thick_axis)
    return sitk.Resample(
        padded,
        grid.reference_image(),
        sitk.Transform(),
        sitk.sitkBSpline,
        0.0,
        sitk.sitkFloat32,
    )


def resample_to_isotropic_array(
    image: sitk.Image,
    thick_axis: int,
    slab_axis: int,
    slab_voxels: int = 1 << 24,
    on_slab=None,
) -> np.ndarray:
    """:func:`resample_to_isotropic` as a numpy array (z, y, x), computed in slabs.

    The volume is cut along the in-plane index axis ``slab_axis`` into slabs of about
    ``slab_voxels`` output voxels, each resampled on its own, so no second whole-volume copy
    (SimpleITK's output image beside the numpy array) is ever held. In-plane samples fall on the
    input's own grid points, where the interpolating spline reproduces the samples whatever the
    slab's borders, so the result equals the whole-volume resampling to float rounding (tested).
    ``on_slab(done, total)`` is called after each slab (in slices along ``slab_axis``).

    Example:
        >>> img = sitk.GetImageFromArray(np.random.default_rng(0).random((3, 8, 9)).astype("f4"))
        >>> img.SetSpacing((1.0, 1.0, 2.0))
        >>> whole = sitk.GetArrayFromImage(resample_to_isotropic(img, 2))
        >>> slabs = resample_to_isotropic_array(img, 2, slab_axis=0, slab_voxels=100)
        >>> slabs.shape, bool(np.allclose(slabs, whole, atol=1e-5))
        ((6, 8, 9), True)
    """
    if slab_axis == thick_axis:
        raise ValueError("slabs are cut along an in-plane axis, not the thick axis")
    grid = isotropic_grid(image, thick_axis)
    out = np.empty(grid.size[::-1], dtype=np.float32)
    length = image.GetSize()[slab_axis]
    per_slice = int(np.prod(grid.size)) // length
    # At least 4 slices per slab so the spline always has neighbours along the slab axis.
    width = int(min(length, max(4, slab_voxels // max(per_slice, 1))))
    starts = list(range(0, length, width))
    if len(starts) > 1 and length - starts[-1] < 4:
        starts.pop()  # fold a short remainder into the previous slab
    bounds = list(zip(starts, starts[1:] + [length]))
    for first, stop in bounds:
        index = [slice(None)] * 3
        index[slab_axis] = slice(first, stop)
        slab = resample_to_isotropic(image[tuple(index)], thick_axis)
        target = [slice(None)] * 3
        target[2 - slab_axis] = slice(first, stop)
        out[tuple(target)] = sitk.GetArrayViewFromImage(slab)
        del slab
        if on_slab is not None:
            on_slab(stop, length)
    return out


def _pad_thick_axis(image: sitk.Image, thick_axis: int) -> sitk.Image:
    pad = [0, 0, 0]
    pad[thick_axis] = 2
    return sitk.MirrorPad(image, pad, pad)


def world_axis_of_index_axes(image: sitk.Image) -> tuple[int, int, int]:
    """For each index axis, the world axis (0 = x, 1 = y, 2 = z) it is most aligned with.

    Ties between equally oblique axes are broken so that the result is a permutation.

    Example:
        >>> world_axis_of_index_axes(sitk.Image([2, 2, 2], sitk.sitkUInt8))
        (0, 1, 2)
    """
    direction = np.abs(np.array(image.GetDirection()).reshape(3, 3))
    best = None
    for permutation in _PERMUTATIONS:
        score = sum(direction[permutation[a], a] for a in range(3))
        if best is None or score > best[0] + 1e-9:
            best = (score, permutation)
    return best[1]


_PERMUTATIONS = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]


def plane_slice_axis(image: sitk.Image, plane: str) -> int:
    """The index axis perpendicular to the anatomical ``plane`` (slices are taken along it).

    Example:
        >>> plane_slice_axis(sitk.Image([2, 2, 2], sitk.sitkUInt8), "sagittal")
        0
    """
    world = world_axis_of_index_axes(image)
    return world.index(_PLANE_NORMAL_WORLD_AXIS[plane])


def lr_plane_names(image: sitk.Image, thick_axis: int) -> list[str]:
    """The two anatomical planes that contain the thick axis (the LR planes), paper order first.

    Example:
        >>> lr_plane_names(sitk.Image([2, 2, 2], sitk.sitkUInt8), 2)
        ['sagittal', 'coronal']
    """
    return [p for p in PLANE_NAMES if plane_slice_axis(image, p) != thick_axis]


def lr_slice_axes(image: sitk.Image, thick_axis: int, plane: str = "auto") -> list[int]:
    """Index axes along which LR-plane slices are taken for ``plane``.

    ``plane`` is ``"auto"`` (sagittal when it contains the thick axis, as in the paper, otherwise
    coronal), ``"both"`` (both LR planes, averaged later), or an anatomical plane name.

    Example:
        >>> img = sitk.Image([2, 2, 2], sitk.sitkUInt8)
        >>> lr_slice_axes(img, 2, "auto"), lr_slice_axes(img, 2, "both")
        ([0], [0, 1])
    """
    names = lr_plane_names(image, thick_axis)
    if plane == "auto":
        return [plane_slice_axis(image, names[0])]
    if plane == "both":
        return [plane_slice_axis(image, name) for name in names]
    if plane not in PLANE_NAMES:
        raise CladeError(f"Unknown plane {plane!r}: use auto, both, {', '.join(PLANE_NAMES)}.")
    if plane not in names:
        raise CladeError(
            f"The {plane} plane is this volume's high-resolution plane, not an LR plane: use "
            f"{' or '.join(names)} (or auto)."
        )
    return [plane_slice_axis(image, plane)]


def lr_slice_stack(volume: np.ndarray, slice_axis: int, thick_axis: int) -> np.ndarray:
    """View a numpy volume (z, y, x) as a stack of LR-plane slices, thick axis along the rows.

    ``slice_axis`` and ``thick_axis`` are SimpleITK index axes. The result has shape
    ``(n_slices, n_thick, n_other)``: every LR slice is presented with the thick (blurred)
    direction vertical. Training and inference both use this function, so the generator always
    sees the blur in the same direction. Use :func:`from_lr_slice_stack` to go back.

    Example:
        >>> vol = np.zeros((4, 5, 6))  # z=4, y=5, x=6
        >>> lr_slice_stack(vol, slice_axis=0, thick_axis=2).shape  # slices along x, rows along z
        (6, 4, 5)
    """
    other = 3 - slice_axis - thick_axis
    # numpy axis of SimpleITK index axis a is 2 - a.
    return np.transpose(volume, (2 - slice_axis, 2 - thick_axis, 2 - other))


def from_lr_slice_stack(stack: np.ndarray, slice_axis: int, thick_axis: int) -> np.ndarray:
    """Inverse of :func:`lr_slice_stack`: back to a numpy volume (z, y, x).

    Example:
        >>> vol = np.arange(120).reshape(4, 5, 6)
        >>> bool((from_lr_slice_stack(lr_slice_stack(vol, 1, 2), 1, 2) == vol).all())
        True
    """
    other = 3 - slice_axis - thick_axis
    order = (2 - slice_axis, 2 - thick_axis, 2 - other)
    return np.transpose(stack, np.argsort(order))


def hr_slice_stack(volume: np.ndarray, thick_axis: int) -> np.ndarray:
    """View a numpy volume (z, y, x) as the stack of HR-plane slices (perpendicular to the thick
    axis), the two in-plane axes kept in numpy order.

    Example:
        >>> hr_slice_stack(np.zeros((4, 5, 6)), thick_axis=2).shape
        (4, 5, 6)
    """
    return np.moveaxis(volume, 2 - thick_axis, 0)
