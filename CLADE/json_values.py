"""Values made ready for JSON, in one place: JSON has no NaN or infinity.

``json.dumps`` writes ``NaN`` and ``Infinity`` by default, which strict JSON readers (browsers,
``jq``, many languages) refuse; CLADE writes ``null`` instead, and turns the other values its
records hold (paths, tuples, numpy and torch scalars) into plain JSON ones. Used by the training
events, and meant for every JSON file CLADE writes.

Example:
    >>> import json, math
    >>> from pathlib import Path
    >>> json.dumps(json_safe({"psnr": math.inf, "ratios": (2.0, 8.0), "out": Path("a/b")}))
    '{"psnr": null, "ratios": [2.0, 8.0], "out": "a/b"}'
"""

from __future__ import annotations

import math
from pathlib import PurePath


def json_safe(value):
    """A JSON-ready copy of ``value``: non-finite floats become ``None`` (``null``).

    Dicts get string keys, tuples become lists, paths strings, and numpy or torch scalars plain
    numbers; other values are returned as they are.
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return json_safe(value.item())
    return value
