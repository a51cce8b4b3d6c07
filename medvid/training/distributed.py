"""Distributed runs through torchrun (DDP): process-group set-up from the environment.

``torchrun --nproc_per_node N -m medvid train ...`` sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR
and MASTER_PORT; a plain ``medvid train`` runs as a single process. NCCL on CUDA, gloo on CPU.
Only rank 0 logs, writes TensorBoard, samples and saves checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def enable_tf32() -> None:
    """TF32 matmuls and convolutions on CUDA (10-bit mantissa products, fp32 accumulation): several
    times the fp32 rate on Ampere and later, well inside diffusion training's noise. bf16 autocast
    regions are unaffected. Called whenever a CUDA device is chosen."""
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device={name!r} but CUDA is not available; use --device cpu (or auto)")
        enable_tf32()
        return torch.device("cuda", local_rank if name == "cuda" else int(name.split(":")[1]))
    if name != "cpu":
        raise ValueError(f"device={name!r}: use auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group described by torchrun's environment variables (if WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    dev = resolve_device(device, local_rank)
    if world <= 1:
        return DistInfo(0, 1, 0, dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    here = False
    if not dist.is_initialized():
        for var in ("MASTER_ADDR", "MASTER_PORT"):
            if var not in os.environ:
                raise ValueError(f"WORLD_SIZE={world} but {var} is not set: launch with torchrun")
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world)
        here = True
    return DistInfo(rank, world, local_rank, dev, here)


def collective_device(info: DistInfo) -> torch.device:
    """Where a collective's tensors must live: NCCL reduces CUDA tensors only (a CPU tensor raises),
    gloo reduces CPU tensors (and copies CUDA ones itself). Every collective goes through this."""
    if info.distributed and dist.is_initialized() and dist.get_backend() != "nccl":
        return torch.device("cpu")
    return info.device


def all_true(flag: bool | torch.Tensor, info: DistInfo) -> bool:
    """True on every rank only if ``flag`` is true on every rank (e.g. "my loss is finite")."""
    if not info.distributed:
        return bool(flag)
    t = torch.as_tensor(flag, dtype=torch.float32).reshape(1).to(collective_device(info))
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item() > 0.5)


def sum_across(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Elementwise sum over ranks, on the collective's device (a copy; ``values`` is left alone)."""
    if not info.distributed:
        return values
    values = values.to(collective_device(info), copy=True)
    dist.all_reduce(values)
    return values


def max_across(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Elementwise maximum over ranks, on the collective's device (a copy)."""
    if not info.distributed:
        return values
    values = values.to(collective_device(info), copy=True)
    dist.all_reduce(values, op=dist.ReduceOp.MAX)
    return values


def mean_across(values: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Elementwise mean over ranks; ``values`` may live anywhere (moved to the collective's device)."""
    if not info.distributed:
        return values
    return sum_across(values, info) / info.world_size


def barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.initialised_here and dist.is_initialized():
        dist.destroy_process_group()
