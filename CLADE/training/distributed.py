"""Running on one process or many: torchrun / DistributedDataParallel set-up.

Launch on several GPUs (or CPU processes) with torchrun, which sets ``RANK``, ``LOCAL_RANK``
and ``WORLD_SIZE``::

    torchrun --nproc_per_node 4 -m CLADE train data/ --out run1
    torchrun --nnodes 2 --nproc_per_node 8 --rdzv_backend c10d \\
        --rdzv_endpoint host0:29500 -m CLADE train data/ --out /shared/run1

Backend: NCCL when the device is CUDA (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPU.
Every rank builds the same patch bank and takes its own shard of each epoch
(:class:`CLADE.training.sampling.EpochSampler`); DDP averages the gradients; only rank 0 writes
checkpoints, models, events and plots. Multi-node ``--resume`` needs the output folder on a
file system every node sees (each rank reads the checkpoint).
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from ..errors import CladeError

# Validation on rank 0 can take minutes while the other ranks wait at a barrier; the default
# collective timeout (10 min for NCCL) would kill long validations.
_TIMEOUT = datetime.timedelta(hours=2)


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the run.

    Example:
        >>> ctx = DistributedContext()
        >>> ctx.world_size, ctx.is_main, ctx.enabled
        (1, True, False)
    """

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def launched_by_torchrun() -> bool:
    """True when the environment says this process is one of several (torchrun sets it)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup(device_name: str) -> tuple[DistributedContext, str]:
    """Join the process group if launched by torchrun; return the context and the device name.

    ``device_name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``; under DDP a CUDA device
    becomes ``cuda:LOCAL_RANK``.
    """
    if not launched_by_torchrun():
        return DistributedContext(), device_name
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world_size = int(os.environ["WORLD_SIZE"])
    use_cuda = device_name.startswith("cuda") or (
        device_name == "auto" and torch.cuda.is_available()
    )
    if use_cuda:
        if not torch.cuda.is_available():
            raise CladeError("CUDA was requested but no GPU is available: use --device cpu.")
        if local_rank >= torch.cuda.device_count():
            raise CladeError(
                f"torchrun started {local_rank + 1}+ processes on a node with "
                f"{torch.cuda.device_count()} GPUs: use --nproc_per_node "
                f"{torch.cuda.device_count()} or fewer."
            )
        torch.cuda.set_device(local_rank)
        device_name = f"cuda:{local_rank}"
        backend = "nccl"
    else:
        device_name = "cpu"
        backend = "gloo"
        # Processes on one machine share its cores: without this each would start one thread
        # per core and they would slow each other down.
        local_size = int(os.environ.get("LOCAL_WORLD_SIZE", world_size))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_size))
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=_TIMEOUT)
    return DistributedContext(rank, local_rank, world_size), device_name


def teardown(context: DistributedContext) -> None:
    if context.enabled and dist.is_initialized():
        dist.destroy_process_group()


def end_process(code: int) -> None:
    """End a torchrun worker process now, after its run finished and :func:`teardown` ran.

    Why not a normal exit: at interpreter finalization gloo's worker threads are destroyed while
    still joinable, and about one CPU run in ten aborted there ("terminate called without an
    active exception", SIGABRT) after training had written everything; torchrun then reports the
    whole run as failed. ``os._exit`` skips that finalization (streams are flushed first; the
    trainer has already closed its files).
    """
    import sys

    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def all_gather_objects(context: DistributedContext, value) -> list:
    """``value`` from every rank, in rank order (just ``[value]`` without DDP)."""
    if not context.enabled:
        return [value]
    gathered = [None] * context.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def all_agree(context: DistributedContext, flag: bool) -> bool:
    """True on every rank if ``flag`` is True on any rank (e.g. a cancel seen by one rank)."""
    if not context.enabled:
        return flag
    tensor = torch.tensor([1.0 if flag else 0.0])
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def shard_report(context: DistributedContext, seen: dict | None) -> dict | None:
    """Under DDP: how many patches each rank used this epoch and how many ranks shared.

    ``seen`` holds this rank's index arrays per domain (``{"x": [...], "y": [...]}``), or is
    ``None`` outside DDP (then so is the report).
    """
    if seen is None:
        return None
    report = {}
    for domain in ("x", "y"):
        mine = np.unique(np.concatenate(seen[domain])) if seen[domain] else np.zeros(0, int)
        gathered = all_gather_objects(context, mine.tolist())
        counts = np.bincount(np.concatenate([np.asarray(g, int) for g in gathered]))
        report[domain] = {"per_rank": [len(g) for g in gathered], "shared": int((counts > 1).sum())}
    return report
