"""Reading a folder holding one DICOM series, with the checks ITK's series reader skips.

ITK's series reader sorts the slices along the normal of the first slice's orientation and stacks
them at one spacing, whatever the headers say. Read from the slice headers first and refused:

* slices that are not evenly spaced (a missing or extra slice): ITK averages the spacing after a
  warning, misplacing every slice after the gap;
* slices whose orientations differ (localizers sharing the series UID): ITK stacks them as one
  volume;
* a gantry tilt (positions that shift in-plane slice by slice): ITK stacks the slices at the
  distance between positions and drops the shear, so the last slice of a 20 degree tilt lands
  centimetres from where it was acquired.

The series' ``Modality`` (0008,0060) is kept on the image as metadata (:data:`MODALITY_KEY`) so
the pipeline can warn when a CT model is asked to process an MR series, or the reverse.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import CladeError
from .file_names import check_utf8_name, display

#: Slice gaps may differ from the series' usual gap by this fraction (rounding in the headers).
SLICE_GAP_TOLERANCE = 0.01
#: Slice orientations (direction cosines) that differ by more than this are different.
ORIENTATION_TOLERANCE = 1e-3
#: Slices whose positions shift in-plane by more than this angle from the normal are tilted.
TILT_TOLERANCE_DEGREES = 0.5
#: The image metadata key holding the series' DICOM Modality.
MODALITY_KEY = "0008|0060"


def read_dicom_folder(folder: Path) -> sitk.Image:
    """Read the one DICOM series in ``folder`` after checking its slice geometry (module doc)."""
    check_utf8_name(folder, "input folder")
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise CladeError(
            f"The folder {display(folder)} holds no DICOM series: give a volume file or a DICOM "
            "folder."
        )
    if len(series) > 1:
        raise CladeError(
            f"The folder {display(folder)} holds {len(series)} DICOM series: put one series per "
            "folder."
        )
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    for name in files:
        check_utf8_name(name, "DICOM file")
    modality = check_slice_positions(files, folder)
    reader.SetFileNames(files)
    from .volume_io import itk_warnings_off, native_stderr_held_back

    try:
        with native_stderr_held_back(), itk_warnings_off():
            image = reader.Execute()
    except RuntimeError:
        raise CladeError(
            f"The DICOM series in {display(folder)} could not be read: check its files."
        ) from None
    if modality:
        image.SetMetaData(MODALITY_KEY, modality)
    return image


def check_slice_positions(files, folder: str | os.PathLike = "The DICOM series") -> str | None:
    """Refuse a series with mixed orientations, a gantry tilt or unevenly spaced slices.

    The positions and orientations are read from the slice headers only. Returns the series'
    Modality tag (None when absent or unreadable).

    Example:
        >>> check_slice_positions([])  # no slices: nothing to compare
    """
    slices = _slice_headers(files)
    if not slices:
        return None
    _check_orientations(slices, folder)
    if len(slices) >= 2:
        _check_tilt(slices, folder)
    if len(slices) >= 3:
        _check_gaps(slices, folder)
    return slices[0][3]


def _slice_headers(files) -> list[tuple[str, np.ndarray, np.ndarray, str | None]] | None:
    """(name, position, cosines, modality) of every slice, or None if a tag is unusable."""
    reader = sitk.ImageFileReader()
    slices = []
    for name in files:
        reader.SetFileName(str(name))
        try:
            reader.ReadImageInformation()
            position = np.array([float(v) for v in reader.GetMetaData("0020|0032").split("\\")])
            cosines = np.array([float(v) for v in reader.GetMetaData("0020|0037").split("\\")])
        except (RuntimeError, ValueError, IndexError):
            return None  # no usable position tags: ITK's own reading decides
        if position.shape != (3,) or cosines.shape != (6,):
            return None
        modality = None
        if reader.HasMetaDataKey(MODALITY_KEY):
            modality = reader.GetMetaData(MODALITY_KEY).strip() or None
        slices.append((Path(name).name, position, cosines, modality))
    return slices


def _check_orientations(slices, folder) -> None:
    found: list[np.ndarray] = []
    for _, _, cosines, _ in slices:
        if not any(np.abs(cosines - known).max() <= ORIENTATION_TOLERANCE for known in found):
            found.append(cosines)
    if len(found) > 1:
        listed = "; ".join("\\".join(f"{v:.4g}" for v in cosines) for cosines in found[:4])
        raise CladeError(
            f"The DICOM series in {display(folder)} mixes {len(found)} slice orientations "
            f"(ImageOrientationPatient {listed}), e.g. localizers sharing its series UID, so it "
            "is not one volume; put only the slices of one orientation in the folder."
        )


def _check_tilt(slices, folder) -> None:
    cosines = slices[0][2]
    normal = np.cross(cosines[:3], cosines[3:6])
    positions = np.array([s[1] for s in slices])
    along = positions @ normal
    order = np.argsort(along)
    span = positions[order[-1]] - positions[order[0]]
    distance = float(np.linalg.norm(span))
    if distance <= 1e-6:
        return
    sideways = span - (span @ normal) * normal
    shift = float(np.linalg.norm(sideways))
    angle = math.degrees(math.atan2(shift, abs(float(span @ normal))))
    if angle > TILT_TOLERANCE_DEGREES:
        raise CladeError(
            f"The DICOM series in {display(folder)} was acquired with a gantry tilt of "
            f"{angle:.1f} degrees (slice positions shift {shift:.1f} mm in-plane from first to "
            "last slice), which a volume grid cannot hold: the slices would be stacked "
            "unsheared and misplaced; correct the tilt first (e.g. dcm2niix or Slicer's DICOM "
            "import with 'acquisition geometry regularization')."
        )


def _check_gaps(slices, folder) -> None:
    cosines = slices[0][2]
    normal = np.cross(cosines[:3], cosines[3:6])
    positions = [float(s[1] @ normal) for s in slices]
    order = np.argsort(positions)
    along = np.asarray(positions)[order]
    gaps = np.diff(along)
    usual = float(np.median(gaps))
    allowed = max(SLICE_GAP_TOLERANCE * abs(usual), 1e-3)
    odd = np.flatnonzero(np.abs(gaps - usual) > allowed)
    if usual <= allowed or len(odd):
        index = int(odd[0]) if len(odd) else int(np.argmin(gaps))
        first, second = slices[order[index]][0], slices[order[index + 1]][0]
        raise CladeError(
            f"The DICOM series in {display(folder)} has unevenly spaced slices: {first} and "
            f"{second} are {gaps[index]:.4g} mm apart where the others are {usual:.4g} mm apart "
            "(a missing or extra slice), so the volume would be stacked with slices misplaced; "
            "export the complete series again."
        )
