"""Reading and writing volumes through SimpleITK, with checks that turn bad input into one sentence.

Supported inputs: NRRD (.nrrd, .nhdr), NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd) and a folder
holding one DICOM series. Outputs are written to a temporary name in the destination folder and
renamed into place, so a crash or a cancel never leaves a half-written file behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic_files import write_atomically
from .errors import CladeError

#: File endings SimpleITK can write and that we accept for outputs.
WRITABLE_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")


def volume_suffix(path: str | os.PathLike) -> str:
    """Return the file ending of ``path``, treating ``.nii.gz`` as one ending.

    Example:
        >>> volume_suffix("scan.nii.gz")
        '.nii.gz'
    """
    name = Path(path).name.lower()
    if name.endswith(".nii.gz"):
        return ".nii.gz"
    return Path(name).suffix


def read_volume(path: str | os.PathLike) -> sitk.Image:
    """Read a 3D scalar volume from a file or a DICOM series folder and check it is usable.

    Raises :class:`CladeError` for a missing file, a file that is not an image, a 2D, 4D or
    vector image, and NaN or infinite voxels.

    Example:
        >>> import SimpleITK as sitk, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "v.nrrd")
        >>> sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkFloat32), path)
        >>> read_volume(path).GetSize()
        (8, 8, 4)
    """
    path = Path(path)
    if not path.exists():
        raise CladeError(f"The input {path} does not exist: check the path.")
    if path.is_dir():
        image = _read_dicom_folder(path)
    else:
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError:
            raise CladeError(
                f"{path} is not an image SimpleITK can read: give a NRRD, NIfTI, MetaImage file "
                "or a DICOM series folder."
            ) from None
    check_volume(image, str(path))
    return image


def _read_dicom_folder(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise CladeError(
            f"The folder {folder} holds no DICOM series: give a volume file or a DICOM folder."
        )
    if len(series) > 1:
        raise CladeError(
            f"The folder {folder} holds {len(series)} DICOM series: put one series per folder."
        )
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder), series[0]))
    try:
        return reader.Execute()
    except RuntimeError:
        raise CladeError(
            f"The DICOM series in {folder} could not be read: check its files."
        ) from None


def check_volume(image: sitk.Image, name: str = "The volume") -> None:
    """Raise :class:`CladeError` unless ``image`` is a 3D scalar volume with finite voxels.

    Example:
        >>> check_volume(sitk.Image([4, 4], sitk.sitkFloat32), "slice.png")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: slice.png is a 2D image: CLADE needs a 3D volume with thick slices.
    """
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CladeError(
            f"{name} is a vector or colour image with {image.GetNumberOfComponentsPerPixel()} "
            "components per voxel: give a scalar (grey-level) volume."
        )
    dimension = image.GetDimension()
    size = image.GetSize()
    if dimension == 4 and size[3] == 1:
        dimension = 3
    if dimension == 2 or (dimension == 3 and min(size) == 1):
        raise CladeError(f"{name} is a 2D image: CLADE needs a 3D volume with thick slices.")
    if dimension != 3:
        raise CladeError(
            f"{name} has {dimension} dimensions: give a single 3D volume (split 4D series first)."
        )
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise CladeError(
            f"{name} has {bad} NaN or infinite voxels: fix or mask them before super-resolving."
        )


def as_3d(image: sitk.Image) -> sitk.Image:
    """Drop a trailing length-1 fourth axis so a 3D volume stored as 4D can be processed.

    Example:
        >>> as_3d(sitk.Image([4, 4, 3], sitk.sitkFloat32)).GetDimension()
        3
    """
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        return sitk.Extract(image, list(image.GetSize()[:3]) + [0], [0, 0, 0, 0])
    return image


def check_output_path(output: str | os.PathLike, inputs: tuple = ()) -> Path:
    """Check that ``output`` can be written before any work starts, and return it as a Path.

    Refuses unknown file endings, a missing or read-only folder, and an output that would
    overwrite one of ``inputs``.

    Example:
        >>> check_output_path("/nonexistent-folder/out.nrrd")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: The output folder /nonexistent-folder does not exist: create it or choose another output path.
    """
    output = Path(output)
    if volume_suffix(output) not in WRITABLE_SUFFIXES:
        raise CladeError(
            f"Cannot tell the format of {output.name}: end the output name with one of "
            f"{', '.join(WRITABLE_SUFFIXES)}."
        )
    if output.is_dir():
        raise CladeError(f"The output {output} is a folder: give a file name such as {output}/out.nrrd.")
    folder = output.resolve().parent
    if not folder.is_dir():
        raise CladeError(
            f"The output folder {folder} does not exist: create it or choose another output path."
        )
    if not os.access(folder, os.W_OK):
        raise CladeError(
            f"The output folder {folder} cannot be written: choose a folder you can write to."
        )
    for path in inputs:
        if Path(path).resolve() == output.resolve():
            raise CladeError(
                f"The output {output} is the input: choose another output path so the input is "
                "kept."
            )
    return output


def write_volume(image: sitk.Image, output: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically: to a temporary file in the same folder, then renamed.

    Example:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "out.nii.gz")
        >>> write_volume(sitk.Image([4, 4, 4], sitk.sitkFloat32), out).name
        'out.nii.gz'
    """
    output = check_output_path(output)
    suffix = volume_suffix(output)
    if suffix in (".mhd", ".nhdr"):
        # Detached headers reference their data file by name, so a rename of the header alone
        # would break the pair: write both under the final names, data first.
        try:
            sitk.WriteImage(image, str(output), useCompression=compress)
        except RuntimeError as error:
            raise CladeError(f"Could not write {output}: {error}".splitlines()[0]) from None
        return output
    try:
        write_atomically(
            output,
            lambda name: sitk.WriteImage(image, name, useCompression=compress),
            f".partial{suffix}",
        )
    except (RuntimeError, OSError) as error:
        raise CladeError(f"Could not write {output}: {str(error).splitlines()[0]}") from None
    return output


def cast_like(image: sitk.Image, pixel_id: int) -> sitk.Image:
    """Round and clip ``image`` into the value range of ``pixel_id``, then cast to it.

    Used to write the output in the input's pixel type (e.g. int16 HU for CT).

    Example:
        >>> img = sitk.GetImageFromArray(np.array([[[-1e6, 1.6, 1e6]]], dtype=np.float32))
        >>> sitk.GetArrayFromImage(cast_like(img, sitk.sitkInt16)).tolist()
        [[[-32768, 2, 32767]]]
    """
    probe = sitk.GetArrayViewFromImage(sitk.Image([1, 1], pixel_id))
    if np.issubdtype(probe.dtype, np.floating):
        return sitk.Cast(image, pixel_id)
    limits = np.iinfo(probe.dtype)
    array = sitk.GetArrayFromImage(image)
    array = np.clip(np.rint(array), limits.min, limits.max).astype(probe.dtype)
    result = sitk.GetImageFromArray(array)
    result.CopyInformation(image)
    return result
