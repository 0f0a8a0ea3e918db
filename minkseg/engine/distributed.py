"""Multi-process training through torchrun: process-group setup, reductions, and the self-relaunch.

The train stage is an ordinary script; with ``base.num_gpus > 1`` it re-executes itself under torchrun, and
each copy calls :func:`init_from_env` to join the group torchrun describes in its environment. Every helper
here degrades to a no-op in a single process, so the engine has one code path for 1 and N processes.
Metrics are reduced as sums (confusion matrices, score histograms), which all-reduce exactly.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Sequence

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["DistInfo", "current", "under_torchrun", "init_from_env", "shutdown", "all_reduce_sum",
           "all_reduce_array", "all_gather_object", "barrier", "torchrun_command", "relaunch_under_torchrun",
           "relaunch_from_params"]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> DistInfo:
    """The running job's layout; a single process when no process group is initialised."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistInfo()


def under_torchrun() -> bool:
    """True inside a process started by torchrun (it exports these variables to every worker)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ and "RANK" in os.environ


def init_from_env(device_type: str, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group described by torchrun's environment (gloo on CPU, nccl on CUDA).

    Outside torchrun, or with WORLD_SIZE 1, nothing is initialised and a single-process DistInfo is returned.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    if dist.is_initialized():
        return current()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    backend = "nccl" if device_type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local_rank)


def shutdown() -> None:
    """Leave the process group (if any)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _reduce_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over all ranks (a new tensor on the tensor's device); identity in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    work = tensor.detach().to(_reduce_device()).clone()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    return work.to(tensor.device)


def all_reduce_array(array: np.ndarray) -> np.ndarray:
    """Sum a numpy array (confusion matrix, histogram) over all ranks; exact for integer arrays."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return array
    return all_reduce_sum(torch.from_numpy(np.ascontiguousarray(array))).numpy()


def all_gather_object(obj: Any) -> list[Any]:
    """Collect one picklable object per rank, in rank order; ``[obj]`` in a single process."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every rank; no-op in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def torchrun_command(script_argv: Sequence[str], nproc_per_node: int, *, nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str = "127.0.0.1:29500", python: str = sys.executable) -> list[str]:
    """The command line that runs ``script_argv`` (script path + its arguments) under torchrun.

    One node uses torchrun's --standalone mode (a private rendezvous on a free local port); several nodes use
    static rendezvous at ``rdzv_endpoint`` (node 0's host:port), with this node's ``node_rank``.
    """
    if nproc_per_node < 1 or nnodes < 1 or not 0 <= node_rank < nnodes:
        raise ValueError(f"invalid layout: nproc_per_node={nproc_per_node} nnodes={nnodes} node_rank={node_rank}")
    command = [python, "-m", "torch.distributed.run", f"--nproc-per-node={nproc_per_node}"]
    if nnodes == 1:
        command.append("--standalone")
    else:
        host, _, port = rdzv_endpoint.rpartition(":")
        command += [f"--nnodes={nnodes}", f"--node-rank={node_rank}", f"--master-addr={host}",
                    f"--master-port={port}"]
    return command + list(script_argv)


def relaunch_under_torchrun(nproc_per_node: int, *, nnodes: int = 1, node_rank: int = 0,
                            rdzv_endpoint: str = "127.0.0.1:29500", argv: Sequence[str] | None = None) -> None:
    """Replace this process by torchrun running the same script, when more than one process is asked for.

    Returns normally (doing nothing) for a single process or when already under torchrun; otherwise it does not
    return. exec keeps the PID, so a signal DVC sends to the stage reaches torchrun, which forwards it.
    """
    if under_torchrun() or nproc_per_node * nnodes <= 1:
        return
    script_argv = list(sys.argv if argv is None else argv)
    command = torchrun_command(script_argv, nproc_per_node, nnodes=nnodes, node_rank=node_rank,
                               rdzv_endpoint=rdzv_endpoint)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(command[0], command)


def relaunch_from_params(base: Any, argv: Sequence[str] | None = None) -> None:
    """:func:`relaunch_under_torchrun` with the layout of ``params.base`` (num_gpus per node, num_nodes, ...).

    On CUDA, asking for more processes than visible GPUs is an error naming the param; on CPU each process is a
    gloo worker (useful for testing the DDP path, rarely faster).
    """
    from minkseg.errors import EngineError

    wants_cuda = base.device == "cuda" or (base.device == "auto" and torch.cuda.is_available())
    if wants_cuda and base.num_gpus > 1 and not under_torchrun():
        visible = torch.cuda.device_count()
        if base.num_gpus > visible:
            raise EngineError(f"base.num_gpus is {base.num_gpus} but only {visible} CUDA device(s) are visible; "
                              f"lower base.num_gpus or check CUDA_VISIBLE_DEVICES")
    relaunch_under_torchrun(base.num_gpus, nnodes=base.num_nodes, node_rank=base.node_rank,
                            rdzv_endpoint=base.rdzv_endpoint, argv=argv)
