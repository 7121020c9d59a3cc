"""The GPU check: CUDA tests, inference, adaptation, training, DDP and out-of-memory on one GPU.

``benchmarks/gpu_check.sh`` (the thin driver that sets up a bare GPU machine) calls this; it can
also run alone where CLADE imports::

    python benchmarks/gpu_bench.py --out OUT               # on a CUDA machine, ~6 minutes
    python benchmarks/gpu_bench.py --out OUT --dry-run     # CPU, every step at its smallest

Each step runs in its own subprocess under a time budget (the whole run must end within
``--budget`` seconds, 450 by default, so that a second try fits a 15-minute lease); a step that
fails or runs out of time is recorded as such in the JSON and the next one starts. Writes
``OUT/gpu.json`` (every figure, each step's status), ``OUT/gpu.md`` (the same as Markdown
tables) and ``OUT/gpu-log.txt`` (the steps' output).

Steps:

1. ``env``: GPU, driver-side versions, SimpleITK.
2. ``tests``: ``Testing/test_gpu.py`` (the CUDA tests) and the core tests (``CORE_TESTS``; their
   real volumes are in ``Testing/data``), under pytest, counted from its JUnit report.
3. ``inference``: ``benchmarks/inference.py`` on the paper-sized MRI and CT and the 512x512x83 CT
   with the shipped networks, the paper's patches against the default tiling: seconds end to end
   and for the network alone, voxels/s, peak GPU memory (one subprocess per row).
4. ``adapt``: ``--adapt 500`` on the paper-sized MRI: seconds of adaptation and of the whole run.
5. ``training``: CycleGAN steps (:class:`CLADE.training.step.TrainStep`, the paper's
   networks) in pairs/s at the preset's batch size as shipped (float16 autocast and a gradient
   scaler on CUDA), the same step under bfloat16 autocast (the step's autocast swapped here: the
   trainer has no bfloat16 option), and batches doubled until one does not fit.
6. ``ddp``: ``torchrun --nproc_per_node 1 -m CLADE train`` on a tiny volume, and the
   DistributedDataParallel step on a one-rank NCCL group (torchrun with one process leaves
   ``WORLD_SIZE`` at 1, so ``clade train`` does not wrap the networks in DDP; the second part
   does, so that NCCL and the DDP-wrapped step run at least once).
7. ``oom``: a real out-of-memory error, forced by filling the GPU until 2 GiB are left and
   asking for whole CT slabs per forward pass: the batch must halve and the run finish with the
   unconstrained run's output. In the dry run (no GPU) an injected ``torch.cuda.OutOfMemoryError``
   drives the same halving.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
STEPS = ("env", "tests", "inference", "adapt", "training", "ddp", "oom")
#: Seconds each step may take on the GPU machine (the run also stops at --budget).
STEP_BUDGET = {
    "env": 20,
    "tests": 110,
    "inference": 150,
    "adapt": 40,
    "training": 55,
    "ddp": 40,
    "oom": 35,
}
#: Seconds kept back at the end for writing the results.
RESERVE = 5
#: The core tests run on the GPU machine (their real volumes travel with the repository).
CORE_TESTS = (
    "Testing/test_patches.py",
    "Testing/test_inference_control.py",
    "Testing/test_networks.py",
    "Testing/test_training_ddp.py",
    "Testing/test_training_run.py",
    "Testing/test_pipeline.py",
    "Testing/test_adaptation.py",
    "Testing/test_cli_super_resolve.py",
)
#: (case, setting) rows of benchmarks/inference.py: on the GPU, and in the dry run.
INFERENCE_ROWS = [(c, s) for c in ("mri", "ct", "ct-large-ct") for s in ("paper", "default")]
DRY_INFERENCE_ROWS = [("smoke", "paper"), ("smoke", "default")]
#: The paper's figures on an RTX A6000 (inference seconds per volume, training pairs/s).
PAPER = {"mri_seconds": 103.0, "ct_seconds": 292.0, "training_pairs_per_second": 1.8}


# -- the driver ------------------------------------------------------------------------------


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="folder for gpu.json, gpu.md, gpu-log.txt")
    parser.add_argument(
        "--dry-run", action="store_true", help="no GPU: every step at its smallest, on the CPU"
    )
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole run")
    parser.add_argument("--steps", nargs="+", default=list(STEPS), choices=STEPS)
    for flag, names, what in (
        ("--pack-wheel", ("WHEEL", "SITE"), "(gpu_check.sh --prepare) unpack a wheel into SITE, xz its big files"),
        ("--unpack", ("CARRIED", "SITE"), "(gpu_check.sh) copy a packed tree into SITE, un-xz its files"),
    ):  # fmt: skip
        parser.add_argument(flag, nargs=2, type=Path, metavar=names, help=what)
    parser.add_argument("--step", choices=STEPS, help=argparse.SUPPRESS)  # child process
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.pack_wheel:
        pack_wheel(*args.pack_wheel)
        return 0
    if args.unpack:
        unpack_site(*args.unpack)
        return 0
    if args.out is None:
        parser.error("--out is required")
    if args.step:
        logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
        result = STEP_FUNCTIONS[args.step](args.dry_run, args.seconds or 60.0)
        args.result.write_text(json.dumps(result, indent=2, default=str))
        return 0
    return drive(args.out, args.dry_run, args.budget, args.steps)


def drive(out: Path, dry_run: bool, budget: float, steps) -> int:
    started = time.monotonic()
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "gpu-log.txt"
    results: dict = {"dry_run": dry_run, "steps": {}}
    with tempfile.TemporaryDirectory() as scratch, open(log_path, "w") as log:
        for name in steps:
            left = budget - (time.monotonic() - started) - RESERVE
            # The dry run's CPU steps are small but a loaded CPU starts processes slowly.
            limit = min(STEP_BUDGET[name] * (2 if dry_run else 1), left)
            status = {"budget_seconds": round(limit, 1)}
            if limit < 5:
                status.update(ok=False, error="not run: the time budget was spent")
                results["steps"][name] = status
                continue
            result_file = Path(scratch) / f"{name}.json"
            command = [
                sys.executable,
                __file__,
                "--step",
                name,
                "--result",
                str(result_file),
                "--out",
                str(out),
                "--seconds",
                str(limit),
            ]
            if dry_run:
                command.append("--dry-run")
            print(f"== step {name} (at most {limit:.0f} s)", file=sys.stderr, flush=True)
            log.write(f"\n===== step {name} =====\n")
            log.flush()
            began = time.monotonic()
            try:
                done = subprocess.run(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    timeout=limit,
                    cwd=REPO,
                    env=_child_env(),
                )
                code = done.returncode
            except subprocess.TimeoutExpired:
                code = None
            status["seconds"] = round(time.monotonic() - began, 1)
            if code == 0 and result_file.exists():
                status["ok"] = True
                results.update(json.loads(result_file.read_text()))
            else:
                status["ok"] = False
                status["error"] = (
                    f"timed out after {limit:.0f} s"
                    if code is None
                    else f"exit code {code} (see gpu-log.txt)"
                )
                if result_file.exists():  # a partial result written before the failure
                    results.update(json.loads(result_file.read_text()))
            results["steps"][name] = status
            print(
                f"   {name}: {'ok' if status['ok'] else status['error']} ({status['seconds']} s)",
                file=sys.stderr,
                flush=True,
            )
    results["total_seconds"] = round(time.monotonic() - started, 1)
    _headline(results)
    (out / "gpu.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "gpu.md").write_text(markdown(results))
    print((out / "gpu.md").read_text())
    return 0


def _child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    return env


def _headline(results: dict) -> None:
    """The figures the issue names, at the top level of gpu.json (None where not measured)."""
    rows = {(r["case"], r["setting"]): r for r in results.get("inference_rows", [])}

    def seconds(case, setting):
        row = rows.get((case, setting))
        return None if row is None else round(row["seconds"], 2)

    results.setdefault("device", None)
    results.setdefault("torch", None)
    for key in ("cuda_tests_passed", "cuda_tests_failed"):
        results.setdefault(key, None)
    results["paper_mri_seconds"] = seconds("mri", "paper")
    results["paper_ct_seconds"] = seconds("ct", "paper")
    results["default_mri_seconds"] = seconds("mri", "default")
    results["default_ct_seconds"] = seconds("ct", "default")
    results["large_ct_paper_seconds"] = seconds("ct-large-ct", "paper")
    results["large_ct_default_seconds"] = seconds("ct-large-ct", "default")
    training = results.get("training") or {}
    results["training_pairs_per_second"] = training.get("shipped_pairs_per_second")
    results.setdefault("adapt_500_seconds", None)
    results["paper_reference"] = PAPER


# -- step 1: environment ---------------------------------------------------------------------


def step_env(dry_run: bool, seconds: float) -> dict:
    import numpy
    import SimpleITK
    import torch

    info = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "simpleitk": SimpleITK.Version_VersionString(),
        "cpu_threads": torch.get_num_threads(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info.update(
            device=f"{props.name} ({props.total_memory / 2**30:.1f} GiB)",
            gpu_name=props.name,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            cudnn=torch.backends.cudnn.version(),
            bf16_supported=torch.cuda.is_bf16_supported(),
            tf32_convolutions=torch.backends.cudnn.allow_tf32,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            )
            info["driver"] = smi.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            info["driver"] = None
    else:
        info["device"] = "cpu (dry run: no GPU)" if dry_run else "cpu"
    return info


# -- step 2: tests ---------------------------------------------------------------------------


def step_tests(dry_run: bool, seconds: float) -> dict:
    result = {}
    with tempfile.TemporaryDirectory() as scratch:
        # The GPU tests; the dry run takes only the marked ones (skipped without a GPU) so it
        # stays fast.
        selection = ["-m", "gpu"] if dry_run else []
        gpu = _pytest(
            ["Testing/test_gpu.py", *selection],
            Path(scratch) / "gpu.xml",
            seconds * (0.9 if dry_run else 0.5),
        )
        result.update({f"cuda_tests_{k}": v for k, v in gpu.items()})
        if dry_run:
            result["core_tests_not_run"] = "dry run"
            return result
        result["core_test_files"] = list(CORE_TESTS)
        left = seconds - gpu["seconds"] - 5
        if left > 10:
            core = _pytest(list(CORE_TESTS), Path(scratch) / "core.xml", left)
            result.update({f"core_tests_{k}": v for k, v in core.items()})
    return result


def _pytest(paths: list[str], junit: Path, timeout: float) -> dict:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--no-header",
        "-o",
        "addopts=",
        "-W",
        "ignore::pytest.PytestUnknownMarkWarning",
        f"--junitxml={junit}",
        *paths,
    ]
    began = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=REPO)
        output, code = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as error:
        output = (
            (error.stdout or b"").decode("utf-8", "replace")
            if isinstance(error.stdout, bytes)
            else (error.stdout or "")
        )
        code = "timeout"
    print(output[-6000:], file=sys.stderr)
    counts = {
        "passed": 0,
        "failed": 0,
        "skipped": 0,
        "failures": [],
        "exit": code,
        "seconds": round(time.monotonic() - began, 1),
    }
    if junit.exists():
        for case in ElementTree.parse(junit).getroot().iter("testcase"):
            name = f"{case.get('classname')}::{case.get('name')}"
            problem = case.find("failure")
            if problem is None:
                problem = case.find("error")
            if problem is not None:
                counts["failed"] += 1
                counts["failures"].append(
                    {"test": name, "message": (problem.get("message") or "")[:400]}
                )
            elif case.find("skipped") is not None:
                counts["skipped"] += 1
            else:
                counts["passed"] += 1
    if code == "timeout":
        counts["failures"].append({"test": " ".join(paths), "message": "pytest timed out"})
        counts["failed"] += 1
    return counts


# -- step 3: inference -----------------------------------------------------------------------


def step_inference(dry_run: bool, seconds: float) -> dict:
    rows, failures = [], []
    device = "cpu" if dry_run else "cuda"
    planned = DRY_INFERENCE_ROWS if dry_run else INFERENCE_ROWS
    deadline = time.monotonic() + seconds - 3
    with tempfile.TemporaryDirectory() as scratch:
        for case, setting in planned:
            left = deadline - time.monotonic()
            if left < 5:
                failures.append({"row": f"{case}/{setting}", "error": "not run: out of time"})
                continue
            target = Path(scratch) / f"{case}-{setting}.json"
            command = [
                sys.executable,
                str(BENCH / "inference.py"),
                "--device",
                device,
                "--cases",
                case,
                "--settings",
                setting,
                "--json",
                str(target),
            ]
            try:
                done = subprocess.run(
                    command, capture_output=True, text=True, timeout=left, cwd=REPO
                )
                print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
                if done.returncode == 0:
                    rows.extend(json.loads(target.read_text())["rows"])
                else:
                    failures.append({"row": f"{case}/{setting}", "error": _last_line(done.stderr)})
            except subprocess.TimeoutExpired:
                failures.append({"row": f"{case}/{setting}", "error": "timed out"})
            # Keep what was measured so far if the step is stopped from outside.
            _partial({"inference_rows": rows, "inference_failures": failures})
    return {"inference_rows": rows, "inference_failures": failures}


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1][:400] if lines else ""


_PARTIAL: Path | None = None


def _partial(result: dict) -> None:
    if _PARTIAL is not None:
        _PARTIAL.write_text(json.dumps(result, default=str))


# -- step 4: adaptation ----------------------------------------------------------------------


def step_adapt(dry_run: bool, seconds: float) -> dict:
    sys.path.insert(0, str(BENCH))
    from inference import CASES, _model, synthetic_volume

    from CLADE.pipeline import SuperResolutionRequest, run

    case, steps, device = ("smoke", 3, "cpu") if dry_run else ("mri", 500, "cuda")
    size, spacing, kind, _ = CASES[case]
    if dry_run:  # adaptation needs 32 voxels across the isotropic grid: 10 slices, not 6
        size = size[:2] + (10,)
    image = synthetic_volume(size, spacing)
    request = SuperResolutionRequest(model=_model(kind), device=device, adapt_steps=steps)
    result = run(image, request)
    return {
        "adapt": {
            "case": case,
            "input": "x".join(map(str, size)),
            "steps": steps,
            "adapt_seconds": round(result.adaptation.seconds, 2),
            "total_seconds": round(result.stats["seconds"], 2),
            "network_seconds": round(result.stats["network_seconds"], 2),
            "pairs": result.adaptation.pairs,
            "device": result.stats["device"],
        },
        "adapt_500_seconds": None if dry_run else round(result.adaptation.seconds, 2),
    }


# -- step 5: training ------------------------------------------------------------------------


def step_training(dry_run: bool, seconds: float) -> dict:
    import numpy as np
    import torch

    from CLADE.device import is_out_of_memory
    from CLADE.training.presets import TrainingConfig
    from CLADE.training.sampling import EpochSampler
    from CLADE.training.step import TrainStep, build_networks

    device = torch.device("cpu" if dry_run else "cuda")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as clade train sets it
    arch = {"base_filters": 4, "n_blocks": 1, "disc_filters": 4} if dry_run else {}
    shipped = TrainingConfig.from_preset("mri", **arch)
    # Batches are doubled up to this; the bank holds at least one batch per domain.
    limit = 8 if dry_run else 1 << 14
    rng = np.random.default_rng(0)
    bank = rng.uniform(-1, 1, (2, limit, 32, 32)).astype(np.float16)

    class BFloat16Step(TrainStep):
        """The shipped step with bfloat16 autocast instead of float16 (no option for it yet)."""

        def _autocast(self):
            return torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.use_amp)

    def measure(batch: int, step_type=TrainStep) -> dict:
        config = TrainingConfig.from_preset("mri", batch_size=batch, **arch)
        torch.manual_seed(0)
        step = step_type(build_networks(config), config, device)
        sampler = EpochSampler(len(bank[0]), len(bank[1]), batch, seed=0)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        timed_steps, warmup = (1, 1) if dry_run else ((10, 3) if batch <= 256 else (4, 2))
        for index in range(warmup + timed_steps):
            xi, yi = sampler.batch(0, index % sampler.steps_per_epoch)
            _sync(device)
            began = time.perf_counter()
            x = torch.from_numpy(bank[0][xi]).to(device).float().unsqueeze(1)
            y = torch.from_numpy(bank[1][yi]).to(device).float().unsqueeze(1)
            losses = step(x, y).tolist()  # reading the losses, as the trainer's logger does
            _sync(device)
            if index >= warmup:
                times.append(time.perf_counter() - began)
        median = sorted(times)[len(times) // 2]
        row = {
            "batch_size": batch,
            "seconds_per_step": round(median, 5),
            "pairs_per_second": round(batch / median, 2),
            "losses_finite": bool(np.isfinite(losses).all()),
        }
        if device.type == "cuda":
            row["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        return row

    result = {
        "device": str(device),
        "preset": "mri",
        "shipped_batch_size": shipped.optimiser.batch_size,
        "shipped_precision": "float16 autocast + GradScaler"
        if device.type == "cuda"
        else "float32",
        "networks": "tiny (dry run)"
        if dry_run
        else "paper (64 filters, 6 blocks; discriminator 64)",
    }
    out = {"training": result}
    started = time.monotonic()
    shipped_row = measure(shipped.optimiser.batch_size)
    result["shipped"] = shipped_row
    result["shipped_pairs_per_second"] = shipped_row["pairs_per_second"]
    bf16 = measure(shipped.optimiser.batch_size, BFloat16Step)
    result["bfloat16_at_shipped_batch"] = bf16
    _partial(out)
    # Double the batch until a step does not fit (or the step's time runs short).
    largest, sweep, batch = None, [], shipped.optimiser.batch_size * 2
    while batch <= limit and time.monotonic() - started < 0.7 * seconds:
        try:
            row = measure(batch)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            if device.type == "cuda":
                torch.cuda.empty_cache()
            result["first_batch_that_did_not_fit"] = batch
            break
        sweep.append(row)
        largest = row
        batch *= 2
        _partial(out)
    result["batch_sweep"] = sweep
    result["largest_batch"] = largest
    if largest is not None and not dry_run:
        try:
            result["bfloat16_at_largest_batch"] = measure(largest["batch_size"], BFloat16Step)
        except RuntimeError as error:
            if not is_out_of_memory(error):
                raise
            result["bfloat16_at_largest_batch"] = "out of memory"
    return out


def _sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# -- step 6: DDP -----------------------------------------------------------------------------


def step_ddp(dry_run: bool, seconds: float) -> dict:
    import SimpleITK as sitk

    sys.path.insert(0, str(BENCH))
    from inference import synthetic_volume

    device = "cpu" if dry_run else "cuda"
    result: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        volume = Path(scratch) / "train.nrrd"
        sitk.WriteImage(synthetic_volume((64, 64, 8), (1.0, 1.0, 4.0)), str(volume))
        out = Path(scratch) / "run"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "1",
            "-m",
            "CLADE",
            "train",
            str(volume),
            "--out",
            str(out),
            "--device",
            device,
            "--epochs",
            "1",
            "--max-patches",
            "16" if dry_run else "64",
            "--batch-size",
            "4",
            "--base-filters",
            "4",
            "--n-blocks",
            "1",
            "--disc-filters",
            "4",
            "--quiet",
        ]
        began = time.monotonic()
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=max(10.0, seconds - 15),
                cwd=REPO,
                env=_child_env(),
            )
            print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
            code, stderr = done.returncode, done.stderr
        except subprocess.TimeoutExpired:
            code, stderr = None, "timed out"
        run = {
            "exit_code": code,
            "seconds": round(time.monotonic() - began, 1),
            "model_written": (out / "model_final.pt").is_file(),
        }
        events = out / "events.jsonl"
        if events.is_file():
            start = next(
                (json.loads(line) for line in events.read_text().splitlines() if '"start"' in line),
                {},
            )
            run.update(world_size=start.get("world_size"), device=start.get("device"))
        if code != 0:
            run["error"] = _last_line(stderr)
        result["torchrun_one_process"] = run
    # cuda:0, as distributed.setup names the device of local rank 0 (DDP needs the index).
    result["ddp_one_rank"] = _ddp_one_rank(
        "gloo" if dry_run else "nccl", "cpu" if dry_run else "cuda:0"
    )
    result["ddp_ok"] = bool(
        result["torchrun_one_process"]["exit_code"] == 0 and result["ddp_one_rank"].get("ok")
    )
    return {"ddp": result}


def _ddp_one_rank(backend: str, device_name: str) -> dict:
    """A DDP-wrapped TrainStep (and the warm-up step's hand all-reduce) on a one-rank group."""
    import socket

    import torch
    import torch.distributed as dist

    from CLADE.training import distributed
    from CLADE.training.presets import TrainingConfig
    from CLADE.training.step import TrainStep, build_networks

    class OneRankDDP(distributed.DistributedContext):
        """One rank, DDP on anyway (the CLI enables DDP only for two ranks or more)."""

        @property
        def enabled(self) -> bool:
            return True

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0"
    )
    began = time.monotonic()
    device = torch.device(device_name)
    try:
        if device.type == "cuda":
            torch.cuda.set_device(device)  # as distributed.setup does before NCCL starts
        dist.init_process_group(backend=backend, rank=0, world_size=1)
        config = TrainingConfig.from_preset(
            "mri", batch_size=8, base_filters=8, n_blocks=2, disc_filters=8, lambda_paired=1.0
        )
        torch.manual_seed(0)
        step = TrainStep(build_networks(config), config, device, context=OneRankDDP())
        wrapped = type(step.generators).__name__
        x, y = (torch.rand(8, 1, 32, 32, device=device) * 2 - 1 for _ in range(2))
        values = [step(x, y, y_degraded=y.flip(2)) for _ in range(3)]
        values.append(step.warmup(y, y.flip(2)))
        agree = distributed.all_agree(OneRankDDP(), True)
        finite = all(bool(torch.isfinite(v).all()) for v in values)
        return {
            "ok": finite and agree and wrapped == "DistributedDataParallel",
            "backend": dist.get_backend(),
            "wrapped": wrapped,
            "losses_finite": finite,
            "all_agree": agree,
            "seconds": round(time.monotonic() - began, 1),
        }
    except Exception as error:  # recorded, not raised: the step reports what broke
        return {"ok": False, "backend": backend, "error": f"{type(error).__name__}: {error}"}
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# -- step 7: out of memory -------------------------------------------------------------------


