#!/usr/bin/env python-real
"""Slicer CLI module: super-resolve a volume file with CLADE, reporting Slicer progress lines.

Slicer runs this script with its own Python (``python-real``), giving the input and output as
files: ``CLADESuperResolutionCLI.py [--model M] [--tiling T] [--stride N] [--ensemble E]
[--precision P] [--adapt S] [--plane P] [--device D] [--errorMap MAP] IN OUT``
(the order and flags come from ``CLADESuperResolutionCLI.xml``). The work is the core's one
pipeline, ``CLADE.pipeline.super_resolve_file``; its overall progress fraction is reported with
``<filter-progress>`` lines between ``<filter-start>`` and ``<filter-end>``, which Slicer shows
in its progress bar. Slicer cancels a CLI module by killing this process, and the pipeline
writes the output atomically, so a cancelled run leaves nothing behind.

Where the CLADE core is found (first match wins):

1. the ``CLADE_CORE_PATH`` environment variable (a folder containing ``CLADE/``);
2. ``../qt-scripted-modules`` relative to this file: the installed extension and a
   single-configuration build tree put CLI modules in ``lib/Slicer-X.Y/cli-modules`` and the
   core next to the scripted modules in ``lib/Slicer-X.Y/qt-scripted-modules`` (top-level
   ``CMakeLists.txt``);
3. ``../../qt-scripted-modules``: a multi-configuration build tree (Visual Studio, Xcode) puts
   CLI modules one level deeper, in ``cli-modules/<Config>`` (``SlicerMacroBuildScriptedCLI``),
   while scripted modules stay in ``qt-scripted-modules``;
4. ``..`` relative to this file: a source checkout, where ``CLADE/`` is this folder's sibling;
5. an installed ``clade-sr`` package (``import CLADE`` as is).
"""

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

#: Folders, relative to this script's folder, that may contain the ``CLADE/`` package.
CORE_RELATIVE_LOCATIONS = ("../qt-scripted-modules", "../../qt-scripted-modules", "..")

PLANES = ("auto", "both", "sagittal", "coronal", "axial")
DEVICES = ("auto", "cpu", "cuda")
TILINGS = ("auto", "slices", "patches")
ENSEMBLES = ("auto", "none", "flips2", "flips")
PRECISIONS = ("auto", "float32", "bfloat16")

#: Seconds between two progress lines (Slicer redraws its bar a few times a second anyway).
PROGRESS_INTERVAL = 0.2

TORCH_MISSING = (
    "PyTorch is not installed in Slicer's Python: install it with the PyTorch extension "
    "(PyTorch Utils module), then run CLADE Super-Resolution again."
)


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
    parser.add_argument("--tiling", choices=TILINGS, default="auto")
    parser.add_argument("--stride", type=int, default=0)
    parser.add_argument("--ensemble", choices=ENSEMBLES, default="auto")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto")
    # auto, 0 or a number of steps: the core checks it (CLADE.adaptation_policy), so the rule
    # has one home and a bad value gets the core's one-sentence error.
    parser.add_argument("--adapt", default="auto")
    parser.add_argument("--plane", choices=PLANES, default="auto")
    parser.add_argument("--device", choices=DEVICES, default="auto")
    parser.add_argument("--errorMap", default=None)
    return parser


def torchAvailable():
    """True when torch can be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def main(argv=None):
    args = buildParser().parse_args(argv)
    locateCore()
    # Checked before anything imports the core's torch-using modules: the core package itself
    # imports torch lazily, so without this check the first use would end in a traceback.
    if not torchAvailable():
        sys.stderr.write(TORCH_MISSING + "\n")
        return 1
    try:
        from CLADE.errors import CladeError
        from CLADE.pipeline import SuperResolutionRequest, super_resolve_file
    except ImportError as error:
        sys.stderr.write(
            f"The CLADE core could not be imported ({error}): reinstall the CLADE extension.\n"
        )
        return 1

    report(
        "filter-start",
        "<filter-name>CLADE super-resolution</filter-name>"
        "<filter-comment>Loading the model</filter-comment>",
    )
    last = [0.0]

    def progress(info):
        now = time.monotonic()
        if now - last[0] >= PROGRESS_INTERVAL or info.fraction >= 1.0:
            last[0] = now
            report("filter-progress", f"{min(max(float(info.fraction), 0.0), 1.0):.4f}")

    try:
        request = SuperResolutionRequest(
            model=args.model,
            tiling=args.tiling,
            stride=args.stride if args.stride and args.tiling != "slices" else None,
            ensemble=args.ensemble,
            precision=args.precision,
            plane=args.plane,
            device=args.device,
            adapt_steps=args.adapt,
        )
        result = super_resolve_file(
            args.inputVolume,
            args.outputVolume,
            request,
            progress=progress,
            error_map_path=args.errorMap or None,
        )
    except CladeError as error:
        sys.stderr.write(f"{error}\n")
        return error.exit_code
    report("filter-progress", "1.0")
    report(
        "filter-end",
        "<filter-name>CLADE super-resolution</filter-name>"
        f"<filter-time>{float(result.stats.get('seconds', 0.0)):.2f}</filter-time>",
    )
    if result.adaptation is not None:
        print(f"CLADE: {result.adaptation.summary()}", flush=True)
    print(f"CLADE: {result.summary()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
