"""Does a run with adaptation fit the paper pipeline's time? (issue 24)

On each held-out evaluation volume of ``benchmarks/prepare_eval_data.py`` this times, one after
the other in one run, end to end in memory:

* ``paper``: the paper's patch pipeline (32x32 patches, stride 12, float32) with the paper's
  architecture (the 64-filter model of the volume's modality, ``--paper-model``);
* ``--adapt 0``: the default inference (whole slices, precision auto) with ``--model``, not
  adapted;
* ``default``: the default run, ``--adapt auto`` (:mod:`CLADE.adaptation_policy`), with the
  decision it took;
* ``--adapt N``: forced N steps (each ``--steps``), adaptation included.

A run with adaptation fits the budget when its seconds are at most the paper row's.

Usage::

    python benchmarks/adaptation_budget.py --volume ct-abdomen-9mm --paper-model ct-large \\
        --model ct
    python benchmarks/adaptation_budget.py --volume mri-mni152-5mm --paper-model mri-large \\
        --model mri
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from model_quality import DEFAULT_DATA, read_manifest  # noqa: E402

from CLADE.adaptation import adapt_to_volume  # noqa: E402
from CLADE.pipeline import super_resolve  # noqa: E402
from CLADE.registry import resolve_model  # noqa: E402

PAPER = {"tiling": "patches", "stride": 12, "precision": "float32"}


def timed(function, *args, **kwargs) -> float:
    started = time.perf_counter()
    function(*args, **kwargs)
    return time.perf_counter() - started


def budget(volume: dict, data: Path, paper_model, model, steps, device: str) -> list[dict]:
    thick = sitk.ReadImage(str(data / volume["thick"]))
    axis = int(volume["axis"])
    options = {"thick_axis": axis, "device": device}
    paper = timed(super_resolve, thick, paper_model, **options, **PAPER, adapt_steps=0)
    rows = [{"run": f"paper ({paper_model.name}, patches s12, float32)", "seconds": paper}]
    seconds = timed(super_resolve, thick, model, **options, adapt_steps=0)
    rows.append({"run": f"{model.name} --adapt 0", "seconds": seconds})
    started = time.perf_counter()
    default = super_resolve(thick, model, **options)  # --adapt auto
    rows.append(
        {
            "run": f"default ({model.name}, --adapt auto)",
            "seconds": time.perf_counter() - started,
            "decision": default.stats["adaptation"],
        }
    )

    def adapted_run(count: int) -> None:
        adapted = adapt_to_volume(thick, model, steps=count, **options)
        super_resolve(thick, adapted.model, **options, adapt_steps=0)

    for count in steps:
        seconds = timed(adapted_run, count)
        rows.append({"run": f"{model.name} --adapt {count}", "seconds": seconds})
    for row in rows:
        row["fits"] = row["seconds"] <= paper
        row["of_paper"] = row["seconds"] / paper
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", required=True, help="an evaluation volume's name")
    parser.add_argument("--paper-model", required=True, help="the paper's architecture")
    parser.add_argument("--model", required=True, help="the model of the default run")
    parser.add_argument("--steps", type=int, nargs="*", default=[], help="forced step counts")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    volume = read_manifest(args.data, [args.volume])[0]
    paper_model, model = resolve_model(args.paper_model), resolve_model(args.model)
    rows = budget(volume, args.data, paper_model, model, args.steps, args.device)
    print(f"### {volume['name']}\n\n| run | s | of the paper's time | fits |\n|---|---:|---:|---|")
    for r in rows:
        fits = "yes" if r["fits"] else "no"
        print(f"| {r['run']} | {r['seconds']:.1f} | {r['of_paper']:.2f} | {fits} |")
        if "decision" in r:
            print(f"|  ({r['decision']}) | | | |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"volume": volume["name"], "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
