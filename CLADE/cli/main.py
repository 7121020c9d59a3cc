"""Entry point of the ``clade`` command.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and ``run(args)``
(called with the parsed arguments, returning an exit code); the second paragraph of the module's
docstring is the command's ``--help`` description. User errors (:class:`CLADE.errors.CladeError`)
are printed as one sentence with no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .. import __version__
from ..errors import CladeError, Interrupted

#: Each subcommand's module and one-line help, in the order ``clade --help`` lists them.
SUBCOMMANDS = {
    "super-resolve": ("super_resolve", "super-resolve thick-slice volumes to isotropic"),
    "models": ("models", "list the shipped models"),
    "train": ("train", "train CLADE networks on thick-slice volumes"),
    "simulate": ("simulate", "simulate a thick-slice acquisition from an isotropic volume"),
    "evaluate": ("evaluate", "compare super-resolved volumes with the cubic-spline baseline"),
    "demo": ("demo", "super-resolve the shipped sample MRI and compare it with cubic spline"),
}


def description(module) -> str:
    """The ``--help`` description of a subcommand: its module docstring's second paragraph.

    Example:
        >>> import CLADE.cli.models
        >>> description(CLADE.cli.models)[:36]
        'List the models shipped with CLADE: '
    """
    paragraph = module.__doc__.split("\n\n")[1]
    return " ".join(paragraph.split()).replace("``", "`")


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
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        module = importlib.import_module(f"{__package__}.{module_name}")
        command = subparsers.add_parser(name, help=help_text, description=description(module))
        module.add_arguments(command)
        command.set_defaults(func=module.run)
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
    except KeyboardInterrupt as error:
        said = str(error) if isinstance(error, Interrupted) else "nothing was written."
        print(f"clade: interrupted: {said}", file=sys.stderr)
        return getattr(error, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())
