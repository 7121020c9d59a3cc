"""``clade super-resolve``: one volume (``INPUT OUTPUT``) or a cohort (``INPUT... --out-dir``).

Super-resolve an anisotropic (thick-slice) MRI or CT volume onto an isotropic grid with a CLADE
generator: ``clade super-resolve INPUT OUTPUT``, or a cohort with ``clade super-resolve
INPUT... --out-dir DIR`` (an INPUT may be a folder of volumes or a DICOM series folder). Reads
NRRD, NIfTI, MetaImage or DICOM. ``--error-map`` also writes the estimated error of every output
voxel (``models/cards/error-map.md``).

Progress goes to stderr as a bar per stage (``--progress bar``), or to stdout as JSON lines
(``--progress json``, for programs such as the Slicer module; schema in :func:`json_event` and
``CLADE/pipeline.py``), or nowhere (``--progress none`` / ``--quiet``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from ..adaptation_policy import FORCED_STEPS
from ..geometry import PLANE_NAMES
from ..progress import optional_tqdm
from .arguments import (
    adapt_steps,
    add_thick_axis,
    patch_stride,
    positive_int,
    thick_axis_of,
)

PATHS_HELP = "INPUT OUTPUT, or with --out-dir one or more inputs (files, folders, DICOM series)"

#: ``--adapt`` without a number.
DEFAULT_ADAPT_STEPS = FORCED_STEPS


def add_arguments(parser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help=PATHS_HELP)
    parser.add_argument("--out-dir", help="cohort mode: write one output per input into DIR")
    parser.add_argument(
        "--out-format",
        default="same",
        choices=("same", "nrrd", "nii.gz", "nii", "mha"),
        help="cohort mode: output file format (default: the input's; NRRD for DICOM)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="cohort mode: redo outputs that already exist"
    )
    parser.add_argument(
        "--model",
        default="mri",
        help="shipped model name (see `clade models`) or model file (default: mri)",
    )
    parser.add_argument(
        "--tiling",
        default="auto",
        choices=("auto", "slices", "patches"),
        help="slices = whole LR slices (fast, the default); patches = the paper's 32x32 "
        "patches at --stride (auto: the model's default, patches when --stride is given)",
    )
    parser.add_argument(
        "--stride",
        type=patch_stride,
        default=None,
        help="patch stride in pixels, 1-32, for --tiling patches (default: the model's, 12)",
    )
    parser.add_argument(
        "--ensemble",
        default="auto",
        choices=("auto", "none", "flips2", "flips"),
        help="average over in-plane flips: flips = 4 flips (4x the compute), flips2 = 2 "
        "(auto: the model's default)",
    )
    parser.add_argument(
        "--precision",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="auto = bfloat16 where the CPU/GPU has fast bfloat16, else float32",
    )
    parser.add_argument(
        "--plane",
        default="auto",
        choices=("auto", "both") + PLANE_NAMES,
        help="LR plane to super-resolve in: auto = sagittal if it contains the "
        "thick axis, else coronal; both = average of the two LR planes",
    )
    add_thick_axis(parser, "the thick slices")
    parser.add_argument(
        "--adapt",
        type=adapt_steps,
        nargs="?",
        const=DEFAULT_ADAPT_STEPS,
        default="auto",
        metavar="STEPS",
        help="fine-tune the model on this volume's own sharp in-plane slices, degraded like "
        "its thick slices, first; kept only if it restores held-back slices better along both "
        "in-plane directions. auto (the default): 500 or 200 steps on a GPU, or on a CPU when "
        "the run stays within the paper pipeline's time, else off (the summary says which "
        f"and why); 0: off; STEPS: that many (without a number: {DEFAULT_ADAPT_STEPS})",
    )
    parser.add_argument(
        "--error-map",
        nargs="?",
        const="",
        default=None,
        metavar="MAP",
        help="also write a map of the estimated absolute error (output units, the output's "
        "grid) to MAP (one volume; default OUTPUT's name with _error) or, in a cohort, "
        "<name>_clade_error<ending> beside each output; learnt from the volume's own "
        "in-plane slices (models/cards/error-map.md)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="per forward pass: patches (patches tiling; default 64 on CPU, 1024 on CUDA) or "
        "slices (slices tiling; default: as many as fit the memory budget)",
    )
    parser.add_argument(
        "--output-type",
        choices=("float32", "input"),
        default="float32",
        help="float32 (default) or the input's pixel type, rounded and clipped",
    )
    parser.add_argument(
        "--progress",
        choices=("bar", "json", "none"),
        default="bar",
        help="bar (stderr, default), json (one JSON object per line on stdout), none",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress and no summary")


def json_event(event: str, **fields) -> None:
    """Write one JSON event line to stdout: ``progress``, ``log``, ``done``, ``error``."""
    sys.stdout.write(json.dumps({"event": event, **fields}, allow_nan=False) + "\n")
    sys.stdout.flush()


def run(args: argparse.Namespace) -> int:
    from ..errors import CladeError
    from .signals import handled, raise_terminated

    mode = "none" if args.quiet else args.progress
    _configure_logging(mode)
    try:
        # SIGTERM (timeout, SLURM, docker stop) unwinds like Ctrl-C: no temporary is left.
        with handled(raise_terminated):
            if args.out_dir is not None:
                return _run_cohort(args, mode)
            if len(args.paths) != 2:
                raise CladeError(
                    "Give INPUT OUTPUT for one volume, or one or more inputs with --out-dir DIR "
                    f"for a cohort (got {len(args.paths)} paths and no --out-dir)."
                )
            return _run_one(args, mode)
    except CladeError as error:
        if mode == "json":
            json_event("error", message=str(error))
        raise


def _request(args, device=None):
    from ..pipeline import SuperResolutionRequest

    return SuperResolutionRequest(
        model=args.model,
        tiling=args.tiling,
        stride=args.stride,
        ensemble=args.ensemble,
        precision=args.precision,
        plane=args.plane,
        thick_axis=thick_axis_of(args),
        device=device or args.device,
        batch_size=args.batch_size,
        adapt_steps=args.adapt,
        error_map=getattr(args, "error_map", None) is not None,
    )


def _run_one(args, mode: str) -> int:
    from dataclasses import replace

    from ..pipeline import super_resolve_file
    from ..registry import resolve_model
    from ..volume_io import check_output_path, read_volume

    source, destination = args.paths
    check_output_path(destination, inputs=(source,))  # a bad destination fails before any work
    image = read_volume(source)  # then a bad input, before the model is loaded
    request = _request(args)
    model = resolve_model(request.model)
    _warn_untrained(model, mode)
    bar = _progress(mode)
    try:
        result = super_resolve_file(
            source,
            destination,
            replace(request, model=model),
            output_type=args.output_type,
            progress=bar,
            image=image,
            error_map_path=_error_map_path(args.error_map, destination),
        )
    finally:
        if isinstance(bar, ProgressBar):
            bar.close()
    if mode == "json":
        json_event(
            "done", output=result.stats["output"], summary=result.summary(), stats=result.stats
        )
    elif mode == "bar":
        print(f"{destination}: {result.summary()}")
    return 0


def _error_map_path(value, destination):
    """``--error-map``'s file: as given, or (no value) OUTPUT's name with ``_error``."""
    if value is None:
        return None
    if value:
        return value
    from ..cohort import error_map_output

    return error_map_output(destination)


def _run_cohort(args, mode: str) -> int:
    from dataclasses import replace

    from ..cohort import (
        device_for_rank,
        format_summary,
        plan_cohort,
        rank_share,
        run_cohort,
        torchrun_rank,
    )
    from ..errors import CladeError
    from ..registry import resolve_model

    if args.error_map:
        raise CladeError(
            "In a cohort (--out-dir) --error-map takes no file name: each map is written as "
            "<name>_clade_error<ending> beside its output."
        )
    rank, world, local_rank = torchrun_rank()
    items = plan_cohort(
        args.paths, args.out_dir, args.out_format, error_maps=args.error_map is not None
    )
    mine = rank_share(items, rank, world)
    request = _request(args, device_for_rank(args.device, world, local_rank))
    model = resolve_model(request.model)
    _warn_untrained(model, mode)
    prefix = f"rank {rank}/{world}: " if world > 1 else ""
    bars: list[ProgressBar] = []
    finished: list = []

    def progress_for(item):
        for bar in bars:
            bar.close()
        bars.clear()
        if mode == "bar":
            print(f"{prefix}{item.source} -> {item.output}", file=sys.stderr)
        bar = _progress(mode, extra={"input": str(item.source)})
        if isinstance(bar, ProgressBar):
            bars.append(bar)
        return bar

    def on_outcome(outcome):
        finished.append(outcome)
        for bar in bars:
            bar.close()
        bars.clear()
        if mode == "json":
            json_event(
                "input",
                input=str(outcome.item.source),
                output=str(outcome.item.output),
                status=outcome.status,
                seconds=round(outcome.seconds, 2),
                message=outcome.note,
            )
        elif mode == "bar" and outcome.status != "done":
            print(
                f"clade: {prefix}{outcome.item.source}: {outcome.status}: {outcome.note}",
                file=sys.stderr,
            )

    try:
        outcomes = run_cohort(
            mine,
            replace(request, model=model),
            output_type=args.output_type,
            overwrite=args.overwrite,
            progress_for=progress_for,
            on_outcome=on_outcome,
        )
    except KeyboardInterrupt as error:
        _interrupted_cohort(error, finished, len(mine), mode, bars)
    failed = sum(o.status == "failed" for o in outcomes)
    if mode == "json":
        json_event("done", inputs=len(outcomes), failed=failed, rank=rank, world=world)
    elif mode == "bar":
        print((f"rank {rank} of {world}:\n" if world > 1 else "") + format_summary(outcomes))
    return 2 if failed else 0


def _interrupted_cohort(error: KeyboardInterrupt, finished: list, total: int, mode: str, bars):
    """Ctrl-C or SIGTERM in a cohort: show what was done before saying so (outputs written
    before the interruption are complete and stay)."""
    from ..cohort import format_summary
    from ..errors import Interrupted

    for bar in bars:
        bar.close()
    if finished and mode == "bar":
        print(format_summary(finished))
    done = sum(o.status == "done" for o in finished)
    raise Interrupted(
        f"{done} of {total} outputs were written before it ({len(finished)} inputs finished"
        f"{', listed above' if finished and mode == 'bar' else ''}); the input in progress was "
        "not written.",
        getattr(error, "exit_code", 130),
    ) from None


def _warn_untrained(model, mode: str) -> None:
    if not model.trained and mode != "none":
        logging.getLogger("CLADE").warning(
            "model %r has random (untrained) weights: the output shows the pipeline works but "
            "is NOT a super-resolved image.",
            model.name,
        )


def _progress(mode: str, extra: dict | None = None):
    if mode == "bar":
        return ProgressBar()
    if mode == "json":
        return lambda info: json_event(**{**info.to_dict(), **(extra or {})})
    return None


class _JsonLogHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        json_event("log", level=record.levelname.lower(), message=record.getMessage())


def _configure_logging(mode: str) -> None:
    logger = logging.getLogger("CLADE")
    logger.handlers.clear()
    logger.propagate = False
    if mode == "json":
        handler: logging.Handler = _JsonLogHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("clade: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if mode == "none" else logging.INFO)


class ProgressBar:
    """One tqdm bar per pipeline stage on stderr, created when the stage starts."""

    _UNITS = {"resample": "slice", "adapt": "step", "infer": "", "write": "file"}

    def __init__(self) -> None:
        self.bar = None
        self.stage = None

    def __call__(self, info) -> None:
        self.update(info)

    def update(self, info) -> None:
        tqdm = optional_tqdm()
        if tqdm is None:
            return  # no tqdm (Slicer's Python): the run goes on without a bar
        if info.stage != self.stage or self.bar is None or self.bar.total != info.total:
            if info.stage == self.stage and self.bar is not None:
                self.bar.total = info.total  # the stage's total became known
                self.bar.refresh()
            else:
                self.close()
                self.stage = info.stage
                self.bar = tqdm(
                    total=info.total,
                    unit=self._UNITS.get(info.stage, "") or "it",
                    unit_scale=info.stage == "infer",
                    file=sys.stderr,
                    dynamic_ncols=True,
                    desc=info.stage,
                    leave=info.stage != "write",
                )
        self.bar.update(info.done - self.bar.n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