class _CaptureWarnings(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record) -> None:
        self.messages.append(record.getMessage())


def step_oom(dry_run: bool, seconds: float) -> dict:
    import numpy as np
    import SimpleITK as sitk
    import torch

    sys.path.insert(0, str(BENCH))
    from inference import CASES, _model, synthetic_volume

    from CLADE.pipeline import SuperResolutionRequest, run

    case = "smoke" if dry_run else "ct"
    size, spacing, kind, _ = CASES[case]
    image = synthetic_volume(size, spacing)
    model = _model(kind)
    device = "cpu" if dry_run else "cuda"
    slices = size[0]  # sagittal LR slices: every one of them in one forward pass
    request = SuperResolutionRequest(
        model=model,
        device=device,
        tiling="slices",
        precision="float32",
        ensemble="none",
        adapt_steps=0,
    )
    reference = run(image, request)
    capture = _CaptureWarnings()
    logging.getLogger("CLADE").addHandler(capture)
    ballast = None
    if dry_run:
        forced = "injected torch.cuda.OutOfMemoryError for batches above 2 slices (no GPU)"
        _inject_out_of_memory(limit_slices=2)
    else:
        free, total = torch.cuda.mem_get_info()
        keep = 2 << 30
        ballast = torch.empty(max(0, free - keep), dtype=torch.uint8, device="cuda")
        forced = (
            f"real: GPU filled until {keep >> 30} GiB of {total / 2**30:.0f} GiB were "
            f"free, then {slices} slices per forward pass asked for"
        )
    began = time.monotonic()
    try:
        result = run(
            image,
            SuperResolutionRequest(
                model=model,
                device=device,
                tiling="slices",
                precision="float32",
                ensemble="none",
                batch_size=slices,
                adapt_steps=0,
            ),
        )
        finished, error = True, None
    except Exception as caught:  # recorded: the point is whether it finishes
        finished, error, result = False, f"{type(caught).__name__}: {caught}", None
    finally:
        del ballast
        logging.getLogger("CLADE").removeHandler(capture)
    halvings = [m for m in capture.messages if "out of memory" in m]
    out = {
        "case": case,
        "forced": forced,
        "asked_batch_slices": slices,
        "finished": finished,
        "error": error,
        "halvings": len(halvings),
        "warnings": halvings[:12],
        "seconds": round(time.monotonic() - began, 1),
    }
    if result is not None:
        low, high = reference.stats["intensity_window"]
        difference = np.abs(
            sitk.GetArrayFromImage(result.image) - sitk.GetArrayFromImage(reference.image)
        ) / (high - low)
        out.update(
            final_batch_slices=result.stats["batch_size"],
            max_difference_vs_unforced=float(difference.max()),
            mean_difference_vs_unforced=float(difference.mean()),
        )
    out["ok"] = bool(
        finished and out["halvings"] >= 1 and out.get("max_difference_vs_unforced", 1.0) < 1e-2
    )
    return {"oom": out}


