"""Inference speed and memory on CPU, for paper-sized volumes (issue 2's benchmark).

Prints one table. Every row runs in its own subprocess so its peak RSS is its own. Ratios are
measured side by side in the same process (these machines are noisy):

* ``e2e/bare``: end-to-end patches/s (resampling, normalisation, patching, blending included)
  over the bare generator's patches/s on random batches of the same batch size. Target >= 0.85.
* ``vs loop``: end-to-end patches/s over a straightforward reference that runs one patch at a
  time through the unfused generator and accumulates sums and counts in numpy.

The full paper volumes take long on 2 CPU cores (the CT at stride 6 is ~235,000 patches), so by
default each is cut to a slab of ``--slices`` LR-plane slices; patches per slice are unchanged,
so the full-volume time is extrapolated linearly and labelled as such. ``--full`` runs it all.

Usage::

    python benchmarks/inference.py            # slabs, ~10 minutes on 2 cores
    python benchmarks/inference.py --full     # whole volumes (hours on 2 cores)
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np

# name, size (x, y, z), spacing, stride, paper seconds (RTX A6000), network
CASES = {
    "mri": ((185, 330, 23), (1.2, 1.2, 6.6), 12, 103.0, "paper"),
    "ct": ((320, 320, 22), (0.95, 0.95, 5.0), 6, 292.0, "paper"),
    "ct-large-rss": ((512, 512, 83), (0.7, 0.7, 5.0), 16, None, "tiny"),
}


def synthetic_volume(size, spacing, seed=0):
    """A smooth random phantom with tissue-like contrast (timings do not depend on content)."""
    import SimpleITK as sitk
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    array = gaussian_filter(rng.normal(size=size[::-1]).astype(np.float32), 2) * 300 + 200
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing)
    return image


def run_case(name: str, slices: int | None, batch_size: int) -> dict:
    import torch

    from CLADE.inference import super_resolve
    from CLADE.model_file import LoadedModel, build_generator, make_metadata
    from CLADE.networks import fuse_for_inference
    from CLADE.patches import SlicePatcher

    size, spacing, stride, paper_seconds, network = CASES[name]
    full_slices = size[0]  # the auto LR plane is sagittal: slices along x
    if slices:
        size = (min(slices, size[0]),) + size[1:]
    arch = {} if network == "paper" else {"base_filters": 4, "n_blocks": 1}
    meta = make_metadata(name, "MR", default_stride=stride, trained=False, **arch)
    torch.manual_seed(0)
    model = LoadedModel(build_generator(meta).eval(), meta)
    image = synthetic_volume(size, spacing)

    result = super_resolve(image, model, device="cpu", batch_size=batch_size)
    stats = result.stats
    row = {
        "case": name,
        "network": network,
        "input": "x".join(map(str, size)),
        "output": "x".join(map(str, stats["output_size"])),
        "stride": stride,
        "patches": stats["patches"],
        "seconds": stats["seconds"],
        "patches_per_s": stats["patches_per_second"],
        "paper_seconds": paper_seconds,
        "full_slices": full_slices,
        "measured_slices": size[0],
    }

    # Bare generator at the same batch size, same process, right after.
    fused = fuse_for_inference(model.generator).to(memory_format=torch.channels_last)
    batch = torch.randn(batch_size, 1, 32, 32).contiguous(memory_format=torch.channels_last)
    done, started = 0, time.perf_counter()
    with torch.inference_mode():
        while time.perf_counter() - started < min(20.0, stats["seconds"]):
            fused(batch)
            done += batch_size
    row["bare_patches_per_s"] = done / (time.perf_counter() - started)
    row["e2e_over_bare"] = row["patches_per_s"] / row["bare_patches_per_s"]

    # Reference: one patch at a time, unfused ModConv network, numpy accumulation.
    import SimpleITK as sitk

    from CLADE.geometry import lr_slice_stack, resample_to_isotropic

    iso = sitk.GetArrayFromImage(resample_to_isotropic(image, 2))
    stack = lr_slice_stack(iso / np.abs(iso).max(), 0, 2)
    patcher = SlicePatcher(stack.shape[1], stack.shape[2], stride)
    limit, done = 40 if network == "paper" else 400, 0
    started = time.perf_counter()
    total = np.zeros(patcher.padded)
    count = np.zeros(patcher.padded)
    padded = np.pad(
        stack[0],
        [(0, patcher.padded[0] - stack.shape[1]), (0, patcher.padded[1] - stack.shape[2])],
        mode="reflect",
    )
    with torch.inference_mode():
        for r in range(0, patcher.padded[0] - 31, stride):
            for c in range(0, patcher.padded[1] - 31, stride):
                patch = torch.from_numpy(padded[r : r + 32, c : c + 32].astype(np.float32))
                out = model.generator(patch[None, None])[0, 0].numpy()
                total[r : r + 32, c : c + 32] += out
                count[r : r + 32, c : c + 32] += 1
                done += 1
                if done >= limit:
                    break
            if done >= limit:
                break
    row["loop_patches_per_s"] = done / (time.perf_counter() - started)
    row["speedup_vs_loop"] = row["patches_per_s"] / row["loop_patches_per_s"]
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    row["full_seconds"] = row["seconds"] * full_slices / size[0]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--slices",
        type=int,
        default=12,
        help="LR-plane slices per volume (default 12; --full for all)",
    )
    parser.add_argument("--full", action="store_true", help="run the whole volumes")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--case-json", help=argparse.SUPPRESS)
    args = parser.parse_args()
    slices = None if args.full else args.slices

    if args.case_json:  # child process: one case, JSON on stdout
        print(json.dumps(run_case(args.case_json, slices, args.batch_size)))
        return

    rows = []
    for name in args.cases:
        command = [
            sys.executable,
            __file__,
            "--case-json",
            name,
            "--batch-size",
            str(args.batch_size),
        ]
        command += ["--full"] if args.full else ["--slices", str(args.slices)]
        out = subprocess.run(command, capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"done: {name}", file=sys.stderr)

    header = (
        "case",
        "net",
        "input",
        "output",
        "stride",
        "patches",
        "s",
        "patch/s",
        "bare/s",
        "e2e/bare",
        "vs loop",
        "RSS MB",
        "full vol s",
        "paper GPU s",
    )
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        full = f"{r['full_seconds']:.0f}" + (
            ""
            if r["measured_slices"] == r["full_slices"]
            else f" (extrapolated from {r['measured_slices']}/{r['full_slices']} slices)"
        )
        print(
            " | ".join(
                [
                    r["case"],
                    r["network"],
                    r["input"],
                    r["output"],
                    str(r["stride"]),
                    str(r["patches"]),
                    f"{r['seconds']:.1f}",
                    f"{r['patches_per_s']:.1f}",
                    f"{r['bare_patches_per_s']:.1f}",
                    f"{r['e2e_over_bare']:.2f}",
                    f"{r['speedup_vs_loop']:.1f}x",
                    f"{r['peak_rss_mb']:.0f}",
                    full,
                    "-" if r["paper_seconds"] is None else f"{r['paper_seconds']:.0f}",
                ]
            )
        )


if __name__ == "__main__":
    main()
