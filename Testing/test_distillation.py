"""Distilled students (issue 27): the cost count, the teacher's whole-slice pairs, the fit, and
the shipped students' place in the manifest and ``clade models``."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import BRAIN2, CT_ISO, clade_in_process
from torch.utils.flop_counter import FlopCounterMode

from CLADE.device import resolve_device
from CLADE.inference import GeneratorRunner, StackInference
from CLADE.model_file import LoadedModel, build_generator, make_metadata
from CLADE.network_cost import generator_flops_per_voxel
from CLADE.networks import ResnetGenerator
from CLADE.registry import read_manifest
from CLADE.slice_sampling import PreparedVolume, prepare_volume
from CLADE.training.distillation import PairSampler, SlicePairs, distil, teacher_pairs


@pytest.mark.parametrize(
    "architecture",
    [
        {"base_filters": 64, "n_blocks": 6, "upsample": "transpose"},
        {"base_filters": 64, "n_blocks": 6, "upsample": "resize"},
        {"base_filters": 32, "n_blocks": 6, "upsample": "transpose"},
        {"base_filters": 12, "n_blocks": 2, "upsample": "resize"},
    ],
)
def test_the_cost_count_matches_torchs_flop_counter(architecture):
    network = ResnetGenerator(**architecture, residual=True).eval()
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        network(torch.zeros(1, 1, 64, 48))
    counted = counter.get_total_flops() / (64 * 48)
    assert generator_flops_per_voxel(architecture) == pytest.approx(counted, rel=1e-6)


def test_teacher_pairs_hold_the_teachers_own_answers_on_whole_slices(test_data):
    torch.manual_seed(0)
    meta = make_metadata("teacher", "MR", base_filters=4, n_blocks=1, residual=True)
    teacher = LoadedModel(build_generator(meta).eval(), meta)
    engine = StackInference(GeneratorRunner(teacher, resolve_device("cpu")), "slices")
    volume = prepare_volume(sitk.ReadImage(str(test_data / BRAIN2))[:64, :64, :], "brain")
    pairs = teacher_pairs(volume, engine.run, np.random.default_rng(0), max_slices=6)
    lr, hr = pairs[0], pairs[-1]
    assert lr.truth is None and hr.truth is not None
    assert lr.inputs.shape[0] == 6 and lr.inputs.shape[1] == volume.array.shape[0]  # thick rows
    # The targets are the teacher run on exactly those inputs (float16 storage aside).
    again = engine.run(lr.inputs.astype(np.float32))
    np.testing.assert_allclose(lr.targets, again, atol=2e-3)
    # The degraded HR inputs are blurred versions of their sharp slices, not the slices.
    assert np.abs(hr.inputs.astype(np.float32) - hr.truth.astype(np.float32)).mean() > 1e-3


def test_a_student_learns_its_teachers_function():
    torch.manual_seed(0)
    teacher = ResnetGenerator(base_filters=8, n_blocks=1, residual=True).eval()
    rng = np.random.default_rng(0)
    smooth = np.cumsum(np.cumsum(rng.normal(size=(6, 48, 48)), 1), 2)
    inputs = (smooth / np.abs(smooth).max()).astype(np.float32)
    with torch.no_grad():
        targets = teacher(torch.from_numpy(inputs)[:, None])[:, 0].numpy()
    pairs = [SlicePairs(inputs.astype(np.float16), targets.astype(np.float16))]
    student = ResnetGenerator(base_filters=4, n_blocks=1, residual=True)

    def gap() -> float:
        with torch.no_grad():
            y = student.eval()(torch.from_numpy(inputs)[:, None])[:, 0].numpy()
        return float(np.abs(y - targets).mean())

    before = gap()
    reports = []
    distil(student, PairSampler(pairs, 32, rng), 150, 4, 2e-3, on_report=reports.append)
    assert [r.step for r in reports] == [100, 150]
    assert gap() < 0.5 * before


def test_the_sampler_keeps_to_foreground_and_skips_too_small_stacks():
    dark = np.full((3, 40, 40), -1.0, np.float16)
    bright = dark.copy()
    bright[:, :, :20] = 0.5  # half the slice is foreground
    small = SlicePairs(np.zeros((2, 10, 10), np.float16), np.zeros((2, 10, 10), np.float16))
    sampler = PairSampler([SlicePairs(bright, bright), small], 16, np.random.default_rng(0))
    assert len(sampler.pairs) == 1
    x, _, _, _ = sampler.batch(20)
    assert all(float((patch > -0.9).float().mean()) >= 0.25 for patch in x)
    with pytest.raises(ValueError, match="smaller patch"):
        PairSampler([small], 16, np.random.default_rng(0))


def test_clade_models_states_each_models_cost_from_its_manifest_record():
    result = clade_in_process("models")
    assert result.returncode == 0
    entries = {e["name"]: e for e in read_manifest()}
    for name, entry in entries.items():
        flops = generator_flops_per_voxel(entry["architecture"])
        line = next(line for line in result.stdout.splitlines() if line.startswith(name + " "))
        assert f"{flops / 1e6:.2f} MFLOP/voxel" in line


@pytest.mark.slow
def test_each_modality_has_a_shipped_student_with_three_times_fewer_flops():
    from CLADE.registry import resolve_model

    entries = {e["name"]: e for e in read_manifest()}
    students = [e for e in entries.values() if e.get("distilled_from")]
    assert {e["modality"] for e in students} == {"MR", "CT"}
    for entry in students:
        teacher = entries[entry["distilled_from"]]
        model = resolve_model(entry["name"])
        assert model.metadata["architecture"] == entry["architecture"]
        assert model.metadata["training"]["distilled_from"] == teacher["name"]
        assert teacher["modality"] == entry["modality"]
        fewer = generator_flops_per_voxel(teacher["architecture"]) / generator_flops_per_voxel(
            entry["architecture"]
        )
        assert fewer >= 3.0


def test_prepared_volume_pairs_come_from_every_lr_plane():
    volume = PreparedVolume(np.zeros((40, 36, 34), np.float32), 2, [0, 1], ratio=4.0)
    pairs = teacher_pairs(volume, lambda s: s, np.random.default_rng(0), max_slices=3)
    assert [p.inputs.shape for p in pairs] == [(3, 40, 36), (3, 40, 34), (3, 36, 34)]


def _students() -> list[tuple[str, str, str]]:
    return [
        (e["name"], e["distilled_from"], e["modality"])
        for e in read_manifest()
        if e.get("distilled_from")
    ]


@pytest.mark.slow
@pytest.mark.usefixtures("all_cores")
@pytest.mark.parametrize("student,teacher,modality", _students())
def test_a_shipped_student_adapts_maps_its_error_and_gives_its_teachers_answer(
    tmp_path, test_data, student, teacher, modality
):
    # A real volume of the student's modality through the CLI with adaptation and the error
    # map: the student runs everything its teacher does, and its output lies far closer to the
    # teacher's than the spline does (a student that learnt nothing ties with the spline).
    from CLADE.geometry import resample_to_isotropic
    from CLADE.metrics.reference import psnr
    from CLADE.simulate import simulate_thick_slices

    if modality == "CT":  # a held-out 3 mm CT, simulated at 9 mm
        iso = sitk.ReadImage(str(test_data / CT_ISO), sitk.sitkFloat32)[:64, :64, :]
        thick = simulate_thick_slices(iso, 9.0)
    else:  # a real 6.5 mm brain MRI
        thick = sitk.ReadImage(str(test_data / BRAIN2), sitk.sitkFloat32)[16:80, 16:80, :]
    sitk.WriteImage(thick, str(tmp_path / "thick.nrrd"))
    outputs = {}
    for name in (teacher, student):
        out, error_map = tmp_path / f"{name}.nrrd", tmp_path / f"{name}_map.nrrd"
        result = clade_in_process(
            "super-resolve", tmp_path / "thick.nrrd", out, "--model", name, "--device", "cpu",
            "--adapt", "20", "--error-map", error_map,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert "adapt" in result.stdout.lower() and "error map:" in result.stdout
        outputs[name] = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
        mapped = sitk.GetArrayFromImage(sitk.ReadImage(str(error_map)))
        assert mapped.shape == outputs[name].shape and float(mapped.max()) > 0
    spline = sitk.GetArrayFromImage(resample_to_isotropic(thick, 2))
    answer = outputs[teacher]
    # Measured: +6.2 dB (ct) and +7.3 dB (mri, then named mri-fast) closer to the teacher than
    # the spline is.
    assert psnr(answer, outputs[student]) > psnr(answer, spline) + 3.0


@pytest.mark.slow
@pytest.mark.usefixtures("all_cores")
def test_the_students_run_in_a_cohort_and_in_the_slicer_cli_module(tmp_path, test_data):
    from conftest import CT_NATIVE, run_python
    from test_slicer_cli import SCRIPT

    brain = sitk.ReadImage(str(test_data / BRAIN2))
    for index, corner in enumerate((0, 40)):
        sitk.WriteImage(brain[corner : corner + 40, 20:60, :], str(tmp_path / f"b{index}.nrrd"))
    result = clade_in_process(
        "super-resolve", tmp_path / "b0.nrrd", tmp_path / "b1.nrrd", "--out-dir", tmp_path / "iso",
        "--model", "mri", "--device", "cpu", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    for index in range(2):
        out = sitk.ReadImage(str(tmp_path / "iso" / f"b{index}_clade.nrrd"))
        assert out.GetSize()[:2] == (40, 40) and out.GetSize()[2] > 2 * brain.GetSize()[2]
    ct = tmp_path / "ct.nrrd"
    sitk.WriteImage(sitk.ReadImage(str(test_data / CT_NATIVE))[100:140, 72:112, :], str(ct))
    result = run_python(
        SCRIPT, "--model", "ct", "--device", "cpu", ct, tmp_path / "ct_iso.nrrd", timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert sitk.ReadImage(str(tmp_path / "ct_iso.nrrd")).GetSize()[:2] == (40, 40)
