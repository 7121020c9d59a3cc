#!/usr/bin/env python-real
"""Slicer CLI module: super-resolve a volume file with CLADE, reporting Slicer progress lines.

Slicer runs this script with its own Python (``python-real``), giving the input and output as
files: ``CLADESuperResolutionCLI.py [--model M] [--stride N] [--adapt S] [--plane P]
[--device D] IN OUT``
(the order and flags come from ``CLADESuperResolutionCLI.xml``). Progress is reported with
``<filter-start>``, ``<filter-progress>`` and ``<filter-end>`` lines, which Slicer shows in its
progress bar; Slicer cancels a CLI module by killing this process, and the output is written
atomically, so a cancelled run leaves nothing behind.

Where the CLADE core is found (first match wins):

1. the ``CLADE_CORE_PATH`` environment variable (a folder containing ``CLADE/``);
2. ``../qt-scripted-modules`` relative to this file: the installed extension and the build tree
   both put CLI modules in ``lib/Slicer-X.Y/cli-modules`` and the core next to the scripted
   modules in ``lib/Slicer-X.Y/qt-scripted-modules`` (top-level ``CMakeLists.txt``);
3. ``..`` relative to this file: a source checkout, where ``CLADE/`` is this folder's sibling;
4. an installed ``clade-sr`` package (``import CLADE`` as is).
"""

import argparse
import os
import sys
import time
from pathlib import Path

#: Folders, relative to this script's folder, that may contain the ``CLADE/`` package.
CORE_RELATIVE_LOCATIONS = ("../qt-scripted-modules", "..")

PLANES = ("auto", "both", "sagittal", "coronal", "axial")
DEVICES = ("auto", "cpu", "cuda")


def locateCore(scriptDir=None):
    """Put the folder holding ``CLADE/`` on ``sys.path``; return it (None: rely on site-packages)."""
    scriptDir = Path(scriptDir or Path(__file__).resolve().parent)
    candidates = []
    if os.environ.get("CLADE_CORE_PATH"):
        candidates.append(Path(os.environ["CLADE_CORE_PATH"]))
    candidates += [(scriptDir / relative).resolve() for relative in CORE_RELATIVE_LOCATIONS]
    for folder in candidates:
        if (folder / "CLADE" / "__init__.py").is_file():
            if str(folder) not in sys.path:
                sys.path.insert(0, str(folder))
            return folder
    return None


def report(tag, value=""):
    """One Slicer progress line, flushed so Slicer sees it at once."""
    sys.stdout.write(f"<{tag}>{value}</{tag}>\n")
    sys.stdout.flush()


def buildParser():
    parser = argparse.ArgumentParser(description="CLADE super-resolution (Slicer CLI module).")
    parser.add_argument("inputVolume")
    parser.add_argument("outputVolume")
    parser.add_argument("--model", default="mri")
    parser.add_argument("--stride", type=int, default=0)
    parser.add_argument("--adapt", type=int, default=0)
    parser.add_argument("--plane", choices=PLANES, default="auto")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    return parser


def main(argv=None):
    args = buildParser().parse_args(argv)
    locateCore()
    try:
        import CLADE
        from CLADE.errors import CladeError
    except ImportError as error:
        sys.stderr.write(f"The CLADE core could not be imported ({error}): reinstall the CLADE "
                         "extension (and PyTorch from the PyTorch extension).\n")
        return 1

    report("filter-start", "<filter-name>CLADE super-resolution</filter-name>"
                           "<filter-comment>Loading the model</filter-comment>")
    try:
        image = CLADE.read_volume(args.inputVolume)
        model = CLADE.resolve_model(args.model, "cpu")
        last = [0.0]
        # Inference is ~95 % of the time (0.02-0.97); leave the rest for reading and writing.
        # With adaptation, its steps fill the first half of that span (500 steps take about as
        # long as a default-stride run on a brain MRI on CPU).
        split = 0.495 if args.adapt else 0.02

        def reporter(start, end):
            def progress(info):
                now = time.monotonic()
                if now - last[0] >= 0.2 or info.fraction >= 1.0:
                    last[0] = now
                    report("filter-progress", f"{start + (end - start) * info.fraction:.4f}")
            return progress

        report("filter-progress", "0.02")
        if args.adapt:
            from CLADE.adaptation import adapt_to_volume

            adapted = adapt_to_volume(image, model, steps=args.adapt, device=args.device,
                                      progress=reporter(0.02, split))
            print(f"CLADE: {adapted.summary()}", flush=True)
            model = adapted.model
        result = CLADE.super_resolve(image, model, stride=args.stride or None, plane=args.plane,
                                     device=args.device, progress=reporter(split, 0.97))
        CLADE.write_volume(result.image, args.outputVolume)
    except CladeError as error:
        sys.stderr.write(f"{error}\n")
        return error.exit_code
    report("filter-progress", "1.0")
    stats = result.stats
    report("filter-end", "<filter-name>CLADE super-resolution</filter-name>"
                         f"<filter-time>{stats.get('seconds', 0.0):.2f}</filter-time>")
    print(f"CLADE: {stats.get('input_size')} -> {stats.get('output_size')}, "
          f"{stats.get('patches')} patches on {stats.get('device')}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
