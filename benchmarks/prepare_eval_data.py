"""Build the evaluation volumes of the shipped-model quality table (issue 6).

None of these volumes is ever used for training. Each is an isotropic ground truth and a
thick-slice volume simulated from it with :func:`CLADE.simulate.simulate_thick_slices` (a
Gaussian slice profile with FWHM = slice thickness, slices as far apart as they are thick):

========================  ================================================================  =========
name                      isotropic reference                                               thick
========================  ================================================================  =========
``mri-mni152-5mm``        MNI ICBM152 2009a T1 template, 1 mm, from the ``nilearn`` wheel   5 mm
``mri-mni152-5mm-x``      same, thick along x (sagittal slices; issue 24)                   5 mm (x)
``mri-colin27-5mm``       Colin27 (``ch2``), 1 mm, Debian ``mricron-data`` (if installed)   5 mm
``ct-abdomen-9mm``        TotalSegmentator abdomen CT, 3 mm (``/work/shared/data``)         9 mm
``ct-abdomen-12mm``       same                                                              12 mm
``mri-abdomen-mr-9mm``    TotalSegmentator abdomen MR, 3 mm (``/work/shared/data``)         9 mm
``mri-abdomen-mr-9mm-x``  same, thick along x (its z axis is interpolated; issue 23)        9 mm (x)
========================  ================================================================  =========

The thick axis is index axis 2 (z: axial slices) everywhere but in ``-x`` volumes. Volumes are
written as float32 (the templates are stored as 8-bit, which would otherwise round the simulated
slices). The nilearn
wheel is fetched with ``pip download --no-deps nilearn`` into ``--cache`` and only the template
file is taken out of it (the wheel is a zip); nilearn is never installed or imported. Colin27
needs ``apt-get install mricron-data`` (skipped with a note when absent).

A developer tool: it reads the two TotalSegmentator volumes from the developers' ``shared/data`` folder
beside the repository, which is not part of it (the tests use the crops in ``Testing/data``).

A manifest ``eval_volumes.json`` in the output folder lists every volume (name, modality,
thick-slice file, reference file, thickness, axis, and ECLARE's relative slice thickness);
``benchmarks/model_quality.py`` reads it.

Usage::

    python benchmarks/prepare_eval_data.py                 # -> runs/eval-data
    python benchmarks/prepare_eval_data.py --out DIR --no-colin

Sources and licenses: ICBM 2009a Nonlinear Symmetric template, Copyright (C) 1993-2009 Louis
Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University
(permissive, attribution required; shipped inside nilearn, BSD-3). Colin27: the same MNI group,
via Debian's mricron-data. Abdomen CT: TotalSegmentator test image, Apache-2.0 (see
/work/shared/data/README.md).
"""

from __future__ import annotations

import argparse
import glob
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import SimpleITK as sitk

from CLADE.simulate import simulate_thick_slices

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "runs" / "eval-data"
DEFAULT_CACHE = REPO / "runs" / "cache"
MNI_MEMBER = "nilearn/datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
COLIN_PATH = Path("/usr/share/mricron/templates/ch2.nii.gz")
CT_PATH = Path("/work/shared/data/abdomen_ct_3mm_iso_totalseg.nii.gz")
#: Not among the shipped mri model's training volumes (models/train_shipped_models.sh).
MR_ABDOMEN_PATH = Path("/work/shared/data/abdomen_mr_3mm_iso_totalseg.nii.gz")
AXIS = 2
PROFILE = "gaussian"
MANIFEST = "eval_volumes.json"


