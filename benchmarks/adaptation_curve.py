"""Adaptation's gain per second (issue 24): held-out quality after 25 ... 500 steps, and whether
the safeguard's verdict agreed with the truth.

For every evaluation volume of ``benchmarks/prepare_eval_data.py`` (the model's modality), this
super-resolves the thick volume with the model as shipped and after adapting it to the volume
(:func:`CLADE.adaptation.adapt_to_volume`) for each ``--steps`` count, each adaptation started
afresh from the shipped model, and measures every output against the isotropic reference
(PSNR, SSIM, edge sharpness ES, PIQE, :mod:`CLADE.evaluation`). The adapted generator is
measured *whether or not* the safeguard kept it, so the table shows when the held-back in-plane
pairs approved a model that the truth rejects (or the reverse). Seconds are the adaptation's
alone, wall-clock, on whatever runs this: compare them within one run.

Usage::

    python benchmarks/prepare_eval_data.py --no-colin
    OMP_NUM_THREADS=1 python benchmarks/adaptation_curve.py --model mri --volume mri-mni152-5mm-x

It prints one Markdown table per volume and model and writes ``--report`` (JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_quality import DEFAULT_DATA, read_manifest  # noqa: E402

from CLADE.adaptation import adapt_to_volume  # noqa: E402
from CLADE.evaluation import measure, prepare_comparison, reported_piqe  # noqa: E402
from CLADE.pipeline import super_resolve  # noqa: E402
from CLADE.registry import resolve_model  # noqa: E402

DEFAULT_STEPS = (25, 50, 100, 200, 500)


def curve(volume: dict, data: Path, model, steps, device: str) -> dict:
    thick = sitk.ReadImage(str(data / volume["thick"]))
    reference = sitk.Cast(sitk.ReadImage(str(data / volume["reference"])), sitk.sitkFloat32)
    axis = int(volume["axis"])
    methods = [
        (
            "shipped",
            super_resolve(thick, model, thick_axis=axis, device=device, adapt_steps=0).image,
        )
    ]
    runs = {}
    for count in steps:
        started = time.perf_counter()
        adapted = adapt_to_volume(thick, model, steps=count, thick_axis=axis, device=device)
        seconds = time.perf_counter() - started
        name = f"adapt {count}"
        image = super_resolve(
            thick, adapted.candidate, thick_axis=axis, device=device, adapt_steps=0
        ).image
        methods.append((name, image))
        runs[name] = {
            "steps": count,
            "adapt_seconds": seconds,
            "kept": adapted.improved,
            "held_out_error_before": adapted.error_before,
            "held_out_error_after": adapted.error_after,
            "cross_error_before": adapted.cross_error_before,
            "cross_error_after": adapted.cross_error_after,
        }
        print(f"  {name}: {adapted.summary()}", file=sys.stderr, flush=True)
    comparison = prepare_comparison(thick, methods, reference, thick_axis=axis)
    report = measure(comparison)
    rows = {}
    for row in report.rows:
        if row["name"] == "reference":
            continue
        rows[row["name"]] = {
            "psnr": row["psnr"],
            "ssim": row["ssim"],
            "edge_sharpness": row["edge_sharpness"],
            "piqe": reported_piqe(row, comparison.planes),
            **runs.get(row["name"], {}),
        }
    shipped = rows["shipped"]
    for name in runs:
        better = all(rows[name][k] >= shipped[k] for k in ("psnr", "ssim", "edge_sharpness"))
        rows[name]["truth_says_better"] = better
        rows[name]["safeguard_right"] = better == rows[name]["kept"]
    return {
        "volume": volume["name"],
        "model": model.name,
        "planes": comparison.planes,
        "rows": rows,
    }


def markdown(result: dict) -> str:
    lines = [
        f"### {result['volume']}, `{result['model']}` (LR plane {'+'.join(result['planes'])})",
        "",
        "| run | adapt s | PSNR | SSIM | ES | PIQE | kept by the safeguard | better on all three |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for name, r in result["rows"].items():
        seconds = f"{r['adapt_seconds']:.0f}" if "adapt_seconds" in r else "-"
        kept = {True: "yes", False: "no"}.get(r.get("kept"), "-")
        truth = {True: "yes", False: "no"}.get(r.get("truth_says_better"), "-")
        lines.append(
            f"| {name} | {seconds} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
            f"{r['edge_sharpness']:.4f} | {r['piqe']:.2f} | {kept} | {truth} |"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", action="append", required=True, help="repeatable")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--volume", action="append", help="only these volumes (repeatable)")
    parser.add_argument("--steps", type=int, nargs="+", default=list(DEFAULT_STEPS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--report", type=Path, default=Path("runs/adaptation-curve.json"))
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    results = []
    for spec in args.model:
        model = resolve_model(spec)
        volumes = read_manifest(args.data, args.volume)
        for volume in [v for v in volumes if v["modality"] == model.metadata["modality"]]:
            print(f"{volume['name']} with {model.name} ...", file=sys.stderr, flush=True)
            results.append(curve(volume, args.data, model, args.steps, args.device))
            print(markdown(results[-1]) + "\n", flush=True)
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps({"results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
