"""The Slicer CLI module: descriptor, script run on real files, and the installed layout."""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import run_python

REPO = Path(__file__).resolve().parents[1]
CLI_DIR = REPO / "CLADESuperResolutionCLI"
SCRIPT = CLI_DIR / "CLADESuperResolutionCLI.py"
XML = CLI_DIR / "CLADESuperResolutionCLI.xml"
#: Whole-slice inference on the CPU (the tiny model's quickest run).
SLICES_ON_CPU = ("--tiling", "slices", "--device", "cpu")


def loadScriptModule():
    spec = importlib.util.spec_from_file_location("CLADESuperResolutionCLI", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def xmlParameters():
    root = ET.parse(XML).getroot()
    assert root.tag == "executable"
    parameters = {}
    for group in root.findall("parameters"):
        for element in group:
            if element.find("name") is None:
                continue
            parameters[element.find("name").text] = element
    return root, parameters


def test_descriptor_declares_what_the_script_reads():
    root, parameters = xmlParameters()
    assert root.findtext("title") and root.findtext("category")
    parser = loadScriptModule().buildParser()
    actions = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(parameters) == set(actions)
    # Images are positional, in index order; options use the declared long flags and defaults.
    positional = sorted(
        (int(e.findtext("index")), name)
        for name, e in parameters.items()
        if e.find("index") is not None
    )
    assert [name for _, name in positional] == [
        a.dest for a in parser._actions if not a.option_strings and a.dest != "help"
    ]
    assert parameters["inputVolume"].findtext("channel") == "input"
    assert parameters["outputVolume"].findtext("channel") == "output"
    for name, element in parameters.items():
        flag = element.findtext("longflag")
        if flag is None:
            continue
        action = actions[name]
        assert flag in action.option_strings
        default = element.findtext("default")
        if element.tag == "image":  # an optional output volume: no default, absent when unset
            assert default is None and action.default is None, name
            continue
        assert str(action.default) == default, name
        if element.tag == "string-enumeration":
            assert [e.text for e in element.findall("element")] == list(action.choices)
        if element.tag == "integer":
            assert action.type is int


def makeThickFile(path, size=(40, 36, 8)):
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(3)
    array = (gaussian_filter(rng.normal(size=size[::-1]), 1.5) * 400 + 100).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.0, 4.0))
    image.SetOrigin((3.0, -2.0, 10.0))
    image.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, 1))
    sitk.WriteImage(image, str(path))
    return image


def superResolveFile(folder, model, *options, script=SCRIPT, env=None, cwd=None):
    """The CLI script on folder/in.nrrd -> folder/out.nrrd: ``--model MODEL OPTIONS... IN OUT``."""
    files = (folder / "in.nrrd", folder / "out.nrrd")
    return run_python(script, "--model", model, *options, *files, timeout=180, env=env, cwd=cwd)


def checkRun(result, inputImage, outputPath):
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("<filter-start>") and lines[0].endswith("</filter-start>")
    progress = [
        float(m.group(1))
        for m in (
            re.fullmatch(r"<filter-progress>([0-9.]+)</filter-progress>", line) for line in lines
        )
        if m
    ]
    assert len(progress) >= 3 and progress == sorted(progress) and progress[-1] == 1.0
    assert any(line.startswith("<filter-end>") for line in lines)
    output = sitk.ReadImage(str(outputPath))
    assert output.GetSize() == (40, 36, 32)
    assert output.GetSpacing() == pytest.approx((1.0, 1.0, 1.0))
    assert output.GetDirection() == inputImage.GetDirection()
    assert output.GetOrigin() == pytest.approx((3.0, -2.0, 10.0 - 1.5))


@pytest.mark.parametrize(
    "options",
    [
        ["--tiling", "patches", "--stride", "8"],
        ["--tiling", "slices", "--ensemble", "flips", "--precision", "float32"],
    ],
)
def test_script_super_resolves_a_file_with_slicer_progress_lines(
    tmp_path, tiny_model_path, options
):
    inputImage = makeThickFile(tmp_path / "in.nrrd")
    result = superResolveFile(
        tmp_path, tiny_model_path, *options, "--device", "cpu", "--plane", "auto"
    )
    checkRun(result, inputImage, tmp_path / "out.nrrd")


