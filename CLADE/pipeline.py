"""The one super-resolution pipeline every front end calls.

``clade super-resolve``, the Python API (:func:`super_resolve`), the Slicer module (through the
command line's JSON progress stream) and the Slicer CLI module all build a
:class:`SuperResolutionRequest` and call :func:`run` (or :func:`super_resolve_file`). Stages, each
reported through one progress type (:class:`PipelineProgress`):

1. ``resample``: cubic B-spline onto the isotropic grid (:mod:`CLADE.geometry`), slab by slab,
   into one float32 array; the intensity window is computed once, on it.
2. ``adapt``: fine-tune a copy of the model on this volume's own degraded in-plane slices
   (:mod:`CLADE.adaptation`), cut from that same resampled, normalised volume, when
   ``adapt_steps`` asks for it: ``auto`` (the default) decides from the volume, the model and the
   device (:mod:`CLADE.adaptation_policy`), a number forces that many steps, 0 turns it off.
3. ``infer``: the generator over the LR-plane slices (:mod:`CLADE.inference`), slab by slab:
   each slab is normalised, run, de-normalised, given back what the window clipped, and written
   over its own spline values (each voxel lies in exactly one LR slice). Memory stays near two
   output-sized float32 copies: the array and the final image (three with ``plane="both"``,
   whose two planes are averaged into a separate array).
4. ``write`` (:func:`super_resolve_file`): the output file, written under a temporary name and
   renamed when complete.

``cancel`` is polled between batches; when it returns True, :class:`CLADE.errors.Cancelled` is
raised and nothing is returned or written. The input image is never modified.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .adaptation_policy import AUTO, inference_flops, parse_adapt_steps, plan_adaptation
from .errors import Cancelled, CladeError
from .geometry import (
    detect_thick_axis,
    lr_slice_axes,
    lr_slice_stack,
    resample_to_isotropic_array,
    world_axis_of_index_axes,
)
from .model_file import LoadedModel
from .normalisation import IntensityWindow
from .patches import PATCH_SIZE
from .progress import PipelineProgress, StageReporter, speed_advice
from .volume_io import as_3d, check_volume
from .workload import estimate_work

log = logging.getLogger("CLADE")

#: A volume needs at least this many slices along the thick axis to be worth super-resolving.
MIN_THICK_SLICES = 2
#: Output voxels per streamed slab (64 MB of float32): small against the output, large enough
#: that per-slab overheads vanish.
SLAB_VOXELS = 1 << 24
_PLANE_NAMES = {0: "sagittal", 1: "coronal", 2: "axial"}


@dataclass(frozen=True)
class SuperResolutionRequest:
    """Everything a super-resolution run is asked to do (``auto`` resolves per model/device).

    Example:
        >>> SuperResolutionRequest(model="mri", tiling="patches", stride=12).tiling
        'patches'
    """

    model: object = "mri"  #: shipped name, model file path, or a loaded model
    tiling: str = "auto"  #: auto | slices | patches
    stride: int | None = None  #: patches only; None = the model's default
    ensemble: str = "auto"  #: auto | none | flips2 | flips
    precision: str = "auto"  #: auto | float32 | bfloat16
    plane: str = "auto"
    thick_axis: int | None = None
    device: str = "auto"
    batch_size: int | None = None  #: patches (patches) or slices (slices) per forward pass
    adapt_steps: int | str = "auto"  #: auto | 0 (off) | steps (CLADE.adaptation_policy)
    error_map: bool = False  #: also estimate where the output may be wrong (CLADE.error_map)


@dataclass
class PipelineResult:
    """The super-resolved volume (float32, isotropic grid), run statistics, and what
    adaptation did (None without adaptation)."""

    image: sitk.Image
    stats: dict = field(default_factory=dict)
    adaptation: object = None
    #: The estimated absolute error (float32, output units, the output's grid), when requested.
    error_map: sitk.Image | None = None

    def summary(self) -> str:
        """One line: input grid -> output grid, how it ran, seconds, rate, device."""
        s = self.stats
        grid_in = "x".join(map(str, s["input_size"]))
        grid_out = "x".join(map(str, s["output_size"]))
        sp_in = "x".join(f"{v:.3g}" for v in s["input_spacing"])
        sp_out = "x".join(f"{v:.3g}" for v in s["output_spacing"])
        if s["tiling"] == "patches":
            how = f"{s['patches']} patches (stride {s['stride']})"
        else:
            how = f"{s['slices']} whole slices"
        extras = [s["precision"]]
        if s["ensemble"] != "none":
            extras.append(f"{s['ensemble']} ensemble")
        line = (
            f"{grid_in} @ {sp_in} mm -> {grid_out} @ {sp_out} mm, {how} "
            f"({'+'.join(s['planes'])}, {', '.join(extras)}), {s['seconds']:.1f} s, "
            f"{s['voxels_per_second'] / 1e6:.2f} Mvoxel/s on {s['device']}"
        )
        if s.get("adaptation"):
            line += f"; {s['adaptation']}"
        return line + (f"; {s['error_map']['summary']}" if s.get("error_map") else "")


#: Back-compatible name of the result type.
SuperResolutionResult = PipelineResult


def resolve_request(request: SuperResolutionRequest) -> tuple[LoadedModel, dict]:
    """The loaded model and the concrete settings (no ``auto`` left but device) of a request.

    Example:
        >>> _, settings = resolve_request(SuperResolutionRequest(model="mri", stride=8))
        >>> settings["tiling"], settings["stride"]
        ('patches', 8)
    """
    from .inference import ENSEMBLES, TILINGS
    from .registry import inference_defaults, resolve_model

    model = request.model
    if not isinstance(model, LoadedModel):
        model = resolve_model(model)
    defaults = inference_defaults(model)
    tiling = request.tiling
    if tiling == "auto":
        # A stride only means something for patches, so asking for one asks for patches.
        tiling = "patches" if request.stride is not None else defaults["tiling"]
    if tiling not in TILINGS:
        raise CladeError(f"Unknown tiling {tiling!r}: use auto, {', '.join(TILINGS)}.")
    if tiling == "slices" and request.stride is not None:
        raise CladeError(
            "--stride applies to --tiling patches only (whole slices have no stride): leave it "
            "out, or add --tiling patches."
        )
    stride = int(request.stride or model.default_stride)
    if not 1 <= stride <= PATCH_SIZE:
        raise CladeError(f"The stride must be between 1 and {PATCH_SIZE} pixels, not {stride}.")
    ensemble = defaults["ensemble"] if request.ensemble == "auto" else request.ensemble
    if ensemble not in ENSEMBLES:
        raise CladeError(f"Unknown ensemble {ensemble!r}: use auto, {', '.join(ENSEMBLES)}.")
    if request.batch_size is not None and request.batch_size < 1:
        raise CladeError(f"The batch size must be at least 1, not {request.batch_size}.")
    parse_adapt_steps(request.adapt_steps)  # a bad value fails before any work
    return model, {"tiling": tiling, "stride": stride, "ensemble": ensemble}


def run(
    image: sitk.Image,
    request: SuperResolutionRequest,
    progress: Callable[[PipelineProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    *,
    writing: bool = False,
) -> PipelineResult:
    """Super-resolve ``image`` as ``request`` asks (see the module docstring for the stages).

    ``writing`` leaves room in the progress fraction for a ``write`` stage that follows.

    Example:
        >>> import numpy as np, SimpleITK as sitk
        >>> from CLADE.model_file import LoadedModel, make_metadata, build_generator
        >>> meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, trained=False)
        >>> model = LoadedModel(build_generator(meta).eval(), meta)
        >>> img = sitk.GetImageFromArray(np.random.rand(6, 40, 40).astype(np.float32))
        >>> img.SetSpacing((1.0, 1.0, 4.0))
        >>> result = run(img, SuperResolutionRequest(model=model, device="cpu"))
        >>> result.image.GetSize(), result.image.GetSpacing(), result.stats["tiling"]
        ((40, 40, 24), (1.0, 1.0, 1.0), 'slices')
    """
    from .device import resolve_device
    from .inference import GeneratorRunner, StackInference

    started = time.perf_counter()
    image = as_3d(image)
    check_volume(image)
    model, chosen = resolve_request(request)
    _warn_modality(image, model)
    axis = detect_thick_axis(image.GetSpacing(), request.thick_axis)
    _check_size(image, axis)
    slice_axes = lr_slice_axes(image, axis, request.plane)
    settings = resolve_device(request.device, request.precision)
    plan = _plan_adaptation(request, model, settings, chosen, axis, slice_axes, image)
    work = estimate_work(image, axis, len(slice_axes), plan.steps)
    work.check(log)
    reporter = StageReporter(
        progress,
        plan.steps > 0,
        writing,
        started,
        _speed_advice(settings, chosen, len(slice_axes)),
    )

    def check_cancel() -> None:
        if cancel is not None and cancel():
            raise Cancelled()

    reporter.begin("resample")
    volume = resample_to_isotropic_array(
        image, axis, slice_axes[0], SLAB_VOXELS, on_slab=_polling(reporter, check_cancel)
    )
    window = IntensityWindow(*model.normalisation.window(volume))
    ratio = image.GetSpacing()[axis] / work.output_spacing[axis]

    adaptation = None
    shipped = model  # the model as loaded, before any adaptation
    if plan.steps > 0:
        lr_axes = lr_slice_axes(image, axis, "auto")  # as adapt_to_volume samples them
        prepared = (volume, window, axis, lr_axes, ratio)
        adaptation, plan = _adapt(prepared, model, plan, request.device, reporter, cancel)
        model = model if adaptation is None else adaptation.model
    log.info("%s.", plan.describe())

    reporter.begin("infer")
    runner = GeneratorRunner(model, settings, chosen["ensemble"])
    engine = StackInference(
        runner,
        chosen["tiling"],
        stride=chosen["stride"],
        batch_size=request.batch_size,
        on_progress=lambda done, total: reporter.report(done, total),
        cancel=cancel,
    )
    for slice_axis in slice_axes:
        engine.plan(lr_slice_stack(volume, slice_axis, axis).shape)
    network_started = time.perf_counter()
    spline = volume.copy() if request.error_map else None  # the map compares SR with it
    output = volume if len(slice_axes) == 1 else np.zeros_like(volume)
    for slice_axis in slice_axes:
        _infer_plane(volume, output, slice_axis, axis, window, engine)
    if len(slice_axes) > 1:
        output /= np.float32(len(slice_axes))
    network_seconds = time.perf_counter() - network_started
    del volume
    error_map = None
    if request.error_map:  # pairs through the same tiling and ensemble
        # An adapted generator was trained on this volume's in-plane slices, the very pairs the
        # map learns from, so its errors there understate its through-plane errors (measured on
        # the MNI brain: calibration ratios 0.64-0.82 with pairs through the adapted model,
        # 0.79-1.03 through the model as shipped; models/cards/error-map.md).
        pairs_runner = runner
        if model is not shipped:
            pairs_runner = GeneratorRunner(shipped, settings, chosen["ensemble"])
        pairs_engine = StackInference(pairs_runner, chosen["tiling"], stride=chosen["stride"])
        modality = str(model.metadata.get("modality", ""))
        error_map = _estimate_error_map(
            image,
            spline,
            output,
            window,
            (axis, slice_axes, ratio, pairs_engine),
            check_cancel,
            modality,
        )
        del spline
    result_image = _on_grid(output, work.grid)
    del output
    seconds = time.perf_counter() - started
    world = world_axis_of_index_axes(image)
    voxels = int(np.prod(result_image.GetSize()))
    stats = {
        "input_size": list(image.GetSize()),
        "input_spacing": list(image.GetSpacing()),
        "output_size": list(result_image.GetSize()),
        "output_spacing": list(result_image.GetSpacing()),
        "thick_axis": axis,
        "planes": [_PLANE_NAMES[world[a]] for a in slice_axes],
        "tiling": chosen["tiling"],
        "stride": chosen["stride"] if chosen["tiling"] == "patches" else None,
        "ensemble": chosen["ensemble"],
        "precision": settings.precision,
        "slices": sum(work.output_size[a] for a in slice_axes),
        "patches": engine.total if chosen["tiling"] == "patches" else 0,
        "batch_size": engine.batch_size,
        "seconds": seconds,
        "network_seconds": network_seconds,
        "voxels_per_second": voxels / max(seconds, 1e-9),
        "patches_per_second": (
            engine.total / max(seconds, 1e-9) if chosen["tiling"] == "patches" else 0.0
        ),
        "device": settings.description,
        "model": model.name,
        "model_trained": model.trained,
        "intensity_window": [window.low, window.high],
        "adapted": None if adaptation is None else bool(adaptation.improved),
        "adapt_steps": plan.steps,
        "adaptation": _adaptation_summary(plan, adaptation),
        "error_map": None if error_map is None else error_map.stats(),
    }
    map_image = None if error_map is None else _on_grid(error_map.array, work.grid)
    return PipelineResult(result_image, stats, adaptation, map_image)


def _on_grid(array: np.ndarray, grid) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(grid.spacing)
    image.SetOrigin(grid.origin)
    image.SetDirection(grid.direction)
    return image


def _estimate_error_map(image, spline, output, window, how, check_cancel, modality):
    from .error_map import estimate_error_map

    axis, slice_axes, ratio, engine = how
    native = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    result = estimate_error_map(
        native, spline, output, window, axis, slice_axes, ratio, engine.run, check_cancel, modality
    )
    log.info(result.summary())
    return result


def _speed_advice(settings, chosen: dict, planes: int) -> dict[str, list[str]]:
    import torch

    from .device import cpu_has_fast_bfloat16

    return speed_advice(
        device_type=settings.device.type,
        cuda_available=torch.cuda.is_available(),
        precision=settings.precision,
        fast_bfloat16=cpu_has_fast_bfloat16(),
        tiling=chosen["tiling"],
        ensemble=chosen["ensemble"],
        planes=planes,
    )


def _polling(reporter: StageReporter, check_cancel: Callable[[], None]):
    def on_slab(done: int, total: int) -> None:
        check_cancel()
        reporter.report(done, total)

    return on_slab


def _infer_plane(volume, output, slice_axis, thick_axis, window, engine) -> None:
    """Run the LR slices along ``slice_axis`` slab by slab, adding the result into ``output``."""
    stack = lr_slice_stack(volume, slice_axis, thick_axis)  # a view
    target = lr_slice_stack(output, slice_axis, thick_axis)
    per_slab = max(1, SLAB_VOXELS // max(1, stack.shape[1] * stack.shape[2]))
    in_place = output is volume
    for first in range(0, stack.shape[0], per_slab):
        spline = np.array(stack[first : first + per_slab], dtype=np.float32)
        # Intensity preservation (ours): what the window clips (the brightest 0.5% of an MRI,
        # dense bone in CT) is added back after inference, so those voxels keep their spline
        # value instead of being flattened to the window's edge.
        overflow = spline - np.clip(spline, window.low, window.high)
        result = window.denormalise(engine.run(window.normalise(spline)))
        result += overflow
        if in_place:
            target[first : first + per_slab] = result
        else:
            target[first : first + per_slab] += result


def _plan_adaptation(request, model, settings, chosen, axis, slice_axes, image):
    from .geometry import isotropic_grid
    from .inference import ensemble_passes

    architecture = model.metadata.get("architecture")
    grid = isotropic_grid(image, axis).size
    cost = 0.0
    if architecture is not None:
        cost = inference_flops(
            grid,
            axis,
            slice_axes,
            architecture,
            tiling=chosen["tiling"],
            stride=chosen["stride"],
            passes=ensemble_passes(chosen["ensemble"]),
        )
    gpu = settings.device.type != "cpu"
    return plan_adaptation(request.adapt_steps, grid, axis, slice_axes, architecture, gpu, cost)


def _adapt(prepared, model, plan, device, reporter, cancel):
    """Adapt ``model`` as ``plan`` says; with ``auto``, a volume too poor in foreground to adapt
    on is super-resolved without adaptation (the plan then says why) instead of failing."""
    from .adaptation import TooLittleToAdapt, adapt_prepared_volume
    from .slice_sampling import PreparedVolume

    volume, window, axis, lr_axes, ratio = prepared
    reporter.begin("adapt")
    prepared = PreparedVolume(window.normalise(volume), axis, lr_axes, ratio)
    try:
        result = adapt_prepared_volume(
            prepared,
            model,
            steps=plan.steps,
            device=device,
            progress=lambda info: reporter.report(info.done_steps, info.total_steps),
            cancel=cancel,
        )
    except TooLittleToAdapt as error:
        if plan.requested != AUTO:
            raise
        reporter.report(1, 1)
        return None, replace(plan, steps=0, reason=str(error).split(":")[0].lower())
    finally:
        del prepared
    log.info(result.summary())
    return result, plan


def _adaptation_summary(plan, adaptation) -> str:
    """What was decided about adaptation and why, and what it did, for the run's summary."""
    if adaptation is None:
        return plan.describe()
    verdict = "kept" if adaptation.improved else f"not kept ({adaptation.verdict})"
    return f"{plan.describe()}, {adaptation.seconds:.0f} s, {verdict}"


