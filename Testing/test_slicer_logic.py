"""The Slicer module's logic on real MRML volume nodes (slicer-core: real scene, no Qt)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CLADESuperResolution"))

slicer = pytest.importorskip("slicer")

from CLADESuperResolutionLib import (  # noqa: E402
    Dependencies,
    InputValidation,
    ModelCatalog,
    SampleVolume,
    Training,
    VolumeConversion,
)
from CLADESuperResolutionLib.SuperResolutionLogic import (  # noqa: E402
    SuperResolutionOptions,
    storeResult,
    superResolveInProcess,
)


def obliqueFlippedIjkToRas(spacing=(0.9, 1.1, 4.0), origin=(12.0, -30.0, 7.5)):
    """An IJK-to-RAS matrix with a flipped i axis, swapped j/k roles and a 20 degree tilt."""
    angle = np.deg2rad(20)
    rotation = np.array(
        [[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]]
    )
    axes = np.array([[-1.0, 0, 0], [0, 0, 1.0], [0, 1.0, 0]]).T  # i -> -R, j -> S, k -> A
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ axes @ np.diag(spacing)
    matrix[:3, 3] = origin
    return matrix


def addVolume(scene, array, ijkToRas, name="thick", nodeClass=None):
    return slicer.util.addVolumeFromArray(
        array, ijkToRAS=ijkToRas, name=name, nodeClassName=nodeClass
    )


def smoothArray(shape=(8, 36, 40), seed=0):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    return (gaussian_filter(rng.normal(size=shape), 1.5) * 400 + 100).astype(np.float32)


def expectedIsotropicIjkToRas(ijkToRas, dims_kji):
    """The core's isotropic-grid rule written directly in RAS (independent of the LPS code)."""
    spacing = np.linalg.norm(ijkToRas[:3, :3], axis=0)
    sizes = np.array(dims_kji[::-1])  # i, j, k
    t = int(np.argmax(spacing))
    fine = min(spacing[a] for a in range(3) if a != t)
    samples = max(1, int(round(sizes[t] * spacing[t] / fine)))
    newSpacing = sizes[t] * spacing[t] / samples
    direction = ijkToRas[:3, :3] / spacing
    expected = np.eye(4)
    newSpacings = spacing.copy()
    newSpacings[t] = newSpacing
    expected[:3, :3] = direction @ np.diag(newSpacings)
    expected[:3, 3] = ijkToRas[:3, 3] + direction[:, t] * (newSpacing - spacing[t]) / 2
    newSizes = sizes.copy()
    newSizes[t] = samples
    return expected, tuple(int(s) for s in newSizes[::-1])


# -- RAS <-> LPS -----------------------------------------------------------------------------


