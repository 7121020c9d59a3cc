"""Bad input, round three: DICOM series ITK stacks wrongly without a word (issue 25, classes 3,
4, 21).

Before the fix: a series with a gantry tilt was stacked at the distance between positions with
the shear dropped (a 20 degree tilt put the last slice 12.7 mm off); slices of two orientations
sharing a series UID were stacked as one volume; ``--model ct`` on an MR series ran silently.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import make_volume

from CLADE.errors import CladeError
from CLADE.volume_io import read_volume

AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)
CORONAL = (1.0, 0.0, 0.0, 0.0, 0.0, -1.0)


def write_series(folder: Path, z_positions, *, shifts=None, orientations=None, modality="MR"):
    """One DICOM series (int16, 40x36 slices) with the given positions; ``shifts`` moves each
    slice along y (a gantry tilt), ``orientations`` gives each slice's cosines."""
    folder.mkdir()
    volume = sitk.GetArrayFromImage(make_volume(size=(40, 36, len(z_positions)), dtype=np.int16))
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    series = "1.2.826.0.1.3680043.2.1125.1.4343"
    for index, z in enumerate(z_positions):
        plane = sitk.GetImageFromArray(volume[index])
        plane.SetSpacing((1.0, 1.0))
        y = shifts[index] if shifts is not None else 0.0
        cosines = orientations[index] if orientations is not None else AXIAL
        tags = {
            "0008|0060": modality,
            "0008|0016": "1.2.840.10008.5.1.4.1.1.4",
            "0008|0018": f"{series}.{index + 1}",
            "0020|000d": "1.2.826.0.1.3680043.2.1125.1.4341",
            "0020|000e": series,
            "0020|0013": str(index + 1),
            "0020|0032": f"0\\{y:g}\\{z:g}",
            "0020|0037": "\\".join(f"{v:g}" for v in cosines),
            "0018|0050": "4",
            "0028|0030": "1\\1",
        }
        for tag, value in tags.items():
            plane.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{index:03d}.dcm"))
        writer.Execute(plane)
    return folder


def test_gantry_tilt_is_refused_with_its_angle(tmp_path):
    step = 4.0
    tilt = math.tan(math.radians(20))
    folder = write_series(
        tmp_path / "tilted",
        [step * i for i in range(6)],
        shifts=[step * tilt * i for i in range(6)],
    )
    with pytest.raises(CladeError, match=r"gantry tilt of 20\.0 degrees") as error:
        read_volume(folder)
    assert "7.3 mm in-plane" in str(error.value)  # 5 gaps of 4 mm at tan(20 degrees)


def test_untilted_series_still_reads(tmp_path):
    folder = write_series(tmp_path / "straight", [4.0 * i for i in range(6)])
    assert read_volume(folder).GetSize() == (40, 36, 6)


def test_mixed_orientations_are_refused_naming_them(tmp_path):
    orientations = [AXIAL] * 5 + [CORONAL]  # a localizer sharing the series UID
    folder = write_series(
        tmp_path / "mixed", [4.0 * i for i in range(6)], orientations=orientations
    )
    with pytest.raises(CladeError, match=r"mixes 2 slice orientations") as error:
        read_volume(folder)
    assert "1\\0\\0\\0\\1\\0" in str(error.value) and "1\\0\\0\\0\\0\\-1" in str(error.value)


def test_ct_model_on_an_mr_series_warns(tmp_path, caplog):
    from CLADE.model_file import LoadedModel, build_generator, make_metadata
    from CLADE.pipeline import SuperResolutionRequest, run

    folder = write_series(tmp_path / "mr", [4.0 * i for i in range(4)], modality="MR")
    image = read_volume(folder)
    meta = make_metadata("tiny-ct", "CT", base_filters=4, n_blocks=1, trained=False)
    model = LoadedModel(build_generator(meta).eval(), meta)
    with caplog.at_level(logging.WARNING, logger="CLADE"):
        run(image, SuperResolutionRequest(model=model, device="cpu"))
    warned = [r.getMessage() for r in caplog.records if "modality MR" in r.getMessage()]
    assert warned and "trained on CT" in warned[0] and "use the mri model" in warned[0]


def test_folder_holding_one_multi_frame_file_is_read(tmp_path):
    # The series reader returns one multi-frame file as 48x48x8x1: it was "a 2D image".
    folder = tmp_path / "multiframe"
    folder.mkdir()
    sitk.WriteImage(
        sitk.Cast(make_volume(size=(48, 48, 8)), sitk.sitkUInt16), str(folder / "mf.dcm")
    )
    image = read_volume(folder)
    assert image.GetSize() == (48, 48, 8) and image.GetSpacing() == pytest.approx((1, 1, 4))
