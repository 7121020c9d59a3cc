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

from ..errors import CladeError
from ..slice_sampling import (  # noqa: F401  (PreparedVolume, sample_slices: part of this API)
    PreparedVolume,
    prepare_volume,
    sample_slices,
    sample_volume,
    sample_volume_patches,
)
from ..volume_files import expand_inputs
from ..volume_io import read_volume


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
        >>> import tempfile, os, SimpleITK as sitk
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
