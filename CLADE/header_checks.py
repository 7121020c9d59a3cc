"""Checks of a volume file's own header (read by :mod:`CLADE.volume_headers`) and of the geometry
ITK made of it, each refusing in one sentence what would otherwise be read silently wrong.

Before ITK reads the file (:func:`check_header`):

* data shorter than the header says (a NIfTI read with the missing voxels as zeros), also for an
  uncompressed NIfTI named ``.nii.gz``;
* a zero, negative or non-finite spacing, and a non-finite origin (an MHA ``Offset = nan`` is
  read as 0);
* a direction matrix with a zero or parallel axes (ITK refuses it as "not an image");
* NIfTI: an sform that is sheared or zero, or a qform and an sform that disagree (ITK then takes
  one silently, the opposite choice to FSL and nibabel), and NaN or infinite voxels, which ITK's
  NIfTI reader turns into zeros.

After it (:func:`check_geometry`): a direction matrix that is not orthonormal (a sheared NRRD, an
MHA ``TransformMatrix`` of 2I) is refused, since writing it to NIfTI would be coerced by ITK and
move or shrink the volume.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from .errors import CladeError
from .file_names import display
from .volume_headers import HeaderFacts, _open, read_header_facts

#: A direction matrix whose columns depart from unit length or from perpendicular by more than
#: this (about 0.06 degrees) is not a rotation: the file describes a sheared or scaled grid.
ORTHONORMAL_TOLERANCE = 1e-3
#: qform and sform agree when spacings match to this fraction and origins to this many mm.
SPACING_AGREEMENT = 1e-3
ORIGIN_AGREEMENT_MM = 0.01
#: NIfTI datatypes holding floating-point voxels (the only ones that can hold NaN): numpy type.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _truncated_message(path, expected: int | None = None, present: int | None = None) -> str:
    amount = f" ({present} of {expected} bytes)" if expected else ""
    return (
        f"{display(path)} is truncated: it holds less data than its header describes{amount}, "
        "so part of the volume is missing; copy or export the file again."
    )


def check_header(path: str | os.PathLike) -> HeaderFacts:
    """Refuse what ITK would read silently wrong or only as "unreadable" (module docstring).

    Example:
        >>> import SimpleITK as sitk, tempfile
        >>> name = os.path.join(tempfile.mkdtemp(), "v.nii.gz")
        >>> sitk.WriteImage(sitk.Image([4, 4, 3], sitk.sitkFloat32), name)
        >>> check_header(name).nifti_version
        1
    """
    path = Path(path)
    facts = read_header_facts(path)
    if facts.truncated:
        raise CladeError(_truncated_message(path, facts.expected_bytes, facts.present_bytes))
    for axis, value in enumerate(facts.spacing or ()):
        if value is not None and not (value > 0 and np.isfinite(value)):
            raise CladeError(
                f"{display(path)} has a spacing of {value:g} mm along axis {axis} in its header "
                f"({facts.spacing_field}): a spacing must be positive, so fix the header "
                "(where the file was made) before processing."
            )
    if facts.origin is not None and not all(math.isfinite(v) for v in facts.origin):
        shown = ", ".join(f"{v:g}" for v in facts.origin)
        raise CladeError(
            f"{display(path)} has a non-finite origin ({shown}) in its header "
            f"({facts.origin_field}): fix the header where the file was made."
        )
    if facts.directions is not None:
        _check_rank(path, np.array(facts.directions, dtype=float), facts.spacing_field)
    if facts.transforms is not None:
        _check_nifti_transforms(path, facts)
    if facts.datatype in _NIFTI_FLOATS and facts.expected_bytes and not facts.truncated:
        bad = nonfinite_nifti_voxels(path, facts)
        if bad:
            raise CladeError(
                f"{display(path)} has {bad} NaN or infinite voxels: fix or mask them before "
                "super-resolving."
            )
    return facts


def explain_unreadable(path: str | os.PathLike) -> str | None:
    """Why ITK could not read ``path``, where its header says (None: no better reason known)."""
    facts = read_header_facts(path)
    if facts.nifti_version == 2:
        return (
            f"{display(path)} is a NIfTI-2 file, which SimpleITK cannot read: save it as NIfTI-1 "
            "(e.g. with nibabel) and try again."
        )
    return None


def _check_rank(path: Path, matrix: np.ndarray, field: str) -> None:
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.size == 0:
        return
    if not np.isfinite(matrix).all():
        raise CladeError(
            f"{display(path)} has non-finite numbers in the directions of its header ({field}): "
            "fix the header where the file was made."
        )
    if not np.abs(matrix).any():
        reason = "all zero"
    elif np.linalg.matrix_rank(matrix, tol=1e-6 * np.abs(matrix).max()) < matrix.shape[0]:
        reason = "degenerate (two axes parallel, or one of length zero)"
    else:
        return
    raise CladeError(
        f"{display(path)} has a direction matrix that is {reason} in its header ({field}), so "
        "its voxels have no position in space: fix the header where the file was made."
    )


def _check_nifti_transforms(path: Path, facts: HeaderFacts) -> None:
    t = facts.transforms
    if t.sform_code <= 0:
        return
    sform = np.array(t.sform, dtype=float)
    if not np.isfinite(sform).all():
        return  # a NaN origin was refused above; NaN axes make ITK refuse the file itself
    axes = sform[:, :3]
    if not np.abs(axes).any():
        raise CladeError(
            f"{display(path)} has an sform whose matrix is all zero although its sform_code is "
            f"{t.sform_code}: fix the header (or set sform_code to 0) where the file was made."
        )
    sform_spacing = np.linalg.norm(axes, axis=0)
    if not is_orthonormal(axes / np.where(sform_spacing > 0, sform_spacing, 1)):
        raise CladeError(
            f"{display(path)} has a sheared or degenerate sform (its axes are not perpendicular), "
            "a grid a volume cannot hold: readers would silently use something else, so "
            "resample it onto an orthogonal grid (or fix the header) first."
        )
    pixdim = np.array([abs(v) for v in (facts.spacing or ()) if v is not None][:3])
    if len(pixdim) == 3 and not np.allclose(sform_spacing, pixdim, rtol=SPACING_AGREEMENT):
        raise CladeError(
            f"{display(path)} has header spacings that disagree: pixdim (qform) says "
            f"{_mm(pixdim)} mm, the sform {_mm(sform_spacing)} mm; readers differ on which to use "
            "(ITK takes pixdim, FSL and nibabel the sform), so fix the header where the file was "
            "made."
        )
    if t.qform_code <= 0:
        return
    qform = np.array(t.qform, dtype=float)
    qaxes = qform[:, :3] / np.where(pixdim > 0, pixdim, 1)
    same_axes = np.abs(qaxes - axes / sform_spacing).max() <= ORTHONORMAL_TOLERANCE * 10
    same_origin = np.abs(qform[:, 3] - sform[:, 3]).max() <= ORIGIN_AGREEMENT_MM
    if not (same_axes and same_origin):
        what = "orientation" if not same_axes else "origin"
        raise CladeError(
            f"{display(path)} has a qform and an sform that disagree on the volume's {what} "
            f"(qform origin {_mm(qform[:, 3])}, sform origin {_mm(sform[:, 3])}): readers differ "
            "on which to use, so fix the header where the file was made."
        )


def _mm(values) -> str:
    return " x ".join(f"{float(v):.4g}" for v in values)


def is_orthonormal(matrix) -> bool:
    """True when ``matrix``'s columns are unit length and perpendicular (a rotation or mirror).

    Example:
        >>> is_orthonormal(np.eye(3)), is_orthonormal(2 * np.eye(3))
        (True, False)
    """
    matrix = np.asarray(matrix, dtype=float)
    gram = matrix.T @ matrix
    return bool(np.abs(gram - np.eye(len(gram))).max() <= ORTHONORMAL_TOLERANCE)


def check_geometry(image, name: str = "The volume") -> None:
    """Refuse an image whose direction is not orthonormal or whose origin is not finite.

    Example:
        >>> import SimpleITK as sitk
        >>> image = sitk.Image([4, 4, 4], sitk.sitkFloat32)
        >>> image.SetDirection((2, 0, 0, 0, 2, 0, 0, 0, 2))
        >>> check_geometry(image, "v.mha")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: v.mha has a direction matrix that is not a rotation (axes scaled by up to 2 and 0 degrees off perpendicular): a volume file cannot hold that grid without moving the voxels, so resample it onto an orthogonal grid (or fix the header) first.
    """
    dimension = image.GetDimension()
    matrix = np.array(image.GetDirection(), dtype=float).reshape(dimension, dimension)[:3, :3]
    if not all(math.isfinite(v) for v in image.GetOrigin()):
        shown = ", ".join(f"{v:g}" for v in image.GetOrigin())
        raise CladeError(f"{name} has a non-finite origin ({shown}): fix where it was made.")
    if is_orthonormal(matrix):
        return
    lengths = np.linalg.norm(matrix, axis=0)
    unit = matrix / np.where(lengths > 0, lengths, 1)
    cosines = np.abs(unit.T @ unit - np.eye(3)).max()
    off = math.degrees(math.asin(min(1.0, cosines)))
    scale = float(lengths[np.argmax(np.abs(lengths - 1))])
    raise CladeError(
        f"{name} has a direction matrix that is not a rotation (axes scaled by up to {scale:.3g} "
        f"and {off:.3g} degrees off perpendicular): a volume file cannot hold that grid without "
        "moving the voxels, so resample it onto an orthogonal grid (or fix the header) first."
    )


def nonfinite_nifti_voxels(path: str | os.PathLike, facts: HeaderFacts) -> int:
    """How many NaN or infinite voxels a floating-point NIfTI file holds, read from the file
    in chunks (ITK's reader turns them into zeros, so they must be counted before it)."""
    dtype = np.dtype(facts.endian + _NIFTI_FLOATS[facts.datatype])
    wanted = facts.expected_bytes - facts.data_offset
    bad = 0
    chunk = (1 << 22) * dtype.itemsize
    with _open(Path(path)) as handle:
        handle.seek(facts.data_offset)
        while wanted > 0:
            block = handle.read(min(chunk, wanted))
            if not block:
                break
            usable = len(block) - len(block) % dtype.itemsize
            values = np.frombuffer(block[:usable], dtype=dtype)
            bad += int(values.size - np.count_nonzero(np.isfinite(values)))
            wanted -= len(block)
    return bad
