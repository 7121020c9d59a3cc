"""The shipped-model quality table (issue 6): CLADE models vs spline, sharpened spline and ECLARE.

For every evaluation volume made by ``benchmarks/prepare_eval_data.py`` (a thick-slice volume
simulated from an isotropic reference that no model was trained on), this super-resolves the
thick volume with

* ``spline``: cubic B-spline (:func:`CLADE.geometry.resample_to_isotropic`);
* ``spline+unsharp``: the spline, then an unsharp mask (sigma 1 voxel, amount 0.6;
  ``benchmarks/baselines.py``);
* ``ECLARE``: when its output exists under ``DATA/eclare/<volume>/``, or with ``--eclare`` (then
  it is run, as an external command from ``runs/eclare-venv``; see ``benchmarks/eclare_env.sh``);
  its output is put on CLADE's grid by ``baselines.onto_grid`` (used as is when the grids agree,
  otherwise resampled with SimpleITK, cubic B-spline: the note in the report says which);
* every ``--model NAME_OR_PATH`` (repeatable), through :func:`CLADE.pipeline.super_resolve` at
  the model's default stride (or ``--stride``), on the volumes of the model's modality (MR/CT;
  ``--all-modalities`` runs every model on every volume);

then measures all of them with :mod:`CLADE.evaluation` against the reference, on the isotropic
grid of the thick volume: PSNR, SSIM, edge sharpness (ES) along the thick axis, PIQE of the
LR-plane slices (``--orientation``, default auto = sagittal here), plus wall-clock seconds of
each method. It prints one Markdown table per volume and, per CLADE model, pass/fail against the
targets of issue 6:

* PSNR not below the spline's by more than 0.3 dB;
* SSIM not below the spline's;
* ES higher than both the spline's and the sharpened spline's;
* PIQE lower than both.

It writes the JSON report (``--report``) and one evaluation figure per volume
(``OUT/<volume>.png``, :func:`CLADE.evaluation_figure.save_evaluation_figure`).

Usage::

    python benchmarks/prepare_eval_data.py
    python benchmarks/model_quality.py --model mri --model ct            # shipped models
    python benchmarks/model_quality.py --model runs/tiny.pt --volume mri-mni152-5mm --stride 16

Timings are wall-clock on whatever machine runs this (2 shared cores here): compare them only
within one run. ``spline`` and ``spline+unsharp`` time the resampling (and filter) alone; a CLADE
model's seconds are the whole :func:`super_resolve` call (its own spline included). ECLARE's
seconds, when its output was made earlier, are read from the ``eclare_run.json`` written next
to it. ECLARE is expensive on a CPU: it trains a 16-block, 256-channel WDSR per volume (16384
patches in 512 steps of 32 with the CPU settings) and then runs it over every slice at two
in-plane angles. Measured on one thread of this 2-core machine: 13 min for the 122x101x37 CT,
28 min for the 197x233x37 MNI volume (the model cards). Each model's own row is the default
run, ``--adapt auto`` included (:mod:`CLADE.adaptation_policy`; its decision is in the JSON).
``--adapt STEPS`` adds a row per model forced to STEPS steps of adaptation first
(:mod:`CLADE.adaptation`; 0: the model as shipped, not adapted); its seconds include the
adaptation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import SimpleITK as sitk
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from baselines import (  # noqa: E402
    UNSHARP_AMOUNT,
    UNSHARP_SIGMA_VOXELS,
    eclare_command,
    eclare_output_path,
    onto_grid,
    sharpened_spline,
)

from CLADE.adaptation import adapt_to_volume  # noqa: E402
from CLADE.atomic_files import write_atomically  # noqa: E402
from CLADE.evaluation import (  # noqa: E402
    BASELINE_NAME,
    ORIENTATIONS,
    REFERENCE_NAME,
    measure,
    prepare_comparison,
    reported_piqe,
)
from CLADE.evaluation_figure import save_evaluation_figure  # noqa: E402
from CLADE.geometry import resample_to_isotropic  # noqa: E402
from CLADE.json_values import json_safe  # noqa: E402
from CLADE.pipeline import super_resolve  # noqa: E402
from CLADE.registry import resolve_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "runs" / "eval-data"
DEFAULT_OUT = REPO / "runs" / "eval-quality"
DEFAULT_ECLARE_VENV = REPO / "runs" / "eclare-venv"
MANIFEST = "eval_volumes.json"
SHARPENED_NAME = "spline+unsharp"
ECLARE_NAME = "ECLARE"
ECLARE_RUN_RECORD = "eclare_run.json"

#: Issue 6 targets for a CLADE model.
PSNR_MARGIN_DB = 0.3


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Quality table of CLADE models vs spline, sharpened spline and ECLARE.",
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help=f"folder made by prepare_eval_data.py ({DEFAULT_DATA})",
    )
    parser.add_argument(
        "--volume",
        action="append",
        default=None,
        metavar="NAME",
        help="evaluate only this volume of the manifest (repeatable; default all)",
    )
    parser.add_argument(
        "--model",
        action="append",
        default=[],
        metavar="NAME_OR_PATH",
        help="CLADE model: shipped name or model file (repeatable)",
    )
    parser.add_argument(
        "--adapt",
        type=int,
        action="append",
        default=[],
        metavar="STEPS",
        help="also each model forced to STEPS steps of adaptation to the volume first "
        "(CLADE.adaptation; 0: not adapted; repeatable); its seconds include adapting",
    )
    parser.add_argument(
        "--stride",
        type=int,
        default=None,
        help="inference stride for every model (default: each model's own)",
    )
    parser.add_argument(
        "--inference",
        action="append",
        default=[],
        metavar="SPEC",
        help="inference settings to compare, repeatable: TILING[:STRIDE]/"
        "ENSEMBLE/PRECISION, e.g. patches:12/none/float32 or slices/flips/bfloat16 "
        "(default: the model's defaults)",
    )
    parser.add_argument(
        "--all-modalities",
        action="store_true",
        help="run every model on every volume, not only on its modality's",
    )
    parser.add_argument(
        "--eclare",
        action="store_true",
        help="run ECLARE where its output does not exist yet (slow on CPU)",
    )
    parser.add_argument(
        "--no-eclare", action="store_true", help="leave ECLARE out even where its output exists"
    )
    parser.add_argument(
        "--eclare-venv",
        type=Path,
        default=DEFAULT_ECLARE_VENV,
        help=f"ECLARE's virtual environment ({DEFAULT_ECLARE_VENV})",
    )
    parser.add_argument(
        "--orientation",
        choices=ORIENTATIONS,
        default="auto",
        help="LR plane(s) for PIQE and the figure (default auto)",
    )
    parser.add_argument("--edges", type=int, default=16, help="edge profiles for ES (16)")
    parser.add_argument("--device", default="cpu", help="device for CLADE inference (cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads for CLADE inference (default: torch's)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for the figures (and --save-volumes) ({DEFAULT_OUT})",
    )
    parser.add_argument(
        "--report",
        type=Path,
        default=None,
        help="JSON report path (default OUT/model_quality.json)",
    )
    parser.add_argument(
        "--save-volumes",
        action="store_true",
        help="also write every method's volume to OUT/<volume>/<method>.nii.gz",
    )
    args = parser.parse_args(argv)
    if args.report is None:
        args.report = args.out / "model_quality.json"
    return args


def read_manifest(data: Path, only: list[str] | None) -> list[dict]:
    path = data / MANIFEST
    if not path.is_file():
        raise SystemExit(f"{path} not found: run benchmarks/prepare_eval_data.py first.")
    volumes = json.loads(path.read_text())["volumes"]
    if only:
        unknown = sorted(set(only) - {v["name"] for v in volumes})
        if unknown:
            names = ", ".join(v["name"] for v in volumes)
            raise SystemExit(f"Unknown volume(s) {', '.join(unknown)}: the manifest has {names}.")
        volumes = [v for v in volumes if v["name"] in only]
    return volumes


def load_models(specs: list[str], device: str, adapt=()) -> list[tuple[str, object, str, int]]:
    """(row name, LoadedModel, the --model text, adaptation steps) per --model and per
    ``adapt`` step count (``auto``: the default run; 0: not adapted), row names made unique."""
    models = []
    seen: set[str] = set()
    for spec in specs:
        model = resolve_model(spec, device)
        name = f"CLADE:{model.name}"
        if name in seen:
            name = f"CLADE:{Path(spec).stem}"
        while name in seen:
            name += "'"
        seen.add(name)
        models.append((name, model, spec, "auto"))
        models += [(f"{name}+adapt{steps}", model, spec, steps) for steps in adapt]
    return models


def inference_settings(spec: str | None, stride: int | None) -> dict:
    """Keyword arguments of :func:`super_resolve` for an ``--inference`` SPEC (None: defaults).

    >>> inference_settings("patches:12/none/float32", None)
    {'tiling': 'patches', 'stride': 12, 'ensemble': 'none', 'precision': 'float32'}
    """
    if spec is None:
        return {"stride": stride} if stride else {}
    tiling, ensemble, precision = spec.split("/")
    tiling, _, spec_stride = tiling.partition(":")
    settings = {"tiling": tiling, "ensemble": ensemble, "precision": precision}
    if tiling == "patches":
        settings["stride"] = int(spec_stride) if spec_stride else stride
    return settings


def modality_matches(model, volume: dict) -> bool:
    modality = str(model.metadata.get("modality", "")).upper()
    return modality not in ("MR", "CT") or modality == volume["modality"].upper()


def timed(function, *args, **kwargs):
    started = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - started


def eclare_result(volume: dict, thick_path: Path, args, log) -> tuple[sitk.Image | None, dict]:
    """ECLARE's output for ``volume`` (running it with --eclare when missing) and its record."""
    out_dir = args.data / "eclare" / volume["name"]
    output = eclare_output_path(thick_path, out_dir)
    record_path = out_dir / ECLARE_RUN_RECORD
    if not output.is_file() and args.eclare:
        executable = args.eclare_venv / "bin" / "run-eclare"
        if not executable.is_file():
            raise SystemExit(f"{executable} not found: run bash benchmarks/eclare_env.sh first.")
        out_dir.mkdir(parents=True, exist_ok=True)
        command = eclare_command(
            executable, thick_path, out_dir, volume["relative_slice_thickness"]
        )
        log(f"  running ECLARE (log: {out_dir / 'eclare.log'}): {' '.join(command)}")
        with open(out_dir / "eclare.log", "w") as handle:
            started = time.perf_counter()
            completed = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
            seconds = time.perf_counter() - started
        record = {
            "seconds": seconds,
            "returncode": completed.returncode,
            "command": " ".join(command[1:]),
        }
        record_path.write_text(json.dumps(record, indent=2) + "\n")
        if completed.returncode != 0:
            log(f"  ECLARE failed (exit {completed.returncode}): see {out_dir / 'eclare.log'}")
    if not output.is_file():
        return None, {"output": str(output), "note": "no ECLARE output (use --eclare to run it)"}
    record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    record["output"] = str(output)
    return sitk.ReadImage(str(output)), record


