"""Bad input, round three: headers ITK reinterprets silently (issue 25, classes 5-8, 10-12, 16).

Each hostile header is written byte by byte over a file SimpleITK made, then read with
:func:`CLADE.volume_io.read_volume`. Before the fix: NIfTI qform and sform that disagree were read
with one of them (ITK's C++ warning the only sign), NaN voxels of a NIfTI came back as zeros, an
uncompressed NIfTI named ``.nii.gz`` skipped the truncation check, sheared or scaled directions
were written coerced, an MHA ``Offset = nan`` read as origin 0, a complex NIfTI ended in a
traceback, a 3D volume stored as 4D with a last axis of 1 was "a 2D image", and several readable
but broken headers were "not an image SimpleITK can read".
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_volume

from CLADE.errors import CladeError
from CLADE.volume_io import read_volume, write_volume

SROW = 280  # NIfTI-1: srow_x, srow_y, srow_z (4 float32 each)


def _nifti(path: Path, spacing=(5.0, 5.0, 5.0), edit=None, dtype=np.float32) -> Path:
    sitk.WriteImage(make_volume(size=(20, 18, 6), spacing=spacing, dtype=dtype), str(path))
    if edit is not None:
        header = bytearray(path.read_bytes())
        edit(header)
        path.write_bytes(bytes(header))
    return path


def _set_sform(header: bytearray, diagonal) -> None:
    x, y, z = diagonal
    struct.pack_into("<12f", header, SROW, -x, 0, 0, 0, 0, -y, 0, 0, 0, 0, z, 0)


def test_qform_and_sform_that_disagree_are_refused_naming_both_spacings(tmp_path, capfd):
    path = _nifti(tmp_path / "v.nii", edit=lambda h: _set_sform(h, (3, 3, 3)))
    with pytest.raises(
        CladeError, match=r"pixdim \(qform\) says 5 x 5 x 5 mm, the sform 3 x 3 x 3"
    ):
        read_volume(path)
    assert "WARNING" not in capfd.readouterr().err  # ITK's "unexpected scales in sform"


def test_sform_only_disagreeing_with_pixdim_is_refused(tmp_path):
    def edit(h):
        _set_sform(h, (3, 3, 3))
        struct.pack_into("<h", h, 252, 0)  # qform_code 0: ITK still takes pixdim's 5 mm

    with pytest.raises(CladeError, match="header spacings that disagree"):
        read_volume(_nifti(tmp_path / "v.nii", edit=edit))


def test_sheared_sform_beside_a_valid_qform_is_refused(tmp_path):
    def edit(h):
        struct.pack_into("<12f", h, SROW, -5, 2, 0, 0, 0, -5, 0, 0, 0, 0, 5, 0)

    with pytest.raises(CladeError, match="sheared or degenerate sform"):
        read_volume(_nifti(tmp_path / "v.nii", edit=edit))


def test_sheared_sform_alone_says_what_is_wrong(tmp_path):
    def edit(h):
        struct.pack_into("<12f", h, SROW, -5, 2, 0, 0, 0, -5, 0, 0, 0, 0, 5, 0)
        struct.pack_into("<h", h, 252, 0)  # ITK refuses this one as "not an image"

    with pytest.raises(CladeError, match="sheared or degenerate sform"):
        read_volume(_nifti(tmp_path / "v.nii", edit=edit))


def test_agreeing_qform_and_sform_still_read(tmp_path, capfd):
    image = read_volume(_nifti(tmp_path / "v.nii.gz", spacing=(0.5, 0.7, 4.0)))
    assert image.GetSpacing() == pytest.approx((0.5, 0.7, 4.0))
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("name", ["v.nii", "v.nii.gz"])
def test_nan_and_infinite_nifti_voxels_are_refused(tmp_path, name):
    image = make_volume(size=(20, 18, 6))
    array = sitk.GetArrayFromImage(image)
    array[2, 3, 4], array[1, 1, 1], array[0, 0, 0] = np.nan, np.inf, -np.inf
    bad = sitk.GetImageFromArray(array)
    bad.CopyInformation(image)
    sitk.WriteImage(bad, str(tmp_path / name))
    with pytest.raises(CladeError, match="has 3 NaN or infinite voxels"):
        read_volume(tmp_path / name)


def test_uncompressed_nifti_named_nii_gz_is_checked_for_truncation(tmp_path):
    plain = _nifti(tmp_path / "v.nii")
    data = plain.read_bytes()
    misnamed = tmp_path / "v.nii.gz"
    misnamed.write_bytes(data[: len(data) // 2])
    with pytest.raises(CladeError, match="is truncated"):
        read_volume(misnamed)


def test_uncompressed_nifti_named_nii_gz_that_is_whole_still_reads(tmp_path):
    plain = _nifti(tmp_path / "v.nii")
    misnamed = tmp_path / "w.nii.gz"
    misnamed.write_bytes(plain.read_bytes())
    assert read_volume(misnamed).GetSize() == (20, 18, 6)


def _text_file(tmp_path: Path, name: str, old: bytes, new: bytes) -> Path:
    path = tmp_path / name
    sitk.WriteImage(make_volume(size=(20, 18, 6)), str(path), useCompression=False)
    data = path.read_bytes()
    assert old in data
    path.write_bytes(data.replace(old, new, 1))
    return path


NRRD_AXES = b"(1,0,0) (0,1,0) (0,0,4)"
MHA_MATRIX = b"TransformMatrix = 1 0 0 0 1 0 0 0 1"


@pytest.mark.parametrize(
    "name, old, new",
    [
        ("sheared.nrrd", NRRD_AXES, b"(1,0,0) (0.5,1,0) (0,0,4)"),
        ("scaled.mha", MHA_MATRIX, b"TransformMatrix = 2 0 0 0 2 0 0 0 2"),
    ],
)
def test_directions_that_are_not_a_rotation_are_refused(tmp_path, name, old, new):
    path = _text_file(tmp_path, name, old, new)
    with pytest.raises(CladeError, match="direction matrix that is not a rotation"):
        read_volume(path)


@pytest.mark.parametrize(
    "name, old, new, words",
    [
        ("zero.mha", MHA_MATRIX, b"TransformMatrix = 0 0 0 0 0 0 0 0 0", "all zero"),
        ("parallel.nrrd", NRRD_AXES, b"(1,0,0) (1,0,0) (0,0,4)", "degenerate"),
        ("nan.mha", b"Offset = 0 0 0", b"Offset = nan 0 0", "non-finite origin (nan, 0, 0)"),
        ("nan.nrrd", b"space origin: (0,0,0)", b"space origin: (nan,0,0)", "non-finite origin"),
    ],
)
def test_broken_geometry_says_what_is_wrong(tmp_path, name, old, new, words):
    path = _text_file(tmp_path, name, old, new)
    with pytest.raises(CladeError, match=r"header") as error:
        read_volume(path)
    assert words in str(error.value) and "not an image SimpleITK can read" not in str(error.value)


def test_nifti_with_nan_origin_is_refused(tmp_path):
    def edit(h):
        struct.pack_into("<f", h, 268, float("nan"))  # qoffset_x
        struct.pack_into("<f", h, SROW + 12, float("nan"))  # srow_x[3]

    with pytest.raises(CladeError, match="non-finite origin"):
        read_volume(_nifti(tmp_path / "v.nii", edit=edit))


def test_nifti2_is_named_as_such(tmp_path):
    path = tmp_path / "v2.nii"
    header = bytearray(540)
    struct.pack_into("<i8s", header, 0, 540, b"n+2\0\r\n\x1a\n")
    struct.pack_into("<hh", header, 12, 16, 32)  # float32
    struct.pack_into("<8q", header, 16, 3, 8, 8, 4, 1, 1, 1, 1)
    struct.pack_into("<8d", header, 104, 1, 1, 1, 4, 0, 0, 0, 0)
    struct.pack_into("<q", header, 168, 544)
    path.write_bytes(bytes(header) + bytes(4) + np.zeros(256, "<f4").tobytes())
    try:
        image = read_volume(path)
    except CladeError as error:
        assert "is a NIfTI-2 file" in str(error)
    else:  # a SimpleITK that reads NIfTI-2 must read it right
        assert image.GetSize() == (8, 8, 4)


def test_complex_nifti_is_refused_in_one_sentence(tmp_path):
    array = (np.ones((6, 18, 20)) + 1j).astype(np.complex64)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1, 1, 4))
    sitk.WriteImage(image, str(tmp_path / "c.nii"))
    with pytest.raises(CladeError, match="complex-valued voxels"):
        read_volume(tmp_path / "c.nii")


@pytest.mark.parametrize("name", ["v4.mha", "v4.nrrd"])
def test_3d_volume_stored_as_4d_with_one_frame_is_read(tmp_path, name):
    array = sitk.GetArrayFromImage(make_volume(size=(48, 48, 8)))[np.newaxis]
    image = sitk.GetImageFromArray(array, isVector=False)  # size 48 x 48 x 8 x 1
    image.SetSpacing((1.0, 1.0, 4.0, 1.0))
    sitk.WriteImage(image, str(tmp_path / name))
    read = read_volume(tmp_path / name)
    assert read.GetSize() == (48, 48, 8) and read.GetSpacing() == pytest.approx((1, 1, 4))


def test_a_grid_the_output_format_would_coerce_is_never_written(tmp_path):
    image = make_volume(size=(12, 12, 4))
    image.SetDirection((1, 0.5, 0, 0, 1, 0, 0, 0, 1))  # sheared: NIfTI cannot hold it
    with pytest.raises(CladeError, match="would not hold the volume's geometry"):
        write_volume(image, tmp_path / "out.nii.gz")
    assert list(tmp_path.iterdir()) == []
