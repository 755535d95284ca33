"""Distributed data-parallel training with ``torch.distributed``, launched by ``torchrun``.

``torchrun --nproc_per_node N -m shiftaddaug train ...`` starts N processes with ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK`` set; ``setup`` joins them into one process group (NCCL on GPUs, gloo on the CPU). Each process trains
on its shard of every epoch's batches; ``DistributedDataParallel`` averages the gradients. Choices (docs/method.md,
section 10):

- ``batch_size`` is per process; the global batch is ``batch_size * world`` and the learning rate scales with the
  number of processes, as NetAug's recipe does (0.025 per 128 images per GPU).
- A step's backward passes but the last run under ``no_sync``: one all-reduce per step, of the summed gradients.
  The last pass adds every parameter times zero to its loss, so that parameters the sampled sub-network leaves out
  (remaps, inactive kernels or depths) still report a (zero) gradient: no ``find_unused_parameters`` graph search.
- BatchNorm keeps per-process statistics during training (no SyncBatchNorm, which would drop the elastic layers'
  slicing); the running statistics are averaged across processes before every evaluation and checkpoint, and the
  BN recalibration of ShiftAddAug runs on each process's shard and is averaged the same way (NetAug's mean of
  per-batch statistics).
- Evaluation runs on each process's shard of the test set and its sums are reduced; only rank 0 prints, shows
  progress bars and writes the run folder.
"""
from __future__ import annotations

import os
import warnings
import zlib
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.nn as nn


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def reports() -> bool:
    """Whether this process speaks for the run: rank 0 of a ``torchrun`` launch, or a plain process."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(device: torch.device) -> World:
    """The process group of a ``torchrun`` launch (a plain launch: one process, nothing set up)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World()
    # channels_last gives a 1x1 kernel degenerate strides; DDP then copies its gradient into the bucket (correct)
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    world = World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))
    if not tdist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)
        tdist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world


def device_of(world: World, device: torch.device) -> torch.device:
    """Each process's GPU is its local rank's."""
    return torch.device("cuda", world.local_rank) if device.type == "cuda" and world.distributed else device


def teardown(world: World) -> None:
    if world.distributed and tdist.is_initialized():
        tdist.destroy_process_group()


def all_sum(world: World, *values: float) -> list[float]:
    """The sums of ``values`` over all processes."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    tdist.all_reduce(t)
    return t.tolist()


def all_sum_(world: World, tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` summed over all processes, in place (on the CPU for gloo)."""
    if world.distributed:
        t = tensor.detach().to(torch.float64 if tensor.is_floating_point() else torch.int64).cpu()
        tdist.all_reduce(t)
        tensor.copy_(t.to(tensor.device, tensor.dtype))
    return tensor


def check_same(world: World, value: str, what: str) -> None:
    """Stop if ``value`` differs between processes (they must all have drawn the same ``what``)."""
    if world.distributed:
        t = torch.tensor([zlib.crc32(value.encode())], dtype=torch.int64)
        low, high = t.clone(), t.clone()
        tdist.all_reduce(low, tdist.ReduceOp.MIN)
        tdist.all_reduce(high, tdist.ReduceOp.MAX)
        if low.item() != high.item():
            raise RuntimeError(f"the processes drew different {what}; they must share one seed and code path")


def average_bn_statistics(world: World, model: nn.Module) -> None:
    """Every BatchNorm's running mean and variance averaged over the processes (each saw its own batches)."""
    if not world.distributed:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
            for t in (m.running_mean, m.running_var):
                all_sum_(world, t).div_(world.size)


def wrap(world: World, model: nn.Module) -> nn.Module:
    """The model under ``DistributedDataParallel`` (the module itself for one process). Buffers are not
    broadcast at each forward: BatchNorm statistics stay per process until ``average_bn_statistics``."""
    if not world.distributed:
        return model
    ids = [model_device.index] if (model_device := next(model.parameters()).device).type == "cuda" else None
    with warnings.catch_warnings():  # its successor still syncs buffers at init; we want rank-local statistics
        warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
        return nn.parallel.DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)


@contextmanager
def accumulating(ddp: nn.Module, last: bool):
    """A backward pass that only accumulates gradients (``no_sync``), unless it is the step's ``last``."""
    with (nullcontext() if last or not isinstance(ddp, nn.parallel.DistributedDataParallel) else ddp.no_sync()):
        yield


def touch_all(ddp: nn.Module, loss: torch.Tensor) -> torch.Tensor:
    """``loss`` plus every parameter times zero: under DDP, parameters this pass does not use still get a (zero)
    gradient, so the all-reduce never waits for them."""
    if not isinstance(ddp, nn.parallel.DistributedDataParallel):
        return loss
    return loss + sum(p[(0,) * p.dim()] for p in ddp.parameters() if p.requires_grad) * 0.0
