"""Packaging of the Slicer extension: CMake file lists, the .ui, the catalog entry, the icon."""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from conftest import run_clade, run_python

REPO = Path(__file__).resolve().parents[1]
MODULE_DIR = REPO / "CLADESuperResolution"
MODULE_FILE = MODULE_DIR / "CLADESuperResolution.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "CLADESuperResolution.ui"


def cmakeList(cmakeFile: Path, variable: str) -> list[str]:
    text = cmakeFile.read_text()
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found in {cmakeFile}"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def pythonFiles(folder: Path, relativeTo: Path) -> set[str]:
    return {
        p.relative_to(relativeTo).as_posix()
        for p in folder.rglob("*.py")
        if "__pycache__" not in p.parts
    }


def test_every_core_python_file_is_installed():
    listed = cmakeList(REPO / "CMakeLists.txt", "CLADE_CORE_PYTHON_SCRIPTS")
    present = pythonFiles(REPO / "CLADE", REPO)
    missing = sorted(present - set(listed))
    stale = sorted(set(listed) - present)
    assert not missing, "Add to CLADE_CORE_PYTHON_SCRIPTS in CMakeLists.txt:\n  " + "\n  ".join(
        missing
    )
    assert not stale, "Remove from CLADE_CORE_PYTHON_SCRIPTS in CMakeLists.txt:\n  " + "\n  ".join(
        stale
    )
    assert len(listed) == len(set(listed))


def test_core_resources_exist_and_shipped_models_are_taken():
    for relative in cmakeList(REPO / "CMakeLists.txt", "CLADE_CORE_RESOURCES"):
        if relative.startswith("${"):
            continue
        assert (REPO / relative).is_file(), relative
    text = (REPO / "CMakeLists.txt").read_text()
    assert '"${CMAKE_CURRENT_SOURCE_DIR}/CLADE/models/*.pt"' in text
    manifest = json.loads((REPO / "CLADE" / "models" / "manifest.json").read_text())
    for entry in manifest["models"]:
        # The glob takes *.pt directly in CLADE/models: every shipped file must be one.
        assert "/" not in entry["file"] and entry["file"].endswith(".pt"), entry
    # Every file in sample_data is installed (the sample and its licence).
    listed = set(cmakeList(REPO / "CMakeLists.txt", "CLADE_CORE_RESOURCES"))
    for path in (REPO / "CLADE" / "sample_data").iterdir():
        assert f"CLADE/sample_data/{path.name}" in listed, path.name


