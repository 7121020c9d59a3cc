"""``clade models``: list the shipped models and what they are for.

List the models shipped with CLADE: name, the generator's cost per output voxel (floating-point
operations of one pass, counted from its architecture), and what it is for.
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
    from ..network_cost import generator_flops_per_voxel

    width = max(len(entry["name"]) for entry in entries)
    for entry in entries:
        cost = ""
        if "architecture" in entry:
            mflop = generator_flops_per_voxel(entry["architecture"]) / 1e6
            cost = f"{mflop:.2f} MFLOP/voxel  "
        print(f"{entry['name']:{width}s}  {cost}{entry.get('description', '')}")
    return 0
