"""Training across local processes: a params set's `processes` > 1 runs the training function in that many
spawned processes that form one torch.distributed group (gloo on the CPU; on GPUs one process per device,
nccl, DeepSpeed when configured), through torchrun's own launcher API.

The stage itself stays one process: it reads its inputs, writes its tables, folder and metrics once, and only
the Trainer's work fans out, so `dvc repro` runs the same command on one core or eight GPUs. A process that
is already inside a launcher's group (WORLD_SIZE set, e.g. under `deepspeed` or `torchrun` on several nodes)
trains where it is.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from tracemill.train.common import TrainError


def world_size() -> int:
    """Ranks in this process's torch.distributed group, as its launcher set them (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def train_in_processes(fn: Callable[..., tuple[Any, list[Any]]], args: Sequence[Any], callbacks: Sequence[Any],
                       processes: int, device: str) -> Any:
    """fn(*args, callbacks) on `processes` ranks (in_processes); fn returns (result, its callbacks). The caller's
    callbacks take the state their copies gathered in rank 0 (a loss curve, say); rank 0's result is returned."""
    result, trained = in_processes(fn, (*args, list(callbacks)), processes, device)
    for mine, theirs in zip(callbacks, trained):
        if mine is not theirs:
            vars(mine).update(vars(theirs))
    return result


def in_processes(fn: Callable[..., Any], args: Sequence[Any], processes: int, device: str) -> Any:
    """fn(*args) on `processes` ranks of one group; rank 0's result. fn and args must pickle (spawn)."""
    if device == "cpu":
        retain_freed_memory()
    if processes == 1 or world_size() > 1:
        return fn(*args)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=processes, run_id=f"tracemill-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, start_method="spawn",
    )
    try:
        results = elastic_launch(config, _rank)(fn, tuple(args), device)
    except ChildFailedError as exc:
        rank, failure = exc.get_first_failure()
        raise TrainError(
            f"training process {rank} of {processes} failed with exit code {failure.exitcode} — its error is "
            f"printed above; set train.*.processes to 1 to train in the stage's own process"
        ) from None
    return results[0]


def retain_freed_memory() -> None:
    """Let glibc's malloc keep the memory a training step frees for the next step. By default it serves
    large blocks (activations, gradients, logits) with fresh mappings and gives freed memory back to the
    kernel, so each step faults its working set in again page by page: on the SFT benchmark's epoch,
    510-860 thousand page faults and 1.6-1.8 s of system time, against about 80 thousand and 0.8 s. The
    mmap threshold goes to glibc's 64-bit ceiling and trimming off, so a process keeps its peak heap.
    Nothing to do off glibc. A setting of one process: each spawned rank makes it again."""
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from malloc.h
    mallopt(m_mmap_threshold, 32 << 20)  # HEAP_MAX_SIZE / 2: larger blocks are still mapped and unmapped
    mallopt(m_trim_threshold, 2**31 - 1)


def _rank(fn: Callable[..., Any], args: tuple[Any, ...], device: str) -> Any:
    import torch
    import torch.distributed as dist

    if device == "cpu":  # the cores are shared out: a rank with every core would contend with the others
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size()))
        retain_freed_memory()
    try:
        return fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()

