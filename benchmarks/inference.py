"""Inference speed and memory on whole paper-sized volumes: the paper's patches against the default.

Prints one Markdown table (and writes it as JSON with ``--json``). Every row runs in its own
subprocess so that its peak RSS is its own; rows of one case run one after the other in the same
invocation, so the speed-up of the default over the paper's tiling is measured side by side
(these machines are noisy: compare ratios within one table, not seconds across tables).

Columns:

* ``s``: end to end, the in-memory image to the output image (resampling, normalisation,
  inference, reassembly; no file I/O), with the shipped model of the case's modality
  (the paper's architecture: 64 filters, 6 residual blocks) unless the case says ``tiny``.
* ``Mvox/s``: output voxels per second, end to end.
* ``net s``: the bare network on the same inputs (the same slices or patches, batched the same
  way, already on the device), timed on a sample of the volume's slices and scaled to all of them.
* ``e2e/net``: the bare network's rate over the end-to-end rate (target >= 0.9).
* ``peak/out``: peak resident memory above the bare import, over the float32 output's size
  (target < 3).
* ``speed-up``: the first row's seconds over this row's, within a case (the paper's patches
  when they run; with ``--students``, the teacher's first row against its students').

``--students`` runs every setting also with each shipped student of the case's model (the
manifest's ``distilled_from``, issue 27), right after the teacher, in the same invocation.

Usage::

    python benchmarks/inference.py                      # mri and ct, paper vs default, CPU
    python benchmarks/inference.py --cases ct-large     # the 512x512x83 CT, memory (tiny net)
    python benchmarks/inference.py --device cuda --json benchmarks/results/gpu-inference.json
    python benchmarks/inference.py --cases mri ct-large-ct --settings default --students
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# name: size (x, y, z), spacing (mm), shipped model (or "tiny"), paper seconds (RTX A6000)
CASES = {
    # The cases run the 64-filter models (the paper's architecture; the defaults mri and ct are
    # their students: --students adds them).
    "mri": ((185, 330, 23), (1.2, 1.2, 6.6), "mri-large", 103.0),
    "ct": ((320, 320, 22), (0.95, 0.95, 5.0), "ct-large", 292.0),
    "ct-large": ((512, 512, 83), (0.7, 0.7, 5.0), "tiny", None),
    # The same CT with the shipped ct network (speed on a GPU: benchmarks/gpu_bench.py).
    "ct-large-ct": ((512, 512, 83), (0.7, 0.7, 5.0), "ct-large", None),
    "smoke": ((40, 48, 6), (1.0, 1.0, 4.0), "tiny", None),  # checks the script in seconds
}
# name: pipeline settings
#: Inference alone: adaptation (on by default since issue 24) has its own benchmark,
#: adaptation_budget.py, so every setting here runs with adapt_steps=0.
SETTINGS = {
    "paper": {"tiling": "patches", "stride": 12, "ensemble": "none", "precision": "float32"},
    "default": {},
    "flips2": {"ensemble": "flips2"},
}
#: Slices on which the bare network is timed (scaled to the whole volume).
NET_SAMPLE_SLICES = 16


def synthetic_volume(size, spacing, seed=0):
    """A smooth random phantom with tissue-like contrast (timings do not depend on content)."""
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    array = gaussian_filter(rng.normal(size=size[::-1]).astype(np.float32), 2) * 300 + 200
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    return image


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def _model(kind: str):
    import torch

    from CLADE.model_file import LoadedModel, build_generator, make_metadata
    from CLADE.registry import resolve_model

    if kind != "tiny":
        return resolve_model(kind)
    torch.manual_seed(0)
    meta = make_metadata("tiny", "MR", base_filters=4, n_blocks=1, trained=False)
    return LoadedModel(build_generator(meta).eval(), meta)


def students_of(teacher: str) -> list[str]:
    """The shipped models distilled from ``teacher`` (none for the tiny network)."""
    from CLADE.registry import read_manifest

    return [e["name"] for e in read_manifest() if e.get("distilled_from") == teacher]


def run_row(case: str, setting: str, device: str, model_name: str | None = None) -> dict:
    """One measurement, in this process (called in a fresh subprocess by :func:`main`);
    ``model_name`` replaces the case's model."""
    import torch

    from CLADE.device import resolve_device
    from CLADE.geometry import lr_slice_stack
    from CLADE.inference import GeneratorRunner, StackInference
    from CLADE.pipeline import SuperResolutionRequest, resolve_request, run

    size, spacing, kind, paper_seconds = CASES[case]
    kind = model_name or kind
    model = _model(kind)
    image = synthetic_volume(size, spacing)
    baseline_mb = _current_rss_mb()  # imports, model and the input image
    request = SuperResolutionRequest(model=model, device=device, adapt_steps=0, **SETTINGS[setting])
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    result = run(image, request)
    stats = result.stats
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    peak_mb = _rss_mb()
    output_mb = np.prod(stats["output_size"]) * 4 / 2**20

    # The bare network on the same kind of input, on a sample of the slices.
    _, chosen = resolve_request(request)
    settings = resolve_device(device, request.precision)
    runner = GeneratorRunner(model, settings, chosen["ensemble"])
    engine = StackInference(runner, chosen["tiling"], stride=chosen["stride"])
    out_shape = tuple(stats["output_size"][::-1])
    stack_shape = lr_slice_stack(np.empty(out_shape, np.uint8), 0, stats["thick_axis"]).shape
    sample = (
        np.random.default_rng(0)
        .uniform(-1, 1, (min(NET_SAMPLE_SLICES, stack_shape[0]),) + stack_shape[1:])
        .astype(np.float32)
    )
    net_seconds = _bare_network_seconds(engine, sample, device) * stack_shape[0] / len(sample)
    row = {
        "case": case,
        "setting": setting,
        "model": kind,
        "input": "x".join(map(str, size)),
        "output": "x".join(map(str, stats["output_size"])),
        "tiling": stats["tiling"],
        "stride": stats["stride"],
        "ensemble": stats["ensemble"],
        "precision": stats["precision"],
        "seconds": stats["seconds"],
        "voxels_per_second": stats["voxels_per_second"],
        "network_seconds": net_seconds,
        "e2e_over_network": net_seconds / stats["seconds"],
        "peak_rss_mb": peak_mb,
        "baseline_rss_mb": baseline_mb,
        "peak_over_output": (peak_mb - baseline_mb) / output_mb,
        "paper_gpu_seconds": paper_seconds,
        "device": stats["device"],
        "threads": torch.get_num_threads(),
    }
    if device.startswith("cuda"):
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


