"""Random 2D patches from a volume's slices, shared by training and adaptation to one volume.

A volume is first *prepared*: interpolated to its isotropic grid
(:func:`CLADE.geometry.resample_to_isotropic`) and normalised to [-1, 1]. Its LR-plane slices
(domain X, containing the thick axis, presented with the thick axis along the rows as at
inference: :func:`CLADE.geometry.lr_slice_stack`) and HR-plane slices (domain Y) are then cut
into random patches, optionally keeping only patches with enough foreground, and (for the paired
term) each HR patch is also cut from its slice degraded like a thick-slice acquisition
(:func:`CLADE.degradation.degrade_slice`).

This lives in the core, not in ``CLADE/training/``, because inference-time adaptation
(:mod:`CLADE.adaptation`) uses it too and inference never imports the training package.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .degradation import degrade_slice
from .errors import CladeError
from .geometry import (
    detect_thick_axis,
    hr_slice_stack,
    lr_slice_axes,
    lr_slice_stack,
    resample_to_isotropic,
)
from .normalisation import IntensityWindow, NormalisationRecipe


def sample_slices(
    slices: np.ndarray,
    rng: np.random.Generator,
    patches_per_slice: int = 4,
    patch_size: int = 32,
    min_foreground: float = 0.0,
    threshold: float = -0.9,
    indices: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Take up to ``patches_per_slice`` random patches from every slice of ``slices`` (n, H, W).

    A position is eligible when at least ``min_foreground`` of the patch's pixels exceed
    ``threshold``. ``indices`` limits sampling to those slices (all by default; a subset is
    read in place, without copying the stack). Returns the patches (float16, ``(N, P, P)``) and
    their positions ``(slice, row, column)`` of the top-left corner.

    Example:
        >>> s = np.random.default_rng(0).uniform(-1, 1, (3, 40, 50)).astype(np.float32)
        >>> patches, where = sample_slices(s, np.random.default_rng(1))
        >>> patches.shape, where.shape, patches.dtype
        ((12, 32, 32), (12, 3), dtype('float16'))
    """
    n, height, width = slices.shape
    p = patch_size
    if height < p or width < p:
        raise ValueError(f"slices of {height}x{width} are smaller than {p}x{p} patches")
    rows, cols = height - p + 1, width - p + 1
    patches, positions = [], []
    for index in range(n) if indices is None else indices:
        image = slices[index]
        if min_foreground > 0:
            # Windowed count of foreground pixels at every position, from an integral image.
            integral = np.zeros((height + 1, width + 1), np.int32)
            integral[1:, 1:] = (image > threshold).cumsum(0).cumsum(1)
            counts = integral[p:, p:] - integral[:-p, p:] - integral[p:, :-p] + integral[:-p, :-p]
            eligible = np.flatnonzero(counts >= min_foreground * p * p)
        else:
            eligible = None
        available = rows * cols if eligible is None else eligible.size
        take = min(patches_per_slice, available)
        if take == 0:
            continue
        chosen = rng.choice(available, size=take, replace=False)
        if eligible is not None:
            chosen = eligible[chosen]
        for flat in np.sort(chosen):
            r, c = divmod(int(flat), cols)
            patches.append(image[r : r + p, c : c + p])
            positions.append((index, r, c))
    if not patches:
        return np.zeros((0, p, p), np.float16), np.zeros((0, 3), np.int64)
    return np.stack(patches).astype(np.float16), np.asarray(positions, np.int64)


@dataclass
class PreparedVolume:
    """A training volume on its isotropic grid, normalised, with its axes (SimpleITK order)."""

    array: np.ndarray
    thick_axis: int
    lr_axes: list[int]
    #: Input thick spacing over the isotropic spacing (the super-resolution factor).
    ratio: float = 1.0


def prepare_volume(
    image: sitk.Image,
    name: str,
    plane: str = "auto",
    normalisation: dict | None = None,
    patch_size: int = 32,
    thick_axis: int | None = None,
) -> PreparedVolume:
    """Interpolate ``image`` to isotropic and normalise it; :class:`CladeError` if unusable.

    ``thick_axis`` overrides the detected thick axis (the largest spacing).

    Example:
        >>> img = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 40, 40)))
        >>> img.SetSpacing((1.0, 1.0, 5.0))
        >>> v = prepare_volume(img, "demo")
        >>> v.array.shape, v.thick_axis, v.lr_axes, float(v.array.min()), float(v.array.max())
        ((40, 40, 40), 2, [0], -1.0, 1.0)
    """
    thick = detect_thick_axis(image.GetSpacing(), thick_axis)
    lr_axes = lr_slice_axes(image, thick, plane)
    iso = resample_to_isotropic(image, thick)
    array = sitk.GetArrayFromImage(iso)
    small = [s for s in array.shape if s < patch_size]
    if small:
        raise CladeError(
            f"{name} is only {min(small)} voxels across on its isotropic grid, smaller than the "
            f"{patch_size}-voxel patches."
        )
    low, high = NormalisationRecipe.from_dict(
        normalisation or {"kind": "percentile", "low": 0.5, "high": 99.5}
    ).window(array)
    ratio = image.GetSpacing()[thick] / iso.GetSpacing()[thick]
    return PreparedVolume(IntensityWindow(low, high).normalise(array), thick, lr_axes, ratio)


