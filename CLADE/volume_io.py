"""Reading and writing volumes through SimpleITK, with checks that turn bad input into one sentence.

Supported inputs: NRRD (.nrrd, .nhdr), NIfTI (.nii, .nii.gz), MetaImage (.mha, .mhd) and a folder
holding one DICOM series. What ITK would read silently wrong is refused first from the file's own
header (:mod:`CLADE.header_checks`: truncated data, bad spacings or origins, NIfTI qform/sform
disagreement, NaN voxels, directions that are not a rotation), and so is a DICOM series with a
missing slice, a gantry tilt or mixed orientations (:mod:`CLADE.dicom_series`). Names that are
not UTF-8, and outputs that would write over any file an input reads, are refused before any
work (:mod:`CLADE.file_names`). Outputs are written to a temporary name in the
destination folder (both files of a header/data pair), checked, and renamed into place
(:func:`CLADE.atomic_files.write_atomically`), so a crash, a cancel or a full disk never leaves a
half-written file behind nor replaces an earlier good one.

ITK's readers and writers print some problems straight to the process's stderr (niftilib's
``NWAD: wrote only 0 of N bytes``, MetaImage's ``data not read completely``, GDCM warnings): that
text is held back while they run and shown only when the call succeeded, since on failure the
one-sentence :class:`CladeError` says what went wrong.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .atomic_files import write_atomically
from .dicom_series import read_dicom_folder
from .errors import CladeError
from .file_names import (
    check_name_lengths,
    check_outputs_spare_inputs,
    check_utf8_name,
)
from .header_checks import (
    ORTHONORMAL_TOLERANCE,
    _truncated_message,
    check_geometry,
    check_header,
    explain_unreadable,
)
from .volume_headers import read_header_facts

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

    Raises :class:`CladeError` for a missing file, a file that is not an image, a truncated
    file, a zero or negative header spacing, a DICOM series with a missing slice, a 2D, 4D or
    vector image, and NaN or infinite voxels.

    Example:
        >>> import SimpleITK as sitk, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "v.nrrd")
        >>> sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkFloat32), path)
        >>> read_volume(path).GetSize()
        (8, 8, 4)
    """
    path = Path(path)
    check_utf8_name(path, "input")
    if not path.exists():
        raise CladeError(f"The input {path} does not exist: check the path.")
    if path.is_dir():
        image = read_dicom_folder(path)
    else:
        check_header(path)
        held = HeldBack()
        try:
            with native_stderr_held_back() as held, itk_warnings_off():
                image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            # NRRD says so in its exception, MetaImage only on stderr.
            if _TRUNCATED.search(str(error) + held.text):
                raise CladeError(_truncated_message(path)) from None
            raise CladeError(
                explain_unreadable(path)
                or f"{path} is not an image SimpleITK can read: give a NRRD, NIfTI, MetaImage "
                "file or a DICOM series folder."
            ) from None
    check_volume(image, str(path))
    return as_3d(image)


#: How ITK's NRRD and MetaImage readers say that the data ended early.
_TRUNCATED = re.compile(r"not read completely|fread got only|bytes but received|unexpected end")


@contextlib.contextmanager
def itk_warnings_off():
    """Silence ITK's own warnings (C++ file names and object addresses) while reading: what they
    report is checked from the header and refused in one sentence instead."""
    shown = sitk.ProcessObject.GetGlobalWarningDisplay()
    sitk.ProcessObject.SetGlobalWarningDisplay(False)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalWarningDisplay(shown)


class HeldBack:
    """What native code wrote to stderr inside :func:`native_stderr_held_back` (after it)."""

    text = ""


@contextlib.contextmanager
def native_stderr_held_back():
    """Hold back what native code writes to file descriptor 2; replay it on success.

    The held text is available afterwards (``.text``) to explain a failure.

    Example:
        >>> with native_stderr_held_back() as held:
        ...     _ = os.write(2, b"")
        >>> held.text
        ''
    """
    held = HeldBack()
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded): nothing to hold
        yield held
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        succeeded = False
        try:
            yield held
            succeeded = True
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            raw = sink.read()
            held.text = raw.decode("utf-8", "replace")
            if succeeded and raw:
                os.write(2, raw)


