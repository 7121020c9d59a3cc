"""Unpaired training patches (method section 6) and the order they are served in.

Patch bank
----------
Each training volume is read, interpolated to isotropic (:func:`CLADE.geometry.resample_to_isotropic`),
normalised to [-1, 1] by the run's normalisation recipe, and cut into 2D slices:

* domain **X**: LR-plane slices (slices along each LR slice axis of the run's ``plane``; they
  contain the thick axis);
* domain **Y**: HR-plane slices (perpendicular to the thick axis).

From every slice, ``patches_per_slice`` (4) random 32x32 patches are taken, independently for the
two domains, without replacement within a slice, seeded by ``(seed, volume number)`` so a run is
reproducible and a resumed run rebuilds the very same bank.

**Orientation.** LR-plane patches are stored with the thick axis along the patch *rows* (axis 0),
whatever the volume's thick axis, so a cohort mixing axial, sagittal and coronal acquisitions
teaches the generator one direction of blur. Inference presents LR slices the same way: both use
:func:`CLADE.geometry.lr_slice_stack`.

**Background.** The paper keeps every patch. Ours (``min_foreground``, default 0.25 in the
``mri``/``ct`` presets, 0 in ``paper``): a patch is kept only if at least that fraction of its
pixels lies above ``foreground_level`` (0.05) of the normalisation window, i.e. above -0.9 after
normalisation. Air patches are nearly constant at -1, so they teach the discriminators nothing
and make the cycle/identity losses trivially small, yet in typical MRI fields of view they are a
third or more of random patches. A slice with fewer acceptable positions than
``patches_per_slice`` gives what it has (possibly none).

Volumes that cannot give patches are **skipped with a warning naming them**: unreadable files,
2D images, isotropic volumes (nothing to learn the LR -> HR mapping from: they have no thick
axis), constant volumes, and volumes smaller than 32 voxels across a sampled plane. Training
stops with an error only if no volume is left.

Memory
------
Only patches are kept, as float16: 2 KiB per patch. A volume gives about
``patches_per_slice * (LR slices + HR slices)`` patches per domain pair, e.g. a
256 x 256 x 25 brain MRI at 0.78 x 0.78 x 6.5 mm becomes 256 x 256 x 208 isotropic and gives
4 * (256 + 208) = 1,856 patches (3.6 MiB). A cohort of 50 such volumes needs ~180 MiB for the
bank, plus one volume at a time while it is cut (float32 isotropic: 55 MB for that brain, up to
~1 GB for a 512 x 512 CT covering 50 cm). Under DDP every rank holds the whole bank.

Order
-----
:class:`EpochSampler` serves one epoch as ``max(len(X), len(Y))`` unpaired pairs: each domain is
shuffled per epoch (seeded by ``(seed, epoch)``), the smaller one repeated with fresh shuffles to
match. Steps take ``batch_size`` pairs per rank; rank ``r`` of ``W`` takes the ``r``-th block of
each run of ``W * batch_size`` positions, so ranks never share a position within an epoch. The
incomplete tail of an epoch is dropped. The state is just ``(epoch, step)``, so resuming needs no
saved permutation.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import CladeError
from ..geometry import (
    detect_thick_axis,
    hr_slice_stack,
    lr_slice_axes,
    lr_slice_stack,
    resample_to_isotropic,
)
from ..normalisation import IntensityWindow, NormalisationRecipe
from ..volume_io import read_volume

#: File endings that hold the pixel data of a separate header (not volumes on their own).
_DATA_COMPANIONS = (".raw", ".zraw", ".img", ".gz.raw")


class VolumeSkipped(Warning):
    """A training volume was left out; the message names it and says why."""


@dataclass
class PatchBank:
    """The unpaired training patches: ``x`` (LR plane) and ``y`` (HR plane), float16 ``(N, P, P)``.

    ``x_volume``/``y_volume`` give the number of the volume each patch came from (an index into
    ``volumes``).
    """

    x: np.ndarray
    y: np.ndarray
    x_volume: np.ndarray
    y_volume: np.ndarray
    volumes: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: ``y`` degraded along its rows like a thick-slice acquisition (paired term), or None.
    y_degraded: np.ndarray | None = None
    #: Each volume's thick spacing over its isotropic spacing (data-consistency term).
    volume_ratios: list[float] = field(default_factory=list)

    def x_ratios(self, indices: np.ndarray) -> np.ndarray:
        """The thickness ratio of the volume each of the X patches ``indices`` came from.

        Example:
            >>> z = np.zeros((3, 32, 32), np.float16)
            >>> b = PatchBank(z, z, np.array([0, 1, 1]), np.zeros(3, int), volume_ratios=[2.0, 5.0])
            >>> b.x_ratios(np.array([2, 0])).tolist()
            [5.0, 2.0]
        """
        return np.asarray(self.volume_ratios, dtype=np.float32)[self.x_volume[indices]]

    def fingerprint(self) -> str:
        """A short hash of the patches: equal banks have equal fingerprints.

        Example:
            >>> z = np.zeros((2, 32, 32), np.float16)
            >>> b = PatchBank(z, z, np.zeros(2, int), np.zeros(2, int))
            >>> len(b.fingerprint())
            16
        """
        digest = hashlib.sha256()
        for array in (self.x, self.y):
            digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:16]

    @property
    def nbytes(self) -> int:
        extra = 0 if self.y_degraded is None else self.y_degraded.nbytes
        return int(self.x.nbytes + self.y.nbytes + extra)


def sample_slices(
    slices: np.ndarray,
    rng: np.random.Generator,
    patches_per_slice: int = 4,
    patch_size: int = 32,
    min_foreground: float = 0.0,
    threshold: float = -0.9,
) -> tuple[np.ndarray, np.ndarray]:
    """Take up to ``patches_per_slice`` random patches from every slice of ``slices`` (n, H, W).

    A position is eligible when at least ``min_foreground`` of the patch's pixels exceed
    ``threshold``. Returns the patches (float16, ``(N, P, P)``) and their positions
    ``(slice, row, column)`` of the top-left corner.

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
    for index in range(n):
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
    volume: PreparedVolume,
    rng: np.random.Generator,
    patches_per_slice: int = 4,
    patch_size: int = 32,
    min_foreground: float = 0.0,
    foreground_level: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """The X (LR-plane) and Y (HR-plane) patches of one prepared volume.

    Example:
        >>> v = PreparedVolume(np.zeros((40, 36, 34), np.float32), 2, [0])
        >>> x, y = sample_volume(v, np.random.default_rng(0))
        >>> x.shape, y.shape   # 34 sagittal slices, 40 axial slices, 4 patches each
        ((136, 32, 32), (160, 32, 32))
    """
    x, y, _ = sample_volume_patches(
        volume, rng, patches_per_slice, patch_size, min_foreground, foreground_level, False
    )
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
    the rows by :func:`CLADE.training.degradation.degrade_slice` with the volume's own ratio, so
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
    from .degradation import degrade_slice

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
        p = patch_size
        y_degraded = np.empty_like(y)
        degraded_slices = {}
        for i, (index, r, c) in enumerate(where):
            if index not in degraded_slices:
                ratio = volume.ratio if paired_ratios is None else rng.uniform(*paired_ratios)
                degraded_slices = {index: degrade_slice(hr[index], ratio)}
            y_degraded[i] = degraded_slices[index][r : r + p, c : c + p]
    return np.concatenate(xs), y, y_degraded


