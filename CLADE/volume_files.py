"""Which files are volumes: the file endings CLADE reads and writes, and how a list of files and
folders (a training cohort, a batch of inputs) expands into volumes to read.

This is the one home of the volume file endings: the command line, training, cohort batch and
the Slicer module all ask here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import SimpleITK as sitk

from .errors import CladeError

#: File endings of the volume formats CLADE reads and writes (longest first where one ends
#: another, so ``.nii.gz`` is recognised before ``.gz``).
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")

#: File endings that hold the pixel data of a separate header (not volumes on their own).
DATA_COMPANION_SUFFIXES = (".raw", ".zraw", ".img", ".gz.raw")


def volume_suffix(path: str | os.PathLike) -> str | None:
    """The volume ending of ``path`` (lower case), or None if it is not a volume file name.

    Example:
        >>> volume_suffix("/data/Case1.NII.GZ"), volume_suffix("notes.txt")
        ('.nii.gz', None)
    """
    name = Path(path).name.lower()
    for suffix in VOLUME_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return None


def volume_stem(path: str | os.PathLike) -> str:
    """The file (or DICOM folder) name without its volume ending.

    Example:
        >>> volume_stem("/data/case1_clade.nii.gz"), volume_stem("scan.NRRD"), volume_stem("ct.1")
        ('case1_clade', 'scan', 'ct.1')
    """
    name = Path(path).name
    suffix = volume_suffix(name)
    return name[: -len(suffix)] if suffix else name


def expand_inputs(
    data: Sequence[str | os.PathLike], role: str = "training"
) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files and DICOM folders to read from ``data`` (files or folders), and what was left out.

    A folder holding a DICOM series is one volume; any other folder contributes its files and
    its sub-folders (each read as a DICOM series), not recursively further. ``role`` names the
    inputs in messages (``training``, ``input``).

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
            raise CladeError(f"The {role} input {path} does not exist: check the path.")
        if path.is_file() or is_dicom_folder(path):
            candidates.append(path)
            continue
        entries = sorted(p for p in path.iterdir() if not p.name.startswith("."))
        if not entries:
            raise CladeError(f"The {role} folder {path} is empty: put volumes in it.")
        for entry in entries:
            if not _utf8(entry):
                candidates.append(entry)  # refused in one sentence when it is read
                continue
            if entry.is_file() and entry.name.lower().endswith(DATA_COMPANION_SUFFIXES):
                continue  # pixel data of a .mhd/.nhdr/.hdr header listed next to it
            if entry.is_dir() and not is_dicom_folder(entry):
                skipped.append((str(entry), "a folder without a DICOM series"))
                continue
            candidates.append(entry)
    return candidates, skipped


def is_dicom_folder(path: Path) -> bool:
    """True when ``path`` is a folder holding at least one DICOM series."""
    if not path.is_dir() or not _utf8(path):  # SimpleITK aborts on a non-UTF-8 name
        return False
    # GDCM warns on stderr about every folder without a series; that is the normal case here.
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        return bool(sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path)))
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


def _utf8(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
