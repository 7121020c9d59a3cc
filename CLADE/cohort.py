"""Super-resolving a cohort: many inputs, one output each, in one command (or several GPUs).

``clade super-resolve INPUT... --out-dir DIR``: an INPUT is a volume file, a folder of volumes,
or a DICOM series folder. Each volume gives ``DIR/<name>_clade<ending>`` (its own ending, NRRD for
a DICOM series, or ``--out-format``), and with ``--error-map`` its error map
``DIR/<name>_clade_error<ending>``. The plan is checked whole before any work: an empty folder,
a folder without volumes, an output folder that is a file or cannot be written, two inputs that
would write the same output name, or an output that would write over a file an input reads are
refused in one sentence. Outputs of an earlier run in DIR (``*_clade``) are never inputs, so DIR
may be the input folder itself. Then every input runs through the pipeline; an output that
already exists is skipped (outputs are written under a temporary name and renamed when complete,
so an existing one is finished), unless ``--overwrite``; a bad input (a name that is not UTF-8
included) is reported in one sentence naming it and the others go on.

Under ``torchrun --nproc_per_node N``, rank ``r`` of ``N`` takes inputs ``r, r + N, ...`` (a
disjoint share, so every output is written exactly once) and, where there are GPUs, GPU
``LOCAL_RANK``. No process group is needed: the ranks share nothing but the plan.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import Cancelled, CladeError
from .file_names import check_outputs_spare_inputs, display
from .volume_files import expand_inputs, is_dicom_folder, volume_stem, volume_suffix

#: Output endings ``--out-format`` accepts (``same``: the input's own).
OUT_FORMATS = ("same", "nrrd", "nii.gz", "nii", "mha")
OUTPUT_TAG = "_clade"
#: What an output's error map adds after its stem (``a_clade.nii.gz`` -> ``a_clade_error.nii.gz``).
ERROR_MAP_TAG = "_error"


@dataclass(frozen=True)
class CohortItem:
    """One input and the output it will be written to."""

    source: Path
    output: Path


@dataclass
class CohortOutcome:
    """What happened to one input: ``status`` is ``done``, ``skipped`` or ``failed``."""

    item: CohortItem
    status: str
    seconds: float = 0.0
    note: str = ""


def plan_cohort(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    out_format: str = "same",
    error_maps: bool = False,
) -> list[CohortItem]:
    """The inputs expanded into volumes, each with its output in ``out_dir`` (``error_maps``:
    each output's error map, :func:`error_map_output`, is checked against the inputs too).

    Example:
        >>> import tempfile, SimpleITK as sitk
        >>> folder = Path(tempfile.mkdtemp())
        >>> sitk.WriteImage(sitk.Image([4, 4, 4], sitk.sitkUInt8), str(folder / "a.nii.gz"))
        >>> [item.output.name for item in plan_cohort([folder], folder / "out")]
        ['a_clade.nii.gz']
    """
    if out_format not in OUT_FORMATS:
        raise CladeError(f"Unknown output format {out_format!r}: use {', '.join(OUT_FORMATS)}.")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise CladeError(f"The output folder {out} is a file: give a folder with --out-dir.")
    sources: list[Path] = []
    for item in inputs:
        path = Path(item)
        found, _ = expand_inputs([path], role="input")
        if path.is_dir() and not is_dicom_folder(path):
            found = [
                f for f in found if (f.is_dir() or volume_suffix(f)) and not _earlier_output(f, out)
            ]
            if not found:
                raise CladeError(
                    f"The input folder {path} holds no NRRD, NIfTI or MetaImage volume and no "
                    "DICOM series: check the path."
                )
        sources.extend(found)
    items, claimed = [], {}
    for source in sources:
        output = out / _output_name(source, out_format)
        key = str(output).lower()  # case-insensitive file systems would collide too
        if key in claimed:
            raise CladeError(
                f"The inputs {claimed[key]} and {source} would both be written to {output}: "
                "rename one, or super-resolve them into different folders."
            )
        claimed[key] = source
        items.append(CohortItem(source, output))
    outputs = [item.output for item in items]
    if error_maps:
        outputs += [error_map_output(output) for output in outputs]
    check_outputs_spare_inputs(outputs, sources)
    _check_out_dir(out)  # created only once the whole plan holds
    return items


def _earlier_output(path: Path, out: Path) -> bool:
    """True for an output of an earlier run in ``out`` (``*_clade``, and its error map
    ``*_clade_error``): never an input again."""
    try:
        in_out_dir = out.exists() and path.parent.resolve() == out.resolve()
    except OSError:
        return False
    return in_out_dir and volume_stem(path).endswith((OUTPUT_TAG, OUTPUT_TAG + ERROR_MAP_TAG))


def _output_name(source: Path, out_format: str) -> str:
    if out_format != "same":
        ending = "." + out_format
    elif source.is_dir():
        ending = ".nrrd"  # a DICOM series: one file holding the volume
    else:
        ending = volume_suffix(source) or ".nrrd"
    # abspath: the input "." (a DICOM folder) is named after the folder, not "".
    return f"{volume_stem(os.path.abspath(source))}{OUTPUT_TAG}{ending}"


def error_map_output(output: str | os.PathLike) -> Path:
    """Where the error map of ``output`` goes: its name with ``_error`` after the stem.

    Example:
        >>> error_map_output("out/a_clade.nii.gz").as_posix()
        'out/a_clade_error.nii.gz'
    """
    output = Path(output)
    ending = volume_suffix(output) or output.suffix
    stem = output.name[: len(output.name) - len(ending)]
    return output.with_name(f"{stem}{ERROR_MAP_TAG}{ending}")


def _check_out_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CladeError(
            f"The output folder {out} cannot be created ({error.strerror}): choose another "
            "with --out-dir."
        ) from None
    if not os.access(out, os.W_OK | os.X_OK):
        raise CladeError(
            f"The output folder {out} cannot be written: choose another with --out-dir."
        )


def rank_share(items: list[CohortItem], rank: int, world: int) -> list[CohortItem]:
    """The items rank ``rank`` of ``world`` processes.

    Example:
        >>> rank_share(list("abcde"), 1, 2)
        ['b', 'd']
    """
    return items[rank::world]


def torchrun_rank() -> tuple[int, int, int]:
    """``(rank, world size, local rank)`` from torchrun's environment, ``(0, 1, 0)`` without."""
    env = os.environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def device_for_rank(device: str, world: int, local_rank: int) -> str:
    """One GPU per rank where there are GPUs and the device is ``auto`` or ``cuda``."""
    if world <= 1 or device not in ("auto", "cuda"):
        return device
    import torch

    if not torch.cuda.is_available():
        return "cpu" if device == "auto" else device
    return f"cuda:{local_rank % torch.cuda.device_count()}"


def run_cohort(
    items: list[CohortItem],
    request,
    *,
    output_type: str = "float32",
    overwrite: bool = False,
    progress_for: Callable[[CohortItem], Callable | None] | None = None,
    on_outcome: Callable[[CohortOutcome], None] | None = None,
) -> list[CohortOutcome]:
    """Super-resolve each item (see the module docstring); a user error fails only its item."""
    from .pipeline import super_resolve_file
    from .registry import resolve_model

    if isinstance(request.model, (str, Path)):
        request = replace(request, model=resolve_model(request.model))  # load once for all
    outcomes = []
    for item in items:
        started = time.perf_counter()
        if item.output.exists() and not overwrite:
            outcome = CohortOutcome(item, "skipped", 0.0, "output exists (--overwrite to redo)")
        else:
            try:
                progress = progress_for(item) if progress_for else None
                result = super_resolve_file(
                    item.source,
                    item.output,
                    request,
                    output_type=output_type,
                    progress=progress,
                    error_map_path=error_map_output(item.output) if request.error_map else None,
                )
                outcome = CohortOutcome(
                    item, "done", time.perf_counter() - started, result.summary()
                )
            except Cancelled:
                raise
            except CladeError as error:
                outcome = CohortOutcome(item, "failed", time.perf_counter() - started, str(error))
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def format_summary(outcomes: list[CohortOutcome]) -> str:
    """A plain-text table: input, status, seconds, output or reason.

    Example:
        >>> item = CohortItem(Path("a.nrrd"), Path("out/a_clade.nrrd"))
        >>> print(format_summary([CohortOutcome(item, "done", 1.5)]))
        input   status  seconds  output / reason
        a.nrrd  done        1.5  out/a_clade.nrrd
        1 done, 0 skipped, 0 failed
    """
    rows = [("input", "status", "seconds", "output / reason")]
    for o in outcomes:
        detail = display(o.item.output) if o.status == "done" else o.note
        rows.append((display(o.item.source.name), o.status, f"{o.seconds:.1f}", detail))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = [
        f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}".rstrip()
        for r in rows
    ]
    counts = {s: sum(o.status == s for o in outcomes) for s in ("done", "skipped", "failed")}
    lines.append(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed")
    return "\n".join(lines)
