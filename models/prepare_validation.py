"""Cut the MRI validation pair used to pick the shipped `mri` model's epoch.

Colin27 (Debian's mricron-data), simulated at 5 mm by `benchmarks/prepare_eval_data.py`, cropped
to 40 sagittal slices so that validating every epoch costs minutes, not tens of minutes, on a
CPU. The MNI template stays untouched for the final evaluation.

Usage: python models/prepare_validation.py [EVAL_DATA_DIR] [OUT_DIR]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import SimpleITK as sitk


def write_manifest(
    out: Path, name: str, thick: str, reference: str, thickness_mm: float, reference_mm: float
) -> None:
    """``out/eval_volumes.json`` in the benchmarks' manifest format (one MR volume thick along z,
    Gaussian profile), so that ``--data out`` measures on it (``models/cards/adaptation.md``)."""
    volume = {
        "name": name,
        "modality": "MR",
        "thick": thick,
        "reference": reference,
        "thickness_mm": thickness_mm,
        "spacing_mm": thickness_mm,
        "axis": 2,
        "profile": "gaussian",
        "reference_spacing_mm": reference_mm,
        "relative_slice_thickness": thickness_mm / reference_mm,
    }
    (out / "eval_volumes.json").write_text(json.dumps({"volumes": [volume]}, indent=1) + "\n")


def main() -> None:
    eval_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/eval-data")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "runs/validation")
    out.mkdir(parents=True, exist_ok=True)
    thick = sitk.ReadImage(str(eval_dir / "mri-colin27-5mm_thick.nii.gz"))
    iso = sitk.ReadImage(str(eval_dir / "colin27_iso.nii.gz"))
    # Same in-plane grid in both, so the same x range selects the same sagittal slices; along z
    # the thick slices cover the first (number of thick slices) x 5 reference slices.
    thick_crop = thick[70:110, :, :]
    sitk.WriteImage(thick_crop, str(out / "colin27_5mm_thick_crop.nii.gz"))
    ratio = round(thick.GetSpacing()[2] / iso.GetSpacing()[2])
    iso_crop = iso[70:110, :, : thick.GetSize()[2] * ratio]
    sitk.WriteImage(iso_crop, str(out / "colin27_iso_crop.nii.gz"))
    write_manifest(
        out,
        "mri-colin27-validation-crop",
        "colin27_5mm_thick_crop.nii.gz",
        "colin27_iso_crop.nii.gz",
        5.0,
        1.0,
    )
    print(f"wrote {out}/colin27_5mm_thick_crop.nii.gz, colin27_iso_crop.nii.gz, eval_volumes.json")


if __name__ == "__main__":
    main()
