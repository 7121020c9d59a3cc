"""Plain, Qt-free logic of the CLADE Super-Resolution Slicer module.

Everything here runs with the MRML scene alone (``slicer-core`` outside Slicer), so it is tested
with pytest; the thin ``CLADESuperResolution.py`` only wires these classes to Qt widgets.
The CLADE core is imported lazily by the functions that need it, never at import time, so the
module loads in Slicer before PyTorch is installed.
"""
