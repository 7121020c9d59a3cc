"""Distil a shipped (or any) CLADE generator into a smaller student (issue 27).

The teacher runs over whole slices of every given volume (LR-plane slices and degraded HR-plane
slices, :mod:`CLADE.training.distillation`), then the student is fitted to its answers. No
ground truth is needed, so any volume may be given, thick planes included; the held-out
evaluation volumes of ``benchmarks/prepare_eval_data.py`` must not be.

Usage (the shipped students, ``models/cards/students.md``)::

    OMP_NUM_THREADS=1 python models/distil_student.py --teacher mri --out runs/student-mri \\
        --paired-ratios 2 8 VOLUME [VOLUME ...]

It writes ``student.pt`` (a CLADE model file: ``--model runs/student-mri/student.pt``) and
``student_step<N>.pt`` every ``--save-every`` steps, and prints the mean L1 to the teacher every
100 steps.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from CLADE.device import resolve_device
from CLADE.inference import GeneratorRunner, StackInference
from CLADE.model_file import load_model, make_metadata, save_model
from CLADE.network_cost import generator_flops_per_voxel
from CLADE.networks import ResnetGenerator, count_parameters, init_weights
from CLADE.normalisation import NormalisationRecipe
from CLADE.registry import resolve_model
from CLADE.slice_sampling import prepare_volume
from CLADE.training.distillation import PairSampler, distil, teacher_pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("volumes", nargs="+", help="training volumes (never the held-out ones)")
    parser.add_argument("--teacher", required=True, help="shipped model name or model file")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--name", help="the student's model name (default: <teacher>-student)")
    parser.add_argument("--base-filters", type=int, default=32)
    parser.add_argument("--n-blocks", type=int, default=6)
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--max-slices", type=int, default=48, help="per plane and volume")
    parser.add_argument("--paired-ratios", type=float, nargs=2, metavar=("LOW", "HIGH"))
    parser.add_argument("--truth-weight", type=float, default=0.0)
    parser.add_argument("--gradient-weight", type=float, default=0.0)
    parser.add_argument(
        "--init-model", type=Path, help="start from this student file (same architecture)"
    )
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    teacher = resolve_model(args.teacher)
    engine = StackInference(GeneratorRunner(teacher, resolve_device("cpu")), "slices")
    started = time.perf_counter()
    pairs = []
    for path in args.volumes:
        volume = prepare_volume(
            sitk.ReadImage(str(path), sitk.sitkFloat32),
            Path(path).name,
            normalisation=teacher.metadata["normalisation"],
        )
        found = teacher_pairs(volume, engine.run, rng, args.max_slices, args.paired_ratios)
        pairs += found
        shapes = ", ".join(f"{p.inputs.shape}" for p in found)
        print(f"teacher on {Path(path).name}: {shapes} ({time.perf_counter() - started:.0f} s)")

    arch = dict(teacher.metadata["architecture"])
    arch.update(base_filters=args.base_filters, n_blocks=args.n_blocks)
    student = init_weights(ResnetGenerator(**arch))
    if args.init_model:  # continue an earlier student (e.g. with another loss)
        start = load_model(args.init_model)
        if start.metadata["architecture"] != arch:
            parser.error(f"{args.init_model} is not a {arch} generator")
        student.load_state_dict(start.generator.state_dict())
    name = args.name or f"{teacher.name}-student"
    teacher_flops = generator_flops_per_voxel(teacher.metadata["architecture"])
    student_flops = generator_flops_per_voxel(arch)
    print(
        f"student {arch}: {count_parameters(student):,} parameters, "
        f"{student_flops / 1e3:.0f} kFLOP per voxel ({teacher_flops / student_flops:.2f}x fewer)"
    )

    def metadata(step: int) -> dict:
        return make_metadata(
            name,
            teacher.metadata["modality"],
            **{k: arch[k] for k in ("base_filters", "n_blocks", "upsample", "residual")},
            normalisation=NormalisationRecipe.from_dict(teacher.metadata["normalisation"]),
            default_stride=int(teacher.metadata.get("default_stride", 12)),
            training={
                "distilled_from": teacher.name,
                "steps": step,
                "settings": {k: str(v) for k, v in vars(args).items() if k != "volumes"},
                "volumes": [Path(v).name for v in args.volumes],
            },
        )

    def report(info) -> None:
        print(
            f"step {info.step}/{info.steps}: L1 to teacher {info.teacher_l1:.5f} "
            f"({info.seconds:.0f} s)",
            flush=True,
        )
        if info.step % args.save_every == 0:
            save_model(args.out / f"student_step{info.step}.pt", student, metadata(info.step))
            student.train()

    sampler = PairSampler(pairs, args.patch, rng)
    distil(
        student,
        sampler,
        args.steps,
        args.batch_size,
        args.lr,
        args.truth_weight,
        args.gradient_weight,
        on_report=report,
    )
    save_model(args.out / "student.pt", student, metadata(args.steps))
    print(f"wrote {args.out / 'student.pt'}")


if __name__ == "__main__":
    main()