def expand_inputs(data: Sequence[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files and DICOM folders to read from ``data`` (files or folders), and what was left out.

    A folder holding a DICOM series is one volume; any other folder contributes its files and
    its sub-folders (each read as a DICOM series), not recursively further.

    Example:
        >>> expand_inputs(["/no/such/file.nrrd"])
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: The training input /no/such/file.nrrd does not exist: check the path.
    """
    candidates: list[Path] = []
    skipped: list[tuple[str, str]] = []
    for item in data:
        path = Path(item)
        if not path.exists():
            raise CladeError(f"The training input {path} does not exist: check the path.")
        if path.is_file() or _is_dicom_folder(path):
            candidates.append(path)
            continue
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        if not entries:
            raise CladeError(f"The training folder {path} is empty: put volumes in it.")
        for entry in entries:
            if entry.is_file() and entry.name.lower().endswith(_DATA_COMPANIONS):
                continue  # pixel data of a .mhd/.nhdr/.hdr header listed next to it
            if entry.is_dir() and not _is_dicom_folder(entry):
                skipped.append((str(entry), "a folder without a DICOM series"))
                continue
            candidates.append(entry)
    return candidates, skipped


def _is_dicom_folder(path: Path) -> bool:
    if not path.is_dir():
        return False
    # GDCM warns on stderr about every folder without a series; that is the normal case here.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def build_patch_bank(
    data: Sequence[str | os.PathLike],
    *,
    seed: int = 0,
    patches_per_slice: int = 4,
    patch_size: int = 32,
    plane: str = "auto",
    normalisation: dict | None = None,
    min_foreground: float = 0.0,
    foreground_level: float = 0.05,
    max_patches: int | None = None,
    on_volume: Callable[[dict], None] | None = None,
    paired: bool = False,
    paired_ratios: Sequence[float] | None = None,
) -> PatchBank:
    """Read every training volume in ``data`` one at a time and keep only its patches.

    ``on_volume`` is called after each input with a dict (``path``, ``index``, ``total``,
    ``x_patches``, ``y_patches`` or ``skipped`` with the reason). Unusable inputs are skipped with
    a :class:`VolumeSkipped` warning; if none is usable, :class:`CladeError` lists them all.
    ``max_patches`` keeps a seeded random subset of at most that many patches per domain.

    Example:
        >>> import tempfile, os
        >>> folder = tempfile.mkdtemp()
        >>> img = sitk.GetImageFromArray(np.random.default_rng(0).random((8, 40, 40)))
        >>> img.SetSpacing((1.0, 1.0, 5.0))
        >>> sitk.WriteImage(img, os.path.join(folder, "a.nrrd"))
        >>> bank = build_patch_bank([folder], seed=1)
        >>> bank.x.shape, bank.y.shape, bank.volumes == [os.path.join(folder, "a.nrrd")]
        ((160, 32, 32), (160, 32, 32), True)
    """
    candidates, skipped = expand_inputs(data)
    xs, ys, ys_degraded, x_volume, y_volume, volumes = [], [], [], [], [], []
    ratios: list[float] = []
    for index, path in enumerate(candidates):
        report = {"path": str(path), "index": index + 1, "total": len(candidates)}
        try:
            image = read_volume(path)
            prepared = prepare_volume(image, str(path), plane, normalisation, patch_size)
            del image
            # One independent stream per input position: adding a volume at the end of the
            # list does not change the patches of the others.
            rng = np.random.default_rng([seed, index])
            ratio = float(prepared.ratio)
            x, y, y_degraded = sample_volume_patches(
                prepared,
                rng,
                patches_per_slice,
                patch_size,
                min_foreground,
                foreground_level,
                paired,
                paired_ratios,
            )
            del prepared
            if len(x) == 0 or len(y) == 0:
                raise CladeError("it has no patches with enough foreground")
        except CladeError as error:
            reason = _reason(error).replace(str(path), "it")
            skipped.append((str(path), reason))
            warnings.warn(f"Skipping {path}: {reason}.", VolumeSkipped, stacklevel=2)
            if on_volume:
                on_volume({**report, "skipped": reason})
            continue
        number = len(volumes)
        volumes.append(str(path))
        ratios.append(ratio)
        xs.append(x)
        ys.append(y)
        ys_degraded.append(y_degraded)
        x_volume.append(np.full(len(x), number, np.int32))
        y_volume.append(np.full(len(y), number, np.int32))
        if on_volume:
            on_volume({**report, "x_patches": len(x), "y_patches": len(y)})
    if not volumes:
        if not skipped:
            raise CladeError("No training volume was given: give volume files or folders.")
        listing = "; ".join(f"{Path(p).name} ({why})" for p, why in skipped)
        raise CladeError(
            f"No training volume is usable, all were skipped: {listing}; give anisotropic 3D "
            "volumes (NRRD, NIfTI, MetaImage or DICOM folders)."
        )
    bank = PatchBank(
        np.concatenate(xs),
        np.concatenate(ys),
        np.concatenate(x_volume),
        np.concatenate(y_volume),
        volumes,
        skipped,
        np.concatenate(ys_degraded) if paired else None,
        ratios,
    )
    if max_patches is not None:
        rng = np.random.default_rng([seed, 2**31 - 1])
        for name in ("x", "y"):
            patches = getattr(bank, name)
            if len(patches) > max_patches:
                keep = np.sort(rng.choice(len(patches), max_patches, replace=False))
                setattr(bank, name, patches[keep])
                setattr(bank, f"{name}_volume", getattr(bank, f"{name}_volume")[keep])
                if name == "y" and bank.y_degraded is not None:
                    bank.y_degraded = bank.y_degraded[keep]
    return bank


def _reason(error: CladeError) -> str:
    """A short lower-case clause from a CladeError sentence, for lists of skipped inputs."""
    text = str(error).rstrip(".")
    text = text.split(": ")[0] if ": " in text else text
    return text[0].lower() + text[1:] if text else "unusable"


class EpochSampler:
    """Which X and Y patches each rank uses at each step (see the module docstring).

    Example:
        >>> s = EpochSampler(n_x=10, n_y=4, batch_size=2, world_size=2, rank=0, seed=0)
        >>> s.steps_per_epoch   # 10 pairs per epoch, 4 per step over the two ranks
        2
        >>> x, y = s.batch(epoch=0, step=0)
        >>> len(x), len(y)
        (2, 2)
        >>> other = EpochSampler(10, 4, 2, world_size=2, rank=1, seed=0).batch(0, 0)[0]
        >>> set(x.tolist()) & set(other.tolist())
        set()
    """

    def __init__(
        self, n_x: int, n_y: int, batch_size: int, world_size: int = 1, rank: int = 0, seed: int = 0
    ) -> None:
        self.n_x, self.n_y = int(n_x), int(n_y)
        self.batch_size, self.world_size, self.rank, self.seed = batch_size, world_size, rank, seed
        self.pairs_per_epoch = max(self.n_x, self.n_y)
        self.steps_per_epoch = self.pairs_per_epoch // (batch_size * world_size)
        self._epoch: int | None = None
        self._orders: tuple[np.ndarray, np.ndarray] | None = None

    def orders(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole epoch's X and Y index sequences (same on every rank)."""
        if self._epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch, 7])
            self._orders = (self._tiled(self.n_x, rng), self._tiled(self.n_y, rng))
            self._epoch = epoch
        return self._orders

    def _tiled(self, n: int, rng: np.random.Generator) -> np.ndarray:
        repeats = -(-self.pairs_per_epoch // n)
        return np.concatenate([rng.permutation(n) for _ in range(repeats)])[: self.pairs_per_epoch]

    def batch(self, epoch: int, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Indices into the bank's X and Y patches for this rank at ``(epoch, step)``."""
        order_x, order_y = self.orders(epoch)
        start = (step * self.world_size + self.rank) * self.batch_size
        block = slice(start, start + self.batch_size)
        return order_x[block], order_y[block]

    def state(self, epoch: int, step: int) -> dict:
        return {
            "epoch": epoch,
            "step": step,
            "n_x": self.n_x,
            "n_y": self.n_y,
            "batch_size": self.batch_size,
            "world_size": self.world_size,
            "seed": self.seed,
        }