def test_every_module_python_file_is_listed_and_resources_exist():
    listed = [
        item.replace("${MODULE_NAME}", "CLADESuperResolution")
        for item in cmakeList(MODULE_DIR / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS")
    ]
    present = pythonFiles(MODULE_DIR, MODULE_DIR)
    assert sorted(present - set(listed)) == [], "add these to MODULE_PYTHON_SCRIPTS"
    assert sorted(set(listed) - present) == [], "remove these from MODULE_PYTHON_SCRIPTS"
    for item in cmakeList(MODULE_DIR / "CMakeLists.txt", "MODULE_PYTHON_RESOURCES"):
        assert (MODULE_DIR / item.replace("${MODULE_NAME}", "CLADESuperResolution")).is_file()


def test_top_level_cmake_declares_extension_and_modules():
    text = (REPO / "CMakeLists.txt").read_text()
    for key in (
        "EXTENSION_HOMEPAGE",
        "EXTENSION_CATEGORY",
        "EXTENSION_CONTRIBUTORS",
        "EXTENSION_DESCRIPTION",
        "EXTENSION_ICONURL",
        "EXTENSION_SCREENSHOTURLS",
    ):
        assert re.search(rf"set\({key} \"[^\"]+\"\)", text), key
    assert "set(EXTENSION_DEPENDS PyTorch)" in text
    for sub in ("CLADESuperResolution", "CLADESuperResolutionCLI"):
        assert f"add_subdirectory({sub})" in text
        assert (REPO / sub / "CMakeLists.txt").is_file()
    cli = (REPO / "CLADESuperResolutionCLI" / "CMakeLists.txt").read_text()
    assert (
        "SlicerMacroBuildScriptedCLI" in cli and "set(MODULE_NAME CLADESuperResolutionCLI)" in cli
    )


def test_catalog_entry_and_s4ext():
    entry = json.loads((REPO / "Resources" / "CLADE.json").read_text())
    allowed = {
        "$schema",
        "category",
        "scm_url",
        "scm_revision",
        "scm_type",
        "build_dependencies",
        "dicom_support_rule",
        "build_subdirectory",
        "enabled",
        "tier",
    }
    assert set(entry) <= allowed and {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["build_dependencies"] == ["PyTorch"] and 1 <= entry["tier"] <= 5
    s4ext = {}
    for line in (REPO / "CLADE.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            s4ext[key] = value
    assert s4ext["depends"] == "PyTorch" and s4ext["category"] == entry["category"]
    assert entry["scm_url"].rsplit("/", 1)[1].startswith("Slicer")
    assert s4ext["iconurl"].endswith("Resources/Icons/CLADE.png")


def test_extension_icon_is_a_128_pixel_png():
    from PIL import Image

    with Image.open(REPO / "Resources" / "Icons" / "CLADE.png") as icon:
        assert icon.format == "PNG" and icon.size == (128, 128)


# -- the .ui and the thin module ---------------------------------------------------------------


def uiWidgets():
    root = ET.parse(UI_FILE).getroot()
    widgets = {w.get("name"): w for w in root.iter("widget")}
    bindings = {}
    for name, widget in widgets.items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bindings[name] = prop.findtext("string")
    return root, widgets, bindings


def parameterNodeFields():
    tree = ast.parse(MODULE_FILE.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "CLADESuperResolutionParameterNode":
            assert any(
                getattr(d, "id", None) == "parameterNodeWrapper" for d in node.decorator_list
            )
            return {
                s.target.id: ast.unparse(s.annotation)
                for s in node.body
                if isinstance(s, ast.AnnAssign)
            }
    raise AssertionError("no parameter node class")


def test_ui_parses_and_every_widget_the_code_uses_exists():
    root, widgets, _ = uiWidgets()
    assert root.findtext("class") == "CLADESuperResolution"
    tabs = [w for w in widgets.values() if w.get("class") == "QTabWidget"]
    titles = [
        a.findtext("string")
        for t in tabs
        for page in t.findall("widget")
        for a in page.findall("attribute")
    ]
    assert titles == ["Super-resolve", "Train"]
    # The module file and the tabs in its Lib (SuperResolveTab, TrainTab, ...).
    code = [MODULE_FILE, *(MODULE_DIR / "CLADESuperResolutionLib").glob("*.py")]
    used = {name for f in code for name in re.findall(r"self\.ui\.(\w+)", f.read_text())}
    assert used, "the module looks up no widget?"
    assert sorted(used - set(widgets)) == []


def manualFields() -> dict:
    tree = ast.parse((MODULE_DIR / "CLADESuperResolutionLib" / "ParameterBinding.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "MANUAL_FIELDS":
            return ast.literal_eval(node.value)
    raise AssertionError("no MANUAL_FIELDS")


def test_parameter_node_fields_are_bound_to_matching_widgets():
    _, widgets, bindings = uiWidgets()
    fields = parameterNodeFields()
    manual = manualFields()
    # Every field is bound: by connectGui (SlicerParameterName) or by the module (MANUAL_FIELDS).
    assert sorted(set(bindings.values()) - set(fields)) == []
    assert sorted(set(fields) - set(bindings.values()) - set(manual)) == []
    assert not set(manual) & set(bindings.values())
    for field, widgetName in manual.items():
        assert field in fields and widgetName in widgets, field
        if widgets[widgetName].get("class") == "ctkPathLineEdit":
            # A Path field would show "." when empty (Path("") == Path(".")).
            assert fields[field] == "str", field
    assert "Path" not in set(fields.values())
    compatible = {
        "vtkMRMLScalarVolumeNode": {"qMRMLNodeComboBox"},
        "int": {"QSpinBox"},
        "float": {"QDoubleSpinBox"},
        "bool": {"QCheckBox"},
    }
    for widgetName, field in bindings.items():
        annotation = fields[field]
        base = re.sub(r"Annotated\[(\w+),.*", r"\1", annotation)
        widgetClass = widgets[widgetName].get("class")
        allowed = compatible.get(base, {"QComboBox"})  # enums bind to combo boxes
        assert widgetClass in allowed, (widgetName, field, annotation)
    # MRML widgets get the scene through the top-level widget's signal.
    root = ET.parse(UI_FILE).getroot()
    receivers = {
        c.findtext("receiver")
        for c in root.iter("connection")
        if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"
    }
    mrmlWidgets = {
        n
        for n, w in widgets.items()
        if w.get("class", "").startswith("qMRML") and w.get("class") != "qMRMLWidget"
    }
    assert mrmlWidgets == receivers


def test_module_files_compile_and_import_no_torch_at_load():
    for path in list(MODULE_DIR.rglob("*.py")) + [
        REPO / "CLADESuperResolutionCLI" / "CLADESuperResolutionCLI.py"
    ]:
        compile(path.read_text(), str(path), "exec")
    modules = sorted(
        p.stem
        for p in (MODULE_DIR / "CLADESuperResolutionLib").glob("*.py")
        if p.stem != "__init__"
    )
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import importlib\n"
        f"for m in {modules!r}: importlib.import_module('CLADESuperResolutionLib.' + m)\n"
        "print(sorted(n for n in ('torch', 'CLADE', 'qt') if n in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(MODULE_DIR)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
    # The thin module imports nothing heavy at top level either.
    tree = ast.parse(MODULE_FILE.read_text())
    topLevel = {
        alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in (node.names if isinstance(node, ast.Import) else [node])
        if isinstance(node, ast.Import)
    } | {
        node.module.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not topLevel & {"torch", "CLADE", "numpy", "SimpleITK"}


def test_scripted_module_finds_the_core_in_the_installed_layout(tmp_path, tiny_model_path):
    """Stage qt-scripted-modules from the CMake lists; the Lib finds that core, and its worker
    script runs from there."""
    scripted = tmp_path / "lib" / "Slicer-5.8" / "qt-scripted-modules"
    for item in cmakeList(MODULE_DIR / "CMakeLists.txt", "MODULE_PYTHON_SCRIPTS"):
        relative = item.replace("${MODULE_NAME}", "CLADESuperResolution")
        (scripted / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(MODULE_DIR / relative, scripted / relative)
    for relative in cmakeList(REPO / "CMakeLists.txt", "CLADE_CORE_PYTHON_SCRIPTS") + [
        "CLADE/models/manifest.json"
    ]:
        (scripted / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, scripted / relative)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1])\n"
        "from CLADESuperResolutionLib import CoreLocator\n"
        "print(CoreLocator.coreDir())\n"
        "env = CoreLocator.workerEnvironment({})\n"
        "print(env['PYTHONPATH'].split(__import__('os').pathsep)[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLADE_CORE_PATH")}
    result = run_python("-c", code, scripted, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    coreDir, workerPath = result.stdout.split()
    assert Path(coreDir) == (scripted / "CLADE").resolve()
    assert Path(workerPath) == scripted.resolve()
    # The job's worker command, run with the staged core (no source checkout on the path).
    import numpy as np
    import SimpleITK as sitk

    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.normal(100, 20, size=(8, 36, 40)).astype(np.float32))
    image.SetSpacing((1.0, 1.0, 4.0))
    sitk.WriteImage(image, str(tmp_path / "in.nrrd"))
    files = (tmp_path / "in.nrrd", tmp_path / "out.nrrd")
    options = ("--model", tiny_model_path, "--device", "cpu", "--tiling", "slices")
    command = ["super-resolve", *files, *options, "--progress", "json"]
    stagedCore = {**env, "PYTHONPATH": str(scripted)}
    run = run_clade(*command, timeout=120, env=stagedCore, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines()]
    assert events[-1]["event"] == "done"
    assert sitk.ReadImage(str(tmp_path / "out.nrrd")).GetSize() == (40, 36, 32)


def test_dependencies_installed_in_slicer_are_the_cores_with_its_bounds():
    """What Dependencies.py pip-installs inside Slicer is pyproject's list, same >= bounds,
    less torch (PyTorch extension) and what Slicer ships (numpy, SimpleITK)."""
    import tomllib

    sys.path.insert(0, str(MODULE_DIR))
    from CLADESuperResolutionLib import Dependencies

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    byName = {
        re.split(r"[<>=!~ ]", req, maxsplit=1)[0].lower(): req.replace(" ", "") for req in declared
    }
    assert byName.pop("torch") == "torch" + Dependencies.TORCH_REQUIREMENT
    for shipped in (*Dependencies.NEVER_INSTALL, *Dependencies.CLI_ONLY):
        byName.pop(shipped.lower())
    slicerRequirements = [
        *Dependencies.PIP_REQUIREMENTS.values(),
        *(req for req, _ in Dependencies.OPTIONAL_REQUIREMENTS.values()),
    ]
    assert {req.split(">=")[0].lower(): req for req in slicerRequirements} == byName
    assert all(">=" in req and "==" not in req for req in Dependencies.PIP_REQUIREMENTS.values())


@pytest.mark.parametrize(
    "path",
    [
        "CLADESuperResolution",
        "CLADESuperResolutionCLI",
        "Testing/test_slicer_logic.py",
        "Testing/test_slicer_widget.py",
        "Testing/test_slicer_urls.py",
    ],
)
def test_ruff_clean(path):
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    result = subprocess.run(
        [ruff, "check", "--no-cache", path],
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
    )
    assert result.returncode == 0, result.stdout
