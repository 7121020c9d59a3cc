"""Super-resolve a whole volume: isotropic resampling, strided patch inference, blending.

The steps (method section 7): cubic B-spline to the isotropic grid (:mod:`CLADE.geometry`),
normalise to [-1, 1], cut every LR-plane slice into 32x32 patches at the stride, run the
generator ``G_X`` on all patches in batches, average-blend, de-normalise, and add back what the
normalisation window clipped (so voxels outside the window keep their spline values). With ``plane="both"``
this is done in both LR planes and the two results are averaged (the paper's future work).

Slices are processed in chunks holding about ``chunk_patches`` patches, so memory stays bounded
for large volumes whatever the stride; patches from several slices share a batch.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
import torch

from .device import DeviceSettings, is_out_of_memory, resolve_device
from .errors import Cancelled, CladeError
from .geometry import (
    detect_thick_axis,
    from_lr_slice_stack,
    lr_slice_axes,
    lr_slice_stack,
    resample_to_isotropic,
)
from .model_file import LoadedModel
from .networks import fuse_for_inference
from .normalisation import IntensityWindow
from .patches import PATCH_SIZE, SlicePatcher
from .volume_io import as_3d, check_volume

log = logging.getLogger("CLADE")

#: Patches held in memory per slice chunk (inputs and outputs, ~4 KB each in float32).
DEFAULT_CHUNK_PATCHES = 8192

#: A volume needs at least this many slices along the thick axis to be worth super-resolving.
MIN_THICK_SLICES = 2


@dataclass(frozen=True)
class ProgressInfo:
    """Progress of a running super-resolution, passed to the ``progress`` callback."""

    done_patches: int
    total_patches: int
    elapsed_seconds: float

    @property
    def fraction(self) -> float:
        return self.done_patches / self.total_patches if self.total_patches else 1.0

    @property
    def eta_seconds(self) -> float | None:
        """Estimated seconds left, or None before the first batch finished."""
        if self.done_patches == 0:
            return None
        rate = self.done_patches / max(self.elapsed_seconds, 1e-9)
        return (self.total_patches - self.done_patches) / rate


@dataclass
class SuperResolutionResult:
    """The super-resolved volume (float32, isotropic grid) and run statistics."""

    image: sitk.Image
    stats: dict = field(default_factory=dict)

    def summary(self) -> str:
        """One line: input grid -> output grid, patches, seconds, patches/s, device."""
        s = self.stats
        grid_in = "x".join(map(str, s["input_size"]))
        grid_out = "x".join(map(str, s["output_size"]))
        sp_in = "x".join(f"{v:.3g}" for v in s["input_spacing"])
        sp_out = "x".join(f"{v:.3g}" for v in s["output_spacing"])
        return (
            f"{grid_in} @ {sp_in} mm -> {grid_out} @ {sp_out} mm, {s['patches']} patches "
            f"({'+'.join(s['planes'])}, stride {s['stride']}), {s['seconds']:.1f} s, "
            f"{s['patches_per_second']:.1f} patches/s on {s['device']}"
        )


def super_resolve(
    image: sitk.Image,
    model: LoadedModel,
    *,
    stride: int | None = None,
    plane: str = "auto",
    thick_axis: int | None = None,
    device: str = "auto",
    batch_size: int | None = None,
    chunk_patches: int = DEFAULT_CHUNK_PATCHES,
    progress: Callable[[ProgressInfo], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SuperResolutionResult:
    """Super-resolve ``image`` with ``model`` onto its isotropic grid.

    ``progress`` is called after every batch; ``cancel`` is polled between batches and, when it
    returns True, the run stops with :class:`CLADE.errors.Cancelled` (nothing is returned, so
    nothing can be written). The input image is never modified.

    Example:
        >>> import SimpleITK as sitk, numpy as np, torch
        >>> from CLADE.model_file import LoadedModel, make_metadata, build_generator
        >>> meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, trained=False)
        >>> model = LoadedModel(build_generator(meta).eval(), meta)
        >>> img = sitk.GetImageFromArray(np.random.rand(6, 40, 40).astype(np.float32))
        >>> img.SetSpacing((1.0, 1.0, 4.0))
        >>> result = super_resolve(img, model, stride=16, device="cpu")
        >>> result.image.GetSize(), result.image.GetSpacing()
        ((40, 40, 24), (1.0, 1.0, 1.0))
    """
    started = time.perf_counter()
    image = as_3d(image)
    check_volume(image)
    axis = detect_thick_axis(image.GetSpacing(), thick_axis)
    _check_size(image, axis)
    stride = int(stride or model.default_stride)
    if not 1 <= stride <= PATCH_SIZE:
        raise CladeError(f"The stride must be between 1 and {PATCH_SIZE} pixels, not {stride}.")
    slice_axes = lr_slice_axes(image, axis, plane)
    settings = resolve_device(device)
    batch = int(batch_size or settings.default_batch_size)
    if batch < 1:
        raise CladeError(f"The batch size must be at least 1, not {batch}.")

    isotropic = resample_to_isotropic(image, axis)
    volume = sitk.GetArrayFromImage(isotropic)
    window = IntensityWindow(*model.normalisation.window(volume))
    normalised = window.normalise(volume)
    # Intensity preservation (ours): what the window clips (e.g. the brightest 0.5% of an MRI,
    # dense bone in CT) is added back after inference, so those voxels keep their spline value
    # instead of being flattened to the window's edge.
    overflow = volume - np.clip(volume, window.low, window.high)
    del volume

    runner = _PatchRunner(model, settings, batch, chunk_patches, progress, cancel, started)
    patchers = []
    for slice_axis in slice_axes:
        stack = lr_slice_stack(normalised, slice_axis, axis)
        patchers.append(
            SlicePatcher(stack.shape[1], stack.shape[2], stride, device=settings.device)
        )
    runner.total = sum(
        p.patches_per_slice * lr_slice_stack(normalised, a, axis).shape[0]
        for p, a in zip(patchers, slice_axes)
    )

    output = np.zeros_like(normalised)
    for slice_axis, patcher in zip(slice_axes, patchers):
        stack = lr_slice_stack(normalised, slice_axis, axis)
        result = runner.run_stack(stack, patcher)
        output += from_lr_slice_stack(result, slice_axis, axis)
    output /= len(slice_axes)

    output = window.denormalise(output)
    output += overflow
    del overflow
    result_image = sitk.GetImageFromArray(output)
    result_image.CopyInformation(isotropic)
    seconds = time.perf_counter() - started
    names = {0: "sagittal", 1: "coronal", 2: "axial"}
    from .geometry import world_axis_of_index_axes

    world = world_axis_of_index_axes(image)
    stats = {
        "input_size": list(image.GetSize()),
        "input_spacing": list(image.GetSpacing()),
        "output_size": list(result_image.GetSize()),
        "output_spacing": list(result_image.GetSpacing()),
        "thick_axis": axis,
        "planes": [names[world[a]] for a in slice_axes],
        "stride": stride,
        "patches": runner.total,
        "batch_size": runner.batch_size,
        "seconds": seconds,
        "patches_per_second": runner.total / seconds if seconds > 0 else float("inf"),
        "device": settings.description,
        "model": model.name,
        "model_trained": model.trained,
        "intensity_window": [window.low, window.high],
    }
    return SuperResolutionResult(result_image, stats)


def _check_size(image: sitk.Image, thick_axis: int) -> None:
    size = image.GetSize()
    if size[thick_axis] < MIN_THICK_SLICES:
        raise CladeError(
            f"The volume has only {size[thick_axis]} slice along its thick axis: CLADE needs at "
            f"least {MIN_THICK_SLICES}."
        )
    small = [size[a] for a in range(3) if a != thick_axis and size[a] < 8]
    if small:
        raise CladeError(
            f"The volume is too small in-plane ({size[0]}x{size[1]}x{size[2]} voxels): CLADE needs "
            "at least 8 pixels along each in-plane axis."
        )


class _PatchRunner:
    """Runs the generator over slice stacks in chunks and batches, with progress and cancel."""

    def __init__(
        self, model, settings: DeviceSettings, batch_size, chunk_patches, progress, cancel, started
    ) -> None:
        self.settings = settings
        self.batch_size = batch_size
        self.chunk_patches = max(1, int(chunk_patches))
        self.progress = progress
        self.cancel = cancel
        self.started = started
        self.total = 0
        self.done = 0
        network = fuse_for_inference(model.generator).to(settings.device)
        if settings.channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network

    def run_stack(self, stack: np.ndarray, patcher: SlicePatcher) -> np.ndarray:
        result = np.empty(stack.shape, dtype=np.float32)
        slices_per_chunk = max(1, self.chunk_patches // patcher.patches_per_slice)
        for first in range(0, stack.shape[0], slices_per_chunk):
            chunk = np.ascontiguousarray(stack[first : first + slices_per_chunk])
            slices = torch.from_numpy(chunk).to(self.settings.device)
            patches = patcher.extract(slices)
            outputs = self._run_patches(patches)
            blended = patcher.blend(outputs, slices.shape[0])
            result[first : first + slices.shape[0]] = blended.float().cpu().numpy()
        return result

    def _run_patches(self, patches: torch.Tensor) -> torch.Tensor:
        outputs = torch.empty_like(patches, dtype=torch.float32)
        start = 0
        with torch.inference_mode():
            while start < patches.shape[0]:
                self._check_cancel()
                stop = min(start + self.batch_size, patches.shape[0])
                try:
                    outputs[start:stop] = self._forward(patches[start:stop])
                except RuntimeError as error:
                    if not is_out_of_memory(error):
                        raise
                    self._shrink_batch()
                    continue
                self.done += stop - start
                start = stop
                if self.progress is not None:
                    elapsed = time.perf_counter() - self.started
                    self.progress(ProgressInfo(self.done, self.total, elapsed))
        return outputs

    def _forward(self, batch: torch.Tensor) -> torch.Tensor:
        if self.settings.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with self.settings.autocast():
            return self.network(batch).float()

    def _shrink_batch(self) -> None:
        if self.settings.device.type == "cuda":
            torch.cuda.empty_cache()
        if self.batch_size <= 1:
            raise CladeError(
                "The GPU ran out of memory even with one patch per batch: close other GPU "
                "programs or use --device cpu."
            )
        self.batch_size = max(1, self.batch_size // 2)
        log.warning("GPU out of memory: continuing with batch size %d.", self.batch_size)

    def _check_cancel(self) -> None:
        if self.cancel is not None and self.cancel():
            raise Cancelled()
