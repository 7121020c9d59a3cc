"""Training progress as JSON lines: one object per line, appended and flushed as it happens.

``clade train --events FILE`` (default ``OUT/events.jsonl``) writes these; the Slicer Train tab
tails the file with :class:`EventReader`. Only rank 0 of a distributed run writes. A resumed run
appends to the same file (its ``start`` event has ``resumed`` set). Readers must ignore unknown
keys and event types (new ones may be added).

Every event has ``event`` (its type), ``time`` (Unix seconds) and ``elapsed_s`` (seconds since
this process started). Types and their other keys:

``sampling``
    One training input was read: ``path``, ``index`` (1-based), ``total``, and either
    ``x_patches`` and ``y_patches`` or ``skipped`` (the reason it was left out).
``start``
    Training begins: ``out`` (folder), ``config`` (every setting, see
    :class:`CLADE.training.presets.TrainingConfig`), ``volumes`` (paths used), ``skipped``
    (list of ``[path, reason]``), ``patches`` (``{"x": n, "y": n}``), ``bank_mib``,
    ``steps_per_epoch``, ``epochs``, ``batch_size``, ``world_size``, ``device``, ``resumed``
    (``null`` or ``{"epoch": e, "step": s}``: 0-based epoch and step it resumed at).
``step``
    Every ``log_every`` steps and at the end of each epoch: ``epoch`` (1-based), ``step``
    (1-based within the epoch), ``steps_per_epoch``, ``global_step``, ``total_steps``,
    ``progress`` (0-1 over the whole run), ``losses`` (dict of floats, averaged over the steps
    since the previous ``step`` event, keyed by :data:`CLADE.training.loss_terms.LOSS_NAMES`:
    ``g_total``, ``adv``, ``cyc``, ``ident``, ``gmap``, ``d_x``, ``d_y``, ``paired``, ``dc``),
    ``patches_per_s`` (training pairs per second, all ranks), ``eta_s`` (seconds left for the
    training steps, validation excluded).
``checkpoint``
    A checkpoint was written: ``path``, ``epoch`` (completed epochs), ``step`` (within the next
    epoch), ``reason`` (``"epoch"``, ``"time"``, ``"validated"`` or ``"stopped"``).
``validation``
    The validation of an epoch: ``epoch`` (1-based), ``metrics`` (e.g. ``{"piqe": 31.2,
    "psnr": 28.1, "ssim": 0.83}``), ``seconds``.
``epoch``
    An epoch finished (its checkpoint is written): ``epoch`` (1-based), ``losses`` (means over
    the epoch, same keys as ``step``), ``metrics`` (validation or ``null``), ``best_epoch``,
    ``best_metric`` (name), ``best_value``, ``seconds``, ``plot`` (path of the PNG, ``null``
    where matplotlib is not installed).
``done``
    Training finished: ``final_model``, ``best_model`` (``null`` without validation),
    ``best_epoch``, ``epochs``, ``seconds``.
``error``
    Training stopped on a problem: ``message`` (one sentence); ``stopped`` for a cancel.

Example:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "events.jsonl")
    >>> with EventWriter(path) as log:
    ...     _ = log.emit("epoch", epoch=1, losses={"cyc": 0.5})
    >>> [(e["event"], e["epoch"]) for e in read_events(path)]
    [('epoch', 1)]
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from ..json_values import json_safe
from .write_errors import write_failure

_STARTED = time.time()


class EventWriter:
    """Appends events to a JSON-lines file (or nowhere, with ``path=None``) and to listeners.

    ``listener`` is called with each event dict too (the Python API's progress callback).
    """

    def __init__(
        self, path: str | os.PathLike | None, listener: Callable[[dict], None] | None = None
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.listener = listener
        self._file = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115

    def emit(self, event: str, **fields) -> dict:
        record = json_safe(
            {
                "event": event,
                "time": round(time.time(), 3),
                "elapsed_s": round(time.time() - _STARTED, 3),
                **fields,
            }
        )
        if self._file is not None:
            try:
                self._file.write(json.dumps(record) + "\n")
                self._file.flush()
            except OSError as error:
                # A full disk: later events go to the listener only, and the run stops with one
                # sentence (a line cut short here is skipped by readers).
                self._discard_file()
                raise write_failure(
                    self.path,
                    error,
                    kept="the events written so far and the last checkpoint are kept",
                ) from None
        if self.listener is not None:
            self.listener(record)
        return record

    def close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:  # the last flush failed too (full disk): nothing more to save
                pass
            self._file = None

    def _discard_file(self) -> None:
        handle, self._file = self._file, None
        try:
            handle.close()
        except OSError:
            pass

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EventReader:
    """Reads new complete events from a growing JSON-lines file (for a GUI polling on a timer).

    A line still being written (no newline yet) is left for the next call.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "e.jsonl")
        >>> reader = EventReader(path)
        >>> reader.poll()          # the file does not exist yet
        []
        >>> with open(path, "w") as f:
        ...     _ = f.write('{"event": "step", "step": 1}\\n{"event": "st')
        >>> [e["step"] for e in reader.poll()]
        [1]
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.offset = 0

    def poll(self) -> list[dict]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read()
        except FileNotFoundError:
            return []
        end = data.rfind(b"\n")
        if end < 0:
            return []
        self.offset += end + 1
        events = []
        for line in data[: end + 1].splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue  # a line torn by a crash mid-write: skip it
        return events


def read_events(path: str | os.PathLike) -> list[dict]:
    """All complete events in ``path`` (see the module docstring for the schema)."""
    return EventReader(path).poll()