def test_script_gives_the_same_voxels_as_the_pipeline(tmp_path, tiny_model_path):
    """The CLI module is a front end of CLADE.pipeline: same request, same output."""
    from CLADE.pipeline import SuperResolutionRequest, super_resolve_file

    makeThickFile(tmp_path / "in.nrrd")
    result = superResolveFile(tmp_path, tiny_model_path, *SLICES_ON_CPU)
    assert result.returncode == 0, result.stderr
    super_resolve_file(
        tmp_path / "in.nrrd",
        tmp_path / "direct.nrrd",
        SuperResolutionRequest(model=str(tiny_model_path), tiling="slices", device="cpu"),
    )
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out.nrrd"))),
        sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "direct.nrrd"))),
    )


def test_script_adapts_first_when_asked(tmp_path, tiny_model_path):
    inputImage = makeThickFile(tmp_path / "in.nrrd", size=(40, 36, 8))
    result = superResolveFile(tmp_path, tiny_model_path, *SLICES_ON_CPU, "--adapt", "10")
    checkRun(result, inputImage, tmp_path / "out.nrrd")
    assert "CLADE: adapted to this volume: 10 steps" in result.stdout


def test_script_without_torch_says_so_in_one_sentence(tmp_path):
    """Before: the friendly check only covered ``import CLADE`` (which loads torch lazily), so a
    missing torch ended in a ModuleNotFoundError traceback."""
    makeThickFile(tmp_path / "in.nrrd")
    # sys.modules["torch"] = None makes `import torch` fail as if it were not installed.
    code = (
        "import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    files = (tmp_path / "in.nrrd", tmp_path / "out.nrrd")
    result = run_python("-c", code, SCRIPT, "--model", "mri", *files, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip() == loadScriptModule().TORCH_MISSING
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.nrrd").exists()


def test_script_reports_a_user_error_without_traceback(tmp_path):
    makeThickFile(tmp_path / "in.nrrd")
    result = superResolveFile(tmp_path, tmp_path / "missing.pt")
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out.nrrd").exists()


def cmakeList(cmakeFile: Path, variable: str) -> list[str]:
    text = cmakeFile.read_text()
    match = re.search(rf"set\({variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} not found in {cmakeFile}"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def stageInstalledLayout(root: Path, config: str = "") -> tuple[Path, Path]:
    """Copy what the CMake files install into root/lib/Slicer-5.8/{cli-modules,qt-scripted-modules}.

    ``config`` ("Release"...): a multi-configuration build tree, where
    SlicerMacroBuildScriptedCLI puts CLI modules in cli-modules/<config>.
    """
    lib = root / "lib" / "Slicer-5.8"
    cliModules = lib / "cli-modules" / config if config else lib / "cli-modules"
    scripted = lib / "qt-scripted-modules"
    cliModules.mkdir(parents=True)
    for name in ("CLADESuperResolutionCLI.py", "CLADESuperResolutionCLI.xml"):
        shutil.copy2(CLI_DIR / name, cliModules / name)
    for relative in (
        cmakeList(REPO / "CMakeLists.txt", "CLADE_CORE_PYTHON_SCRIPTS")
        + cmakeList(REPO / "CMakeLists.txt", "CLADE_CORE_RESOURCES")[:1]
    ):
        target = scripted / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, target)
    return cliModules, scripted


@pytest.mark.parametrize("config", ["", "Release"])
def test_core_import_works_from_the_installed_layout(tmp_path, tiny_model_path, config):
    """Installed extension / single-config build tree, and a Windows (multi-config) build tree
    where the core was not found before (only ../qt-scripted-modules was tried)."""
    cliModules, scripted = stageInstalledLayout(tmp_path / "Extension", config)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLADE_CORE_PATH")}
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import CLADESuperResolutionCLI as m; "
        "print(m.locateCore()); import CLADE, CLADE.inference; print(CLADE.__file__)"
    )
    probe = run_python("-c", code, cliModules, env=env, cwd=tmp_path, timeout=120)
    assert probe.returncode == 0, probe.stderr
    located, imported = probe.stdout.split()
    assert Path(located) == scripted.resolve()
    assert Path(imported).resolve().is_relative_to(scripted.resolve())
    inputImage = makeThickFile(tmp_path / "in.nrrd")
    result = superResolveFile(
        tmp_path,
        tiny_model_path,
        *SLICES_ON_CPU,
        script=cliModules / "CLADESuperResolutionCLI.py",
        env=env,
        cwd=tmp_path,
    )
    checkRun(result, inputImage, tmp_path / "out.nrrd")
