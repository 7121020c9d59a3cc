"""benchmarks/gpu_check.sh --cpu-dry-run: every step of the GPU check runs on the CPU at its
smallest and writes the JSON and Markdown a GPU run writes, so the script cannot rot between the
rare sessions that have a GPU."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: What the issue asks gpu.json to hold, and what the dry run must fill in.
REQUIRED_KEYS = (
    "device",
    "torch",
    "cuda_tests_passed",
    "cuda_tests_failed",
    "paper_mri_seconds",
    "paper_ct_seconds",
    "training_pairs_per_second",
)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_cpu_dry_run_writes_every_result(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        ["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--cpu-dry-run"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=480,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((out / "gpu.json").read_text(encoding="utf-8"))
    log = (out / "gpu-log.txt").read_text(encoding="utf-8")
    for key in REQUIRED_KEYS:
        assert key in results, key
    assert results["dry_run"] is True
    failed = {name: s for name, s in results["steps"].items() if not s["ok"]}
    assert not failed, (failed, log[-4000:])
    # Without a GPU the CUDA tests are skipped, not failed, and no GPU figure is written.
    assert results["cuda_tests_failed"] == 0 and results["cuda_tests_skipped"] > 0
    assert results["paper_mri_seconds"] is None and results["paper_ct_seconds"] is None
    assert results["adapt_500_seconds"] is None
    assert {(r["case"], r["setting"]) for r in results["inference_rows"]} == {
        ("smoke", "paper"),
        ("smoke", "default"),
    }
    assert results["training_pairs_per_second"] > 0
    assert results["ddp"]["ddp_one_rank"]["wrapped"] == "DistributedDataParallel"
    assert results["ddp"]["torchrun_one_process"]["exit_code"] == 0
    assert results["oom"]["ok"] and results["oom"]["halvings"] >= 1
    table = (out / "gpu.md").read_text(encoding="utf-8")
    assert table.startswith("# GPU check (DRY RUN on CPU: no GPU figure)")
    assert "| paper-sized MRI, paper's patches, s | not measured | 103 |" in table
