"""The error map in the Slicer module's logic (issue 23), on real MRML nodes (slicer-core):
a second volume over the result, colour bar in the input's units, opacity; in-process and in
the worker job."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "CLADESuperResolution"))

slicer = pytest.importorskip("slicer")

from CLADESuperResolutionLib import ErrorMapDisplay, VolumeConversion  # noqa: E402
from CLADESuperResolutionLib.SuperResolutionLogic import (  # noqa: E402
    SuperResolutionJob,
    SuperResolutionOptions,
    superResolveInProcess,
)


def thickNode(scene):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(2)
    array = (gaussian_filter(rng.normal(size=(8, 36, 40)), 1.5) * 400 + 100).astype(np.float32)
    matrix = np.diag([-1.0, -1.0, 4.0, 1.0])
    matrix[:3, 3] = (5.0, 6.0, -20.0)
    return slicer.util.addVolumeFromArray(array, ijkToRAS=matrix, name="thick")


def sliceViews(scene, count=3):
    return [scene.AddNewNodeByClass("vtkMRMLSliceCompositeNode") for _ in range(count)]


def test_map_node_is_overlaid_on_the_result_with_a_legend_in_the_input_units(scene):
    views = sliceViews(scene)
    inputNode = thickNode(scene)
    result = slicer.util.addVolumeFromArray(np.zeros((32, 36, 40), np.float32), name="thick_CLADE")
    # A map never falls below its noise floor (here 8 HU): the colours start there.
    values = np.linspace(8, 50, 32 * 36 * 40, dtype=np.float32).reshape(32, 36, 40)
    image = sitk.GetImageFromArray(values)
    mapNode = ErrorMapDisplay.storeErrorMap(image, result, inputNode, "HU")
    assert mapNode.GetName() == "thick_CLADE_error"
    assert ErrorMapDisplay.errorMapNodeOf(result) is mapNode
    np.testing.assert_allclose(slicer.util.arrayFromVolume(mapNode), values)
    for view in views:
        assert view.GetBackgroundVolumeID() == result.GetID()
        assert view.GetForegroundVolumeID() == mapNode.GetID()
        assert view.GetForegroundOpacity() == pytest.approx(ErrorMapDisplay.DEFAULT_OPACITY)
    display = mapNode.GetDisplayNode()
    assert display.GetColorNode().GetName() == ErrorMapDisplay.COLOR_NODE_NAME
    assert display.GetWindowLevelMin() == pytest.approx(8.0)
    assert display.GetWindowLevelMax() == pytest.approx(np.percentile(values, 99.0), rel=1e-3)
    legend = ErrorMapDisplay._legendOf(mapNode)
    assert legend.GetTitleText() == "Estimated error (HU)"
    assert legend.GetPrimaryDisplayNode() is display
    # The opacity slider: only the views showing this map change, and values are clamped.
    views[2].SetForegroundVolumeID(None)
    assert ErrorMapDisplay.setErrorMapOpacity(mapNode, 0.8) == 2
    assert [v.GetForegroundOpacity() for v in views[:2]] == pytest.approx([0.8, 0.8])
    assert ErrorMapDisplay.setErrorMapOpacity(mapNode, 7.0) == 2
    assert views[0].GetForegroundOpacity() == 1.0


def test_units_label_prefers_the_input_units_then_hu_for_ct(scene):
    node = thickNode(scene)
    assert ErrorMapDisplay.unitsLabel(node, "CT") == "HU"
    assert ErrorMapDisplay.unitsLabel(node, "MR") == "input units"


def test_in_process_run_adds_the_map_on_the_output_grid(scene, tiny_model_path):
    sliceViews(scene, 1)
    node = thickNode(scene)
    options = SuperResolutionOptions(model=str(tiny_model_path), device="cpu", errorMap=True)
    output, result = superResolveInProcess(node, options)
    mapNode = ErrorMapDisplay.errorMapNodeOf(output)
    assert mapNode is not None and mapNode.GetName() == "thick_CLADE_error"
    np.testing.assert_allclose(
        VolumeConversion.ijkToRasArray(mapNode), VolumeConversion.ijkToRasArray(output)
    )
    assert slicer.util.arrayFromVolume(mapNode).shape == slicer.util.arrayFromVolume(output).shape
    assert result.stats["error_map"]["flagged_fraction"] >= 0.0
    legend = ErrorMapDisplay._legendOf(mapNode)
    assert legend.GetTitleText() == "Estimated error (input units)"
    # Without the option: no map node.
    plain, _ = superResolveInProcess(node, SuperResolutionOptions(model=str(tiny_model_path)))
    assert ErrorMapDisplay.errorMapNodeOf(plain) is None


def test_worker_job_asks_for_the_map_and_loads_it(scene, tiny_model_path, tmp_path):
    node = thickNode(scene)
    options = SuperResolutionOptions(
        model=str(tiny_model_path), device="cpu", tiling="slices", errorMap=True
    )
    job = SuperResolutionJob(node, options, python=sys.executable, tempRoot=tmp_path)
    command = job.command(tmp_path / "in.nrrd", tmp_path / "out.nrrd")
    assert command[command.index("--error-map") + 1] == str(tmp_path / "error_map.nrrd")
    job.start()
    job.wait(timeout=300)
    assert job.state == job.SUCCEEDED, job.errorMessage
    assert job.errorMapNode is ErrorMapDisplay.errorMapNodeOf(job.outputNode)
    np.testing.assert_allclose(
        VolumeConversion.ijkToRasArray(job.errorMapNode),
        VolumeConversion.ijkToRasArray(job.outputNode),
    )
    assert list(tmp_path.iterdir()) == []  # the temporary files went with the job