def test_node_to_image_matches_slicer_own_nrrd_writer(scene, tmp_path):
    """Slicer's storage node writes LPS NRRD: our conversion must give the same geometry."""
    node = addVolume(scene, smoothArray(), obliqueFlippedIjkToRas())
    storage = scene.AddNewNodeByClass("vtkMRMLVolumeArchetypeStorageNode")
    storage.SetFileName(str(tmp_path / "slicer.nrrd"))
    assert storage.WriteData(node)
    reference = sitk.ReadImage(str(tmp_path / "slicer.nrrd"))
    image = VolumeConversion.imageFromVolumeNode(node)
    np.testing.assert_allclose(image.GetOrigin(), reference.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(image.GetSpacing(), reference.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(image.GetDirection(), reference.GetDirection(), atol=1e-6)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(reference))


def test_bright_dot_keeps_its_ras_position_through_the_core_grid(scene):
    """A dot at a known RAS point is at the same LPS point in the image and, after the core's
    isotropic resampling and the way back into a node, at the same RAS point again."""
    from CLADE.geometry import detect_thick_axis, resample_to_isotropic

    array = np.zeros((10, 30, 32), np.float32)
    dot_kji = (4, 11, 23)
    array[dot_kji] = 1000.0
    ijkToRas = obliqueFlippedIjkToRas()
    node = addVolume(scene, array, ijkToRas)
    dotRas = (ijkToRas @ np.array([*dot_kji[::-1], 1.0]))[:3]

    image = VolumeConversion.imageFromVolumeNode(node)
    dotLps = image.TransformIndexToPhysicalPoint([int(v) for v in dot_kji[::-1]])
    np.testing.assert_allclose(dotLps, [-dotRas[0], -dotRas[1], dotRas[2]], atol=1e-6)

    iso = resample_to_isotropic(image, detect_thick_axis(image.GetSpacing()))
    output = storeResult(iso, node)
    outArray = slicer.util.arrayFromVolume(output)
    peak = np.unravel_index(np.argmax(outArray), outArray.shape)
    peakRas = (VolumeConversion.ijkToRasArray(output) @ np.array([*peak[::-1], 1.0]))[:3]
    spacing = np.array(output.GetSpacing())
    assert np.linalg.norm(peakRas - dotRas) <= 0.51 * np.linalg.norm(spacing)


def test_image_to_node_round_trip(scene):
    node = addVolume(scene, smoothArray(), obliqueFlippedIjkToRas())
    image = VolumeConversion.imageFromVolumeNode(node)
    other = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    VolumeConversion.updateVolumeNodeFromImage(other, image)
    np.testing.assert_allclose(
        VolumeConversion.ijkToRasArray(other), VolumeConversion.ijkToRasArray(node), atol=1e-9
    )
    np.testing.assert_array_equal(
        slicer.util.arrayFromVolume(other), slicer.util.arrayFromVolume(node)
    )


# -- the logic, in process, with the tiny model (through CLADE.pipeline.run) -----------------


def test_super_resolve_node_follows_core_grid_and_keeps_input(scene, tiny_model_path):
    array = smoothArray()
    ijkToRas = obliqueFlippedIjkToRas()
    node = addVolume(scene, array, ijkToRas, name="pelvis")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    node.SetAndObserveTransformNodeID(transform.GetID())
    before = np.array(slicer.util.arrayFromVolume(node), copy=True)

    output, result = superResolveInProcess(
        node, SuperResolutionOptions(model=str(tiny_model_path), device="cpu")
    )
    stats = result.stats

    expected, dims = expectedIsotropicIjkToRas(ijkToRas, array.shape)
    np.testing.assert_allclose(VolumeConversion.ijkToRasArray(output), expected, atol=1e-6)
    assert slicer.util.arrayFromVolume(output).shape == dims
    assert output.GetName() == "pelvis_CLADE"
    assert output.GetTransformNodeID() == transform.GetID()
    assert np.isfinite(slicer.util.arrayFromVolume(output)).all()
    assert stats["output_size"] == list(dims[::-1])
    # The input is untouched: voxels, matrix, and no node was replaced.
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(node), before)
    np.testing.assert_allclose(VolumeConversion.ijkToRasArray(node), ijkToRas)
    np.testing.assert_array_equal(array, before)


def test_super_resolve_into_existing_node_and_refuses_input_as_output(scene, tiny_model_path):
    node = addVolume(scene, smoothArray(), np.diag([1.0, 1.0, 4.0, 1.0]))
    target = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "target")
    options = SuperResolutionOptions(
        model=str(tiny_model_path), device="cpu", tiling="patches", stride=16
    )
    output, _ = superResolveInProcess(node, options, outputNode=target)
    assert output is target and slicer.util.arrayFromVolume(target).shape == (32, 36, 40)
    with pytest.raises(ValueError, match="differ from the input"):
        superResolveInProcess(node, options, outputNode=node)


def test_cancelled_in_process_run_creates_no_node(scene, tiny_model_path):
    from CLADE.errors import Cancelled

    node = addVolume(scene, smoothArray(), np.diag([1.0, 1.0, 4.0, 1.0]))
    count = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(Cancelled):
        superResolveInProcess(
            node,
            SuperResolutionOptions(model=str(tiny_model_path), device="cpu"),
            cancel=lambda: True,
        )
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == count
    # Cancelled while adapting to the volume (before any patch is super-resolved).
    with pytest.raises(Cancelled):
        superResolveInProcess(
            node,
            SuperResolutionOptions(model=str(tiny_model_path), device="cpu", adaptSteps=50),
            cancel=lambda: True,
        )
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == count
    # And without cancel the adapted run lands on the same grid as the plain one.
    options = SuperResolutionOptions(model=str(tiny_model_path), device="cpu", tiling="slices")
    plain, _ = superResolveInProcess(node, options)
    options.adaptSteps = 5
    adapted, _ = superResolveInProcess(node, options)
    np.testing.assert_allclose(
        VolumeConversion.ijkToRasArray(adapted), VolumeConversion.ijkToRasArray(plain)
    )
    assert slicer.util.arrayFromVolume(adapted).shape == slicer.util.arrayFromVolume(plain).shape


# -- validation ------------------------------------------------------------------------------


