"""Per-epoch validation on held-out volumes: PIQE, and PSNR/SSIM against an isotropic reference.

The current ``G_X`` super-resolves each validation volume exactly as ``clade super-resolve``
would (:func:`CLADE.pipeline.super_resolve`, the run's LR plane and a validation stride, by
default the model's default stride). Then:

* ``piqe``: mean PIQE (:func:`CLADE.metrics.piqe.volume_piqe`, lower is better) over the slices
  of the super-resolved volume in its (first) LR plane, the orientation the paper scores;
* ``psnr``, ``ssim`` (higher is better) when a reference is given: the isotropic volume the
  validation volume was simulated from, on the same grid as the super-resolved output.

Metrics are averaged over the validation volumes. The best epoch is chosen by ``best_metric``:
``auto`` means SSIM when references are given, PIQE otherwise (the paper's choice).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch

from ..errors import CladeError
from ..geometry import detect_thick_axis, isotropic_grid, lr_slice_axes
from ..model_file import LoadedModel
from ..volume_io import read_volume

LOWER_IS_BETTER = {"piqe": True, "psnr": False, "ssim": False}


@dataclass
class ValidationSet:
    """Validation volumes (and optional references), read and checked once."""

    images: list[sitk.Image]
    names: list[str]
    references: list[sitk.Image | None]
    plane: str = "auto"
    stride: int | None = None

    @classmethod
    def load(
        cls,
        volumes: Sequence[str | os.PathLike],
        references: Sequence = (),
        plane: str = "auto",
        stride: int | None = None,
    ) -> ValidationSet:
        """Read and check the validation volumes; :class:`CladeError` for unusable ones."""
        if references and len(references) != len(volumes):
            raise CladeError(
                f"Give one --val-reference per --val volume ({len(volumes)} volumes, "
                f"{len(references)} references), in the same order."
            )
        images, refs = [], []
        for index, path in enumerate(volumes):
            image = read_volume(path)
            try:
                thick = detect_thick_axis(image.GetSpacing())
                lr_slice_axes(image, thick, plane)
            except CladeError as error:
                reason = str(error).rstrip(".")
                raise CladeError(
                    f"The validation volume {path} cannot be used "
                    f"({reason[:1].lower() + reason[1:]}): give a held-out thick-slice volume."
                ) from None
            images.append(image)
            reference = read_volume(references[index]) if references else None
            if reference is not None:
                expected = isotropic_grid(image, thick).size
                if tuple(reference.GetSize()) != tuple(expected):
                    raise CladeError(
                        f"The reference {references[index]} has {_size(reference.GetSize())} "
                        f"voxels but the super-resolved {path} will have {_size(expected)}: give "
                        "the isotropic volume that validation volume was made from."
                    )
                _check_reference_grid(
                    reference, isotropic_grid(image, thick), references[index], path
                )
            refs.append(reference)
        return cls(images, [str(v) for v in volumes], refs, plane, stride)

    @property
    def has_references(self) -> bool:
        return any(r is not None for r in self.references)


def _size(size) -> str:
    return "x".join(str(s) for s in size)


def choose_metric(best_metric: str, validation: ValidationSet | None) -> str | None:
    """The metric that picks the best epoch (``None`` without validation volumes).

    Example:
        >>> choose_metric("auto", None) is None
        True
    """
    if validation is None:
        if best_metric not in ("auto",):
            raise CladeError(f"Choosing the best epoch by {best_metric} needs --val volumes.")
        return None
    if best_metric == "auto":
        return "ssim" if validation.has_references else "piqe"
    if best_metric in ("psnr", "ssim") and not validation.has_references:
        raise CladeError(f"Choosing the best epoch by {best_metric} needs --val-reference.")
    return best_metric


def is_better(metric: str, value: float, best: float | None) -> bool:
    """Whether ``value`` beats ``best`` for ``metric``.

    Example:
        >>> is_better("piqe", 30.0, 35.0), is_better("ssim", 0.7, 0.8), is_better("psnr", 1.0, None)
        (True, False, True)
    """
    if best is None:
        return True
    return value < best if LOWER_IS_BETTER[metric] else value > best


def validate(
    generator: torch.nn.Module, metadata: dict, validation: ValidationSet, device: str = "cpu"
) -> dict[str, float]:
    """Super-resolve every validation volume with ``generator`` and average the metrics."""
    from ..metrics.piqe import volume_piqe
    from ..pipeline import super_resolve

    model = LoadedModel(generator, metadata)
    scores: dict[str, list[float]] = {}
    for image, reference in zip(validation.images, validation.references):
        # The paper's patches in float32, as the shipped recipes were validated (so a recipe
        # reproduces its validation figures whatever the inference defaults become).
        result = super_resolve(
            image,
            model,
            tiling="patches",
            stride=validation.stride,
            ensemble="none",
            precision="float32",
            plane=validation.plane,
            device=device,
            adapt_steps=0,  # validation measures the model itself
        )
        output = sitk.GetArrayFromImage(result.image)
        slice_axis = lr_slice_axes(image, result.stats["thick_axis"], validation.plane)[0]
        scores.setdefault("piqe", []).append(volume_piqe(output, axis=2 - slice_axis))
        if reference is not None:
            for name, value in reference_metrics(output, sitk.GetArrayFromImage(reference)).items():
                scores.setdefault(name, []).append(value)
    return {name: float(np.mean(values)) for name, values in scores.items()}


def reference_metrics(output: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """PSNR and SSIM of ``output`` against ``reference`` (same shape, same units).

    The data range is the reference's (:mod:`CLADE.metrics.reference` conventions).

    Example:
        >>> ref = np.random.default_rng(0).normal(size=(10, 10, 10))
        >>> reference_metrics(ref, ref)
        {'psnr': inf, 'ssim': 1.0}
        >>> reference_metrics(ref + 0.5, ref)["psnr"] < 30
        True
    """
    from ..metrics import reference as metrics

    return {
        "psnr": float(metrics.psnr(reference, output)),
        "ssim": float(metrics.ssim(reference, output)),
    }


def _check_reference_grid(reference: sitk.Image, grid, name, path) -> None:
    """Refuse a reference that is not on the super-resolved volume's grid (as ``evaluate``
    does): PSNR and SSIM of misaligned voxels would choose the best epoch at random."""
    from ..evaluation import GRID_TOLERANCE

    same = (
        np.allclose(reference.GetSpacing(), grid.spacing, rtol=GRID_TOLERANCE, atol=0)
        and np.allclose(reference.GetDirection(), grid.direction, rtol=0, atol=GRID_TOLERANCE)
        and np.allclose(
            reference.GetOrigin(), grid.origin, rtol=0, atol=GRID_TOLERANCE * 10 * min(grid.spacing)
        )
    )
    if not same:
        origin = ", ".join(f"{v:.4g}" for v in reference.GetOrigin())
        wanted = ", ".join(f"{v:.4g}" for v in grid.origin)
        raise CladeError(
            f"The reference {name} is not on the grid the super-resolved {path} will have "
            f"(origin {origin} vs {wanted}, or another spacing or direction): give the isotropic "
            "volume that validation volume was made from."
        )
