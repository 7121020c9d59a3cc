"""The error map (``CLADE.error_map``) in the scene: a second volume over the result.

The map is the estimated absolute error of the super-resolved volume, in the input's units (HU
for CT), on the result's grid. It is loaded as its own scalar volume node (named
``<result>_error``, linked from the result node by the ``CLADE.ErrorMapNodeID`` attribute),
shown as the foreground layer of every slice view over the result with a warm colour map, a
colour bar (legend) titled in the input's units, and an opacity the panel's slider sets
(:func:`setErrorMapOpacity`). Plain functions on MRML nodes (no Qt), so they run under
slicer-core.
"""

from __future__ import annotations

import numpy as np

from .VolumeConversion import updateVolumeNodeFromImage

#: Name suffix of the map node and the attribute linking it from the result node.
ERROR_MAP_SUFFIX = "_error"
ERROR_MAP_ATTRIBUTE = "CLADE.ErrorMapNodeID"
#: Opacity of the overlay when it is first shown.
DEFAULT_OPACITY = 0.5
#: The colour range runs from the map's minimum to this percentile of it (a few hot spots do
#: not wash out the rest). The minimum is the map's noise floor (``CLADE.noise_floor``), the same
#: in every voxel: starting the colours there spends them on where the network may be wrong.
RANGE_PERCENTILE = 99.0
COLOR_NODE_NAME = "CLADE error"


def unitsLabel(inputNode, modality: str | None = None) -> str:
    """The input's intensity units as a short label: its own voxel value units when set, HU
    for CT, else "input units" (MRI intensities have none)."""
    units = inputNode.GetVoxelValueUnits() if hasattr(inputNode, "GetVoxelValueUnits") else None
    if units is not None and units.GetCodeMeaning():
        return units.GetCodeMeaning()
    return "HU" if (modality or "").upper() == "CT" else "input units"


def errorMapColorNode(scene):
    """A warm (iron) colour table for maps, created once per scene."""
    import slicer

    for node in _nodes(scene, "vtkMRMLColorTableNode"):
        if node.GetName() == COLOR_NODE_NAME:
            return node
    node = slicer.vtkMRMLColorTableNode()
    node.SetTypeToIron()
    node.SetName(COLOR_NODE_NAME)
    node.SetHideFromEditors(False)
    scene.AddNode(node)
    return node


def storeErrorMap(image, resultNode, inputNode, units: str, mapNode=None):
    """Put the map ``image`` (a SimpleITK image on the result's grid) into ``mapNode`` or a new
    node, display it over ``resultNode`` and return it."""
    scene = resultNode.GetScene()
    if mapNode is None:
        name = scene.GenerateUniqueName(resultNode.GetName() + ERROR_MAP_SUFFIX)
        mapNode = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    updateVolumeNodeFromImage(mapNode, image)
    mapNode.SetAndObserveTransformNodeID(inputNode.GetTransformNodeID())
    mapNode.SetAttribute("CLADE.Units", units)
    resultNode.SetAttribute(ERROR_MAP_ATTRIBUTE, mapNode.GetID())
    _display(mapNode, units)
    showErrorMap(resultNode, mapNode)
    return mapNode


def errorMapNodeOf(resultNode):
    """The map node of a result (None when it has none or it was deleted)."""
    nodeId = resultNode.GetAttribute(ERROR_MAP_ATTRIBUTE)
    return resultNode.GetScene().GetNodeByID(nodeId) if nodeId else None


def _display(mapNode, units: str) -> None:
    import slicer

    scene = mapNode.GetScene()
    if mapNode.GetDisplayNode() is None:
        mapNode.CreateDefaultDisplayNodes()
    display = mapNode.GetDisplayNode()
    display.SetAndObserveColorNodeID(errorMapColorNode(scene).GetID())
    values = slicer.util.arrayFromVolume(mapNode) if _hasUtil() else _array(mapNode)
    bottom = float(values.min()) if values.size else 0.0
    top = float(np.percentile(values, RANGE_PERCENTILE)) if values.size else 1.0
    top = top if top > bottom else bottom + 1.0
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(bottom, top)
    legend = _legendOf(mapNode)
    if legend is None:
        legend = slicer.vtkMRMLColorLegendDisplayNode()
        scene.AddNode(legend)
        mapNode.AddAndObserveDisplayNodeID(legend.GetID())
    legend.SetAndObservePrimaryDisplayNode(display)
    legend.SetTitleText(f"Estimated error ({units})")
    legend.SetLabelFormat("%.3g")
    legend.SetVisibility(True)


def showErrorMap(resultNode, mapNode, opacity: float = DEFAULT_OPACITY) -> int:
    """Show the result as background and the map as foreground in every slice view; returns
    the number of slice views set."""
    composites = _nodes(resultNode.GetScene(), "vtkMRMLSliceCompositeNode")
    for composite in composites:
        composite.SetBackgroundVolumeID(resultNode.GetID())
        composite.SetForegroundVolumeID(mapNode.GetID())
        composite.SetForegroundOpacity(float(opacity))
    return len(composites)


def setErrorMapOpacity(mapNode, opacity: float) -> int:
    """The map's overlay opacity (0-1) in every slice view showing it; returns how many."""
    opacity = min(max(float(opacity), 0.0), 1.0)
    count = 0
    for composite in _nodes(mapNode.GetScene(), "vtkMRMLSliceCompositeNode"):
        if composite.GetForegroundVolumeID() == mapNode.GetID():
            composite.SetForegroundOpacity(opacity)
            count += 1
    return count


def _legendOf(mapNode):
    for index in range(mapNode.GetNumberOfDisplayNodes()):
        node = mapNode.GetNthDisplayNode(index)
        if node is not None and node.IsA("vtkMRMLColorLegendDisplayNode"):
            return node
    return None


def _nodes(scene, className: str) -> list:
    collection = scene.GetNodesByClass(className)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]


def _hasUtil() -> bool:
    try:
        import slicer.util  # noqa: F401

        return hasattr(slicer.util, "arrayFromVolume")
    except ImportError:
        return False


def _array(volumeNode) -> np.ndarray:
    from vtk.util.numpy_support import vtk_to_numpy

    return vtk_to_numpy(volumeNode.GetImageData().GetPointData().GetScalars())