def test_input_validation_reasons(scene):
    assert InputValidation.validateInputVolume(None) == (False, "Select an input volume.")
    good = addVolume(scene, smoothArray(), np.diag([1.0, 1.0, 4.0, 1.0]), name="good")
    assert InputValidation.validateInputVolume(good) == (True, "")
    label = addVolume(
        scene,
        np.ones((8, 20, 20), np.uint8),
        np.diag([1.0, 1.0, 4.0, 1.0]),
        name="seg",
        nodeClass="vtkMRMLLabelMapVolumeNode",
    )
    assert "label map" in InputValidation.validateInputVolume(label)[1]
    vector = addVolume(
        scene,
        np.ones((8, 20, 20, 3), np.uint8),
        np.diag([1.0, 1.0, 4.0, 1.0]),
        name="rgb",
        nodeClass="vtkMRMLVectorVolumeNode",
    )
    assert "vector" in InputValidation.validateInputVolume(vector)[1]
    iso = addVolume(scene, smoothArray((20, 20, 20)), np.diag([1.0, 1.0, 1.1, 1.0]), name="iso")
    ok, why = InputValidation.validateInputVolume(iso)
    assert not ok and "isotropic" in why
    flat = addVolume(
        scene, np.ones((1, 20, 20), np.float32), np.diag([1.0, 1.0, 4.0, 1.0]), name="flat"
    )
    ok, why = InputValidation.validateInputVolume(flat)
    assert not ok and "2D" in why
    empty = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    assert "no voxels" in InputValidation.validateInputVolume(empty)[1]


def test_writable_folder_validation(tmp_path, monkeypatch):
    # Validation runs on every keystroke in the path field: it must not create anything.
    assert InputValidation.validateWritableFolder(tmp_path / "new" / "run")[0]
    assert not (tmp_path / "new").exists()
    assert InputValidation.validateWritableFolder(tmp_path / "new" / "run", create=True)[0]
    assert (tmp_path / "new" / "run").is_dir()
    file = tmp_path / "file.txt"
    file.write_text("x")
    assert "is a file" in InputValidation.validateWritableFolder(file)[1]
    # A folder that cannot be created (its parent is a file): fails even for root.
    assert "cannot be created" in InputValidation.validateWritableFolder(file / "sub")[1]
    # A read-only folder: simulated, since the tests may run as root, who can write anywhere.
    readOnly = tmp_path / "ro"
    readOnly.mkdir()
    monkeypatch.setattr(InputValidation.os, "access", lambda path, mode: Path(path) != readOnly)
    assert "cannot be written" in InputValidation.validateWritableFolder(readOnly)[1]
    assert InputValidation.validateWritableFolder(tmp_path)[0]


def test_training_validation(scene, tmp_path):
    good = addVolume(scene, smoothArray(), np.diag([1.0, 1.0, 4.0, 1.0]))
    assert "Select training volumes" in InputValidation.validateTrainingInputs([], "", tmp_path)[1]
    assert InputValidation.validateTrainingInputs([good], "", tmp_path / "out") == (True, "")
    folder = tmp_path / "volumes"
    folder.mkdir()
    assert "holds no" in InputValidation.validateTrainingInputs([], folder, tmp_path)[1]
    sitk.WriteImage(sitk.Image([8, 8, 4], sitk.sitkFloat32), str(folder / "a.nii.gz"))
    assert InputValidation.validateTrainingInputs([], folder, tmp_path / "out")[0]
    assert "Choose an output" in InputValidation.validateTrainingInputs([good], "", "")[1]


def test_model_choices_and_validation(tmp_path, tiny_model_path):
    manifest = tmp_path / "manifest.json"
    (tmp_path / "mri.pt").write_bytes(b"weights")
    manifest.write_text(
        '{"models": [{"name": "mri", "file": "mri.pt", "description": "MR"},'
        ' {"name": "ct", "file": "missing.pt"}]}'
    )
    choices = ModelCatalog.modelChoices(manifest, [tiny_model_path, tmp_path / "gone.pt"])
    assert [(c.kind, c.value) for c in choices] == [
        ("shipped", "mri"),
        ("file", str(tiny_model_path)),
    ]
    assert ModelCatalog.validateModelChoice(choices[0], ["mri"]) == (True, "")
    assert ModelCatalog.validateModelChoice(choices[1]) == (True, "")
    assert "No model is shipped" in ModelCatalog.validateModelChoice(None, [])[1]
    foreign = tmp_path / "foreign.pt"
    foreign.write_text("not a model")
    assert "not a CLADE model" in ModelCatalog.validateModelFile(foreign)[1]
    assert "does not exist" in ModelCatalog.validateModelFile(tmp_path / "none.pt")[1]


