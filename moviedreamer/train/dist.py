"""Process-group set-up for every launcher, and for none.

- Under `torchrun`, the `deepspeed` launcher or a scheduler that sets RANK / WORLD_SIZE / MASTER_ADDR /
  MASTER_PORT (and LOCAL_RANK), those are used as they are.
- A plain `moviedreamer train ...` gets a world of one: RANK=0, WORLD_SIZE=1, LOCAL_RANK=0,
  MASTER_ADDR=127.0.0.1 and a free port — nobody has to export anything.
- The backend is NCCL when CUDA is present, gloo otherwise (`MOVIEDREAMER_DIST_BACKEND` overrides).

On CPU, DeepSpeed's communication backend JIT-compiles a shared-memory all-reduce op the first time it starts
(a long wait on a small CPU). That op only serves `inference_all_reduce` (tensor-parallel inference), never training,
so the harness skips building it unless `MOVIEDREAMER_DS_SHM=1`.
"""

from __future__ import annotations

import importlib
import os
import socket
from dataclasses import dataclass

import torch
import torch.distributed as td

from moviedreamer.errors import UserError

LAUNCHER_VARS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
ENV_VARS = LAUNCHER_VARS + ("LOCAL_RANK", "LOCAL_WORLD_SIZE")  # what fill_single_process_env may set


@dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: str  # "cpu" or "cuda:N"
    launched: bool  # True when a launcher set the environment

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fill_single_process_env(environ=os.environ) -> bool:
    """Give a launcher-less run the variables `env://` rendezvous needs. Returns True when a launcher set them."""
    launched = "RANK" in environ and "WORLD_SIZE" in environ
    if not launched:
        environ["RANK"] = "0"
        environ["WORLD_SIZE"] = "1"
        environ["LOCAL_RANK"] = "0"
        environ["LOCAL_WORLD_SIZE"] = "1"
    environ.setdefault("LOCAL_RANK", environ.get("OMPI_COMM_WORLD_LOCAL_RANK", "0"))
    environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in environ:
        if launched and int(environ["WORLD_SIZE"]) > 1:
            raise UserError("MASTER_PORT is not set although WORLD_SIZE > 1: start several processes with torchrun or the deepspeed launcher")
        environ["MASTER_PORT"] = str(free_port())
    return launched


def init_distributed() -> DistInfo:
    """Set up torch.distributed through DeepSpeed and return who this process is."""
    launched = fill_single_process_env()
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    cuda = torch.cuda.is_available()
    backend = os.environ.get("MOVIEDREAMER_DIST_BACKEND") or ("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(local)
    else:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")  # say it, rather than have DeepSpeed warn that it guessed
        _skip_cpu_shm_op()
    # deepspeed is heavy: loaded only when training
    import deepspeed

    if not torch.distributed.is_initialized():
        deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)
    return DistInfo(rank, world, local, backend, f"cuda:{local}" if cuda else "cpu", launched)


def _skip_cpu_shm_op() -> None:
    if os.environ.get("MOVIEDREAMER_DS_SHM") == "1":
        return
    try:
        # `import deepspeed.comm.torch` would bind the name `torch` re-exported by deepspeed.comm, hence importlib
        ds_comm_torch = importlib.import_module("deepspeed.comm.torch")
    except ImportError:
        return
    if hasattr(ds_comm_torch, "build_shm_op"):
        ds_comm_torch.build_shm_op = lambda: None


def barrier() -> None:
    if td.is_available() and td.is_initialized():
        td.barrier()


def all_reduce_mean(values: dict[str, float], world_size: int) -> dict[str, float]:
    """Average scalar metrics over ranks (one small all-reduce)."""
    if world_size == 1 or not values:
        return dict(values)
    keys = sorted(values)
    device = "cuda" if td.get_backend() == "nccl" else "cpu"
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    td.all_reduce(t)
    return {k: v / world_size for k, v in zip(keys, t.tolist())}


def destroy() -> None:
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()
