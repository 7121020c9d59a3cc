"""The parameter node bound to the .ui once, the same way on Slicer 5.6, 5.8 and 5.10.

Slicer's template connects the GUI on every ``enter()`` and disconnects it on ``exit()`` with
the tag ``connectGui`` returns, but before Slicer 5.10 (commit b5a65a49a0, "Fix not returning
GUI tag after connection") ``connectGui`` returns None, so the disconnect does nothing and every
re-entry adds one more set of connectors and one more ModifiedEvent observer. On 5.6.2 the
combo-box enum connector also refills its box without restoring the selection
(``QComboBoxToEnumConnector.__init__``; restored from 5.8, commit b16fface50), and the previous,
still-connected connector writes that first entry into the node: plane, device, tiling,
ensemble, precision and preset jumped back to their first value on each re-entry.

So this binding connects a node once, through ``connectParametersToGui`` (which returns its tag
on every version), stays connected while the module is hidden, and disconnects with that tag
only when the node changes (scene close). It also binds the fields ``connectGui`` cannot
(:data:`MANUAL_FIELDS`).
"""

from __future__ import annotations

import vtk

#: The widget property naming the field a widget shows (Slicer's ``SlicerParameterName``).
SLICER_PARAMETER_NAME = "SlicerParameterName"

#: Parameter-node fields kept in sync with their widget here, not by Slicer's connectors:
#: Slicer binds a ctkPathLineEdit only to a ``pathlib.Path`` field, which cannot be empty
#: (``Path("")`` is ``"."``, shown as "." in the field), so paths are ``str``; the model list is
#: filled at run time (shipped + trained models), so its choice is a ``str`` shown by a callback.
MANUAL_FIELDS = {
    "model": "modelSelector",
    "modelFile": "modelFileSelector",
    "trainingFolder": "trainingFolderSelector",
    "trainingOutputFolder": "trainingOutputFolderSelector",
}


def boundWidgets(ui) -> dict:
    """The .ui's widgets by the field they show, found as Slicer's ``connectGui`` finds them
    (every attribute of ``ui`` with a ``SlicerParameterName`` property)."""
    mapping = {}
    for widget in vars(ui).values():
        name = widget.property(SLICER_PARAMETER_NAME) if hasattr(widget, "property") else None
        if name:
            mapping[str(name)] = widget
    return mapping


class ParameterBinding:
    """Keeps one parameter node (a ``parameterNodeWrapper``) and the .ui in step.

    :param ui: the module's widgets (``slicer.util.childWidgetVariables``)
    :param showModel: ``showModel(value)`` shows the node's model choice in the model list
    :param onModified: called after every change of the node (the buttons' state)
    """

    def __init__(self, ui, showModel, onModified):
        self.ui = ui
        self.showModel = showModel
        self.onModified = onModified
        self.node = None
        self._guiTag = None
        self._observer = None
        for field, widgetName in MANUAL_FIELDS.items():
            if field != "model":
                getattr(ui, widgetName).connect(
                    "currentPathChanged(QString)",
                    lambda path, field=field: self.onPathChanged(field, path),
                )

    def isBoundTo(self, node) -> bool:
        """The same MRML parameter node is already connected (another wrapper of it counts)."""
        if node is None or self.node is None:
            return node is None and self.node is None
        return node.parameterNode is self.node.parameterNode

    def bind(self, node) -> None:
        """Connect ``node`` (None: none) unless it is the one already connected."""
        if self.isBoundTo(node):
            return
        self.unbind()
        self.node = node
        if node is not None:
            self._guiTag = node.connectParametersToGui(boundWidgets(self.ui))
            self._observer = node.parameterNode.AddObserver(
                vtk.vtkCommand.ModifiedEvent, self.onNodeModified
            )
        self.onNodeModified()

    def unbind(self) -> None:
        if self.node is not None:
            self.node.disconnectGui(self._guiTag)
            self.node.parameterNode.RemoveObserver(self._observer)
        self.node = self._guiTag = self._observer = None

    def onNodeModified(self, caller=None, event=None):
        """The manual fields follow the node, then the buttons."""
        if self.node is not None:
            for field, widgetName in MANUAL_FIELDS.items():
                value = getattr(self.node, field)
                if field == "model":
                    self.showModel(value)
                elif getattr(self.ui, widgetName).currentPath != value:
                    getattr(self.ui, widgetName).currentPath = value
        self.onModified()

    def onPathChanged(self, field, path):
        if self.node is not None and getattr(self.node, field) != path:
            setattr(self.node, field, path)
