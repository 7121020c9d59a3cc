"""Broken input files are refused in one sentence before any work, as real subprocesses.

Before the fix: a NIfTI cut in half (``.nii`` and ``.nii.gz``) was read with the missing voxels
as zeros and super-resolved, exit 0; a NIfTI ``pixdim`` of zero became 1 mm (after an ITK
warning) and a negative one was taken as positive; a zero MetaImage or NRRD spacing, or a
truncated NRRD or MetaImage, was "not an image SimpleITK can read"; a DICOM series with a missing
slice was stacked at an averaged spacing (slices misplaced) after a raw ITK warning.
"""

from __future__ import annotations

import hashlib
import struct
import subprocess
from pathlib import Path

import pytest
import SimpleITK as sitk
from conftest import clade_in_process, make_volume
from test_bad_input_dicom import write_series

from CLADE.demo import SAMPLE_PATH


def _clade(*args) -> subprocess.CompletedProcess:
    # In this process: what is tested is the command's answer, not the process boundary.
    return clade_in_process(*args)


def _refused(result, *words) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    message = result.stderr.strip()
    assert message.startswith("clade: error:") and len(message.splitlines()) == 1, message
    assert "Traceback" not in message and "WARNING" not in message
    for word in words:
        assert word in message, message
    return message


def _super_resolve(source: Path, tmp_path: Path, model: Path):
    out = tmp_path / "out" / "sr.nii.gz"
    out.parent.mkdir(exist_ok=True)
    digest = _digest(source)
    result = _clade("super-resolve", source, out, "--model", model, "--stride", "32")
    assert _digest(source) == digest  # input never modified
    assert list(out.parent.iterdir()) == []  # nothing written
    return result


def _digest(path: Path) -> dict:
    files = sorted(path.iterdir()) if path.is_dir() else [path]
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def _cut_in_half(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.mark.parametrize("name", ["thick.nii.gz", "thick.nii", "thick.nrrd", "thick.mha"])
def test_truncated_file_is_refused(tmp_path, tiny_model_path, name):
    # The shipped sample: a real thick-slice pelvic MRI, re-saved in each format and cut short.
    source = tmp_path / name
    sitk.WriteImage(sitk.ReadImage(str(SAMPLE_PATH)), str(source), useCompression=True)
    _cut_in_half(source)
    message = _refused(_super_resolve(source, tmp_path, tiny_model_path), "is truncated")
    assert str(source) in message


def test_truncated_detached_data_file_is_refused(tmp_path, tiny_model_path):
    source = tmp_path / "thick.mhd"
    sitk.WriteImage(make_volume(size=(40, 36, 6)), str(source), useCompression=False)
    _cut_in_half(tmp_path / "thick.raw")
    _refused(_super_resolve(source, tmp_path, tiny_model_path), "is truncated")


def _nifti_with_pixdim(path: Path, axis: int, value: float) -> Path:
    sitk.WriteImage(make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0)), str(path))
    header = bytearray(path.read_bytes())
    struct.pack_into("<f", header, 76 + 4 * (axis + 1), value)  # pixdim[axis + 1]
    path.write_bytes(bytes(header))
    return path


@pytest.mark.parametrize("axis, value", [(2, 0.0), (0, 0.0), (2, -4.0)])
def test_nifti_zero_or_negative_pixdim_is_refused_naming_the_axis(
    tmp_path, tiny_model_path, axis, value
):
    source = _nifti_with_pixdim(tmp_path / "thick.nii", axis, value)
    _refused(
        _super_resolve(source, tmp_path, tiny_model_path),
        f"spacing of {value:g} mm along axis {axis}",
        "pixdim",
    )


@pytest.mark.parametrize("value", ["0", "-4"])
def test_metaimage_zero_or_negative_spacing_is_refused(tmp_path, tiny_model_path, value):
    source = tmp_path / "thick.mha"
    sitk.WriteImage(make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0)), str(source))
    data = source.read_bytes().replace(
        b"ElementSpacing = 1 1 4", b"ElementSpacing = 1 1 " + value.encode()
    )
    source.write_bytes(data)
    _refused(
        _super_resolve(source, tmp_path, tiny_model_path),
        f"spacing of {value} mm along axis 2",
        "ElementSpacing",
    )


def test_nrrd_zero_space_direction_is_refused(tmp_path, tiny_model_path):
    source = tmp_path / "thick.nrrd"
    sitk.WriteImage(make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0)), str(source))
    source.write_bytes(source.read_bytes().replace(b"(0,0,4)", b"(0,0,0)"))
    _refused(_super_resolve(source, tmp_path, tiny_model_path), "spacing of 0 mm along axis 2")


def test_dicom_series_with_a_missing_slice_is_refused_naming_the_gap(tmp_path, tiny_model_path):
    positions = [4.0 * i for i in range(10) if i != 5]  # slice 5 missing: an 8 mm gap
    folder = write_series(tmp_path / "series", positions)
    message = _refused(
        _super_resolve(folder, tmp_path, tiny_model_path),
        "unevenly spaced slices",
        "8 mm apart",
        "4 mm apart",
    )
    assert "slice004.dcm and slice005.dcm" in message


def test_evenly_spaced_dicom_series_is_read(tmp_path):
    from CLADE.volume_io import read_volume

    folder = write_series(tmp_path / "series", [4.0 * i for i in range(8)])
    image = read_volume(folder)
    assert image.GetSize() == (40, 36, 8)
    assert image.GetSpacing()[2] == pytest.approx(4.0)


def test_good_nifti_still_reads_with_its_spacing(tmp_path):
    from CLADE.volume_io import read_volume

    path = tmp_path / "ok.nii.gz"
    sitk.WriteImage(make_volume(size=(40, 36, 6), spacing=(0.5, 0.7, 4.0)), str(path))
    assert read_volume(path).GetSpacing() == pytest.approx((0.5, 0.7, 4.0))
