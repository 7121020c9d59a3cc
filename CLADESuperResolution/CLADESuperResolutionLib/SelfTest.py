"""The module's Slicer self-test: the sample through the shipped model, in Slicer and in a worker.

``CLADESuperResolutionTest`` (in ``CLADESuperResolution.py``, where Slicer looks for it) calls
these with itself as ``testCase``, so the module file stays the wiring.
"""

from __future__ import annotations

import os

import numpy as np
import slicer
import vtk

from . import CoreLocator, ModelCatalog, SampleVolume
from .SuperResolutionLogic import SuperResolutionJob, SuperResolutionOptions


def volumeMatrix(node) -> np.ndarray:
    """The node's IJK-to-RAS matrix as a 4x4 array."""
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def checkSuperResolvedOutput(testCase, inputNode, inputArray, inputMatrix, outputNode) -> None:
    """Input untouched; output on the isotropic grid (thick extent kept, same axes), finite."""
    from CLADE.geometry import detect_thick_axis

    np.testing.assert_array_equal(slicer.util.arrayFromVolume(inputNode), inputArray)
    np.testing.assert_allclose(volumeMatrix(inputNode), inputMatrix)
    spacing = np.array(inputNode.GetSpacing())
    axis = detect_thick_axis(tuple(spacing))
    fine = min(s for i, s in enumerate(spacing) if i != axis)
    outSpacing = np.array(outputNode.GetSpacing())
    inDims = inputNode.GetImageData().GetDimensions()
    outDims = outputNode.GetImageData().GetDimensions()
    expected = max(1, round(inDims[axis] * spacing[axis] / fine))
    testCase.assertEqual(outDims[axis], expected)
    testCase.assertAlmostEqual(outDims[axis] * outSpacing[axis], inDims[axis] * spacing[axis], 3)
    for i in range(3):
        if i != axis:
            testCase.assertEqual(outDims[i], inDims[i])
    inDirections = inputMatrix[:3, :3] / spacing
    outDirections = volumeMatrix(outputNode)[:3, :3] / outSpacing
    np.testing.assert_allclose(outDirections, inDirections, atol=1e-6)
    testCase.assertTrue(np.isfinite(slicer.util.arrayFromVolume(outputNode)).all())


def loadSample(testCase, registerSampleData):
    """The pelvis sample through Sample Data: ``(node, its array, its matrix)``."""
    path = SampleVolume.samplePath(CoreLocator.coreDir())
    testCase.assertTrue(path.is_file(), f"The sample volume is missing: {path}")
    registerSampleData()
    import SampleData

    inputNode = SampleData.downloadSample(SampleVolume.SAMPLE_NAME)
    testCase.assertIsNotNone(inputNode)
    return inputNode, np.array(slicer.util.arrayFromVolume(inputNode)), volumeMatrix(inputNode)


def shippedNames(testCase, logic) -> list[str]:
    names = [e["name"] for e in ModelCatalog.shippedModels(logic.manifestPath())]
    testCase.assertTrue(names, "No shipped model is installed.")
    return names


def superResolveSample(testCase, logic, registerSampleData) -> None:
    """In Slicer's process, through the module logic (whole slices)."""
    testCase.delayDisplay("Loading the sample")
    inputNode, inputArray, inputMatrix = loadSample(testCase, registerSampleData)
    names = shippedNames(testCase, logic)
    model = "mri" if "mri" in names else names[0]
    testCase.delayDisplay(f"Super-resolving with the shipped model {model!r} (whole slices)")
    outputNode = logic.process(inputNode, model=model, tiling="slices", ensemble="none")
    checkSuperResolvedOutput(testCase, inputNode, inputArray, inputMatrix, outputNode)
    testCase.delayDisplay("Test passed")


def workerJobOnSample(testCase, logic, registerSampleData) -> None:
    """In a worker process, through the job the Super-resolve tab runs."""
    inputNode, inputArray, inputMatrix = loadSample(testCase, registerSampleData)
    names = shippedNames(testCase, logic)
    testCase.delayDisplay("Super-resolving in a worker process")
    job = SuperResolutionJob(
        inputNode,
        SuperResolutionOptions(model=names[0], tiling="slices", ensemble="none"),
        tempRoot=slicer.app.temporaryPath,
    )
    job.start()
    # Sleeps between polls (a bare poll loop would spin one core at 100 %).
    job.wait(timeout=600, processEvents=slicer.app.processEvents)
    testCase.assertEqual(job.state, job.SUCCEEDED, job.errorMessage)
    checkSuperResolvedOutput(testCase, inputNode, inputArray, inputMatrix, job.outputNode)
    testCase.assertFalse(os.path.exists(job.tempDir))
    testCase.delayDisplay("Test passed")
