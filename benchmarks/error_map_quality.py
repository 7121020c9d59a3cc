"""How well the error map (issue 23) says where a result is wrong, on held-out volumes.

For every volume of ``benchmarks/prepare_eval_data.py``'s manifest (an isotropic reference no
model was trained on and a thick-slice volume simulated from it), this super-resolves the thick
volume with the shipped model of its modality (whole slices, the model's defaults), once without
and once with ``error_map=True`` (the extra seconds are the map's cost), computes the true error
``|SR - truth|`` and scores candidate maps over the foreground (the spline above 5% of the
intensity window, :data:`CLADE.error_map.FOREGROUND_LEVEL`):

* ``clade``: the shipped estimator (:mod:`CLADE.error_map`), learnt from the volume's own
  in-plane slices; its values are in the output's units;
* ``grad`` / ``grad smooth``: the gradient magnitude of the output, raw and Gaussian-smoothed
  (sigma 1.5 voxels);
* ``|SR-spline|`` / ``|SR-spline| smooth``: the network's change, raw and smoothed;
* ``flip std`` (``--flips``): the per-voxel standard deviation over the four in-plane flips.

Scores: Spearman correlation with the voxel error, the error enrichment of the top 5% (mean
error there over the foreground mean), and for ``clade`` a calibration table: per decile of the
map, the mean predicted and the mean actual error, and their ratio.

Usage::

    python benchmarks/prepare_eval_data.py --no-colin
    OMP_NUM_THREADS=1 python benchmarks/error_map_quality.py --flips \\
        --report runs/error-map/report.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

from CLADE.error_map import FOREGROUND_LEVEL
from CLADE.geometry import resample_to_isotropic
from CLADE.pipeline import SuperResolutionRequest, run
from CLADE.registry import resolve_model

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO / "runs" / "eval-data"
TRIVIAL_SIGMA = 1.5
#: Done-when margins of issue 23.
SPEARMAN_MARGIN = 0.05
ENRICHMENT_MARGIN = 0.3
CALIBRATION_FACTOR = 1.5


def enrichment(score: np.ndarray, error: np.ndarray, top: float = 0.05) -> float:
    """Mean error over the ``top`` fraction of voxels by ``score``, over the mean error."""
    count = max(1, int(round(top * score.size)))
    index = np.argpartition(-score, count - 1)[:count]
    return float(error[index].mean() / max(error.mean(), 1e-12))


def calibration(predicted: np.ndarray, error: np.ndarray, bins: int = 10) -> list[dict]:
    """Per decile of ``predicted``: mean predicted, mean actual error, and their ratio."""
    order = np.argsort(predicted, kind="stable")
    rows = []
    for index, part in enumerate(np.array_split(order, bins)):
        p, a = float(predicted[part].mean()), float(error[part].mean())
        rows.append({"decile": index + 1, "predicted": p, "actual": a, "ratio": p / max(a, 1e-12)})
    return rows


def flip_std(thick: sitk.Image, model, axis: int) -> np.ndarray:
    """Standard deviation over the four in-plane flips of the LR slices (thick axis and the
    other in-plane axis), each super-resolved alone and flipped back."""
    slice_axis = 0 if axis != 0 else 1
    other = 3 - axis - slice_axis
    outputs = []
    for flip_thick in (False, True):
        for flip_other in (False, True):
            axes = [False] * 3
            axes[axis], axes[other] = flip_thick, flip_other
            flipped = sitk.Flip(thick, axes) if any(axes) else thick
            result = run(
                flipped, SuperResolutionRequest(model=model, thick_axis=axis, adapt_steps=0)
            )
            array = sitk.GetArrayFromImage(result.image)
            undo = tuple(2 - a for a in range(3) if axes[a])
            outputs.append(np.flip(array, undo) if undo else array)
    return np.std(np.stack(outputs), axis=0)


def evaluate(
    volume: dict, data: Path, flips: bool, log, skip_plain: bool = False, defaults: bool = False
) -> dict:
    thick = sitk.ReadImage(str(data / volume["thick"]), sitk.sitkFloat32)
    truth = sitk.GetArrayFromImage(
        sitk.ReadImage(str(data / volume["reference"]), sitk.sitkFloat32)
    )
    axis = int(volume["axis"])
    # The models the card's first figures were measured with, not adapted: the 64-filter
    # mri-large and ct-large (the defaults mri and ct until issues 24 and 27); --defaults: the
    # default run of today's defaults (the students, --adapt auto).
    names = ("mri", "ct") if defaults else ("mri-large", "ct-large")
    model = resolve_model(names[0] if volume["modality"] == "MR" else names[1])
    adapt = "auto" if defaults else 0
    plain, plain_seconds = None, float("nan")
    if not skip_plain:
        started = time.perf_counter()
        plain = run(thick, SuperResolutionRequest(model=model, thick_axis=axis, adapt_steps=adapt))
        plain_seconds = time.perf_counter() - started
    started = time.perf_counter()
    mapped = run(
        thick,
        SuperResolutionRequest(model=model, thick_axis=axis, adapt_steps=adapt, error_map=True),
    )
    if defaults:
        log(f"  {model.name}: {mapped.stats['adaptation']}")
    mapped_seconds = time.perf_counter() - started
    sr = sitk.GetArrayFromImage(mapped.image)
    if plain is not None and not np.array_equal(sr, sitk.GetArrayFromImage(plain.image)):
        log("  note: the output with the map differs from the plain run")
    spline = sitk.GetArrayFromImage(resample_to_isotropic(thick, axis))
    # The thick volume used fewer reference slices (along its thick axis, whichever it is).
    common = tuple(slice(0, min(a, b)) for a, b in zip(truth.shape, sr.shape))
    truth, sr, spline = truth[common], sr[common], spline[common]
    clade = sitk.GetArrayFromImage(mapped.error_map)[common]
    low, high = mapped.stats["intensity_window"]
    foreground = spline > low + FOREGROUND_LEVEL * (high - low)
    error = np.abs(sr - truth)[foreground]

    gradient = np.sqrt(sum(g**2 for g in np.gradient(sr)))
    change = np.abs(sr - spline)
    candidates = {
        "clade": clade,
        "grad": gradient,
        "grad smooth": gaussian_filter(gradient, TRIVIAL_SIGMA),
        "|SR-spline|": change,
        "|SR-spline| smooth": gaussian_filter(change, TRIVIAL_SIGMA),
    }
    if flips:
        log("  flip std: four more runs")
        candidates["flip std"] = flip_std(thick, model, axis)[common]
    scores = {}
    for name, values in candidates.items():
        v = values[foreground]
        scores[name] = {
            "spearman": float(spearmanr(v, error).statistic),
            "top5_enrichment": enrichment(v, error),
        }
    table = calibration(clade[foreground], error)
    trivial = [k for k in scores if k not in ("clade", "flip std")]
    done = {
        "spearman": all(
            scores["clade"]["spearman"] >= scores[k]["spearman"] + SPEARMAN_MARGIN for k in trivial
        ),
        "enrichment": all(
            scores["clade"]["top5_enrichment"] >= scores[k]["top5_enrichment"] + ENRICHMENT_MARGIN
            for k in trivial
        ),
        "calibration": all(
            1 / CALIBRATION_FACTOR <= row["ratio"] <= CALIBRATION_FACTOR for row in table
        ),
    }
    return {
        "name": volume["name"],
        "modality": volume["modality"],
        "foreground_voxels": int(foreground.sum()),
        "mean_error": float(error.mean()),
        "seconds_plain": plain_seconds,
        "seconds_with_map": mapped_seconds,
        "map_seconds": mapped.stats["error_map"]["seconds"],
        "summary": mapped.summary(),
        "scores": scores,
        "calibration": table,
        "done_when": done,
    }


def markdown(result: dict) -> str:
    lines = [
        f"### {result['name']} (mean error {result['mean_error']:.3g} over "
        f"{result['foreground_voxels']} foreground voxels; run {result['seconds_plain']:.1f} s, "
        f"with the map {result['seconds_with_map']:.1f} s, of which the map "
        f"{result['map_seconds']:.1f} s)",
        "",
        "| map | Spearman | top-5% enrichment |",
        "|---|---:|---:|",
    ]
    for name, s in result["scores"].items():
        lines.append(f"| {name} | {s['spearman']:.3f} | {s['top5_enrichment']:.2f} |")
    lines += ["", "| decile | predicted | actual | ratio |", "|---:|---:|---:|---:|"]
    for row in result["calibration"]:
        lines.append(
            f"| {row['decile']} | {row['predicted']:.3g} | {row['actual']:.3g} | "
            f"{row['ratio']:.2f} |"
        )
    verdict = ", ".join(f"{k} {'pass' if v else 'FAIL'}" for k, v in result["done_when"].items())
    lines += ["", f"done-when: {verdict}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--volume", action="append", default=None, metavar="NAME")
    parser.add_argument("--flips", action="store_true", help="also score the flip deviation")
    parser.add_argument(
        "--skip-plain", action="store_true", help="no run without the map (no cost figure)"
    )
    parser.add_argument(
        "--defaults",
        action="store_true",
        help="the default run of the default models (mri, ct, --adapt auto) instead of the "
        "64-filter models unadapted",
    )
    parser.add_argument("--report", type=Path, default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    if args.defaults and args.flips:
        parser.error("--flips measures the unadapted 64-filter models: leave out --defaults")

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    volumes = json.loads((args.data / "eval_volumes.json").read_text())["volumes"]
    if args.volume:
        volumes = [v for v in volumes if v["name"] in args.volume]
    results = []
    for volume in volumes:
        log(f"{volume['name']}:")
        results.append(evaluate(volume, args.data, args.flips, log, args.skip_plain, args.defaults))
        print(markdown(results[-1]) + "\n", flush=True)
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps({"volumes": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