def _inject_out_of_memory(limit_slices: int) -> None:
    """Make the generator runner refuse batches of more than ``limit_slices`` slices, raising
    what a GPU raises (the dry run has no GPU to fill)."""
    import torch

    from CLADE import inference

    original = inference.GeneratorRunner.__call__

    def refusing(self, batch):
        if batch.shape[0] > limit_slices:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (injected by gpu_bench)")
        return original(self, batch)

    inference.GeneratorRunner.__call__ = refusing


# -- the carried SimpleITK (the GPU machine has none, and no network) --------------------------


def pack_wheel(wheel: Path, site: Path) -> None:
    """Unzip ``wheel`` into ``site`` and xz-compress its files above 1 MB (``name.xz``).

    Why not carry the wheel: SimpleITK's is 53 MB, which with the repository (32 MB, most of it
    the two shipped models) exceeds the 64 MiB a device call may carry; xz at level 9 packs
    its 270 MB library into 28 MB. Uses the ``xz`` program (multi-threaded) where there is one.
    """
    import lzma
    import shutil
    import zipfile

    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    for path in sorted(site.rglob("*")):
        if not path.is_file() or path.suffix == ".xz" or path.stat().st_size < 1 << 20:
            continue
        if shutil.which("xz"):
            subprocess.run(["xz", "-9", "-T0", "-f", str(path)], check=True)
        else:
            path.with_name(path.name + ".xz").write_bytes(
                lzma.compress(path.read_bytes(), preset=9)
            )
            path.unlink()