def _bare_network_seconds(engine, sample: np.ndarray, device: str) -> float:
    """Seconds of the network alone on ``sample``: the inputs are cut and placed on the device
    first, exactly as the engine batches them, and only the forward passes are timed."""
    import torch

    from CLADE.slice_tiles import pad_slices

    stack = torch.from_numpy(sample).to(device)
    if engine.tiling == "patches":
        patcher = engine._patcher(*sample.shape[1:])
        inputs = patcher.extract(stack)
        batches = [
            inputs[i : i + engine.batch_size] for i in range(0, len(inputs), engine.batch_size)
        ]
    else:
        padded = pad_slices(stack[:, None])
        per = max(1, engine._batch_pixels // (padded.shape[2] * padded.shape[3]))
        batches = [padded[i : i + per] for i in range(0, len(padded), per)]
    engine.runner(batches[0])  # warm-up (allocations, cuDNN's algorithm search)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    for batch in batches:
        engine.runner(batch)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - started


def format_table(rows: list[dict]) -> str:
    header = (
        "| case | setting | model | input -> output | tiling | precision | s | Mvox/s | "
        "net s | e2e/net | peak RSS MB | peak/out | speed-up | paper GPU s |"
    )
    lines = [header, "|" + "---|" * 14]
    first: dict[str, float] = {}
    for r in rows:
        first.setdefault(r["case"], r["seconds"])
    for r in rows:
        tiling = r["tiling"] + (f" s{r['stride']}" if r["stride"] else "")
        if r["ensemble"] != "none":
            tiling += f" +{r['ensemble']}"
        speedup = f"{first[r['case']] / r['seconds']:.1f}x"
        gpu = "" if r["paper_gpu_seconds"] is None else f"{r['paper_gpu_seconds']:g}"
        lines.append(
            f"| {r['case']} | {r['setting']} | {r['model']} | {r['input']} -> {r['output']} | "
            f"{tiling} | {r['precision']} | {r['seconds']:.1f} | "
            f"{r['voxels_per_second'] / 1e6:.3f} | {r['network_seconds']:.1f} | "
            f"{r['e2e_over_network']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r['peak_over_output']:.2f} | {speedup} | {gpu} |"
        )
    return "\n".join(lines)


def _plan(args) -> list[tuple[str, str, str]]:
    """(case, setting, model) of every row, in order: each setting with the case's model, then
    (``--students``) with each of its students."""
    plan = []
    for case in args.cases:
        teacher = CASES[case][2]
        models = [teacher] + (students_of(teacher) if args.students and teacher != "tiny" else [])
        plan += [(case, setting, model) for setting in args.settings for model in models]
    return plan


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=["mri", "ct"], choices=sorted(CASES))
    parser.add_argument(
        "--settings", nargs="+", default=["paper", "default"], choices=sorted(SETTINGS)
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--students", action="store_true", help="also run the shipped students of each model"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--row", nargs="+", metavar="CASE SETTING [MODEL]", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.row:
        print(json.dumps(run_row(*args.row[:2], args.device, *args.row[2:3])))
        return 0
    rows = []
    for case, setting, model in _plan(args):
        print(f"running {case} / {setting} / {model} on {args.device} ...", file=sys.stderr)
        command = [sys.executable, __file__, "--row", case, setting, model]
        completed = subprocess.run(
            command + ["--device", args.device], capture_output=True, text=True
        )
        if completed.returncode != 0:
            print(completed.stderr, file=sys.stderr)
            return completed.returncode
        rows.append(json.loads(completed.stdout.strip().splitlines()[-1]))
        print(format_table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)
    table = format_table(rows)
    print(table)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"rows": rows, "table": table}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