def evaluate_volume(volume: dict, models, args, log) -> dict:
    thick_path = args.data / volume["thick"]
    thick = sitk.ReadImage(str(thick_path))
    reference = sitk.Cast(sitk.ReadImage(str(args.data / volume["reference"])), sitk.sitkFloat32)
    axis = int(volume["axis"])
    seconds: dict[str, float | None] = {}
    extra: dict[str, dict] = {}
    notes: list[str] = []

    _, seconds[BASELINE_NAME] = timed(resample_to_isotropic, thick, axis)
    sharpened, seconds[SHARPENED_NAME] = timed(sharpened_spline, thick, axis)
    methods = [(SHARPENED_NAME, sharpened)]

    if not args.no_eclare:
        image, record = eclare_result(volume, thick_path, args, log)
        if image is not None:
            on_grid, note = onto_grid(image, thick, axis)
            notes.append(f"{ECLARE_NAME}: {note}.")
            methods.append((ECLARE_NAME, on_grid))
            seconds[ECLARE_NAME] = record.get("seconds")
            record["grid"] = note
        extra[ECLARE_NAME] = record

    for base_name, model, spec, steps in models:
        if not args.all_modalities and not modality_matches(model, volume):
            continue
        for inference in args.inference or [None]:
            name = base_name if inference is None else f"{base_name} {inference}"
            settings = inference_settings(inference, args.stride)
            log(f"  {name}: super-resolving ({spec})")
            started = time.perf_counter()
            adapted = None
            if steps != "auto" and steps > 0:
                adapted = adapt_to_volume(
                    thick, model, steps=steps, thick_axis=axis, device=args.device
                )
                log(f"    {adapted.summary()}")
            result = super_resolve(
                thick,
                adapted.model if adapted else model,
                thick_axis=axis,
                device=args.device,
                adapt_steps="auto" if steps == "auto" else 0,
                **settings,
            )
            if steps == "auto":
                log(f"    {result.stats['adaptation']}")
            seconds[name] = time.perf_counter() - started
            methods.append((name, result.image))
            extra[name] = {"spec": str(spec), "trained": model.trained, **_plain(result.stats)}
            if adapted:
                extra[name]["adaptation"] = adapted.summary()

    log("  measuring")
    comparison = prepare_comparison(
        thick, methods, reference, thick_axis=axis, orientation=args.orientation
    )
    report = measure(comparison, edge_count=args.edges)
    notes += report.notes
    rows = []
    for row in report.rows:
        name = row["name"]
        rows.append(
            {
                "name": name,
                "psnr": row.get("psnr"),
                "ssim": row.get("ssim"),
                "edge_sharpness": row.get("edge_sharpness"),
                "piqe": reported_piqe(row, comparison.planes),
                **{k: v for k, v in row.items() if k.startswith("piqe_")},
                "seconds": seconds.get(name),
            }
        )

    args.out.mkdir(parents=True, exist_ok=True)
    figure = save_evaluation_figure(comparison, report, args.out / f"{volume['name']}.png")
    if args.save_volumes:
        folder = args.out / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for name, image in zip(comparison.names, comparison.images):
            if name != REFERENCE_NAME:
                sitk.WriteImage(image, str(folder / f"{_file_name(name)}.nii.gz"), True)
    checks = {name: check_targets(rows, name) for name in _model_rows(rows, models)}
    return {
        "volume": volume,
        "planes": comparison.planes,
        "rows": rows,
        "methods": extra,
        "notes": notes,
        "targets": checks,
        "figure": str(figure),
    }


