"""``clade simulate`` and ``clade evaluate`` end to end, as real subprocesses on real data (their
answers to bad input in this process)."""

from __future__ import annotations

import csv
import json
import sys

import matplotlib.image
import numpy as np
import pytest
import SimpleITK as sitk
from conftest import CT_ISO, clade_in_process, run_clade

from CLADE.evaluation_figure import figure_pixel_size
from CLADE.geometry import lr_slice_stack, resample_to_isotropic
from CLADE.metrics import psnr, ssim, volume_piqe


def _clade(python_exe, *args):
    assert python_exe == sys.executable  # the interpreter run_clade starts
    return run_clade(*args, timeout=120)


def _evaluate(python_exe, folder, volume, *options):
    """``clade evaluate thick.nrrd VOLUME OPTIONS...`` on the case folder's simulated input."""
    return _clade(python_exe, "evaluate", folder / "thick.nrrd", folder / volume, *options)


def _assert_user_error(result, *words):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert message.startswith("clade: error:") and len(message.splitlines()) == 1
    for word in words:
        assert word in message


@pytest.fixture(scope="module")
def case(test_data, tmp_path_factory):
    """A small real CT (3 mm iso, cropped), its simulated 9 mm slices and a fake 'SR' output."""
    folder = tmp_path_factory.mktemp("evaluate")
    ct = sitk.ReadImage(str(test_data / CT_ISO))
    iso = sitk.RegionOfInterest(ct, [80, 72, 50], [0, 5, 40])  # 50 slices: not a multiple of 3
    sitk.WriteImage(iso, str(folder / "iso.nii.gz"))
    result = _clade(
        sys.executable, "simulate", folder / "iso.nii.gz", folder / "thick.nrrd", "--thickness", 9
    )
    assert result.returncode == 0, result.stderr
    thick = sitk.ReadImage(str(folder / "thick.nrrd"))
    spline = resample_to_isotropic(thick, 2)
    sitk.WriteImage(sitk.UnsharpMask(spline, [1.0, 1.0, 3.0], 1.0), str(folder / "sr.nii.gz"))
    return folder, iso, thick, spline


def test_evaluate_writes_json_report_and_png(case, python_exe):
    folder, iso, thick, spline = case
    assert thick.GetSize() == (80, 72, 16)
    result = _evaluate(
        python_exe,
        folder,
        "sr.nii.gz",
        "--reference",
        folder / "iso.nii.gz",
        "--report",
        folder / "report.json",
        "--figure",
        folder / "figure.png",
    )
    assert result.returncode == 0, result.stderr
    assert "spline" in result.stdout and "cropped" in result.stdout
    report = json.loads((folder / "report.json").read_text())
    assert [row["name"] for row in report["rows"]] == ["spline", "sr", "reference"]
    assert report["columns"] == ["name", "piqe_sagittal", "edge_sharpness", "psnr", "ssim"]
    assert "ssim" in report["conventions"] and report["thick_axis"] == 2

    # The numbers are those of the metrics on the common grid (reference cropped to 48 slices).
    truth = sitk.GetArrayFromImage(iso)[:48].astype(np.float64)
    baseline = sitk.GetArrayFromImage(spline).astype(np.float64)
    row = report["rows"][0]
    assert row["psnr"] == pytest.approx(psnr(truth, baseline), rel=1e-9)
    assert row["ssim"] == pytest.approx(ssim(truth, baseline), rel=1e-9)
    stack = lr_slice_stack(baseline, 0, 2)
    assert row["piqe_sagittal"] == pytest.approx(volume_piqe(stack, 0), abs=1e-9)
    reference_row = report["rows"][2]
    assert reference_row["psnr"] is None
    assert reference_row["piqe_sagittal"] < row["piqe_sagittal"]  # the truth looks sharper
    assert reference_row["edge_sharpness"] > row["edge_sharpness"]

    height, width = matplotlib.image.imread(folder / "figure.png").shape[:2]
    # Columns: the thick input, spline, sr, reference; one sagittal slice of 48 x 72 voxels.
    assert (width, height) == figure_pixel_size(4, [(48, 72)])
    assert width >= 1600


def test_evaluate_csv_both_orientations_and_snr(case, python_exe):
    folder, *_ = case
    result = _evaluate(
        python_exe,
        folder,
        "sr.nii.gz",
        "--orientation",
        "both",
        "--report",
        folder / "report.csv",
        "--figure",
        folder / "both.png",
        "--signal-box",
        "30,30,10,50,50,30",
        "--background-box",
        "0,0,0,10,10,10",
    )
    assert result.returncode == 0, result.stderr
    with open(folder / "report.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["name"] for row in rows] == ["spline", "sr"]
    assert {"piqe_sagittal", "piqe_coronal", "piqe_mean", "snr"} <= set(rows[0])
    height, width = matplotlib.image.imread(folder / "both.png").shape[:2]
    assert (width, height) == figure_pixel_size(3, [(48, 72), (48, 80)])


def test_volume_on_another_grid_is_refused_unless_resampled(case, python_exe):
    folder, *_ = case
    result = _evaluate(python_exe, folder, "thick.nrrd", "--reference", folder / "iso.nii.gz")
    _assert_user_error(result, "different grid", "--resample-to-reference")
    result = _evaluate(
        python_exe,
        folder,
        "thick.nrrd",
        "--reference",
        folder / "iso.nii.gz",
        "--resample-to-reference",
    )
    assert result.returncode == 0, result.stderr
    assert "resampled" in result.stdout


def test_bad_inputs_are_one_sentence_errors(case):
    # The commands' answers, in this process (the other tests run them as subprocesses).
    folder, *_ = case
    thick = folder / "thick.nrrd"
    # A thick volume is no isotropic reference.
    result = clade_in_process("evaluate", thick, folder / "sr.nii.gz", "--reference", thick)
    _assert_user_error(result, "not isotropic")
    result = clade_in_process(
        "evaluate", thick, folder / "sr.nii.gz", "--report", folder / "report.txt"
    )
    _assert_user_error(result, ".json or .csv")
    result = clade_in_process(
        "simulate", folder / "iso.nii.gz", folder / "bad.nrrd", "--thickness", 2
    )
    _assert_user_error(result, "not larger than the isotropic spacing")
    assert not (folder / "bad.nrrd").exists()
