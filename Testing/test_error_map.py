"""The error map (issue 23): the estimator's calibration where the true error is known, and the
map reaching the Python API, ``clade super-resolve`` (one volume and a cohort) and the Slicer CLI
module, always on the output's grid."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from conftest import clade_in_process, make_volume, run_clade, run_python
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

from CLADE.error_map import ErrorRegressor, thick_phase
from CLADE.model_file import LoadedModel, make_metadata
from CLADE.pipeline import SuperResolutionRequest, run
from CLADE.simulate import simulate_thick_slices


def same_grid(a: sitk.Image, b: sitk.Image) -> None:
    assert a.GetSize() == b.GetSize()
    assert a.GetSpacing() == pytest.approx(b.GetSpacing())
    assert a.GetOrigin() == pytest.approx(b.GetOrigin())
    assert a.GetDirection() == pytest.approx(b.GetDirection())


def identity_model(modality="MR") -> LoadedModel:
    return LoadedModel(torch.nn.Identity(), make_metadata("identity", modality))


def test_thick_phase_is_zero_on_the_acquired_slice_centres():
    # On a ratio-4 grid, thick slice k is centred between output rows 4k+1 and 4k+2.
    phase = thick_phase(8, 4.0)
    assert phase.tolist() == pytest.approx([0.375, 0.125, 0.125, 0.375] * 2)
    assert thick_phase(9, 3.0)[[1, 4, 7]].tolist() == [0.0, 0.0, 0.0]


def test_regressor_predicts_the_conditional_mean_error():
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, (6000, 2)).astype(np.float32)
    # Errors with a known mean 0.1 + x0 and noise around it: the fit must recover the mean.
    y = (0.1 + x[:, 0]) * rng.exponential(1.0, len(x)).astype(np.float32)
    predicted = ErrorRegressor(steps=300).fit(x, y).predict(x)
    truth = 0.1 + x[:, 0]
    assert np.abs(predicted - truth).mean() < 0.08
    assert predicted.mean() == pytest.approx(truth.mean(), rel=0.1)


def test_map_is_calibrated_where_the_true_error_is_known():
    """An identity network leaves the spline, whose error against the isotropic truth is known;
    the volume is statistically isotropic, so what its in-plane slices teach holds through-plane."""
    rng = np.random.default_rng(0)
    # Texture whose contrast grows from left to right: the error does too, visibly to the map.
    envelope = np.linspace(0.1, 1.0, 48)[None, None, :]
    truth_array = gaussian_filter(rng.normal(size=(64, 48, 48)), 1.2) * 300 * envelope + 100
    truth = sitk.GetImageFromArray(truth_array.astype(np.float32))
    thick = simulate_thick_slices(truth, 4.0, None, 2, "gaussian")
    result = run(
        thick, SuperResolutionRequest(model=identity_model(), device="cpu", error_map=True)
    )
    predicted = sitk.GetArrayFromImage(result.error_map)
    error = np.abs(sitk.GetArrayFromImage(result.image) - truth_array[: predicted.shape[0]])
    inner = (slice(4, -4), slice(4, -4), slice(4, -4))  # leave out the mirrored borders
    predicted, error = predicted[inner].ravel(), error[inner].ravel()
    assert predicted.mean() == pytest.approx(error.mean(), rel=0.3)
    assert spearmanr(predicted, error).statistic > 0.3
    # Deciles of the map: the mean actual error rises with the prediction and stays within 1.5x.
    order = np.argsort(predicted)
    means = [(predicted[p].mean(), error[p].mean()) for p in np.array_split(order, 5)]
    assert [a for _, a in means] == sorted(a for _, a in means)
    assert all(1 / 1.5 < p / a < 1.5 for p, a in means)


def test_map_counts_the_noise_the_thick_slices_averaged_away():
    """The truth's white noise is averaged down in the thick slices, so the in-plane pairs (whose
    targets are thick-volume slices) under-see it; the noise floor gives it back. Without it the
    flattest fifth of this volume was predicted at 0.59 of its error."""
    rng = np.random.default_rng(0)
    envelope = np.linspace(0.0, 1.0, 48)[None, None, :]  # from flat (noise only) to textured
    texture = gaussian_filter(rng.normal(size=(64, 48, 48)), 1.2) * 300 * envelope + 100
    truth_array = texture + rng.normal(0, 10.0, texture.shape)
    thick = simulate_thick_slices(sitk.GetImageFromArray(truth_array.astype(np.float32)), 4.0)
    result = run(
        thick, SuperResolutionRequest(model=identity_model(), device="cpu", error_map=True)
    )
    predicted = sitk.GetArrayFromImage(result.error_map)
    error = np.abs(sitk.GetArrayFromImage(result.image) - truth_array[: predicted.shape[0]])
    inner = (slice(4, -4), slice(4, -4), slice(4, -4))
    predicted, error = predicted[inner].ravel(), error[inner].ravel()
    order = np.argsort(predicted)
    ratios = [predicted[p].mean() / error[p].mean() for p in np.array_split(order, 5)]
    assert all(0.8 < r < 1.3 for r in ratios), ratios
    # The floor itself: noise 10 at a ratio of 4 leaves 10 * 0.41 in the thick slices; the rest,
    # as a mean absolute value, is 0.80 * 10 * sqrt(1 - 0.41**2) = 7.3.
    floor = result.stats["error_map"]["noise_floor"]
    assert floor == pytest.approx(7.3, rel=0.1)
    assert float(sitk.GetArrayViewFromImage(result.error_map).min()) >= floor * (1 - 1e-5)
    assert f"never below {floor:.3g} (the noise thin slices would hold" in result.summary()


def test_python_api_gives_the_map_on_the_output_grid_and_leaves_the_output_alone(
    tiny_model_path,
):
    image = make_volume(
        size=(40, 36, 8), origin=(3.0, -2.0, 10.0), direction=(-1, 0, 0, 0, 1, 0, 0, 0, 1)
    )
    request = SuperResolutionRequest(model=str(tiny_model_path), device="cpu")
    plain = run(image, request)
    assert plain.error_map is None and plain.stats["error_map"] is None
    mapped = run(image, SuperResolutionRequest(**{**request.__dict__, "error_map": True}))
    same_grid(mapped.error_map, mapped.image)
    assert mapped.error_map.GetPixelID() == sitk.sitkFloat32
    array = sitk.GetArrayFromImage(mapped.error_map)
    assert array.min() >= 0 and array.max() > 0
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(mapped.image), sitk.GetArrayFromImage(plain.image)
    )
    stats = mapped.stats["error_map"]
    assert 0.0 <= stats["flagged_fraction"] <= 1.0
    assert f"of the foreground estimated above {stats['level']:.3g}" in mapped.summary()


def test_cli_writes_the_map_beside_the_output(tmp_path, tiny_model_path):
    source = tmp_path / "in.nrrd"
    sitk.WriteImage(make_volume(size=(36, 34, 6)), str(source))
    out = tmp_path / "out.nii.gz"
    result = run_clade(
        "super-resolve", source, out, "--model", tiny_model_path, "--device", "cpu",
        "--error-map", tmp_path / "map.nrrd",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "error map:" in result.stdout and "of the foreground estimated above" in result.stdout
    same_grid(sitk.ReadImage(str(tmp_path / "map.nrrd")), sitk.ReadImage(str(out)))


def test_error_map_without_a_file_name_goes_beside_the_output():
    from CLADE.cli.super_resolve import _error_map_path

    assert _error_map_path(None, "out/b.nii.gz") is None
    assert _error_map_path("m.nrrd", "out/b.nii.gz") == "m.nrrd"
    assert _error_map_path("", "out/b.nii.gz").as_posix() == "out/b_error.nii.gz"


def test_cohort_writes_one_map_per_input_and_refuses_a_map_file_name(tmp_path, tiny_model_path):
    folder = tmp_path / "cohort"
    folder.mkdir()
    for index, name in enumerate(("a.nrrd", "b.nii.gz")):
        sitk.WriteImage(make_volume(size=(36, 34, 5), seed=index), str(folder / name))
    out = tmp_path / "out"
    common = ("--model", tiny_model_path, "--device", "cpu", "--out-dir", out)
    result = clade_in_process("super-resolve", folder, *common, "--error-map")
    assert result.returncode == 0, result.stderr
    for name in ("a_clade.nrrd", "b_clade.nii.gz"):
        error_name = name.replace("_clade", "_clade_error")
        same_grid(sitk.ReadImage(str(out / error_name)), sitk.ReadImage(str(out / name)))
    refused = clade_in_process("super-resolve", folder, *common, "--error-map", tmp_path / "m.nrrd")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "takes no file name" in refused.stderr


def test_slicer_cli_module_writes_the_optional_map(tmp_path, tiny_model_path):
    from test_slicer_cli import SCRIPT, makeThickFile

    makeThickFile(tmp_path / "in.nrrd")
    files = (tmp_path / "in.nrrd", tmp_path / "out.nrrd")
    result = run_python(
        SCRIPT, "--model", tiny_model_path, "--device", "cpu",
        "--errorMap", tmp_path / "map.nrrd", *files, timeout=180,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    same_grid(sitk.ReadImage(str(tmp_path / "map.nrrd")), sitk.ReadImage(str(files[1])))


def test_evaluate_figure_shows_the_map_beside_the_true_error(tmp_path, tiny_model_path):
    import matplotlib.image

    from CLADE.evaluation_figure import figure_pixel_size

    truth = make_volume(size=(40, 36, 32), spacing=(1.0, 1.0, 1.0))
    thick = simulate_thick_slices(truth, 4.0, None, 2, "gaussian")
    result = run(thick, SuperResolutionRequest(model=str(tiny_model_path), error_map=True))
    paths = {name: tmp_path / f"{name}.nrrd" for name in ("thick", "sr", "truth", "map")}
    for name, image in zip(paths, (thick, result.image, truth, result.error_map)):
        sitk.WriteImage(image, str(paths[name]))
    figure = tmp_path / "figure.png"
    done = clade_in_process(
        "evaluate", paths["thick"], paths["sr"], "--reference", paths["truth"],
        "--error-map", paths["map"], "--figure", figure,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    picture = matplotlib.image.imread(figure)
    # Input, spline, SR, reference; one sagittal slice (32 rows along z, 36 along y), and the
    # error row under them: the map under the SR column, the true error under the reference.
    assert picture.shape[1::-1] == figure_pixel_size(4, [(32, 36)], error_rows=True)
    rgb = picture[..., :3]
    coloured = (rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.2  # inferno, not grey or white
    height = picture.shape[0]
    assert coloured[int(height * 0.75) :].mean() > 10 * coloured[: int(height * 0.5)].mean()
    refused = clade_in_process("evaluate", paths["thick"], paths["sr"], "--error-map", paths["map"])
    assert refused.returncode == 2 and "add --figure" in refused.stderr


def test_a_map_path_equal_to_the_output_is_refused_before_any_work(tmp_path, tiny_model_path):
    from CLADE.errors import CladeError
    from CLADE.pipeline import super_resolve_file

    source = tmp_path / "in.nrrd"
    sitk.WriteImage(make_volume(size=(36, 34, 6)), str(source))
    request = SuperResolutionRequest(model=str(tiny_model_path), device="cpu")
    with pytest.raises(CladeError, match="would both be written"):
        super_resolve_file(source, tmp_path / "o.nrrd", request, error_map_path=tmp_path / "o.nrrd")
    with pytest.raises(CladeError, match="is the input"):
        super_resolve_file(source, tmp_path / "o.nrrd", request, error_map_path=source)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.nrrd"]


def test_a_cohort_rerun_in_its_own_folder_never_reads_earlier_maps_as_inputs(tmp_path):
    from CLADE.cohort import plan_cohort

    for name in ("a.nii.gz", "a_clade.nii.gz", "a_clade_error.nii.gz"):
        sitk.WriteImage(make_volume(size=(8, 8, 4)), str(tmp_path / name))
    items = plan_cohort([tmp_path], tmp_path, error_maps=True)
    assert [item.source.name for item in items] == ["a.nii.gz"]


def test_a_cohort_map_over_a_file_an_input_reads_is_refused_before_any_work(tmp_path):
    from CLADE.cohort import plan_cohort
    from CLADE.errors import CladeError

    # Input "b_clade_error.nrrd" in another folder would be overwritten by a's map in out/.
    out = tmp_path / "out"
    out.mkdir()
    sitk.WriteImage(make_volume(size=(8, 8, 4)), str(tmp_path / "b.nrrd"))
    sitk.WriteImage(make_volume(size=(8, 8, 4)), str(out / "b_clade_error.nrrd"))
    inputs = [tmp_path / "b.nrrd", out / "b_clade_error.nrrd"]
    assert len(plan_cohort(inputs, out)) == 2  # without maps nothing collides
    with pytest.raises(CladeError, match="b_clade_error.nrrd"):
        plan_cohort(inputs, out, error_maps=True)


def test_an_adapted_runs_map_learns_from_the_pairs_of_the_model_as_shipped(tiny_model_path):
    # Adaptation trains on the very in-plane pairs the map learns from, so through the adapted
    # model they understate its errors (models/cards/error-map.md): the map of an adapted run
    # must be the one the shipped model's pairs give for that output.
    from CLADE.device import resolve_device
    from CLADE.error_map import estimate_error_map
    from CLADE.geometry import resample_to_isotropic_array
    from CLADE.inference import GeneratorRunner, StackInference
    from CLADE.model_file import load_model
    from CLADE.normalisation import IntensityWindow

    model = load_model(tiny_model_path)
    image = make_volume(size=(96, 80, 20), spacing=(1.0, 1.0, 4.0))
    request = SuperResolutionRequest(model=model, device="cpu", adapt_steps=30, error_map=True)
    result = run(image, request)
    assert result.adaptation.improved, result.adaptation.summary()  # random weights: it helps
    spline = resample_to_isotropic_array(image, 2, 0)
    window = IntensityWindow(*model.normalisation.window(spline))
    native = sitk.GetArrayFromImage(image).astype(np.float32)
    output = sitk.GetArrayFromImage(result.image)
    settings = resolve_device("cpu", "auto")

    def pairs_through(generator):
        engine = StackInference(GeneratorRunner(generator, settings, "none"), "slices")
        return estimate_error_map(native, spline, output, window, 2, [0], 4.0, engine.run).array

    shipped = pairs_through(model)
    np.testing.assert_allclose(sitk.GetArrayFromImage(result.error_map), shipped, atol=1e-5)
    adapted = pairs_through(result.adaptation.model)
    assert float(adapted.mean()) < 0.9 * float(shipped.mean())  # what the old map understated