def _warn_modality(image: sitk.Image, model: LoadedModel) -> None:
    """Warn when a DICOM series' Modality tag names another modality than the model's."""
    from .dicom_series import MODALITY_KEY

    if not image.HasMetaDataKey(MODALITY_KEY):
        return
    found = image.GetMetaData(MODALITY_KEY).strip().upper()
    expected = str(model.metadata.get("modality", "")).strip().upper()
    if {found, expected} <= {"MR", "CT"} and found != expected:
        log.warning(
            "the input is a DICOM series of modality %s but the model %r was trained on %s: "
            "its output will not be a faithful %s image; use the %s model.",
            found,
            model.name,
            expected,
            found,
            "mri" if found == "MR" else "ct",
        )


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


def super_resolve(
    image: sitk.Image,
    model,
    *,
    progress: Callable[[PipelineProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    **settings,
) -> PipelineResult:
    """The Python API: :func:`run` with the request's fields as keyword arguments.

    Example (an identity network: the output is the spline volume):
        >>> import numpy as np, SimpleITK as sitk, torch
        >>> from CLADE.model_file import LoadedModel, make_metadata
        >>> identity = LoadedModel(torch.nn.Identity(), make_metadata("id", "MR"))
        >>> img = sitk.GetImageFromArray(np.random.rand(6, 40, 40).astype(np.float32))
        >>> img.SetSpacing((1.0, 1.0, 4.0))
        >>> super_resolve(img, identity, stride=16, device="cpu").stats["tiling"]
        'patches'
    """
    return run(image, SuperResolutionRequest(model=model, **settings), progress, cancel)


def super_resolve_file(
    input_path: str | os.PathLike,
    output_path: str | os.PathLike,
    request: SuperResolutionRequest,
    *,
    output_type: str = "float32",
    progress: Callable[[PipelineProgress], None] | None = None,
    cancel: Callable[[], bool] | None = None,
    image: sitk.Image | None = None,
    error_map_path: str | os.PathLike | None = None,
) -> PipelineResult:
    """Read ``input_path``, :func:`run`, and write ``output_path`` atomically (stage ``write``).

    ``output_type`` is ``float32`` or ``input`` (the input's pixel type, rounded and clipped).
    The output path is checked before any work, so a bad destination fails in a second.
    ``image`` is the input already read from ``input_path`` (the caller checked it first).
    ``error_map_path`` also estimates the error map (:mod:`CLADE.error_map`) and writes it
    there (float32, the output's grid), after the output.
    """
    from .registry import resolve_model
    from .volume_io import cast_like, check_output_path, read_volume, write_volume

    if output_type not in ("float32", "input"):
        raise CladeError(f"Unknown output type {output_type!r}: use float32 or input.")
    output = check_output_path(output_path, inputs=(input_path,))
    map_output = None
    if error_map_path is not None:
        from .error_map import check_error_map_path

        map_output = check_error_map_path(error_map_path, input_path, output)
        request = replace(request, error_map=True)
    if image is None:
        image = read_volume(input_path)
    if not isinstance(request.model, LoadedModel):
        request = replace(request, model=resolve_model(request.model))
    started = time.perf_counter()
    result = run(image, request, progress, cancel, writing=True)
    reporter = StageReporter(progress, result.stats["adapt_steps"] > 0, True, started)
    reporter.begin("write")
    out_image = result.image
    if output_type == "input":
        out_image = cast_like(out_image, image.GetPixelID())
    if cancel is not None and cancel():
        raise Cancelled()
    write_volume(out_image, output)
    if map_output is not None:
        write_volume(result.error_map, map_output)
        result.stats["error_map_output"] = str(Path(map_output).resolve())
    reporter.report(1, 1)
    result.stats["output"] = str(Path(output).resolve())
    return result
