"""`clade super-resolve`: the main job as a real subprocess, every bad input (in this process)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import CT_NATIVE, clade_in_process, make_volume, run_clade

from CLADE.model_file import build_generator, make_metadata, save_model


def clade(*args, cwd=None):
    return run_clade(*args, cwd=cwd, timeout=600)


def super_resolve(source, out, model, *options):
    """``clade super-resolve SOURCE OUT --model MODEL OPTIONS...``."""
    return clade("super-resolve", source, out, "--model", model, *options)


def super_resolve_here(source, out, model, *options):
    """The same command run in this process (``conftest.clade_in_process``): for the tests of
    its answers, where the process boundary is not what is tested."""
    return clade_in_process("super-resolve", source, out, "--model", model, *options)


@pytest.fixture(scope="module")
def small_volume(tmp_path_factory):
    path = tmp_path_factory.mktemp("input") / "thick.nrrd"
    image = make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0), origin=(3.0, -2.0, 10.0))
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(path))
    return path


def _assert_user_error(result, *phrases):
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    # "clade: error: ..." from the command, "clade super-resolve: error: ..." from the parser.
    assert message.startswith("clade") and ": error: " in message
    for phrase in phrases:
        assert phrase in message


def test_real_ct_volume_end_to_end(test_data, tmp_path, tiny_model_path):
    source = test_data / CT_NATIVE  # 256 x 256 x 20, int16 HU
    source_bytes = source.read_bytes()
    out = tmp_path / "iso.nii.gz"
    result = super_resolve(source, out, tiny_model_path, "--stride", "32", "--output-type", "input")
    assert result.returncode == 0, result.stderr
    assert "random (untrained) weights" in result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert "256x256x20" in summary and "patches (stride 32)" in summary
    assert "Mvoxel/s on cpu" in summary
    image, output = sitk.ReadImage(str(source)), sitk.ReadImage(str(out))
    assert output.GetPixelID() == image.GetPixelID()  # cast back to int16
    assert output.GetSize()[:2] == image.GetSize()[:2]
    assert output.GetSpacing()[2] == pytest.approx(image.GetSpacing()[0], rel=0.02)
    extent_in = image.GetSize()[2] * image.GetSpacing()[2]
    assert output.GetSize()[2] * output.GetSpacing()[2] == pytest.approx(extent_in)
    assert output.GetDirection() == pytest.approx(image.GetDirection())
    assert source.read_bytes() == source_bytes
    assert [p.name for p in tmp_path.iterdir()] == ["iso.nii.gz"]  # no temporary left over


def test_dicom_folder_input(tmp_path, tiny_model_path):
    image = sitk.Cast(make_volume(size=(36, 34, 5), spacing=(0.9, 0.9, 3.0)), sitk.sitkInt16)
    folder = tmp_path / "dicom"
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        piece = image[:, :, k]
        position = image.TransformIndexToPhysicalPoint((0, 0, k))
        for tag, value in (
            ("0020|000e", "1.2.826.0.1.3680043.2.1125.1"),
            ("0020|000d", "1.2.826.0.1.3680043.2.1125.2"),
            ("0020|0032", "\\".join(map(str, position))),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
            ("0018|0050", "3.0"),
            ("0020|0013", str(k + 1)),
            ("0008|0060", "MR"),
        ):
            piece.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(piece)
    out = tmp_path / "iso.mha"
    result = super_resolve(folder, out, tiny_model_path, "--quiet")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert sitk.ReadImage(str(out)).GetSize() == (36, 34, 17)


def test_version_help_and_module_entry_agree():
    version = clade("--version")
    assert version.returncode == 0 and version.stdout.startswith("clade 0.")
    help_text = clade("super-resolve", "--help").stdout
    for option in (
        "--model",
        "--stride",
        "--plane",
        "--thick-axis",
        "--device",
        "--batch-size",
        "--quiet",
    ):
        assert option in help_text
    script = shutil.which("clade", path=os.path.dirname(sys.executable))
    assert script, "the clade console script is not installed"
    assert (
        subprocess.run(
            [script, "--version"], capture_output=True, text=True, encoding="utf-8"
        ).stdout
        == version.stdout
    )


def _write(path, array, spacing=(1.0, 1.0, 4.0)):
    image = sitk.GetImageFromArray(array)
    if image.GetDimension() == 3:
        image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path))
    return path


def test_bad_inputs_fail_with_one_sentence(tmp_path, small_volume, tiny_model_path):
    out = tmp_path / "out.nrrd"
    cases = [
        ((tmp_path / "missing.nrrd", out), ["does not exist"]),
        ((_text_file(tmp_path / "notes.nrrd"), out), ["not an image"]),
        ((_write(tmp_path / "flat.png", np.zeros((20, 20), np.uint8)), out), ["2D image"]),
        ((_write(tmp_path / "vector.nrrd", np.zeros((5, 20, 20, 3), np.float32)), out), ["vector"]),
        ((_write(tmp_path / "nan.nrrd", np.full((5, 20, 20), np.nan, np.float32)), out), ["NaN"]),
        (
            (_write(tmp_path / "iso.nrrd", np.zeros((20, 20, 20), np.float32), (1, 1, 1)), out),
            ["already nearly isotropic"],
        ),
        ((_write(tmp_path / "small.nrrd", np.ones((5, 4, 4), np.float32)), out), ["too small"]),
        ((small_volume, small_volume), ["is the input"]),
        ((small_volume, tmp_path / "no-dir" / "out.nrrd"), ["does not exist"]),
        ((small_volume, tmp_path / "out.xyz"), ["Cannot tell the format"]),
    ]
    for (source, target), phrases in cases:
        result = super_resolve_here(source, target, tiny_model_path)
        _assert_user_error(result, *phrases)
        assert not out.exists()


def test_4d_series_is_refused(tmp_path, tiny_model_path):
    image = sitk.JoinSeries([make_volume(size=(20, 20, 5)), make_volume(size=(20, 20, 5))])
    path = tmp_path / "series.nii.gz"
    sitk.WriteImage(image, str(path))
    _assert_user_error(
        super_resolve_here(path, tmp_path / "o.nrrd", tiny_model_path),
        "4 dimensions",
    )


def _text_file(path):
    path.write_text("not an image at all")
    return path


def test_output_that_cannot_be_written(tmp_path, small_volume, tiny_model_path):
    # Tests may run as root, who can write into any folder whatever its mode, so the
    # "cannot be written" cases here are ones that fail for root too.
    taken = tmp_path / "taken.nrrd"
    taken.mkdir()
    _assert_user_error(super_resolve_here(small_volume, taken, tiny_model_path), "is a folder")
    assert list(taken.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken.nrrd"]


def test_unwritable_output_folder_via_file_as_folder(tmp_path, small_volume, tiny_model_path):
    # Works as root too: a path whose parent is a regular file can never be written.
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    _assert_user_error(
        super_resolve_here(small_volume, blocker / "o.nrrd", tiny_model_path),
        "does not exist",
    )


def test_bad_models_fail_with_one_sentence(tmp_path, small_volume):
    out = tmp_path / "out.nrrd"
    _assert_user_error(super_resolve_here(small_volume, out, "nonexistent"), "Unknown model")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"PK\x03\x04 garbage")
    _assert_user_error(super_resolve_here(small_volume, out, corrupt), "corrupt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    _assert_user_error(super_resolve_here(small_volume, out, foreign), "not a CLADE model file")
    meta = make_metadata("m", "MR", base_filters=4, n_blocks=1)
    mismatched = save_model(tmp_path / "mismatch.pt", build_generator(meta), meta)
    record = torch.load(mismatched, weights_only=True)
    record["metadata"]["architecture"]["n_blocks"] = 3
    torch.save(record, mismatched)
    _assert_user_error(super_resolve_here(small_volume, out, mismatched), "do not match")
    assert not out.exists()


def test_adapt_option_fine_tunes_first_and_keeps_the_grid(test_data, tmp_path, tiny_model_path):
    source = tmp_path / "ct.nrrd"
    image = sitk.ReadImage(str(test_data / CT_NATIVE))
    sitk.WriteImage(image[100:196, 72:168, :], str(source))
    plain, adapted = tmp_path / "plain.nrrd", tmp_path / "adapted.nrrd"
    assert (
        super_resolve_here(
            source, plain, tiny_model_path, "--stride", "16", "--adapt", "0", "--quiet"
        ).returncode
        == 0
    )
    result = super_resolve_here(source, adapted, tiny_model_path, "--stride", "16", "--adapt", "20")
    assert result.returncode == 0, result.stderr
    assert "adapted to this volume: 20 steps" in result.stderr
    assert "adapt:" in result.stderr  # the progress bar of the adaptation stage
    a, b = sitk.ReadImage(str(plain)), sitk.ReadImage(str(adapted))
    assert (a.GetSize(), a.GetOrigin(), a.GetSpacing(), a.GetDirection()) == (
        b.GetSize(),
        b.GetOrigin(),
        b.GetSpacing(),
        b.GetDirection(),
    )
    if "adapted model used" in result.stderr:
        assert not np.array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    else:
        np.testing.assert_array_equal(sitk.GetArrayFromImage(a), sitk.GetArrayFromImage(b))
    bad = super_resolve_here(source, tmp_path / "x.nrrd", tiny_model_path, "--adapt", "-3")
    _assert_user_error(bad, "--adapt", "expected auto or a whole number of at least 0")
    assert not (tmp_path / "x.nrrd").exists()


def test_a_run_too_large_for_memory_is_refused_before_any_work(tmp_path, tiny_model_path):
    # 512 x 512 x 200 at 50 mm becomes 512 x 512 x 14286 at 0.7 mm: 3.7 G voxels, ~33 GB.
    image = sitk.Image([512, 512, 200], sitk.sitkInt16)
    image.SetSpacing((0.7, 0.7, 50.0))
    source = tmp_path / "huge_spacing.nrrd"
    sitk.WriteImage(image, str(source), useCompression=True)
    result = super_resolve_here(source, tmp_path / "out.nrrd", tiny_model_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert "512x512x14286 voxels" in message and "of memory" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge_spacing.nrrd"]


def test_the_work_is_printed_before_a_run(caplog):
    # The long-run warning of a running stage: Testing/test_progress_eta.py.
    import logging

    from CLADE.workload import estimate_work

    image = sitk.Image([512, 512, 83], sitk.sitkInt16)
    image.SetSpacing((0.7, 0.7, 50.0))
    work = estimate_work(image, 2)
    with caplog.at_level(logging.INFO, logger="CLADE"):
        work.check(logging.getLogger("CLADE"), available=64 * 2**30)
    messages = [record.getMessage() for record in caplog.records]
    assert any("large run" in m and "512x512x5929" in m for m in messages)
