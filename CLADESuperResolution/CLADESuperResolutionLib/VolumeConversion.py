"""Volume nodes <-> SimpleITK images, honouring Slicer's RAS and ITK's LPS physical spaces.

A volume node stores its voxels as a (k, j, i) array plus an IJK-to-RAS matrix; a SimpleITK image
stores the same voxels with spacing, origin and a direction matrix in LPS. The two spaces differ
by the sign of the first two world axes, so ``LPS = diag(-1, -1, 1) @ RAS`` for both the origin and
every direction column. Getting this wrong mirrors the output left-right and front-back, which is
invisible on a symmetric phantom and wrong on a patient, hence the dedicated functions and tests.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

#: Flips the first two world axes: RAS <-> LPS (its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def ijkToRasArray(volumeNode) -> np.ndarray:
    """The node's 4x4 IJK-to-RAS matrix as a numpy array."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volumeNode.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def geometryFromIjkToRas(ijkToRas: np.ndarray) -> tuple[tuple, tuple, tuple]:
    """(spacing, origin, direction) of a SimpleITK image (LPS) for an IJK-to-RAS matrix.

    Example:
        >>> spacing, origin, direction = geometryFromIjkToRas(np.diag([1.0, 2.0, 3.0, 1.0]))
        >>> spacing, origin, direction[:3]
        ((1.0, 2.0, 3.0), (0.0, 0.0, 0.0), (-1.0, 0.0, 0.0))
    """
    linear = np.asarray(ijkToRas, dtype=float)[:3, :3]
    spacing = np.linalg.norm(linear, axis=0)
    directionRas = linear / spacing
    directionLps = RAS_TO_LPS @ directionRas
    originLps = RAS_TO_LPS @ np.asarray(ijkToRas, dtype=float)[:3, 3]
    return (
        tuple(float(s) for s in spacing),
        tuple(float(o) for o in originLps),
        tuple(float(d) for d in directionLps.ravel()),
    )


def ijkToRasFromImage(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK-to-RAS matrix of a SimpleITK image (inverse of :func:`geometryFromIjkToRas`).

    Example:
        >>> image = sitk.Image([2, 2, 2], sitk.sitkFloat32)
        >>> image.SetOrigin((10.0, 20.0, 30.0))
        >>> ijkToRasFromImage(image)[:3, 3].tolist()
        [-10.0, -20.0, 30.0]
    """
    directionLps = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    matrix = np.eye(4)
    matrix[:3, :3] = RAS_TO_LPS @ directionLps @ np.diag(image.GetSpacing())
    matrix[:3, 3] = RAS_TO_LPS @ np.array(image.GetOrigin(), dtype=float)
    return matrix


def imageFromVolumeNode(volumeNode) -> sitk.Image:
    """A SimpleITK image (LPS) holding a copy of a scalar volume node's voxels.

    The node is only read: the voxel array is copied, so the image can be changed freely.
    """
    import slicer.util

    if volumeNode is None or volumeNode.GetImageData() is None:
        raise ValueError("The volume node holds no image data.")
    array = np.array(slicer.util.arrayFromVolume(volumeNode), copy=True)
    image = sitk.GetImageFromArray(array, isVector=array.ndim == 4)
    spacing, origin, direction = geometryFromIjkToRas(ijkToRasArray(volumeNode))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    return image


def updateVolumeNodeFromImage(volumeNode, image: sitk.Image) -> None:
    """Replace a volume node's voxels and geometry with those of a SimpleITK image (LPS)."""
    import slicer.util

    array = sitk.GetArrayFromImage(image)
    volumeNode.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(ijkToRasFromImage(image)))
    slicer.util.updateVolumeFromArray(volumeNode, array)


def rasToIjk(volumeNode, ras) -> np.ndarray:
    """Continuous IJK index of a RAS point in a volume node (used by tests and the self-test)."""
    point = np.append(np.asarray(ras, dtype=float), 1.0)
    return (np.linalg.inv(ijkToRasArray(volumeNode)) @ point)[:3]
