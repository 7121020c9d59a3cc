"""The one pipeline: whole-slice tiling, flips ensemble, precision, streaming, stages, cancel."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import PELVIS, make_volume
from helpers import known_model

from CLADE import pipeline, progress
from CLADE.device import cpu_has_fast_bfloat16, resolve_device
from CLADE.errors import Cancelled, CladeError
from CLADE.geometry import resample_to_isotropic
from CLADE.inference import GeneratorRunner, StackInference
from CLADE.metrics.reference import psnr
from CLADE.model_file import LoadedModel, build_generator, make_metadata
from CLADE.pipeline import SuperResolutionRequest, run, super_resolve, super_resolve_file
from CLADE.registry import resolve_model


def spline_of(image):
    return sitk.GetArrayFromImage(resample_to_isotropic(image, 2))


@pytest.mark.parametrize("ensemble", ["none", "flips2", "flips"])
def test_whole_slices_of_an_identity_network_return_the_spline_volume(ensemble):
    image = make_volume(size=(45, 38, 7), spacing=(0.8, 0.8, 3.3))
    result = super_resolve(image, known_model(), tiling="slices", ensemble=ensemble, device="cpu")
    assert result.stats["tiling"] == "slices" and result.stats["ensemble"] == ensemble
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.image), spline_of(image), atol=1e-3)


@pytest.mark.parametrize("plane", ["auto", "coronal", "both"])
def test_whole_slices_of_a_constant_network_add_exactly_that_constant(plane):
    image = make_volume(size=(45, 38, 7), spacing=(0.8, 0.8, 3.3))
    # 0.1 in normalised units is 0.1 * (5000 - -5000) / 2 = 500 in image units.
    result = super_resolve(image, known_model(0.1), tiling="slices", plane=plane, device="cpu")
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(result.image), spline_of(image) + 500.0, atol=1e-2
    )


def _real_stack(test_data, slices=1):
    """Normalised sagittal LR slices of the real pelvic T2 volume on its isotropic grid."""
    image = sitk.ReadImage(str(test_data / PELVIS))  # x 120-151 of the 384 x 384 x 19 volume
    image = image[30 : 30 + slices, :, :]
    volume = spline_of(image)
    low, high = np.percentile(volume, [0.5, 99.5])
    normalised = np.clip((volume - low) / (high - low) * 2 - 1, -1, 1).astype(np.float32)
    return np.ascontiguousarray(np.transpose(normalised, (2, 0, 1)))  # (x, z, y)


def test_tiles_with_a_receptive_field_halo_equal_whole_slices_on_a_real_volume(
    test_data, all_cores
):
    stack = _real_stack(test_data)
    assert stack.shape[1:] == (114, 384)
    runner = GeneratorRunner(resolve_model("mri"), resolve_device("cpu"))
    whole = StackInference(runner, "slices").run(stack)
    tiled_engine = StackInference(runner, "slices")
    tiled_engine.max_pixels = 200 * 200  # forces 2 x 6 tiles (cores of 72, halo 64)
    tiled = tiled_engine.run(stack)
    assert np.abs(whole - stack).max() > 0.05  # the network changes the slice
    np.testing.assert_allclose(tiled, whole, atol=2e-4)


@pytest.mark.skipif(not cpu_has_fast_bfloat16(), reason="this CPU has no fast bfloat16")
def test_bfloat16_output_stays_within_45_db_of_float32_on_a_real_volume(test_data, all_cores):
    image = sitk.ReadImage(str(test_data / PELVIS))
    image = image[0:16, 80:240, :]
    model = resolve_model("mri")
    outputs = {
        precision: sitk.GetArrayFromImage(
            super_resolve(image, model, precision=precision, device="cpu").image
        )
        for precision in ("float32", "bfloat16")
    }
    assert psnr(outputs["float32"], outputs["bfloat16"]) >= 45.0


def test_bfloat16_on_a_cpu_without_it_is_a_clear_error(monkeypatch):
    monkeypatch.setattr("CLADE.device.cpu_has_fast_bfloat16", lambda: False)
    with pytest.raises(CladeError, match="no bfloat16 instructions"):
        resolve_device("cpu", "bfloat16")
    assert resolve_device("cpu", "auto").precision == "float32"


def test_a_stride_with_whole_slices_is_refused_and_alone_means_patches():
    image = make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0))
    with pytest.raises(CladeError, match="--stride applies to --tiling patches only"):
        super_resolve(image, known_model(), tiling="slices", stride=8, device="cpu")
    assert super_resolve(image, known_model(), stride=8, device="cpu").stats["tiling"] == "patches"


def test_streaming_by_slabs_does_not_change_the_result(monkeypatch):
    torch.manual_seed(3)
    meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1)
    model = LoadedModel(build_generator(meta).eval(), meta)
    image = make_volume(size=(44, 40, 8), spacing=(1.0, 1.0, 4.0))
    whole = sitk.GetArrayFromImage(super_resolve(image, model, device="cpu").image)
    monkeypatch.setattr(pipeline, "SLAB_VOXELS", 5000)  # many slabs of a few slices
    slabs = sitk.GetArrayFromImage(super_resolve(image, model, device="cpu").image)
    np.testing.assert_allclose(slabs, whole, atol=1e-3)


def test_stages_come_in_order_and_the_fraction_rises_to_one(tmp_path):
    image = make_volume(size=(40, 36, 6), spacing=(1.0, 1.0, 4.0))
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(image, str(source))
    reports = []
    super_resolve_file(
        source,
        tmp_path / "out.nrrd",
        SuperResolutionRequest(model=known_model(), device="cpu"),
        progress=reports.append,
    )
    stages = [r.stage for r in reports]
    assert stages == sorted(stages, key=progress.STAGES.index)
    assert set(stages) == {"resample", "infer", "write"}
    fractions = [r.fraction for r in reports]
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)


@pytest.mark.parametrize("stage", ["resample", "adapt", "infer", "write"])
def test_cancel_during_each_stage_writes_nothing(tmp_path, stage):
    meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, residual=True)
    model = LoadedModel(build_generator(meta).eval(), meta)
    image = make_volume(size=(48, 48, 10), spacing=(1.0, 1.0, 4.0))
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(image, str(source))
    before = source.read_bytes()
    seen = []
    request = SuperResolutionRequest(model=model, device="cpu", adapt_steps=3)
    with pytest.raises(Cancelled):
        super_resolve_file(
            source,
            tmp_path / "out.nrrd",
            request,
            progress=lambda info: seen.append(info.stage),
            cancel=lambda: stage in seen,
        )
    assert stage in seen
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]  # no output, no temporary
    assert source.read_bytes() == before


def test_adaptation_shares_the_one_resampling_and_matches_adapting_alone(monkeypatch):
    from CLADE.adaptation import adapt_to_volume

    meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, residual=True)
    model = LoadedModel(build_generator(meta).eval(), meta)
    image = make_volume(size=(48, 48, 10), spacing=(1.0, 1.0, 4.0))
    calls = []
    original = pipeline.resample_to_isotropic_array
    monkeypatch.setattr(
        pipeline,
        "resample_to_isotropic_array",
        lambda *a, **k: calls.append(1) or original(*a, **k),
    )
    result = run(image, SuperResolutionRequest(model=model, device="cpu", adapt_steps=4))
    alone = adapt_to_volume(image, model, steps=4, device="cpu")
    assert len(calls) == 1
    assert result.adaptation.error_after == pytest.approx(alone.error_after, rel=1e-5)
    assert result.stats["adapted"] == alone.improved


def test_inference_imports_nothing_from_training(python_exe):
    import subprocess

    code = (
        "import sys, CLADE.pipeline, CLADE.adaptation, CLADE.cli.super_resolve, CLADE.cohort;"
        "bad = [m for m in sys.modules if m.startswith('CLADE.training')];"
        "assert not bad, bad"
    )
    completed = subprocess.run([python_exe, "-c", code], capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
