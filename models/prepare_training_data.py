"""Gather the extra training volumes of the retrained `mri` and `ct` models (issue 14).

Beyond the volumes in ``../shared/data``, the recipe (``models/train_shipped_models.sh``) trains on:

- **Two thick-slice chest CTs** (512x512, 0.57-0.63 mm in-plane, 5 mm slices, HU) from the
  PyRadiomics source distribution on PyPI (``data/lung1_image.nrrd``, ``data/lung2_image.nrrd``;
  BSD 3-clause, Copyright 2017 Harvard Medical School, the licence of the shared brain volumes,
  ``../shared/data/LICENSE-BSD-3-pyradiomics.txt``). The archive is fetched with ``pip download``
  into ``--cache``; only the two images are taken out, checked against their SHA-256.
- **Colin27 outside the validation slab** (Debian ``mricron-data``, ``ch2.nii.gz``, 1 mm): the
  sagittal slabs left and right of the validation crop (``models/prepare_validation.py`` keeps
  x 70-109; training takes x 0-64 and 115-180, 5 voxels apart from it: 13 thick slices, wide enough for 64-pixel patches), each simulated at
  5 mm along each of its three axes with a Gaussian slice profile, so that every plane of a real
  1 mm T1 brain serves as HR content for the paired term.

A developer tool: the recipe reads the other volumes from the developers' ``shared/data`` folder
beside the repository, which is not part of it (the tests use the crops in ``Testing/data``).

None of these is an evaluation volume (``benchmarks/prepare_eval_data.py``): the MNI template,
the TotalSegmentator 3 mm CT and MR stay held out.

Usage: python models/prepare_training_data.py [--out runs/training-data] [--cache runs/cache]
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import SimpleITK as sitk

from CLADE.simulate import simulate_thick_slices

REPO = Path(__file__).resolve().parents[1]
PYRADIOMICS = "pyradiomics==3.0.1"
LUNG_SHA256 = {
    "lung1_image.nrrd": "379fa48bf34cfa961e6f5ec19c0c38757a30b9aa884212ef28dc29b5061c64ed",
    "lung2_image.nrrd": "aa2b94eec79127ed786798ac8dc3c013010e1692d5787bebfae1a1e9685a4651",
}
COLIN_PATH = Path("/usr/share/mricron/templates/ch2.nii.gz")
#: Sagittal (index x) slabs of Colin27 used for training; the validation crop is x 70-109.
COLIN_SLABS = {"left": (0, 65), "right": (115, None)}
COLIN_THICKNESS_MM = 5.0


def pyradiomics_archive(cache: Path) -> Path:
    """The PyRadiomics source archive in ``cache``, downloaded (no build, no install) if absent."""
    archive = cache / "pyradiomics-3.0.1.tar.gz"
    if not archive.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"Downloading the {PYRADIOMICS} source archive into {cache}")
        pip = [sys.executable, "-m", "pip", "download", "--no-deps", "--dest", str(cache)]
        # --no-binary: the images are only in the source archive; --no-build-isolation: pip
        # would otherwise build the package to read its metadata, which needs its build tools.
        pip += ["--no-binary", ":all:", "--no-build-isolation", PYRADIOMICS]
        subprocess.run(pip, check=True)
    if not archive.is_file():
        raise SystemExit(f"No {archive.name} in {cache} after pip download.")
    return archive


def extract_lungs(cache: Path, out: Path) -> list[Path]:
    """Write the two chest CTs to ``out`` (names say their origin), checking their SHA-256."""
    written = []
    with tarfile.open(pyradiomics_archive(cache)) as archive:
        for name, expected in LUNG_SHA256.items():
            data = archive.extractfile(f"pyradiomics-3.0.1/data/{name}").read()
            if hashlib.sha256(data).hexdigest() != expected:
                raise SystemExit(f"{name} in the PyRadiomics archive is not the expected file.")
            target = out / f"ct_chest_5mm_pyradiomics_{name.replace('_image', '')}"
            target.write_bytes(data)
            written.append(target)
    return written


def colin_slabs(out: Path) -> list[Path]:
    """The Colin27 training slabs, each simulated at 5 mm along each axis."""
    if not COLIN_PATH.is_file():
        print(f"note: {COLIN_PATH} not found (apt-get install mricron-data): Colin27 skipped")
        return []
    colin = sitk.Cast(sitk.ReadImage(str(COLIN_PATH)), sitk.sitkFloat32)
    written = []
    for side, (start, stop) in COLIN_SLABS.items():
        slab = colin[start:stop, :, :]
        for axis, label in enumerate("xyz"):
            thick = simulate_thick_slices(slab, COLIN_THICKNESS_MM, None, axis, "gaussian")
            target = out / f"mr_colin27_{side}_5mm_along_{label}.nii.gz"
            sitk.WriteImage(thick, str(target), useCompression=True)
            written.append(target)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="A developer tool: reads volumes from shared/data beside the repository (not part of it).",
    )
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "training-data")
    parser.add_argument("--cache", type=Path, default=REPO / "runs" / "cache")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in extract_lungs(args.cache, args.out) + colin_slabs(args.out):
        image = sitk.ReadImage(str(path))
        size = "x".join(map(str, image.GetSize()))
        spacing = " x ".join(f"{v:.3g}" for v in image.GetSpacing())
        print(f"{path.name}: {size} @ {spacing} mm")
    return 0


if __name__ == "__main__":
    sys.exit(main())