def _model_rows(rows: list[dict], models) -> list[str]:
    names = {name for name, *_ in models}
    return [row["name"] for row in rows if row["name"] in names]


def check_targets(rows: list[dict], name: str) -> dict:
    """Issue 6 targets for the row ``name`` against the spline and sharpened-spline rows."""
    by_name = {row["name"]: row for row in rows}
    model, spline, sharp = by_name[name], by_name[BASELINE_NAME], by_name[SHARPENED_NAME]
    checks = {
        "psnr": model["psnr"] >= spline["psnr"] - PSNR_MARGIN_DB,
        "ssim": model["ssim"] >= spline["ssim"],
        "edge_sharpness": model["edge_sharpness"]
        > max(spline["edge_sharpness"], sharp["edge_sharpness"]),
        "piqe": model["piqe"] < min(spline["piqe"], sharp["piqe"]),
    }
    details = {
        "psnr": f"{model['psnr']:.2f} dB vs spline {spline['psnr']:.2f} "
        f"({model['psnr'] - spline['psnr']:+.2f}; allowed -{PSNR_MARGIN_DB})",
        "ssim": f"{model['ssim']:.4f} vs spline {spline['ssim']:.4f}",
        "edge_sharpness": f"{model['edge_sharpness']:.4f} vs spline "
        f"{spline['edge_sharpness']:.4f}, sharpened {sharp['edge_sharpness']:.4f}",
        "piqe": f"{model['piqe']:.2f} vs spline {spline['piqe']:.2f}, "
        f"sharpened {sharp['piqe']:.2f}",
    }
    return {"pass": all(checks.values()), "checks": checks, "details": details}