def nilearn_wheel(cache: Path) -> Path:
    """The nilearn wheel in ``cache``, downloaded (no dependencies) when not there yet."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(glob.glob(str(cache / "nilearn-*.whl")))
    if not wheels:
        print(f"Downloading the nilearn wheel into {cache} (pip download --no-deps nilearn)")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                "--dest",
                str(cache),
                "nilearn",
            ],
            check=True,
        )
        wheels = sorted(glob.glob(str(cache / "nilearn-*.whl")))
    if not wheels:
        raise SystemExit(f"No nilearn wheel in {cache} after pip download.")
    return Path(wheels[-1])


def extract_mni(cache: Path) -> Path:
    """Take the MNI ICBM152 T1 template out of the nilearn wheel (a zip); return its path."""
    wheel = nilearn_wheel(cache)
    target = cache / f"{wheel.stem}_{Path(MNI_MEMBER).name}"
    if not target.is_file():
        with zipfile.ZipFile(wheel) as archive:
            target.write_bytes(archive.read(MNI_MEMBER))
    return target


def read_float(path: Path) -> sitk.Image:
    return sitk.Cast(sitk.ReadImage(str(path)), sitk.sitkFloat32)


def describe(image: sitk.Image) -> str:
    size = "x".join(str(v) for v in image.GetSize())
    spacing = " x ".join(f"{v:g}" for v in image.GetSpacing())
    array = sitk.GetArrayViewFromImage(image)
    return f"{size} @ {spacing} mm, values {float(array.min()):g}..{float(array.max()):g}"


def build(out: Path, cache: Path, colin: bool, ct_path: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    sources = []  # (source name, modality, image, source description, (thickness, axis)s)
    mni = extract_mni(cache)
    # The MNI brain also along x (issue 24): its thick axis lies in the usual LR plane, where
    # adaptation once made the result worse and the held-back pairs did not see it.
    mni_cuts = [(5.0, AXIS), (5.0, 0)]
    sources.append(("mni152", "MR", read_float(mni), f"{mni} (from the nilearn wheel)", mni_cuts))
    if colin and COLIN_PATH.is_file():
        sources.append(("colin27", "MR", read_float(COLIN_PATH), str(COLIN_PATH), [(5.0, AXIS)]))
    elif colin:
        print(f"note: {COLIN_PATH} not found (apt-get install mricron-data): Colin27 skipped")
    if ct_path.is_file():
        sources.append(
            ("abdomen", "CT", read_float(ct_path), str(ct_path), [(9.0, AXIS), (12.0, AXIS)])
        )
    else:
        print(f"note: {ct_path} not found: the CT volumes are skipped")
    if MR_ABDOMEN_PATH.is_file():
        # Also along x (issue 23): this reference was resampled from a thicker acquisition, so
        # its z axis is interpolated (its noise in planes holding z is 0.4 of that in its axial
        # planes, where an isotropic volume has the same in all three), and only x and y are a
        # true thin-slice truth.
        mr_cuts = [(9.0, AXIS), (9.0, 0)]
        sources.append(
            ("abdomen-mr", "MR", read_float(MR_ABDOMEN_PATH), str(MR_ABDOMEN_PATH), mr_cuts)
        )

    entries = []
    for source, modality, iso, origin, cuts in sources:
        reference = out / f"{source}_iso.nii.gz"
        sitk.WriteImage(iso, str(reference), useCompression=True)
        print(f"{reference.name}: {describe(iso)}  <- {origin}")
        for thickness, axis in cuts:
            step = float(iso.GetSpacing()[axis])
            in_plane = min(s for i, s in enumerate(iso.GetSpacing()) if i != axis)
            name = f"{'mri' if modality == 'MR' else 'ct'}-{source}-{thickness:g}mm"
            name += "" if axis == AXIS else f"-{'xyz'[axis]}"
            thick = simulate_thick_slices(iso, thickness, None, axis, PROFILE)
            path = out / f"{name}_thick.nii.gz"
            sitk.WriteImage(thick, str(path), useCompression=True)
            used = int(round(thick.GetSize()[axis] * thickness / step))
            print(
                f"{path.name}: {describe(thick)} ({PROFILE} profile, FWHM {thickness:g} mm, "
                f"{used} of {iso.GetSize()[axis]} reference slices)"
            )
            entries.append(
                {
                    "name": name,
                    "modality": modality,
                    "thick": path.name,
                    "reference": reference.name,
                    "thickness_mm": thickness,
                    "spacing_mm": thickness,
                    "axis": axis,
                    "profile": PROFILE,
                    "reference_spacing_mm": step,
                    "relative_slice_thickness": thickness / in_plane,
                    "source": origin,
                }
            )
    manifest = out / MANIFEST
    manifest.write_text(json.dumps({"volumes": entries}, indent=2) + "\n")
    print(f"{manifest}: {len(entries)} evaluation volumes")
    return entries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="A developer tool: reads volumes from shared/data beside the repository (not part of it).",
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder ({DEFAULT_OUT})"
    )
    parser.add_argument(
        "--cache",
        type=Path,
        default=DEFAULT_CACHE,
        help=f"where the nilearn wheel is kept ({DEFAULT_CACHE})",
    )
    parser.add_argument(
        "--no-colin",
        dest="colin",
        action="store_false",
        help="skip Colin27 even when mricron-data is installed",
    )
    parser.add_argument("--ct", type=Path, default=CT_PATH, help=f"isotropic CT ({CT_PATH})")
    args = parser.parse_args(argv)
    build(args.out, args.cache, args.colin, args.ct)
    return 0


if __name__ == "__main__":
    sys.exit(main())
