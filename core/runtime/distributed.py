"""One process or several under ``torchrun``: PyTorch's own process group, no home-made launcher.

``init_distributed`` joins the group torchrun describes in the environment (gloo on CPUs, NCCL where
each rank has a CUDA device) and pins each rank to its local GPU; without torchrun it does nothing and
``dist_info`` reports rank 0 of 1.
"""

from __future__ import annotations

import os

import torch


def is_distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def dist_info() -> tuple[int, int]:
    """(rank, world size): (0, 1) outside a process group."""
    import torch.distributed as dist

    if is_distributed():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_distributed() -> None:
    """Join torchrun's process group when ``WORLD_SIZE > 1`` (once); a no-op otherwise."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or is_distributed():
        return
    import torch.distributed as dist

    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")


def all_gather(value: object) -> list:
    """Every rank's ``value`` (picklable), in rank order; ``[value]`` outside a process group."""
    if not is_distributed():
        return [value]
    import torch.distributed as dist

    values: list = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def barrier() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.barrier()


def close_distributed() -> None:
    if is_distributed():
        import torch.distributed as dist

        dist.destroy_process_group()
