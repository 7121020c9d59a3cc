"""PIQE speed: CLADE's vectorised implementation vs the pypiqe reference, and a whole volume.

Run: ``python benchmarks/piqe_speed.py`` (needs pypiqe, a test dependency). Prints a table of
median wall-clock times; the two 512 x 512 implementations are timed alternately on the same
slice so machine load affects both alike.

A developer tool: it reads the full 512 x 512 CT from the developers' ``shared/data`` folder
beside the repository (``CLADE_SHARED_DATA`` names another), which is not part of it (the
tests use the crops in ``Testing/data``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CLADE.metrics import piqe, volume_piqe

DATA = Path(
    os.environ.get("CLADE_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _median_seconds(function, *args, repeats: int = 5) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(*args)
        times.append(time.perf_counter() - start)
    return float(np.median(times)), result


def main() -> int:
    from pypiqe import piqe as pypiqe_piqe

    needed = [
        DATA / "abdomen_ct_native_20sl_totalseg.nii.gz",
        DATA / "abdomen_ct_3mm_iso_totalseg.nii.gz",
    ]
    missing = [path.name for path in needed if not path.is_file()]
    if missing:
        print(
            f"piqe_speed: {', '.join(missing)} not found in {DATA}: set CLADE_SHARED_DATA to the "
            "folder holding the developers' shared volumes (they are not in the repository).",
            file=sys.stderr,
        )
        return 2
    ct = sitk.GetArrayFromImage(
        sitk.ReadImage(str(DATA / "abdomen_ct_native_20sl_totalseg.nii.gz"))
    )
    rows = []
    for dtype in (np.int16, np.float64):
        slice2d = ct[10].astype(dtype)  # 512 x 512 real CT slice
        reference_times, ours_times = [], []
        for _ in range(5):
            t, reference_score = _median_seconds(lambda s: pypiqe_piqe(s)[0], slice2d, repeats=1)
            reference_times.append(t)
            t, score = _median_seconds(piqe, slice2d, repeats=1)
            ours_times.append(t)
        reference_time, ours_time = np.median(reference_times), np.median(ours_times)
        rows.append(
            (
                f"512x512 {dtype.__name__} slice",
                reference_time,
                ours_time,
                f"{reference_score:.4f} / {score:.4f}",
            )
        )

    # A 256^3 volume: the 3 mm iso CT resampled to 256 samples per axis.
    iso = sitk.ReadImage(str(DATA / "abdomen_ct_3mm_iso_totalseg.nii.gz"))
    volume = _resample_cube(iso, 256)
    seconds, score = _median_seconds(volume_piqe, volume, 2, repeats=2)
    rows.append(("256^3 volume, 256 slices", float("nan"), seconds, f"- / {score:.4f}"))

    print(f"{'case':<26}{'pypiqe (s)':>12}{'CLADE (s)':>12}{'speed-up':>10}  score pypiqe / CLADE")
    for name, reference_time, ours_time, scores in rows:
        ratio = reference_time / ours_time if np.isfinite(reference_time) else float("nan")
        ref_text = f"{reference_time:12.4f}" if np.isfinite(reference_time) else f"{'-':>12}"
        ratio_text = f"{ratio:9.1f}x" if np.isfinite(ratio) else f"{'-':>10}"
        print(f"{name:<26}{ref_text}{ours_time:12.4f}{ratio_text}  {scores}")
    return 0


def _resample_cube(image: sitk.Image, size: int) -> np.ndarray:
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    reference = sitk.Image([size] * 3, sitk.sitkFloat32)
    reference.SetSpacing(tuple(float(v) for v in extent / size))
    reference.SetOrigin(image.GetOrigin())
    reference.SetDirection(image.GetDirection())
    resampled = sitk.Resample(
        sitk.Cast(image, sitk.sitkFloat32), reference, sitk.Transform(), sitk.sitkLinear, -1024.0
    )
    return sitk.GetArrayFromImage(resampled)


if __name__ == "__main__":
    sys.exit(main())
