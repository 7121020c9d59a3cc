"""The Extensions Index's checks that run offline, on this repository, and its size limit.

Ported from ``scripts/check_description_files.py`` of Slicer/ExtensionsIndex (main, commit
07f1d1b): ``check_extension_name``, ``check_git_repository_name``, ``check_scm_url_syntax``,
``check_category`` (``ACCEPTED_EXTENSION_CATEGORIES``), ``check_json_file_format`` (LF line
endings), ``check_json_schema`` (against ``schemas/slicer-extension-catalog-entry-schema-
v1.0.2.json``, its rules written out here rather than the schema copied), ``check_cmakelists_
content`` (project() name equals the catalog file's name; icon and screenshot URLs found with the
checker's own patterns, here pointing at PNG files of this repository instead of downloaded),
``check_license_file`` and ``check_repository_size`` (100 MB for the whole clone, history
included; the tracked files must stay at most 60 MB so a published history fits, see README
"Releasing"). The checks that need the network (the GitHub topic ``3d-slicer-extension``,
downloading the images, cloning) are in README "Releasing" as release steps.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CATALOG_ENTRY = REPO / "Resources" / "CLADE.json"
SCHEMA_URL = (
    "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/"
    "slicer-extension-catalog-entry-schema-v1.0.2.json#"
)

#: The Index's ACCEPTED_EXTENSION_CATEGORIES (a list of names, as of commit 07f1d1b).
ACCEPTED_CATEGORIES = {
    "Active Learning", "Analysis", "Auto3dgm", "BigImage", "Cardiac", "Chest Imaging Platform",
    "Conda", "Converters", "DICOM", "DSCI", "Developer Tools", "Diffusion", "Examples",
    "Exporter", "FTV Segmentation", "Filtering", "Filtering.Morphology", "Filtering.Vesselness",
    "Holographic Display", "Image Synthesis", "IGT", "Informatics", "Netstim", "Neuroimaging",
    "Nuclear Medicine", "Orthodontics", "Osteotomy Planning", "Otolaryngology", "Photogrammetry",
    "Pipelines", "Planning", "Printing", "Quantification", "Radiotherapy", "Registration",
    "Remote", "Rendering", "SPHARM", "Segmentation", "Sequences", "Shape Analysis",
    "Shape Regression", "Shape Visualization", "Simulation", "SlicerCMF", "SlicerMorph",
    "Spectral Imaging", "Supervisely", "Surface Models", "SurfaceLearner",
    "Tomographic Reconstruction", "Tracking", "Tractography", "Training", "Ultrasound",
    "Utilities", "Vascular Modeling Toolkit", "Virtual Reality", "VisSimTools",
    "Web System Tools", "Wizards",
}  # fmt: skip

#: The catalog-entry schema v1.0.2: each property's JSON type (and its extra rule).
SCHEMA_PROPERTIES = {
    "$schema": str,
    "category": str,
    "scm_url": str,
    "scm_revision": str,
    "scm_type": str,  # enum: git, local
    "build_dependencies": list,  # of strings
    "dicom_support_rule": str,
    "build_subdirectory": str,
    "enabled": bool,
    "tier": int,  # 1 to 5
}
SCHEMA_REQUIRED = {"$schema", "category", "scm_url"}

#: Tracked files at most this size, so the published clone (files + one copy of them in
#: history) stays under the Index's 100 MB.
TRACKED_LIMIT_MB = 60


def extensionName() -> str:
    """The Index names an extension after its catalog file."""
    return CATALOG_ENTRY.stem


def entry() -> dict:
    return json.loads(CATALOG_ENTRY.read_text(encoding="utf-8"))


def cmake() -> str:
    return (REPO / "CMakeLists.txt").read_text(encoding="utf-8")


def schemaProblems(metadata: dict) -> list[str]:
    """What the v1.0.2 schema would refuse (additionalProperties false, types, enum, range)."""
    problems = [f"missing {key}" for key in sorted(SCHEMA_REQUIRED - set(metadata))]
    for key, value in metadata.items():
        kind = SCHEMA_PROPERTIES.get(key)
        if kind is None:
            problems.append(f"unknown property {key}")
        elif not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            problems.append(f"{key} is not a {kind.__name__}")
    if metadata.get("scm_type", "git") not in ("git", "local"):
        problems.append("scm_type is neither git nor local")
    if isinstance(metadata.get("tier"), int) and not 1 <= metadata["tier"] <= 5:
        problems.append("tier is outside 1-5")
    dependencies = metadata.get("build_dependencies", [])
    if isinstance(dependencies, list) and not all(isinstance(d, str) for d in dependencies):
        problems.append("build_dependencies holds a non-string")
    return problems


def test_extension_name_does_not_start_with_slicer_and_is_the_cmake_project():
    name = extensionName()
    assert not name.lower().startswith("slicer"), name
    # The checker's pattern for the project name (check_cmakelists_content).
    projects = re.findall(r"project\s*\(\s*([^\s\)\n\r]+)", cmake(), re.IGNORECASE)
    assert projects and projects[0].strip("\"'") == name
    assert (REPO / f"{name}.s4ext").is_file()


def test_repository_name_starts_with_slicer_and_the_scm_url_is_git_or_https():
    url = entry()["scm_url"]
    assert "://" in url and url.split("://")[0] in ("git", "https"), url
    repository = url.strip().strip("/").rsplit("/", 1)[-1].removesuffix(".git")
    assert repository.startswith(("Slicer", "Slicer-", "Slicer_", "SlicerExtension-"))


def test_catalog_entry_follows_the_schema_and_is_lf_only():
    metadata = entry()
    assert metadata["$schema"] == SCHEMA_URL
    assert schemaProblems(metadata) == []
    assert b"\r" not in CATALOG_ENTRY.read_bytes()


def test_schema_rules_refuse_what_the_index_refuses():
    good = entry()
    assert schemaProblems({**good, "keywords": ["x"]}) == ["unknown property keywords"]
    assert schemaProblems({**good, "tier": 0}) == ["tier is outside 1-5"]
    assert schemaProblems({**good, "tier": True}) == ["tier is not a int"]
    assert schemaProblems({**good, "scm_type": "svn"}) == ["scm_type is neither git nor local"]
    assert schemaProblems({k: v for k, v in good.items() if k != "category"}) == [
        "missing category"
    ]


def test_category_is_one_the_index_accepts():
    assert entry()["category"] in ACCEPTED_CATEGORIES


def test_icon_and_screenshots_are_found_by_the_checkers_patterns_and_exist_here():
    text = cmake()
    icon = re.findall(r'set\s*\(EXTENSION_ICONURL\s*"([^"]+)"[ ]*\)', text, re.IGNORECASE)
    shots = re.findall(r'set\s*\(EXTENSION_SCREENSHOTURLS\s*"([^"]+)"\)', text, re.IGNORECASE)
    assert icon and shots, "the Index would report no icon or no screenshot"
    urls = [icon[0].strip(), *shots[0].split()]
    assert len(urls) >= 2
    for url in urls:
        assert url.startswith("https://raw.githubusercontent.com/"), url
        relative = url.split("/", 6)[6]  # owner/repository/branch/<path>
        path = REPO / relative
        assert path.is_file(), f"{url} points at {relative}, which is not in the repository"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{relative} is not a PNG"


def test_license_file_in_the_repository_root():
    names = ["LICENSE", "LICENCE", "License.txt", "license.txt", "LICENSE.txt", "COPYING"]
    assert any((REPO / name).is_file() for name in names)


def trackedSizes() -> dict[str, int]:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    names = [n for n in listing.decode("utf-8").split("\0") if n]
    if "CMakeLists.txt" not in names:
        pytest.skip("this folder is not tracked by the git checkout it lies in")
    return {n: (REPO / n).stat().st_size for n in names if (REPO / n).is_file()}


def test_tracked_files_stay_well_under_the_index_size_limit():
    sizes = trackedSizes()
    total = sum(sizes.values()) / 1024**2
    largest = sorted(sizes, key=sizes.get, reverse=True)[:3]
    assert total <= TRACKED_LIMIT_MB, f"{total:.1f} MB tracked; largest: {largest}"


def test_experimental_weights_are_kept_out_of_git():
    """Only the shipped models (the manifest's files) are tracked .pt files; training output
    goes to runs/ (ignored), so an experiment adds nothing to the history."""
    manifest = json.loads((REPO / "CLADE" / "models" / "manifest.json").read_text())
    shipped = {f"CLADE/models/{m['file']}" for m in manifest["models"]}
    tracked = {n for n in trackedSizes() if n.endswith((".pt", ".pth", ".ckpt"))}
    assert tracked == shipped
    ignored = subprocess.run(
        ["git", "check-ignore", "runs/x/model_best.pt", "models/experiments/x.pt"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.split()
    assert ignored == ["runs/x/model_best.pt", "models/experiments/x.pt"]
    # Every training command of the recipe writes under runs/.
    recipe = (REPO / "models" / "train_shipped_models.sh").read_text()
    outs = re.findall(r"train\b.*?--out\s+(\S+)", recipe.replace("\\\n", " "))
    assert outs and all(o.startswith("runs/") for o in outs), outs
