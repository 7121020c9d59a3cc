"""Bad numbers, hostile model files and non-overlapping references: one sentence, exit 2.

Before the fix: ``clade simulate --thickness inf`` / ``nan`` ended in an ``OverflowError`` /
``ValueError`` traceback, ``evaluate --central-fraction nan`` and a NaN box corner went on to the
work, ``demo --stride 0`` or ``99`` was checked only after the slow model load (if at all); a model
file asking for a million filters tried to allocate terabytes and died with a traceback, one
with NaN weights produced a volume of NaNs; ``evaluate --resample-to-reference`` with a reference
elsewhere in space was blamed on PIQE ("every slice ... is constant").
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import CT_ISO, clade_in_process, make_volume


def _clade(*args) -> subprocess.CompletedProcess:
    # In this process: what is tested is the command's answer, not the process boundary.
    return clade_in_process(*args)


def _refused(result, *words) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # The sentence is the last line (argparse prints the usage above its own errors).
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("clade"), message
    for word in words:
        assert word in message, message
    return message


@pytest.fixture(scope="module")
def iso(tmp_path_factory):
    path = tmp_path_factory.mktemp("options") / "iso.nrrd"
    sitk.WriteImage(make_volume(size=(24, 24, 24), spacing=(1.0, 1.0, 1.0)), str(path))
    return path


@pytest.mark.parametrize(
    "options, words",
    [
        (["--thickness", "inf"], ["--thickness", "finite"]),
        (["--thickness", "nan"], ["--thickness", "finite"]),
        (["--thickness", "-3"], ["--thickness", "greater than 0"]),
        (["--thickness", "4", "--spacing", "0"], ["--spacing", "greater than 0"]),
        (["--thickness", "4", "--spacing=-inf"], ["--spacing", "finite"]),
    ],
)
def test_simulate_refuses_bad_numbers_at_the_parser(iso, tmp_path, options, words):
    out = tmp_path / "thick.nrrd"
    _refused(_clade("simulate", iso, out, *options), "clade simulate: error: argument", *words)
    assert not out.exists()


@pytest.mark.parametrize(
    "options, words",
    [
        (["--central-fraction", "nan"], ["--central-fraction", "finite"]),
        (["--central-fraction", "0"], ["--central-fraction", "above 0 up to 1"]),
        (["--central-fraction", "1.5"], ["--central-fraction", "above 0 up to 1"]),
        (["--edges", "0"], ["--edges", "between 1 and 10000"]),
        (["--edges", "1e9"], ["--edges", "whole number"]),
        (
            ["--signal-box", "0,0,0,nan,4,4", "--background-box", "0,0,0,2,2,2"],
            ["--signal-box", "finite"],
        ),
    ],
)
def test_evaluate_refuses_bad_numbers(iso, options, words):
    _refused(_clade("evaluate", iso, iso, *options), *words)


@pytest.mark.parametrize("stride", ["0", "33", "nan", "-1"])
def test_demo_refuses_a_bad_stride_at_the_parser(tmp_path, stride):
    result = _clade("demo", "--out", tmp_path / "demo", "--stride", stride)
    _refused(result, "clade demo: error: argument --stride")
    assert not (tmp_path / "demo").exists()


def _edited_model(tiny_model_path, tmp_path, edit) -> str:
    record = torch.load(tiny_model_path, weights_only=True)
    edit(record)
    path = tmp_path / "edited.pt"
    torch.save(record, path)
    return path


@pytest.mark.parametrize(
    "field, value",
    [("base_filters", 10**6), ("n_blocks", 10**5), ("base_filters", 0), ("base_filters", 2.5)],
)
def test_model_asking_for_an_absurd_architecture_is_refused_before_building(
    tiny_model_path, tmp_path, field, value
):
    def edit(record):
        record["metadata"]["architecture"][field] = value

    model = _edited_model(tiny_model_path, tmp_path, edit)
    source = tmp_path / "thick.nrrd"
    sitk.WriteImage(make_volume(size=(40, 36, 6)), str(source))
    result = _clade("super-resolve", source, tmp_path / "sr.nrrd", "--model", model)
    _refused(result, "is not a valid CLADE model file", f"{field} = {value!r}", "outside")
    assert not (tmp_path / "sr.nrrd").exists()


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_model_with_non_finite_weights_is_refused_at_load(tiny_model_path, tmp_path, bad):
    def edit(record):
        key = next(k for k, v in record["state_dict"].items() if v.is_floating_point())
        record["state_dict"][key].view(-1)[0] = bad

    model = _edited_model(tiny_model_path, tmp_path, edit)
    source = tmp_path / "thick.nrrd"
    sitk.WriteImage(make_volume(size=(40, 36, 6)), str(source))
    result = _clade("super-resolve", source, tmp_path / "sr.nrrd", "--model", model)
    _refused(result, "holds 1 NaN or infinite weights")
    assert not (tmp_path / "sr.nrrd").exists()


def test_evaluate_blames_a_non_overlapping_reference_on_the_geometry(test_data, tmp_path):
    ct = sitk.ReadImage(str(test_data / CT_ISO))
    iso = sitk.RegionOfInterest(ct, [64, 64, 36], [0, 5, 40])
    sitk.WriteImage(iso, str(tmp_path / "iso.nii.gz"))
    assert (
        _clade(
            "simulate", tmp_path / "iso.nii.gz", tmp_path / "thick.nrrd", "--thickness", 9
        ).returncode
        == 0
    )
    far = sitk.Image(iso)
    far.SetOrigin(tuple(np.array(iso.GetOrigin()) + 2000.0))  # 2 m away: no common voxel
    sitk.WriteImage(far, str(tmp_path / "far.nii.gz"))
    result = _clade(
        "evaluate",
        tmp_path / "thick.nrrd",
        tmp_path / "thick.nrrd",
        "--reference",
        tmp_path / "far.nii.gz",
        "--resample-to-reference",
    )
    message = _refused(result, "do not overlap in space", "geometry")
    assert "PIQE" not in message
