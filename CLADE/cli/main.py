"""Entry point of the ``clade`` command.

Each subcommand lives in its own module exposing ``add_parser(subparsers)``, which registers the
subcommand and sets ``func`` (called with the parsed arguments, returning an exit code). User
errors (:class:`CLADE.errors.CladeError`) are printed as one sentence with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import CladeError

#: Subcommand modules, in the order ``clade --help`` lists them.
SUBCOMMAND_MODULES = (
    "super_resolve",
    "models",
    "train",
    "simulate",
    "evaluate",
    "demo",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser.

    Example:
        >>> build_parser().parse_args(["super-resolve", "in.nrrd", "out.nrrd"]).stride is None
        True
    """
    parser = argparse.ArgumentParser(
        prog="clade",
        description="CLADE: unpaired deep super-resolution of anisotropic 3D MRI and CT.",
    )
    parser.add_argument("--version", action="version", version=f"clade {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"{__package__}.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``clade`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit code.

    Example:
        >>> main(["super-resolve", "/no/such/file.nrrd", "/tmp/out.nrrd"])  # message on stderr
        2
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except CladeError as error:
        print(f"clade: error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("clade: interrupted: nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
