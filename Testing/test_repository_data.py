"""The tests' real volumes live in the repository (Testing/data), each listed with its source,
license and checksum, and no test or core module reaches for a folder beside the repository."""

from __future__ import annotations

import hashlib
import re

from conftest import REPO_ROOT, TEST_DATA

#: Ways a file could reach the ``shared/`` folder that stands beside the developers' checkout
#: (and nobody else's); spelt in pieces so that this file does not match itself.
OUTSIDE = ("../" + "shared", '"' + "shared" + '" / "data"', "CLADE_" + "SHARED_DATA")


def _volumes():
    return sorted(p for p in TEST_DATA.iterdir() if p.name.endswith((".nii.gz", ".nrrd")))


def test_every_volume_is_listed_with_its_license_and_checksum():
    readme = (TEST_DATA / "README.md").read_text(encoding="utf-8")
    listed = dict(re.findall(r"^([0-9a-f]{64})  (\S+)$", readme, flags=re.MULTILINE))
    volumes = _volumes()
    assert volumes and {p.name for p in volumes} == set(listed.values())
    for path in volumes:
        assert f"| `{path.name}` |" in readme, f"{path.name} is not in the table"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert listed.get(digest) == path.name, f"{path.name}: checksum differs from the README"
    for license_file in re.findall(r"`(LICENSE-[^`]+\.txt)`", readme):
        assert (TEST_DATA / license_file).is_file(), license_file


def test_no_test_and_no_core_module_reads_outside_the_repository():
    files = [*(REPO_ROOT / "Testing").glob("*.py"), *(REPO_ROOT / "CLADE").rglob("*.py")]
    offenders = [
        f"{path.relative_to(REPO_ROOT)}: {needle}"
        for path in files
        for needle in OUTSIDE
        if needle in path.read_text(encoding="utf-8")
    ]
    assert not offenders, offenders