def check_volume(image: sitk.Image, name: str = "The volume") -> None:
    """Raise :class:`CladeError` unless ``image`` is a 3D scalar volume with finite voxels.

    Example:
        >>> check_volume(sitk.Image([4, 4], sitk.sitkFloat32), "slice.png")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: slice.png is a 2D image: CLADE needs a 3D volume with thick slices.
    """
    if image.GetPixelID() in _COMPLEX:
        raise CladeError(
            f"{name} holds complex-valued voxels: give a real-valued (magnitude) volume."
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise CladeError(
            f"{name} is a vector or colour image with {image.GetNumberOfComponentsPerPixel()} "
            "components per voxel: give a scalar (grey-level) volume."
        )
    dimension = image.GetDimension()
    size = image.GetSize()
    if dimension == 4 and size[3] == 1:
        dimension = 3
    if dimension == 2 or (dimension == 3 and min(size[:3]) == 1):
        raise CladeError(f"{name} is a 2D image: CLADE needs a 3D volume with thick slices.")
    if dimension != 3:
        raise CladeError(
            f"{name} has {dimension} dimensions: give a single 3D volume (split 4D series first)."
        )
    check_geometry(image, name)
    array = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(array.dtype, np.floating) and not np.isfinite(array).all():
        bad = int((~np.isfinite(array)).sum())
        raise CladeError(
            f"{name} has {bad} NaN or infinite voxels: fix or mask them before super-resolving."
        )


_COMPLEX = (sitk.sitkComplexFloat32, sitk.sitkComplexFloat64)


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

    Refuses names that are not UTF-8 or too long for the folder, unknown file endings, a missing
    or read-only folder, and an output that would write over any file one of ``inputs`` reads
    (a detached header's data file included: :func:`CLADE.file_names.check_outputs_spare_inputs`).

    Example:
        >>> check_output_path("/nonexistent-folder/out.nrrd")
        Traceback (most recent call last):
        ...
        CLADE.errors.CladeError: The output folder /nonexistent-folder does not exist: create it or choose another output path.
    """
    output = Path(output)
    for path in inputs:
        check_utf8_name(path, "input")
    check_utf8_name(output, "output")
    if volume_suffix(output) not in WRITABLE_SUFFIXES:
        raise CladeError(
            f"Cannot tell the format of {output.name}: end the output name with one of "
            f"{', '.join(WRITABLE_SUFFIXES)}."
        )
    if output.is_dir():
        raise CladeError(
            f"The output {output} is a folder: give a file name such as {output}/out.nrrd."
        )
    folder = output.resolve().parent
    if not folder.is_dir():
        raise CladeError(
            f"The output folder {folder} does not exist: create it or choose another output path."
        )
    if not os.access(folder, os.W_OK):
        raise CladeError(
            f"The output folder {folder} cannot be written: choose a folder you can write to."
        )
    check_name_lengths(output)
    check_outputs_spare_inputs([output], inputs)
    return output


def write_volume(image: sitk.Image, output: str | os.PathLike, compress: bool = True) -> Path:
    """Write ``image`` atomically: to a temporary file in the same folder, checked, renamed.

    A ``.mhd`` or ``.nhdr`` output is a header plus a data file; both are written and renamed
    together. A full device raises :class:`CladeError` saying so, and nothing is left behind.

    Example:
        >>> import tempfile, os
        >>> out = os.path.join(tempfile.mkdtemp(), "out.nii.gz")
        >>> write_volume(sitk.Image([4, 4, 4], sitk.sitkFloat32), out).name
        'out.nii.gz'
    """
    output = check_output_path(output)
    suffix = volume_suffix(output)

    def write(name: str) -> None:
        sitk.WriteImage(image, name, useCompression=compress)

    def verify(name: str) -> None:
        # niftilib reports a short write (a full disk) only by printing "NWAD: wrote only 0 of N
        # bytes" and returns as if it had succeeded, so the NIfTI file's length is checked
        # against its header (for .nii.gz by decompressing it: a cut gzip stream is short too).
        # The NRRD and MetaImage writers raise on a failed write themselves, and the fsync in
        # write_atomically catches a failure the kernel reports late.
        facts = read_header_facts(name)
        if facts.truncated:
            raise CladeError(
                f"{output} could not be written completely ({facts.present_bytes} of "
                f"{facts.expected_bytes} bytes); nothing was written under that name."
            )
        check_written_geometry(image, name, output)

    try:
        with native_stderr_held_back():
            write_atomically(
                output,
                write,
                f".partial{suffix}",
                verify=verify,
                companions=suffix in (".mhd", ".nhdr"),
            )
    except OSError as error:
        raise CladeError(f"Could not write {output}: {error.strerror or error}.") from None
    except RuntimeError as error:
        raise CladeError(
            f"Could not write {output}: the image writer failed ({_itk_reason(error)})."
        ) from None
    return output


def check_written_geometry(image: sitk.Image, written: str, output) -> None:
    """Refuse a written file whose geometry is not ``image``'s (a writer that coerced it).

    ITK's NIfTI writer, given a direction that is not a rotation, writes a nearby rotation
    after printing one warning line: the output would silently move or shrink.
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(written)
    with itk_warnings_off():
        reader.ReadImageInformation()
    dimension = image.GetDimension()
    got = np.array(reader.GetDirection(), dtype=float)[: dimension * dimension]
    checks = (
        ("spacing", np.array(reader.GetSpacing()), np.array(image.GetSpacing()), 1e-4),
        ("origin", np.array(reader.GetOrigin()), np.array(image.GetOrigin()), 1e-3),
        # Looser than the others: a direction read as orthonormal within the tolerance of
        # CLADE.header_checks may be orthonormalised by the writer by about as much.
        ("direction", got, np.array(image.GetDirection(), dtype=float), 2 * ORTHONORMAL_TOLERANCE),
    )
    for what, written_value, wanted, tolerance in checks:
        if written_value.shape != wanted.shape:
            continue
        scale = max(1.0, float(np.abs(wanted).max()))
        if np.abs(written_value - wanted).max() > tolerance * scale:
            raise CladeError(
                f"{output} would not hold the volume's geometry (the writer changed its {what} "
                f"from {np.round(wanted, 4).tolist()} to {np.round(written_value, 4).tolist()}), "
                "so nothing was written: the grid is not one this format can store."
            )


def _itk_reason(error: RuntimeError) -> str:
    """The gist of an ITK exception, without its C++ file names and object addresses."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    reasons = [
        re.sub(r"^ITK ERROR: \w+\(0x[0-9a-f]+\):\s*", "", line)
        for line in lines
        if not re.search(r"\.(cxx|h|hxx|cpp):\d+", line)
    ]
    return (reasons[-1] if reasons else "unknown reason").rstrip(".")


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
