"""Training throughput: patch pairs per second of a full CLADE step, and what the pipeline costs.

Two measurements on the same networks, interleaved step by step so that load from other
processes affects both alike:

* **full step**: what ``clade train`` does per step: indices from the epoch sampler, patches
  from the float16 bank to float32 tensors, the six generator and four discriminator passes,
  all losses (adversarial, cycle, identity, Sobel gradient mapping), backward, both Adam steps;
* **bare**: the same network forward and backward passes on ready-made tensors, with a trivial
  loss (sum of output means), no sampling and no optimiser.

The overhead (full / bare - 1) is what the data pipeline, the losses and the optimisers add; the
target is <= 10 %. The paper reports ~1.8 pairs/s for its TensorFlow 2 training on an RTX A6000
(10 epochs of ~23,000 pairs in ~36 h).

Usage::

    python benchmarks/training.py                      # paper architecture, CPU, batch 4
    python benchmarks/training.py --device cuda --batch-size 32 --steps 50
    python benchmarks/training.py --base-filters 4 --n-blocks 1   # tiny, a quick check
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from CLADE.networks import count_parameters
from CLADE.training.presets import TrainingConfig
from CLADE.training.sampling import EpochSampler
from CLADE.training.step import TrainStep, build_networks


def bare_pass(networks: dict, x: torch.Tensor, y: torch.Tensor) -> None:
    """The networks' forward and backward passes of one step, with no losses or optimiser."""
    g_x, g_y, d_x, d_y = (networks[k] for k in ("g_x", "g_y", "d_x", "d_y"))
    n = x.shape[0]
    fake_y, idt_y = g_x(torch.cat([x, y])).split([n, n])
    fake_x, idt_x = g_y(torch.cat([y, x])).split([n, n])
    rec_x, rec_y = g_y(fake_y), g_x(fake_x)
    total = sum(t.mean() for t in (idt_y, idt_x, rec_x, rec_y, d_y(fake_y), d_x(fake_x)))
    total.backward()
    d_total = (
        d_x(torch.cat([x, fake_x.detach()])).mean() + d_y(torch.cat([y, fake_y.detach()])).mean()
    )
    d_total.backward()
    for network in networks.values():
        network.zero_grad(set_to_none=True)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5, help="timed steps of each kind")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--base-filters", type=int, default=64)
    parser.add_argument("--n-blocks", type=int, default=6)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    config = TrainingConfig.from_preset(
        "mri", batch_size=args.batch_size, base_filters=args.base_filters, n_blocks=args.n_blocks
    )
    torch.manual_seed(0)
    networks = build_networks(config)
    step = TrainStep(networks, config, device)
    rng = np.random.default_rng(0)
    bank_x = rng.uniform(-1, 1, (4096, 32, 32)).astype(np.float16)
    bank_y = rng.uniform(-1, 1, (4096, 32, 32)).astype(np.float16)
    sampler = EpochSampler(len(bank_x), len(bank_y), args.batch_size, seed=0)
    fixed_x = torch.from_numpy(bank_x[: args.batch_size]).float()[:, None].to(device)
    fixed_y = torch.from_numpy(bank_y[: args.batch_size]).float()[:, None].to(device)

    def full(index: int) -> None:
        xi, yi = sampler.batch(0, index % sampler.steps_per_epoch)
        x = torch.from_numpy(bank_x[xi]).to(device).float().unsqueeze(1)
        y = torch.from_numpy(bank_y[yi]).to(device).float().unsqueeze(1)
        step(x, y).tolist()  # reading the losses, as the logger does

    def bare(index: int) -> None:
        bare_pass(networks, fixed_x, fixed_y)

    times: dict[str, list[float]] = {"full": [], "bare": []}
    for index in range(args.warmup + args.steps):
        for name, fn in (("full", full), ("bare", bare)):
            sync(device)
            began = time.perf_counter()
            fn(index)
            sync(device)
            if index >= args.warmup:
                times[name].append(time.perf_counter() - began)

    full_s = statistics.median(times["full"])
    bare_s = statistics.median(times["bare"])
    params = count_parameters(networks["g_x"]) / 1e6
    print(
        f"device {device}, threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"generator {args.base_filters} filters x {args.n_blocks} blocks ({params:.2f} M "
        f"parameters), median of {args.steps} steps after {args.warmup} warm-up"
    )
    print()
    print("| measurement | s/step | patch pairs/s |")
    print("|---|---|---|")
    print(f"| full training step | {full_s:.3f} | {args.batch_size / full_s:.2f} |")
    print(
        f"| bare forward+backward of the 4 networks | {bare_s:.3f} | "
        f"{args.batch_size / bare_s:.2f} |"
    )
    print(f"| pipeline + losses + optimisers overhead | {100 * (full_s / bare_s - 1):+.1f} % | |")
    print("| paper (TF2, RTX A6000) | | ~1.8 |")


if __name__ == "__main__":
    main()
