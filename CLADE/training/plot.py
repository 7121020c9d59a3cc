"""The training plot: losses and the validation metric per epoch, as a PNG (matplotlib Agg).

The plot is optional: matplotlib is not part of Slicer's Python, so where it does not import
:func:`plot_history` writes nothing and returns ``None``, and training goes on (the events hold
the same numbers).
"""

from __future__ import annotations

import os
from pathlib import Path

from .loss_terms import LOSS_NAMES
from .write_errors import guarded_write


def plot_history(history: list[dict], path: str | os.PathLike) -> Path | None:
    """Draw ``history`` (one dict per epoch: ``epoch``, ``losses``, ``metrics``) to ``path``.

    Every loss of :data:`LOSS_NAMES` that is switched on (not zero throughout) is a curve.
    Returns ``path``, or ``None`` without matplotlib.

    Example:
        >>> import tempfile, os
        >>> h = [{"epoch": 1, "losses": {"cyc": 0.4, "gmap": 1.0}, "metrics": {"piqe": 40.0}},
        ...      {"epoch": 2, "losses": {"cyc": 0.3, "gmap": 0.8}, "metrics": {"piqe": 35.0}}]
        >>> plot_history(h, os.path.join(tempfile.mkdtemp(), "training.png")).stat().st_size > 0
        True
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return None

    epochs = [entry["epoch"] for entry in history]
    metric_names = sorted({k for e in history for k in (e.get("metrics") or {})})
    columns = 1 + len(metric_names)
    figure = Figure(figsize=(5 * columns, 4), layout="constrained")
    axes = figure.subplots(1, columns, squeeze=False)[0]
    for name in LOSS_NAMES:
        values = [entry["losses"].get(name) for entry in history]
        if any(v is not None and v != 0 for v in values):
            axes[0].plot(epochs, values, marker="o", label=name)
    axes[0].set(xlabel="epoch", ylabel="loss (epoch mean)", title="Training losses")
    if _all_positive(history):
        axes[0].set_yscale("log")
    axes[0].legend(fontsize="small")
    for ax, name in zip(axes[1:], metric_names):
        values = [(entry.get("metrics") or {}).get(name) for entry in history]
        ax.plot(epochs, values, marker="o", color="tab:red")
        better = "lower" if name == "piqe" else "higher"
        ax.set(xlabel="epoch", ylabel=name, title=f"Validation {name} ({better} is better)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if epochs:
            ax.set_xticks(epochs)
    return guarded_write(path, lambda temporary: figure.savefig(temporary, format="png", dpi=100))


def _all_positive(history: list[dict]) -> bool:
    values = [v for e in history for v in e["losses"].values() if v is not None]
    return bool(values) and min(values) > 0
