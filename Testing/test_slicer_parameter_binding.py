"""Re-entering the module keeps every setting on Slicer 5.6, 5.8 and 5.10.

The stand-in below reproduces, per version, the parts of Slicer's ``parameterNodeWrapper`` that
decide this (read in Slicer's source, ``Base/Python/slicer/parameterNodeWrapper/``):

* ``wrapper.py`` ``_connectGui``: returns no tag before 5.10 (v5.6.2 and v5.8.1 line 253 call
  ``_connectParametersToGui`` without ``return``; v5.10.0 returns it, commit b5a65a49a0), while
  ``_connectParametersToGui`` returns its tag on every version; ``_disconnectGui(tag)`` does
  nothing for an unknown tag (None); each connect adds a ModifiedEvent observer that writes
  every connector from the node (``_updateGUIFromParameterNode``), never removed;
* ``guiConnectors.py`` ``QComboBoxToEnumConnector.__init__``: clears and refills the combo box;
  v5.6.2 does not restore the selection (so the box shows its first entry), v5.8.0 on saves it
  first and writes it back (commit b16fface50);
* the GUI-to-node callback (``_makeGuiToParamCallback``) writes ``connector.read()`` into the
  node unless the node is updating the GUI.

The old module disconnected on ``exit()`` and connected a new wrapper on every ``enter()``:
on 5.6 each re-entry reset plane, device, tiling, ensemble, precision and preset to their first
value (and the preset reset rewrote the loss weights); on 5.8 the connectors piled up.
"""

from __future__ import annotations

import enum
import typing

import pytest
import vtk
from test_slicer_widget import module, thickNode  # noqa: F401 (the module fixture)

slicer = pytest.importorskip("slicer")

VERSIONS = {"5.6.2": (5, 6, 2), "5.8.1": (5, 8, 1), "5.10.0": (5, 10, 0)}


class EnumComboConnector:
    """QComboBoxToEnumConnector of the given Slicer version."""

    def __init__(self, widget, enumType, version):
        self.widget = widget
        self.callback = None
        self.labels = list(enumType)
        saved = self.read() if version >= (5, 8) else None
        widget.clear()
        for member in self.labels:
            widget.addItem(member.label())
        if version >= (5, 8):
            self.write(saved)

    def read(self):
        # Slicer's read() indexes its list with currentIndex, -1 (empty box) included.
        return self.labels[self.widget.currentIndex]

    def write(self, value):
        self.widget.currentIndex = self.labels.index(value)

    def changed(self):
        if self.callback:
            self.callback()

    def onChanged(self, callback):
        self.callback = callback
        if callback is None:
            self.widget.disconnect("currentIndexChanged(int)", self.changed)
        else:
            self.widget.connect("currentIndexChanged(int)", self.changed)


class ValueConnector:
    """Spin boxes and node selectors: a value kept on the widget (no signal needed here)."""

    def __init__(self, widget, attribute):
        self.widget, self.attribute = widget, attribute

    def read(self):
        return getattr(self.widget, self.attribute, None)

    def write(self, value):
        setattr(self.widget, self.attribute, value)

    def onChanged(self, callback):
        pass


def slicerWrapper(base, version):
    """``base`` (the test double that stores the fields) with ``version``'s GUI connection."""

    def fieldType(name):
        hint = base.__annotations__[name]
        return typing.get_args(hint)[0] if typing.get_origin(hint) is typing.Annotated else hint

    class Versioned(base):
        def __init__(self, node):
            super().__init__(node)
            object.__setattr__(self, "guis", {})
            object.__setattr__(self, "nextTag", 0)
            object.__setattr__(self, "updating", False)

        def connector(self, name, widget):
            kind = fieldType(name)
            if isinstance(kind, type) and issubclass(kind, enum.Enum):
                return EnumComboConnector(widget, kind, version)
            return ValueConnector(widget, "currentNode" if "Volume" in name else "value")

        def connectParametersToGui(self, mapping):
            connectors = {name: self.connector(name, w) for name, w in mapping.items()}
            tag = self.nextTag
            object.__setattr__(self, "nextTag", tag + 1)
            self.guis[tag] = connectors
            for name, connector in connectors.items():
                connector.write(getattr(self, name))
                connector.onChanged(self.guiToNode(name, connector))
            self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, self.nodeToGui)
            return tag

        def guiToNode(self, name, connector):
            def callback():
                if not self.updating:
                    setattr(self, name, connector.read())

            return callback

        def nodeToGui(self, caller=None, event=None):
            if self.updating:
                return
            object.__setattr__(self, "updating", True)
            try:
                for connectors in self.guis.values():
                    for name, connector in connectors.items():
                        connector.write(getattr(self, name))
            finally:
                object.__setattr__(self, "updating", False)

        def connectGui(self, ui):
            mapping = {}
            for widget in vars(ui).values():
                if widget.property("SlicerParameterName"):
                    mapping[widget.property("SlicerParameterName")] = widget
            tag = self.connectParametersToGui(mapping)
            return tag if version >= (5, 10) else None

        def disconnectGui(self, tag):
            if tag in self.guis:
                for connector in self.guis[tag].values():
                    connector.onChanged(None)
                del self.guis[tag]

    return Versioned