def test_foreign_model_file_is_refused_with_the_core_sentence(scene, tmp_path):
    import zipfile

    from CLADE.errors import CladeError

    foreign = tmp_path / "foreign.pt"
    with zipfile.ZipFile(foreign, "w") as archive:  # passes the cheap check, not the core's
        archive.writestr("data.txt", "hello")
    node = addVolume(scene, smoothArray(), np.diag([1.0, 1.0, 4.0, 1.0]))
    count = scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")
    with pytest.raises(CladeError, match="not a CLADE model file|corrupt"):
        superResolveInProcess(node, SuperResolutionOptions(model=str(foreign), device="cpu"))
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == count


def test_shipped_manifest_is_readable_without_torch():
    from CLADESuperResolutionLib import CoreLocator

    manifest = CoreLocator.coreDir() / "models" / "manifest.json"
    names = [e["name"] for e in ModelCatalog.shippedModels(manifest)]
    from CLADE.registry import shipped_model_names

    assert set(names) <= set(shipped_model_names())


# -- dependencies ----------------------------------------------------------------------------


def test_torch_is_asked_for_and_declining_is_reported():
    calls = []
    installer = Dependencies.DependencyInstaller(
        confirm=lambda question: calls.append(("confirm", question)) or False,
        installTorch=lambda req: calls.append(("torch", req)),
        pipInstall=lambda reqs: calls.append(("pip", reqs)),
        isInstalled=lambda name: False,
    )
    ok, why = installer.ensure()
    assert not ok and why == Dependencies.TORCH_DECLINED
    assert [c[0] for c in calls] == ["confirm"]


def test_accepted_install_uses_pytorchutils_then_pip_never_numpy_or_simpleitk():
    calls = []
    installed = {"numpy", "SimpleITK", "scipy"}
    installer = Dependencies.DependencyInstaller(
        confirm=lambda question: True,
        installTorch=lambda req: calls.append(("torch", req)) or object(),
        pipInstall=lambda reqs: calls.append(("pip", reqs)),
        isInstalled=lambda name: name in installed,
    )
    assert installer.ensure() == (True, "")
    assert calls == [("torch", ">=2.1")]  # scipy is there: super-resolving needs no pip
    assert all(">=" in r for r in Dependencies.PIP_REQUIREMENTS.values())
    assert not {"numpy", "SimpleITK"} & set(Dependencies.PIP_REQUIREMENTS)


def test_failed_torch_install_is_reported():
    installer = Dependencies.DependencyInstaller(
        confirm=lambda q: True,
        installTorch=lambda req: None,
        pipInstall=lambda r: None,
        isInstalled=lambda name: name != "torch",
    )
    assert installer.ensure() == (False, Dependencies.TORCH_DECLINED)


# -- training events -> plot -----------------------------------------------------------------


def test_training_events_fill_table_and_chart_nodes(scene):
    curves = Training.TrainingCurves()
    events = [{"event": "start", "steps_per_epoch": 10, "device": "cpu"}]
    for step in range(1, 21, 5):
        events.append(
            {
                "event": "step",
                "epoch": 1 + (step - 1) // 10,
                "global_step": step,
                "steps_per_epoch": 10,
                "progress": step / 20,
                "eta_s": 20 - step,
                "losses": {"g_total": 3.0 / step, "cyc": 1.0 / step, "gmap": 0.5},
            }
        )
        if step in (6, 16):
            events.append(
                {
                    "event": "validation",
                    "epoch": 1 + step // 10,
                    "metrics": {"piqe": 40.0 - step, "psnr": 20.0},
                }
            )
    changed = [curves.addEvent(e) for e in events]
    assert changed.count(True) == 6
    nodes = curves.updateNodes(scene)
    table = nodes["lossTable"].GetTable()
    assert table.GetNumberOfRows() == 4
    steps = slicer.util.arrayFromTableColumn(nodes["lossTable"], "step")
    np.testing.assert_array_equal(steps, [1, 6, 11, 16])
    np.testing.assert_allclose(
        slicer.util.arrayFromTableColumn(nodes["lossTable"], "cyc"), [1.0, 1 / 6, 1 / 11, 1 / 16]
    )
    assert np.isnan(slicer.util.arrayFromTableColumn(nodes["lossTable"], "d_x")).all()
    metric = slicer.util.arrayFromTableColumn(nodes["metricTable"], "validation piqe")
    np.testing.assert_allclose(metric, [34.0, 24.0])
    np.testing.assert_allclose(
        slicer.util.arrayFromTableColumn(nodes["metricTable"], "step"), [10, 20]
    )
    chart = nodes["chart"]
    # A curve per loss that has values (g_total, cyc, gmap) and the metric; the terms that
    # are off get none (they would switch the log axis off).
    assert chart.GetNumberOfPlotSeriesNodes() == 4
    # A later update refills the same nodes instead of adding new ones.
    curves.addEvent({"event": "step", "global_step": 21, "losses": {"cyc": 0.01}})
    again = curves.updateNodes(scene, nodes)
    assert again["lossTable"] is nodes["lossTable"]
    assert nodes["lossTable"].GetTable().GetNumberOfRows() == 5
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") == 1
    assert curves.progress == pytest.approx(16 / 20)


