"""``clade models``: list the shipped models and what they are for.

List the models shipped with CLADE.
"""

from __future__ import annotations

import argparse


def add_arguments(parser) -> None:
    """It takes no arguments."""


def run(args: argparse.Namespace) -> int:
    from ..registry import read_manifest

    entries = read_manifest()
    if not entries:
        print(
            "No trained models are shipped with this version; use --model PATH with a model "
            "file from `clade train`."
        )
        return 0
    for entry in entries:
        print(f"{entry['name']:6s} {entry.get('description', '')}")
    return 0
