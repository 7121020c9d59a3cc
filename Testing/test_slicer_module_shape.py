"""The module file is the module, its parameter node and the wiring; each tab is a Lib file.

As in SlicerNNUnet (``SlicerNNUNet.py`` wires, ``SlicerNNUNetLib/Widget.py`` holds the widget).
"""

from __future__ import annotations

import ast
from pathlib import Path

MODULE_DIR = Path(__file__).resolve().parents[1] / "CLADESuperResolution"
LIB = MODULE_DIR / "CLADESuperResolutionLib"


def classes(path: Path) -> set[str]:
    return {n.name for n in ast.parse(path.read_text()).body if isinstance(n, ast.ClassDef)}


def test_module_file_is_at_most_300_lines_and_holds_only_the_slicer_classes():
    module = MODULE_DIR / "CLADESuperResolution.py"
    assert len(module.read_text().splitlines()) <= 300
    assert classes(module) == {
        "CLADESuperResolution",
        "CLADESuperResolutionParameterNode",
        "CLADESuperResolutionWidget",
        "CLADESuperResolutionLogic",
        "CLADESuperResolutionTest",
    }


def test_each_tab_has_its_own_lib_file_listed_in_cmake():
    assert "SuperResolveTab" in classes(LIB / "SuperResolveTab.py")
    assert "TrainTab" in classes(LIB / "TrainTab.py")
    cmake = (MODULE_DIR / "CMakeLists.txt").read_text()
    for path in sorted(LIB.glob("*.py")):
        assert f"${{MODULE_NAME}}Lib/{path.name}" in cmake, path.name