@pytest.fixture(params=sorted(VERSIONS))
def versioned(request, module, monkeypatch):  # noqa: F811
    """The module with the parameter node wrapper of one Slicer version."""
    base = module.CLADESuperResolutionParameterNode
    monkeypatch.setattr(
        module, "CLADESuperResolutionParameterNode", slicerWrapper(base, VERSIONS[request.param])
    )
    return module


def connectorSlots(widget):
    slots = widget._slots.get("currentIndexChanged", [])
    return [s for s in slots if isinstance(getattr(s, "__self__", None), EnumComboConnector)]


ENUM_WIDGETS = {
    "plane": "planeSelector",
    "device": "deviceSelector",
    "tiling": "tilingSelector",
    "ensemble": "ensembleSelector",
    "precision": "precisionSelector",
    "preset": "presetSelector",
}


def test_reentering_the_module_keeps_every_setting_and_connects_once(versioned):
    from test_slicer_widget import makeWidget

    thickNode()
    widget = makeWidget(versioned)
    ui = versioned.testUi
    p = widget._parameterNode
    chosen = {
        "plane": versioned.LRPlane.CORONAL,
        "device": versioned.Device.CPU,
        "tiling": versioned.Tiling.PATCHES,
        "ensemble": versioned.Ensemble.FLIPS,
        "precision": versioned.Precision.FLOAT32,
        "preset": versioned.Preset.CT,
    }
    for name, value in chosen.items():
        # As a user does: through the combo box.
        getattr(ui, ENUM_WIDGETS[name]).currentIndex = list(type(value)).index(value)
    assert {name: getattr(p, name) for name in chosen} == chosen
    p.lambdaGmap = 2.5  # custom weight after the CT preset
    for _ in range(3):
        widget.exit()
        widget.enter()
    fresh = versioned.CLADESuperResolutionLogic().getParameterNode()
    assert {name: getattr(fresh, name) for name in chosen} == chosen
    assert fresh.lambdaGmap == 2.5
    for name, value in chosen.items():
        combo = getattr(ui, ENUM_WIDGETS[name])
        assert combo.currentIndex == list(type(value)).index(value), name
        assert len(connectorSlots(combo)) == 1, name
    # Still bound both ways after the re-entries.
    ui.planeSelector.currentIndex = list(versioned.LRPlane).index(versioned.LRPlane.AXIAL)
    assert fresh.plane == versioned.LRPlane.AXIAL


def test_a_new_scene_is_connected_once_and_shows_its_own_settings(versioned):
    from test_slicer_widget import makeWidget

    widget = makeWidget(versioned)
    ui = versioned.testUi
    widget._parameterNode.plane = versioned.LRPlane.AXIAL
    slicer.mrmlScene.InvokeEvent(slicer.mrmlScene.StartCloseEvent)
    widget.onSceneStartClose(None, None)
    slicer.mrmlScene.Clear(0)
    widget.onSceneEndClose(None, None)
    widget.enter()
    p = widget._parameterNode
    assert p is not None and p.plane == versioned.LRPlane.AUTO
    assert ui.planeSelector.currentIndex == 0
    for name, widgetName in ENUM_WIDGETS.items():
        assert len(connectorSlots(getattr(ui, widgetName))) == 1, name


def test_a_saved_scene_reopens_with_its_settings(versioned, tmp_path):
    """Before, on 5.6: reopening a scene saved with a CT preset showed MRI (the first entry)
    and rewrote the custom loss weight with MRI's."""
    from test_slicer_widget import makeWidget

    widget = makeWidget(versioned)
    ui = versioned.testUi
    p = widget._parameterNode
    ui.presetSelector.currentIndex = list(versioned.Preset).index(versioned.Preset.CT)
    ui.planeSelector.currentIndex = list(versioned.LRPlane).index(versioned.LRPlane.AXIAL)
    p.lambdaGmap = 2.5
    scenePath = tmp_path / "scene.mrml"
    slicer.mrmlScene.SetURL(str(scenePath))
    assert slicer.mrmlScene.Commit()
    widget.onSceneStartClose(None, None)
    slicer.mrmlScene.Clear(0)
    widget.onSceneEndClose(None, None)
    slicer.mrmlScene.SetURL(str(scenePath))
    assert slicer.mrmlScene.Connect()
    widget.enter()
    p = widget._parameterNode
    assert (p.preset, p.plane, p.lambdaGmap) == (
        versioned.Preset.CT,
        versioned.LRPlane.AXIAL,
        2.5,
    )
    assert ui.presetSelector.currentIndex == list(versioned.Preset).index(versioned.Preset.CT)
    assert len(connectorSlots(ui.presetSelector)) == 1