def test_training_presets_and_loss_names_match_the_core():
    presets = pytest.importorskip("CLADE.training.presets")
    from CLADE.training.loss_terms import LOSS_NAMES

    assert Training.PLOTTED_LOSSES == LOSS_NAMES
    for name, ours in Training.PRESETS.items():
        core = presets.PRESETS[name]
        assert (ours["lambdaCyc"], ours["lambdaIdent"], ours["lambdaGmap"], ours["batchSize"]) == (
            core["lambda_cyc"],
            core["lambda_ident"],
            core["lambda_gmap"],
            core["batch_size"],
        )


def test_training_command_line(scene, tmp_path):
    node = addVolume(scene, smoothArray(), np.diag([1.0, 1.0, 4.0, 1.0]), name="vol A")
    job = Training.TrainingJob(
        [node],
        "",
        tmp_path / "out",
        Training.TrainingOptions(preset="ct", epochs=2, lambdaGmap=7.5),
        python="python",
    )
    command = job.command([tmp_path / "a.nrrd"], tmp_path / "val.nrrd")
    assert command[:5] == ["python", "-m", "CLADE", "train", str(tmp_path / "a.nrrd")]
    text = " ".join(command)
    for expected in (
        "--out",
        "--preset ct",
        "--epochs 2",
        "--lambda-gmap 7.5",
        "--events",
        "--val",
        "--patches-per-slice 4",
    ):
        assert expected in text


# -- sample data -----------------------------------------------------------------------------


def test_sample_volume_registration_arguments(tmp_path):
    from CLADESuperResolutionLib import CoreLocator

    coreDir = CoreLocator.coreDir()
    arguments = SampleVolume.sampleDataSourceArguments(coreDir, tmp_path)
    assert arguments is not None, "the sample volume is missing from CLADE/sample_data"
    assert arguments["uris"].startswith("file://")
    assert Path(arguments["uris"][len("file://") :]).is_file()
    assert SampleVolume.sampleDataSourceArguments(tmp_path, tmp_path) is None
    # The sample is a thick-slice volume the module accepts.
    image = sitk.ReadImage(str(SampleVolume.samplePath(coreDir)))
    spacing = image.GetSpacing()
    assert max(spacing) >= 1.2 * min(spacing)


def test_an_old_torch_is_offered_an_update_through_pytorchutils():
    """Before: any installed torch was accepted, however old (the core needs >= 2.1)."""
    calls = []
    installer = Dependencies.DependencyInstaller(
        confirm=lambda question: calls.append(("confirm", question)) or True,
        installTorch=lambda req: calls.append(("torch", req)) or object(),
        pipInstall=lambda reqs: calls.append(("pip", reqs)),
        isInstalled=lambda name: True,
        torchVersion=lambda: "2.0.1+cu118",
    )
    assert installer.ensure() == (True, "")
    assert calls[0][0] == "confirm" and "2.0.1+cu118" in calls[0][1] and "2.1" in calls[0][1]
    assert calls[1] == ("torch", ">=2.1")
    current = Dependencies.DependencyInstaller(
        confirm=lambda q: pytest.fail("asked although torch is recent"),
        installTorch=None,
        pipInstall=None,
        isInstalled=lambda name: True,
        torchVersion=lambda: "2.13.0+cpu",
    )
    assert current.ensure() == (True, "")


def test_missing_pytorch_extension_is_reported_without_asking():
    installer = Dependencies.DependencyInstaller(
        confirm=lambda q: pytest.fail("asked although nothing can install torch"),
        installTorch=lambda req: pytest.fail("installed"),
        pipInstall=lambda r: None,
        isInstalled=lambda name: name != "torch",
        canInstallTorch=lambda: False,
    )
    assert installer.ensure() == (False, Dependencies.PYTORCH_EXTENSION_MISSING)


def test_lib_docstring_examples():
    """The Lib's examples (pytest collects doctests under CLADE/ and Testing/ only)."""
    import doctest

    from CLADESuperResolutionLib import Devices, SuperResolutionLogic, WorkerProcess

    for module in (Dependencies, Devices, SuperResolutionLogic, WorkerProcess):
        failed, attempted = doctest.testmod(module)
        assert failed == 0 and attempted > 0, module.__name__
