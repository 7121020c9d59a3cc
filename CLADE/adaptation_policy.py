"""Whether a run adapts the model to its volume, and for how many steps (``--adapt auto``).

Adaptation (:mod:`CLADE.adaptation`) is the default because on every held-out volume measured it
improved PSNR, SSIM and edge sharpness through the thick axis at 200 and 500 steps
(``models/cards/adaptation.md``). ``auto`` adapts for 500 steps, else 200, when that fits the
run's budget, and not at all otherwise:

* on a GPU, always (500 steps take seconds);
* on a CPU, when the run with adaptation is estimated to cost no more than the paper's own
  pipeline would on the same volume (32x32 patches at stride 12 through the paper's 64-filter
  generator, float32): that pipeline's time is what a user of the method already accepts;
* never when the volume's in-plane slices are smaller than the adaptation patches, when it has
  fewer than :data:`MIN_HR_SLICES` of them on its isotropic grid, or when they hold too few
  patches with foreground (the pipeline then runs without it and says so). Adaptation learns
  from in-plane slices only, so a volume thin along its thick axis (the 20-voxel abdominal MR)
  can still adapt.

Why fewer steps are not tried below 200: at 25-100 steps five of eight MRI runs lost a little
edge sharpness or SSIM (the card's curve). The estimate counts floating-point operations
(:func:`CLADE.network_cost.generator_flops_per_voxel`), so the same volume gets the same decision
on any machine, and weighs a training FLOP by :data:`TRAINING_FLOP_COST`, measured.

An integer forces that many steps (0: off).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import CladeError
from .network_cost import generator_flops_per_voxel
from .patches import PATCH_SIZE, padded_length

AUTO = "auto"
#: Step counts ``auto`` tries, most first.
AUTO_STEPS = (500, 200)
#: Steps of ``--adapt`` without a number and of :func:`CLADE.adaptation.adapt_to_volume`.
FORCED_STEPS = AUTO_STEPS[0]
#: The paper's generator (method section 3) and patch stride (section 7): the budget's pipeline.
PAPER_ARCHITECTURE = {"base_filters": 64, "n_blocks": 6, "upsample": "transpose"}
PAPER_STRIDE = 12
#: In-plane slices a volume needs on its isotropic grid to adapt (held back: 2, with their
#: neighbours, :func:`CLADE.adaptation.split_slices`; at least 6 left to train on).
MIN_HR_SLICES = 12
#: Patches per adaptation step (:func:`CLADE.adaptation.adapt_prepared_volume`'s batch).
BATCH = 4
#: Cost of one adaptation FLOP in inference FLOPs. A step is a forward and a backward pass (3x a
#: forward's FLOPs, counted in :func:`adaptation_flops`), and small training batches run further
#: below the CPU's peak than inference. Measured side by side (2-core AMD EPYC,
#: ``benchmarks/results/adaptation-budget-*``), less the fixed cost per step below, the paper
#: pipeline's patches ran 2.0x as many FLOP/s as ``ct``'s adaptation steps on the 9 and 12 mm CT
#: and 3.2x as many as ``mri``'s (then named mri-fast) on the MNI brain; 2.5 lies between.
TRAINING_FLOP_COST = 2.5
#: Fixed cost of one adaptation step whatever the network's size (autograd, the optimiser, Python),
#: in inference FLOPs: 500 steps of a 4-filter network took 2 s on a 2-core AMD EPYC, 4 ms a step,
#: which the paper pipeline spends on about 1.2 GFLOP (at 300 GFLOP/s). It is what rules out
#: adaptation on a small volume where the FLOPs alone would allow it.
STEP_OVERHEAD_FLOPS = 1.2e9


@dataclass(frozen=True)
class AdaptationPlan:
    """How many steps a run adapts for (0: none) and why, for the run's summary."""

    steps: int
    reason: str
    requested: object = AUTO

    def describe(self) -> str:
        """E.g. ``adaptation auto: 500 steps (...)`` or ``adaptation off (--adapt 0)``."""
        mode = "auto" if self.requested == AUTO else "forced"
        if not self.steps:
            return f"adaptation off ({self.reason})"
        return f"adaptation {mode}: {self.steps} steps ({self.reason})"


def why_not_adaptable(grid_size, thick_axis: int) -> str | None:
    """Why a volume of isotropic grid ``grid_size`` (x, y, z) cannot adapt, or None if it can.

    Example:
        >>> why_not_adaptable((120, 100, 20), 2) is None, why_not_adaptable((120, 100, 8), 2)
        (True, 'the volume has 8 in-plane slices on its isotropic grid, under the 12 adaptation needs')
    """
    in_plane = [grid_size[a] for a in range(3) if a != thick_axis]
    if min(in_plane) < PATCH_SIZE:
        return (
            f"the volume's in-plane slices are {in_plane[0]}x{in_plane[1]} voxels, under the "
            f"{PATCH_SIZE}x{PATCH_SIZE} of an adaptation patch"
        )
    if grid_size[thick_axis] < MIN_HR_SLICES:
        return (
            f"the volume has {grid_size[thick_axis]} in-plane slices on its isotropic grid, under "
            f"the {MIN_HR_SLICES} adaptation needs"
        )
    return None


def check_adaptable(grid_size, thick_axis: int) -> None:
    """:class:`CladeError` when ``--adapt N`` is asked of a volume that cannot adapt."""
    reason = why_not_adaptable(grid_size, thick_axis)
    if reason is not None:
        raise CladeError(f"Cannot adapt: {reason}; super-resolve it with --adapt 0 or auto.")


