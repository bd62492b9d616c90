"""Training across local processes: a params set's `processes` > 1 runs the training function in that many
spawned processes that form one torch.distributed group (gloo on the CPU; on GPUs one process per device,
nccl, DeepSpeed when configured), through torchrun's own launcher API.

The stage itself stays one process: it reads its inputs, writes its tables, folder and metrics once, and only
the Trainer's work fans out, so `dvc repro` runs the same command on one core or eight GPUs. A process that
is already inside a launcher's group (WORLD_SIZE set, e.g. under `deepspeed` or `torchrun` on several nodes)
trains where it is. With `processes: 1` and DeepSpeed, the stage's process forms a group of one itself.
`processes: 0` means one process per visible GPU (1 on a CPU), so one params file serves any GPU node.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from tracemill.train.common import TrainError


def world_size() -> int:
    """Ranks in this process's torch.distributed group, as its launcher set them (1 outside a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def resolve_processes(processes: int, visible_gpus: int) -> int:
    """The ranks a params set's `processes` asks for: 0 is one per visible GPU, and 1 where none is visible
    (a CPU run keeps every core in one process unless told otherwise)."""
    return processes or max(1, visible_gpus)


def visible_gpus(device: str) -> int:
    """CUDA devices this process may use for `device` (CUDA_VISIBLE_DEVICES applied); 0 for the CPU."""
    if device == "cpu":
        return 0
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def train_in_processes(
    fn: Callable[..., tuple[Any, list[Any]]], args: Sequence[Any], callbacks: Sequence[Any], processes: int, device: str
) -> Any:
    """fn(*args, callbacks) on `processes` ranks (in_processes); fn returns (result, its callbacks). The caller's
    callbacks take the state their copies gathered in rank 0 (a loss curve, say); rank 0's result is returned."""
    result, trained = in_processes(fn, (*args, list(callbacks)), processes, device)
    for mine, theirs in zip(callbacks, trained):
        if mine is not theirs:
            vars(mine).update(vars(theirs))
    return result


def in_processes(fn: Callable[..., Any], args: Sequence[Any], processes: int, device: str) -> Any:
    """fn(*args) on `processes` ranks of one group (0: one per visible GPU); rank 0's result. fn and args
    must pickle (spawn)."""
    processes = resolve_processes(processes, visible_gpus(device))
    if device == "cpu":
        retain_freed_memory()
    if world_size() > 1:
        return fn(*args)
    if processes == 1:
        return _in_this_process(fn, args)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1,
        max_nodes=1,
        nproc_per_node=processes,
        run_id=f"tracemill-{uuid.uuid4().hex[:12]}",
        rdzv_backend="c10d",
        rdzv_endpoint="localhost:0",
        max_restarts=0,
        start_method="spawn",
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


# What torchrun sets in each rank; train/hf.py sets them for a group of one (join_single_rank_group).
LAUNCHER_VARIABLES = ("MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE")


def join_single_rank_group() -> None:
    """Make this process rank 0 of a torch.distributed group of one, as `torchrun --nproc_per_node 1` would.
    DeepSpeed builds its engine on a process group even on one device, and accelerate forms that group only
    from these variables (without them: "Default process group has not been initialized"). A process that a
    launcher started keeps what the launcher set."""
    if "WORLD_SIZE" in os.environ:
        return
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(_free_port()),
        RANK="0",
        LOCAL_RANK="0",
        WORLD_SIZE="1",
        LOCAL_WORLD_SIZE="1",
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _in_this_process(fn: Callable[..., Any], args: Sequence[Any]) -> Any:
    """fn(*args) here; a group of one that fn formed (join_single_rank_group) is left, and its variables
    removed, so the stage's process, and a later run in it, is outside any group again."""
    before = {k: os.environ.get(k) for k in LAUNCHER_VARIABLES}
    try:
        return fn(*args)
    finally:
        if before["WORLD_SIZE"] is None and "WORLD_SIZE" in os.environ:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            for key, value in before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


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
