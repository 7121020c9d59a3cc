"""What the module's two tabs share: the widget that hosts them, their job and their settings.

Each tab (:mod:`SuperResolveTab`, :mod:`TrainTab`) is reached through the module widget
(``host``: its ``ui``, ``parameterNode``, ``timer`` and helpers) and runs one job at a time,
made by ``makeJob`` (tests pass stand-in workers through it). No Qt import here.
"""

from __future__ import annotations


class Tab:
    """A tab's seams: ``host`` (the module widget), ``makeJob`` (builds the tab's job) and
    ``settings`` (``settings()`` -> a QSettings-like object: the trained models' list).

    Example:
        >>> from types import SimpleNamespace
        >>> tab = Tab(SimpleNamespace(ui="ui", parameterNode="node"), None, dict)
        >>> tab.ui, tab.parameterNode, tab.job
        ('ui', 'node', None)
    """

    def __init__(self, host, makeJob, settings):
        self.host = host
        self.ui = host.ui
        self.makeJob = makeJob
        self.settings = settings
        self.job = None  # the running job, None while idle

    @property
    def parameterNode(self):
        return self.host.parameterNode