def sample_volume(
    volume: PreparedVolume, rng: np.random.Generator, **options
) -> tuple[np.ndarray, np.ndarray]:
    """The X (LR-plane) and Y (HR-plane) patches of one prepared volume.

    ``options`` are those of :func:`sample_volume_patches` (``patches_per_slice``, ...).

    Example:
        >>> v = PreparedVolume(np.zeros((40, 36, 34), np.float32), 2, [0])
        >>> x, y = sample_volume(v, np.random.default_rng(0))
        >>> x.shape, y.shape   # 34 sagittal slices, 40 axial slices, 4 patches each
        ((136, 32, 32), (160, 32, 32))
    """
    x, y, _ = sample_volume_patches(volume, rng, **options)
    return x, y


def sample_volume_patches(
    volume: PreparedVolume,
    rng: np.random.Generator,
    patches_per_slice: int = 4,
    patch_size: int = 32,
    min_foreground: float = 0.0,
    foreground_level: float = 0.05,
    paired: bool = False,
    paired_ratios: Sequence[float] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """:func:`sample_volume`, plus (``paired=True``) the Y patches degraded like thick slices.

    The degraded patch ``i`` is cut at the same place as ``y[i]`` from its HR slice degraded along
    the rows by :func:`CLADE.degradation.degrade_slice` with the volume's own ratio, so
    that the pair teaches ``G_X`` the inverse of this volume's real degradation.
    ``paired_ratios=(low, high)`` instead draws each HR slice's ratio uniformly from that range,
    so a cohort of one slice thickness still teaches the model the thicknesses it will meet
    (e.g. a 2 mm CT teaching a model used on 5 mm CT).

    Example:
        >>> v = PreparedVolume(np.zeros((40, 36, 34), np.float32), 2, [0], ratio=4.0)
        >>> x, y, y_deg = sample_volume_patches(v, np.random.default_rng(0), paired=True)
        >>> y.shape == y_deg.shape, x.shape
        (True, (136, 32, 32))
    """
    threshold = -1.0 + 2.0 * foreground_level
    options = dict(
        patches_per_slice=patches_per_slice,
        patch_size=patch_size,
        min_foreground=min_foreground,
        threshold=threshold,
    )
    xs = [
        sample_slices(lr_slice_stack(volume.array, axis, volume.thick_axis), rng, **options)[0]
        for axis in volume.lr_axes
    ]
    hr = hr_slice_stack(volume.array, volume.thick_axis)
    y, where = sample_slices(hr, rng, **options)
    y_degraded = None
    if paired:
        if paired_ratios is None:
            y_degraded = degraded_patches(hr, where, volume.ratio, patch_size)
        else:
            y_degraded = degraded_patches(
                hr, where, lambda: rng.uniform(*paired_ratios), patch_size
            )
    return np.concatenate(xs), y, y_degraded


def paired_slice_patches(
    slices: np.ndarray,
    rng: np.random.Generator,
    ratio: float,
    indices: Sequence[int] | None = None,
    **options,
) -> tuple[np.ndarray, np.ndarray]:
    """Random patches of HR ``slices`` (those in ``indices``) and the same patches cut from each
    slice degraded along its rows like a thick-slice acquisition of ``ratio``.

    ``options`` are those of :func:`sample_slices`. Used by adaptation, which holds whole slices
    back (:mod:`CLADE.adaptation`).

    Example:
        >>> s = np.random.default_rng(0).uniform(-1, 1, (5, 40, 40)).astype(np.float32)
        >>> y, y_deg = paired_slice_patches(s, np.random.default_rng(1), 4.0, indices=[0, 3])
        >>> y.shape, y_deg.shape
        ((8, 32, 32), (8, 32, 32))
    """
    y, where = sample_slices(slices, rng, indices=indices, **options)
    return y, degraded_patches(slices, where, ratio, y.shape[-1] if len(y) else 32)


def degraded_patches(slices: np.ndarray, where: np.ndarray, ratio, patch_size: int) -> np.ndarray:
    """The patches at ``where`` (from :func:`sample_slices`) cut from their slices degraded by
    :func:`CLADE.degradation.degrade_slice`; ``ratio`` is a number or a callable drawing one
    per slice. Each slice is degraded once (positions come sorted by slice)."""
    p = patch_size
    out = np.empty((len(where), p, p), np.float16)
    current, degraded = None, None
    for i, (index, r, c) in enumerate(where):
        if index != current:
            current = index
            degraded = degrade_slice(slices[index], ratio() if callable(ratio) else ratio)
        out[i] = degraded[r : r + p, c : c + p]
    return out
