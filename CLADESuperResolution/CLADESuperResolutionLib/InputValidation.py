"""Checks that explain, in one sentence, why the module cannot run yet.

Every function returns ``(ok, why)``: the widget disables its button and shows ``why`` next to
it, and the logic raises ``ValueError(why)`` when called from a script with bad input.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Below this ratio of thick to fine spacing a volume counts as isotropic (same as the core's
#: ``CLADE.geometry.MIN_ANISOTROPY``; kept here so validation works before the core is found).
MIN_ANISOTROPY = 1.2


def _minAnisotropy() -> float:
    try:
        from CLADE.geometry import MIN_ANISOTROPY as coreValue
    except ImportError:
        return MIN_ANISOTROPY
    return float(coreValue)


def validateInputVolume(volumeNode, role: str = "input volume") -> tuple[bool, str]:
    """Is ``volumeNode`` a 3D scalar volume with thick slices?

    Rejects: nothing selected, label maps, vector/colour volumes, missing voxels, 2D images and
    (nearly) isotropic volumes, each with its own reason.
    """
    if volumeNode is None:
        return False, f"Select an {role}."
    name = volumeNode.GetName()
    if volumeNode.IsA("vtkMRMLLabelMapVolumeNode"):
        return (
            False,
            f"{name} is a label map (segmentation), not an image: select a grey-level volume.",
        )
    if volumeNode.IsA("vtkMRMLVectorVolumeNode") or volumeNode.IsA(
        "vtkMRMLDiffusionTensorVolumeNode"
    ):
        return False, f"{name} is a vector or colour volume: select a scalar (grey-level) volume."
    if not volumeNode.IsA("vtkMRMLScalarVolumeNode"):
        return False, f"{name} is not a scalar volume: select a grey-level volume."
    imageData = volumeNode.GetImageData()
    if imageData is None or imageData.GetNumberOfPoints() == 0:
        return False, f"{name} holds no voxels: load the volume again."
    if imageData.GetNumberOfScalarComponents() != 1:
        return False, f"{name} has several components per voxel: select a scalar volume."
    dims = imageData.GetDimensions()
    if min(dims) <= 1:
        return (
            False,
            f"{name} is a 2D image ({dims[0]}x{dims[1]}x{dims[2]}): CLADE needs a 3D volume.",
        )
    spacing = volumeNode.GetSpacing()
    thick = max(range(3), key=lambda axis: spacing[axis])
    finest = min(spacing[axis] for axis in range(3) if axis != thick)
    if spacing[thick] < _minAnisotropy() * finest:
        shown = " x ".join(f"{s:.3g}" for s in spacing)
        return False, (
            f"{name} is already (nearly) isotropic ({shown} mm): there are no thick slices to "
            "super-resolve."
        )
    if dims[thick] < 2:
        return False, f"{name} has a single thick slice: CLADE needs at least two."
    return True, ""


def validateWritableFolder(
    folder, role: str = "output folder", create: bool = False
) -> tuple[bool, str]:
    """Can files be written in ``folder``? Never touches the disk unless ``create`` is True.

    A folder that does not exist yet is fine when its nearest existing parent is a writable
    folder: it is made when the run starts (validation runs on every keystroke in a path field,
    so it must not create anything). ``create=True`` makes it at once (the run's start).
    """
    if not folder or not str(folder).strip():
        return False, f"Choose an {role}."
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        return False, f"The {role} {folder} is a file, not a folder: choose a folder."
    if not folder.exists():
        if create:
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                return (
                    False,
                    f"The {role} {folder} cannot be created ({error.strerror}): choose another.",
                )
        else:
            parent = next((p for p in folder.absolute().parents if p.exists()), None)
            if parent is None or not parent.is_dir():
                return False, f"The {role} {folder} cannot be created: choose another."
            if not os.access(parent, os.W_OK | os.X_OK):
                return False, (
                    f"The {role} {folder} cannot be created in {parent}: choose a "
                    "folder you can write to."
                )
            return True, ""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False, f"The {role} {folder} cannot be written: choose a folder you can write to."
    return True, ""


def validateTrainingInputs(
    volumeNodes, folder, outputFolder, validationNode=None, listFolder=None
) -> tuple[bool, str]:
    """Training needs at least one volume (nodes and/or a folder) and a writable output folder.

    ``listFolder(folder)`` returns the volume files of a folder (injected so this stays cheap
    to test; defaults to :func:`volumeFilesInFolder`).
    """
    listFolder = listFolder or volumeFilesInFolder
    count = 0
    for node in volumeNodes or []:
        ok, why = validateInputVolume(node, role="training volume")
        if not ok:
            return False, why
        count += 1
    if folder and str(folder).strip():
        if not Path(folder).is_dir():
            return False, f"The training folder {folder} does not exist: choose another."
        files = listFolder(folder)
        if not files:
            return False, f"The training folder {folder} holds no NRRD, NIfTI or MetaImage volume."
        count += len(files)
    if count == 0:
        return False, "Select training volumes (loaded volumes and/or a folder of volumes)."
    if validationNode is not None:
        ok, why = validateInputVolume(validationNode, role="validation volume")
        if not ok:
            return False, why
    return validateWritableFolder(outputFolder, role="output folder for the trained model")


#: File endings read as volumes from a training folder.
VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


def volumeFilesInFolder(folder) -> list[Path]:
    """Volume files directly in ``folder`` (not recursive), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(
        path
        for path in folder.iterdir()
        if path.is_file()
        and path.name.lower().endswith(VOLUME_SUFFIXES)
        and not path.name.startswith(".")
    )