def markdown_table(result: dict) -> str:
    volume = result["volume"]
    planes = "+".join(result["planes"])
    lines = [
        f"### {volume['name']} ({volume['modality']}, {volume['thickness_mm']:g} mm "
        f"{volume['profile']} slices along axis {volume['axis']}; PIQE in the {planes} plane)",
        "",
        "| method | PSNR (dB) | SSIM | ES (1/mm) | PIQE | seconds |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['name']} | {_num(row['psnr'], 2)} | {_num(row['ssim'], 4)} | "
            f"{_num(row['edge_sharpness'], 4)} | {_num(row['piqe'], 2)} | "
            f"{_num(row['seconds'], 1)} |"
        )
    return "\n".join(lines)


def _num(value, digits: int) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}f}"


def _plain(stats: dict) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in stats.items()}


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    volumes = read_manifest(args.data, args.volume)
    models = load_models(args.model, args.device, args.adapt)
    args.out.mkdir(parents=True, exist_ok=True)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for volume in volumes:
        log(f"{volume['name']}:")
        results.append(evaluate_volume(volume, models, args, log))
        print(markdown_table(results[-1]))
        for note in results[-1]["notes"]:
            print(f"- note: {note}")
        print(f"- figure: {results[-1]['figure']}")
        print(flush=True)

    if models:
        print("### Targets (issue 6)\n")
        for name, _, spec, _ in models:
            verdicts = [
                (r["volume"]["name"], r["targets"][name]) for r in results if name in r["targets"]
            ]
            if not verdicts:
                print(f"- {name} ({spec}): no volume of its modality evaluated")
                continue
            overall = "PASS" if all(v["pass"] for _, v in verdicts) else "FAIL"
            print(f"- {name} ({spec}): **{overall}**")
            for volume_name, verdict in verdicts:
                failed = [k for k, ok in verdict["checks"].items() if not ok]
                state = "pass" if verdict["pass"] else f"FAIL ({', '.join(failed)})"
                print(f"  - {volume_name}: {state}")
                for key, text in verdict["details"].items():
                    mark = "ok" if verdict["checks"][key] else "NO"
                    print(f"    - {key}: {mark}: {text}")
        print()

    report = {
        "generated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": [Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])],
        "settings": {
            "data": str(args.data),
            "stride": args.stride,
            "orientation": args.orientation,
            "edges": args.edges,
            "device": args.device,
            "unsharp": {"sigma_voxels": UNSHARP_SIGMA_VOXELS, "amount": UNSHARP_AMOUNT},
            "targets": {
                "psnr": f"not below the spline's by more than {PSNR_MARGIN_DB} dB",
                "ssim": "not below the spline's",
                "edge_sharpness": "higher than spline and spline+unsharp",
                "piqe": "lower than spline and spline+unsharp",
            },
        },
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_average": list(os.getloadavg()),
        },
        "volumes": results,
    }
    text = json.dumps(json_safe(report), indent=2, allow_nan=False, default=str) + "\n"
    write_atomically(args.report, lambda name: Path(name).write_text(text))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
