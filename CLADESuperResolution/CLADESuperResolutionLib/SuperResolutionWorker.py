"""Worker script: super-resolve one volume file, reporting progress as JSON lines on stdout.

Run by the Slicer module in a separate ``PythonSlicer`` process (the CLADE core on
``PYTHONPATH``, see ``CoreLocator.workerEnvironment``)::

    PythonSlicer SuperResolutionWorker.py --input in.nrrd --output out.nrrd --model mri

Each stdout line is one JSON object with an ``event`` key:

* ``{"event": "started", "model": ..., "trained": ..., "device": ...}``
* ``{"event": "progress", "stage": "super-resolving", "fraction": 0.42, "eta": 12.5,
  "done": 840, "total": 2000}`` (``stage`` is ``adapting`` first with ``--adapt``, counting steps)
* ``{"event": "adapted", "improved": true, "summary": "..."}`` (with ``--adapt``)
* ``{"event": "finished", "output": ..., "stats": {...}, "summary": "..."}``
* ``{"event": "error", "message": "one user sentence"}`` (then exit code 2, or 1 for a bug)

The output is written atomically (temporary name, then renamed), so the module never reads a
half-written file, even when this process is killed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

#: Minimum seconds between two progress lines (the GUI redraws at a few Hz anyway).
PROGRESS_INTERVAL = 0.1


def emit(event: str, **fields) -> None:
    """Print one protocol line and flush it at once."""
    sys.stdout.write(json.dumps({"event": event, **fields}, default=str) + "\n")
    sys.stdout.flush()


def buildParser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description="CLADE super-resolution worker (JSON lines).")
    parser.add_argument("--input", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--model", required=True, help="shipped model name or model file path")
    parser.add_argument("--stride", type=int, default=None)
    parser.add_argument("--plane", default="auto")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--thick-axis", type=int, default=None)
    parser.add_argument("--adapt", type=int, default=0,
                        help="steps of adaptation to the input volume first (0: none)")
    return parser


def run(args) -> int:
    import CLADE
    from CLADE.errors import CladeError

    try:
        image = CLADE.read_volume(args.input)
        model = CLADE.resolve_model(args.model, "cpu")
        emit("started", model=model.name, trained=model.trained, device=args.device,
             stride=args.stride or model.default_stride)
        last = [0.0]

        def due(fraction: float) -> bool:
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL or fraction >= 1.0:
                last[0] = now
                return True
            return False

        if args.adapt:
            from CLADE.adaptation import adapt_to_volume

            def adapting(info) -> None:
                if due(info.fraction):
                    emit("progress", stage="adapting", fraction=round(float(info.fraction), 5),
                         eta=info.eta_seconds, done=info.done_steps, total=info.total_steps)

            adapted = adapt_to_volume(image, model, steps=args.adapt, thick_axis=args.thick_axis,
                                      device=args.device, progress=adapting)
            emit("adapted", improved=adapted.improved, summary=adapted.summary())
            model = adapted.model

        def progress(info) -> None:
            if due(info.fraction):
                emit("progress", stage="super-resolving", fraction=round(float(info.fraction), 5),
                     eta=info.eta_seconds, done=info.done_patches, total=info.total_patches)

        result = CLADE.super_resolve(
            image, model, stride=args.stride, plane=args.plane, thick_axis=args.thick_axis,
            device=args.device, batch_size=args.batch_size, progress=progress,
        )
        # Uncompressed: the file is read back at once and deleted, compression only costs time.
        CLADE.write_volume(result.image, args.output, compress=False)
        summary = result.summary() if hasattr(result, "summary") else ""
        emit("finished", output=args.output, stats=result.stats, summary=summary)
        return 0
    except CladeError as error:
        emit("error", message=str(error))
        return getattr(error, "exit_code", 2)


def main(argv=None) -> int:
    args = buildParser().parse_args(argv)
    try:
        return run(args)
    except Exception as error:  # a bug: keep the traceback on stderr for the module's error box
        traceback.print_exc()
        emit("error", message=f"{type(error).__name__}: {error}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
