"""Coarse-pixel copies of the MRI training volumes, and a coarse validation pair (issue 24).

The shipped MRI models learnt their in-plane detail from 0.5-1 mm pixels (the pelvis, the two
brains, Colin27). Body MRI often comes with 1.5-3 mm pixels, where the same anatomy spans a
third as many pixels. This tool makes the training volumes' in-plane planes available at that
scale: each volume's pixels are averaged in blocks of 2x2 and 3x3 across its HR plane
(``SimpleITK.BinShrink``: a coarse pixel is the mean of the fine pixels it covers, as a coarser
acquisition would record; the thick axis is left alone). A copy whose HR plane would fall under
40 pixels a side is skipped (too small for the 32-pixel training patches).

The validation pair: Colin27 (Debian ``mricron-data``, ``ch2.nii.gz``) averaged to 3 mm in all
three axes, the validation crop's sagittal range (1 mm x 70-109, the crop of
``models/prepare_validation.py``; the training slabs x 0-64 and 115-180 stay outside it), and its
thick-slice simulation at 9 mm along z (Gaussian profile).

A developer tool: it reads the developers' ``shared/data`` folder beside the repository and the
output of ``models/prepare_training_data.py`` and of ``benchmarks/prepare_eval_data.py``.

Usage: python models/prepare_coarse_data.py [--shared ../shared/data]
    [--training runs/training-data] [--eval-data runs/eval-data] [--out runs/coarse-data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import SimpleITK as sitk
from prepare_validation import write_manifest  # the same folder: run as a script

from CLADE.geometry import detect_thick_axis
from CLADE.simulate import simulate_thick_slices

REPO = Path(__file__).resolve().parents[1]
SHARED_VOLUMES = (
    "pelvis_mr_t2_0p5x0p5x3mm_monai.nii.gz",
    "mr_brain_t1gd_0p78x0p78x6p5mm_pyradiomics_brain1.nrrd",
    "mr_brain_t1gd_0p78x0p78x6p5mm_pyradiomics_brain2.nrrd",
)
FACTORS = (2, 3)
MIN_SIDE = 40
VALIDATION_FACTOR = 3
VALIDATION_THICKNESS_MM = 9.0


def coarse_copies(path: Path, out: Path) -> list[Path]:
    """``path`` averaged in blocks of each of :data:`FACTORS` across its HR plane."""
    image = sitk.ReadImage(str(path), sitk.sitkFloat32)
    axis = detect_thick_axis(image.GetSpacing(), None)
    written = []
    for factor in FACTORS:
        shrink = [1 if a == axis else factor for a in range(3)]
        sides = [image.GetSize()[a] // factor for a in range(3) if a != axis]
        if min(sides) < MIN_SIDE:
            print(f"skipped {path.name} x{factor}: its HR plane would be {sides} pixels")
            continue
        name = path.name.split(".")[0] + f"_inplane_x{factor}.nii.gz"
        sitk.WriteImage(sitk.BinShrink(image, shrink), str(out / name))
        written.append(out / name)
    return written


def validation_pair(eval_data: Path, out: Path) -> None:
    """The 3 mm Colin27 validation crop and its 9 mm thick-slice simulation."""
    iso = sitk.BinShrink(
        sitk.ReadImage(str(eval_data / "colin27_iso.nii.gz"), sitk.sitkFloat32),
        [VALIDATION_FACTOR] * 3,
    )
    first, stop = 70 // VALIDATION_FACTOR, 110 // VALIDATION_FACTOR + 1  # x 69-110 at 1 mm
    ratio = round(VALIDATION_THICKNESS_MM / iso.GetSpacing()[2])
    depth = iso.GetSize()[2] // ratio * ratio
    crop = iso[first:stop, :, :depth]
    thick = simulate_thick_slices(crop, VALIDATION_THICKNESS_MM, axis=2)
    sitk.WriteImage(crop, str(out / "colin27_3mm_iso_crop.nii.gz"))
    sitk.WriteImage(thick, str(out / "colin27_3mm_9mm_thick_crop.nii.gz"))
    write_manifest(
        out,
        "mri-colin27-3mm-validation-crop",
        "colin27_3mm_9mm_thick_crop.nii.gz",
        "colin27_3mm_iso_crop.nii.gz",
        VALIDATION_THICKNESS_MM,
        float(VALIDATION_FACTOR),
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--training", type=Path, default=REPO / "runs" / "training-data")
    parser.add_argument("--eval-data", type=Path, default=REPO / "runs" / "eval-data")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "coarse-data")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    sources = [args.shared / name for name in SHARED_VOLUMES]
    sources += sorted(args.training.glob("mr_colin27_*.nii.gz"))
    for source in sources:
        for path in coarse_copies(source, args.out):
            print(f"wrote {path}")
    validation_pair(args.eval_data, args.out)
    print(f"wrote the validation pair and {args.out / 'eval_volumes.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