def unpack_site(carried: Path, site: Path) -> None:
    """Copy the packed package tree ``carried`` into ``site``, decompressing ``*.xz`` files."""
    import lzma
    import shutil

    for path in sorted(carried.rglob("*")):
        if not path.is_file():
            continue
        target = site / path.relative_to(carried)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix == ".xz":
            with lzma.open(path) as source, open(target.with_suffix(""), "wb") as sink:
                shutil.copyfileobj(source, sink, 1 << 24)
        else:
            shutil.copyfile(path, target)


STEP_FUNCTIONS = {
    "env": step_env,
    "tests": step_tests,
    "inference": step_inference,
    "adapt": step_adapt,
    "training": step_training,
    "ddp": step_ddp,
    "oom": step_oom,
}


# -- the Markdown report ---------------------------------------------------------------------


def markdown(results: dict) -> str:
    def fmt(value, digits=1):
        if value is None:
            return "not measured"
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)

    title = "GPU check (DRY RUN on CPU: no GPU figure)" if results.get("dry_run") else "GPU check"
    lines = [
        f"# {title}",
        "",
        f"Device: {results.get('device')}; torch {results.get('torch')}"
        f", CUDA {results.get('cuda')}, SimpleITK {results.get('simpleitk')}; "
        f"{results.get('total_seconds')} s in all.",
        "",
    ]
    adapt = results.get("adapt") or {}
    training = results.get("training") or {}
    bf16 = training.get("bfloat16_at_shipped_batch") or {}
    largest = training.get("largest_batch") or {}
    ddp = results.get("ddp") or {}
    one_rank = ddp.get("ddp_one_rank") or {}
    oom = results.get("oom") or {}
    tests = ("passed", "failed", "skipped")
    # (figure, measured, the paper's figure or ""), one row of the table each.
    table = [
        (
            "CUDA tests passed / failed / skipped",
            " / ".join(fmt(results.get(f"cuda_tests_{t}")) for t in tests),
            "",
        )
    ]
    if "core_tests_passed" in results:
        core = f"{results['core_tests_passed']} / {results['core_tests_failed']}"
        table.append(("core tests passed / failed", core, ""))
    table += [
        ("paper-sized MRI, paper's patches, s", fmt(results["paper_mri_seconds"]),
         f"{PAPER['mri_seconds']:g}"),
        ("paper-sized CT, paper's patches, s", fmt(results["paper_ct_seconds"]),
         f"{PAPER['ct_seconds']:g}"),
        ("paper-sized MRI, default, s", fmt(results["default_mri_seconds"]), ""),
        ("paper-sized CT, default, s", fmt(results["default_ct_seconds"]), ""),
        ("512x512x83 CT, paper's patches / default, s",
         f"{fmt(results['large_ct_paper_seconds'])} / {fmt(results['large_ct_default_seconds'])}",
         ""),
        (f"--adapt {adapt.get('steps', 500)} on {adapt.get('case', 'mri')}, s",
         fmt(adapt.get("adapt_seconds")), ""),
        (f"training pairs/s, batch {training.get('shipped_batch_size')} "
         f"({training.get('shipped_precision')})",
         fmt(results.get("training_pairs_per_second")),
         f"~{PAPER['training_pairs_per_second']}"),
        ("training pairs/s, same batch, bfloat16 autocast", fmt(bf16.get("pairs_per_second")), ""),
        (f"training pairs/s, largest batch tried that fit ({largest.get('batch_size')})",
         fmt(largest.get("pairs_per_second")), ""),
        (f"torchrun 1 process / one-rank DDP ({one_rank.get('backend')})",
         f"exit {(ddp.get('torchrun_one_process') or {}).get('exit_code')} / "
         f"{'ok' if one_rank.get('ok') else 'FAILED'}", ""),
        ("out of memory forced: halvings, finished, final batch",
         f"{oom.get('halvings')}, {oom.get('finished')}, {oom.get('final_batch_slices')}", ""),
    ]  # fmt: skip
    lines += ["| figure | measured | paper (RTX A6000) |", "|---|---|---|"]
    lines += [f"| {figure} | {measured} | {paper} |" for figure, measured, paper in table]
    lines += ["", "## Inference rows", ""]
    rows = results.get("inference_rows") or []
    if rows:
        sys.path.insert(0, str(BENCH))
        from inference import format_table

        lines.append(format_table(rows))
        lines += ["", "| case | setting | peak GPU MB |", "|---|---|---|"]
        for r in rows:
            lines.append(f"| {r['case']} | {r['setting']} | {fmt(r.get('peak_gpu_mb'), 0)} |")
    for failure in results.get("inference_failures") or []:
        lines.append(f"- not measured: {failure['row']}: {failure['error']}")
    if training.get("batch_sweep"):
        lines += [
            "",
            "## Training batch sweep (as shipped)",
            "",
            "| batch | s/step | pairs/s | peak GPU MB |",
            "|---|---|---|---|",
        ]
        for r in [training.get("shipped")] + training["batch_sweep"]:
            lines.append(
                f"| {r['batch_size']} | {r['seconds_per_step']} | "
                f"{r['pairs_per_second']} | {fmt(r.get('peak_gpu_mb'), 0)} |"
            )
    failures = (results.get("cuda_tests_failures") or []) + (
        results.get("core_tests_failures") or []
    )
    if failures:
        lines += ["", "## Failed tests", ""]
        lines += [f"- `{f['test']}`: {f['message']}" for f in failures]
    lines += ["", "## Steps", "", "| step | ok | seconds | error |", "|---|---|---|---|"]
    for name, status in results.get("steps", {}).items():
        lines.append(
            f"| {name} | {status.get('ok')} | {status.get('seconds', '')} | "
            f"{status.get('error', '')} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if "--result" in sys.argv:  # a child: where partial results go if it is stopped
        _PARTIAL = Path(sys.argv[sys.argv.index("--result") + 1])
    sys.exit(main())