def parse_adapt_steps(value) -> int | str:
    """``auto`` or a whole number of steps of at least 0, from an API value or command text.

    Example:
        >>> parse_adapt_steps("auto"), parse_adapt_steps("200"), parse_adapt_steps(0)
        ('auto', 200, 0)
    """
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        steps = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError:
        steps = None
    if steps is None or isinstance(value, bool) or steps < 0:
        raise CladeError(
            f"--adapt takes auto, 0 (off) or a number of steps, not {value!r}: use e.g. "
            "--adapt auto or --adapt 500."
        )
    return steps


def adaptation_flops(steps: int, architecture: dict) -> float:
    """Inference-equivalent FLOPs of ``steps`` adaptation steps (see
    :data:`TRAINING_FLOP_COST` and :data:`STEP_OVERHEAD_FLOPS`).

    Example:
        >>> round(adaptation_flops(500, PAPER_ARCHITECTURE) / 1e12, 1)
        16.6
    """
    forward = steps * BATCH * PATCH_SIZE**2 * generator_flops_per_voxel(architecture)
    return 3 * forward * TRAINING_FLOP_COST + steps * STEP_OVERHEAD_FLOPS


def inference_flops(
    grid_size,
    thick_axis: int,
    slice_axes,
    architecture: dict,
    *,
    tiling: str = "slices",
    stride: int = PAPER_STRIDE,
    passes: int = 1,
) -> float:
    """FLOPs of inferring a volume of isotropic grid ``grid_size`` (x, y, z) in the LR planes
    across ``slice_axes``: every voxel once per plane and ensemble pass with whole slices, every
    patch pixel (borders padded as :mod:`CLADE.patches` pads them) with patches.

    Example (the 9 mm abdominal CT, the 32-filter ``ct`` model):
        >>> ct = {"base_filters": 32, "n_blocks": 6, "upsample": "resize"}
        >>> round(inference_flops((122, 101, 111), 2, [0], ct) / 1e9)
        437
    """
    pixels = 0
    for axis in slice_axes:
        if tiling == "slices":
            pixels += math.prod(grid_size)
            continue
        other = 3 - axis - thick_axis  # the in-plane axis inside this LR plane
        rows, columns = (padded_length(grid_size[a], stride) for a in (thick_axis, other))
        per_slice = ((rows - PATCH_SIZE) // stride + 1) * ((columns - PATCH_SIZE) // stride + 1)
        pixels += grid_size[axis] * per_slice * PATCH_SIZE**2
    return pixels * passes * generator_flops_per_voxel(architecture)


def paper_pipeline_flops(grid_size, thick_axis: int, slice_axes) -> float:
    """:func:`inference_flops` of the paper's pipeline (stride-12 patches, its generator): the
    budget of ``auto``.

    Example:
        >>> round(paper_pipeline_flops((122, 101, 111), 2, [0]) / 1e12, 2)
        7.31
    """
    return inference_flops(grid_size, thick_axis, slice_axes, PAPER_ARCHITECTURE, tiling="patches")


def plan_adaptation(
    requested,
    grid_size,
    thick_axis: int,
    slice_axes,
    architecture: dict | None,
    gpu: bool,
    inference_flops: float,
) -> AdaptationPlan:
    """The :class:`AdaptationPlan` of a run: ``requested`` is ``auto`` or a number of steps;
    ``inference_flops`` is what the run's own inference costs (its tiling and ensemble).

    Example (the 9 mm abdominal CT on a CPU with the 32-filter ``ct`` model):
        >>> ct = {"base_filters": 32, "n_blocks": 6, "upsample": "resize"}
        >>> plan = plan_adaptation("auto", (122, 101, 111), 2, [0], ct, False, 0.36e12)
        >>> plan.steps, plan.reason
        (500, 'estimated at 0.80x the paper pipeline on this volume')
        >>> plan_adaptation("auto", (40, 24, 60), 2, [0], ct, False, 1e9).describe()
        "adaptation off (the volume's in-plane slices are 40x24 voxels, under the 32x32 of an \
adaptation patch)"
    """
    requested = parse_adapt_steps(requested)
    if requested != AUTO:
        if requested:
            check_adaptable(grid_size, thick_axis)
        reason = "--adapt 0" if requested == 0 else f"--adapt {requested}"
        return AdaptationPlan(requested, reason, requested)
    reason = why_not_adaptable(grid_size, thick_axis)
    if reason is not None:
        return AdaptationPlan(0, reason)
    if architecture is None:  # a model whose size is unknown (not a CLADE ResnetGenerator)
        return AdaptationPlan(0, "the model's architecture is not recorded, so its cost is unknown")
    if gpu:
        return AdaptationPlan(AUTO_STEPS[0], "on a GPU")
    budget = paper_pipeline_flops(grid_size, thick_axis, slice_axes)
    for steps in AUTO_STEPS:
        share = (inference_flops + adaptation_flops(steps, architecture)) / budget
        if share <= 1.0:
            return AdaptationPlan(
                steps, f"estimated at {share:.2f}x the paper pipeline on this volume"
            )
    return AdaptationPlan(
        0,
        f"even {AUTO_STEPS[-1]} steps would take about {share:.1f}x the paper pipeline's time on "
        "this small volume on a CPU; --adapt N forces it",
    )
