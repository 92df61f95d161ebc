"""Multi-process data-parallel training under ``torchrun`` (DistributedDataParallel).

torchrun sets RANK / WORLD_SIZE / MASTER_ADDR; on CPU the gloo backend is used, on CUDA nccl.
Each process takes every world-th sample of each global batch; rank 0 evaluates and writes.
"""

from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass
class Distributed:
    rank: int = 0
    world: int = 1

    @classmethod
    def from_environment(cls, device: str) -> Distributed:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.startswith("cuda") else "gloo")
        return cls(dist.get_rank(), dist.get_world_size())

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world == 1:
            return model
        return nn.parallel.DistributedDataParallel(model)

    def average(self, stats: dict[str, float]) -> dict[str, float]:
        if self.world == 1:
            return stats
        keys = sorted(stats)
        values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return {k: float(v) / self.world for k, v in zip(keys, values)}

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()
