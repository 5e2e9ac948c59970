"""Process group, devices and the `apply_*` functions that turn a pure model into a training one.

torchtitan's order (github.com/pytorch/torchtitan): activation checkpointing → compile → FSDP2,
each applied from outside to the model's repeated blocks. The primary distributed path is PyTorch
FSDP2 (`torch.distributed.fsdp.fully_shard`): it ships with torch (no extra dependency), runs under
torchrun with NCCL on GPUs and gloo on CPUs, shards parameters, gradients and optimizer state,
offers CPU offload, and its `reshard_after_forward=False` is the ZeRO-2 layout of the authors'
DeepSpeed training (gradients and optimizer state sharded, parameters kept gathered between forward
and backward). One process, one node of 8 and several nodes run the same code; only torchrun's
environment differs.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from promptcot_mamba.train.recipe import RunSpec

log = logging.getLogger(__name__)


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def init_distributed(run: RunSpec) -> Dist:
    """Read torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK); start the process group if needed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want = run.device
    if want == "auto":
        want = "cuda" if torch.cuda.is_available() else "cpu"
    if want.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"run.device {run.device!r}: no CUDA device is available")
        device = torch.device(f"cuda:{local}") if want == "cuda" else torch.device(want)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    started = False
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=60))
        started = True
    return Dist(rank=rank, world=world, local_rank=local, device=device, initialized_here=started)


def shutdown(d: Dist) -> None:
    if d.initialized_here and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.distributed:
        dist.barrier()


def all_reduce_sum(t: torch.Tensor, d: Dist) -> torch.Tensor:
    if d.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def resolve_precision(run: RunSpec, device: torch.device) -> torch.dtype:
    if run.precision == "bf16":
        return torch.bfloat16
    if run.precision == "fp32":
        return torch.float32
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ----------------------------------------------------------------------------------------------
# apply_* functions

def apply_activation_checkpointing(blocks: nn.ModuleList) -> None:
    """Recompute each block's activations in backward (non-reentrant torch.utils.checkpoint).

    The block's `forward` is replaced on the instance, so parameter names and state-dict keys stay
    those of the pure model (an export needs no renaming), and FSDP2's hooks on the block still
    gather its parameters before the recomputation runs.
    """
    for block in blocks:
        if getattr(block, "_pcm_checkpointed", False):
            continue
        inner = block.forward

        @functools.wraps(inner)
        def forward(*args, _inner=inner, **kwargs):
            if not torch.is_grad_enabled():
                return _inner(*args, **kwargs)
            return checkpoint(_inner, *args, use_reentrant=False, preserve_rng_state=False, **kwargs)

        block.forward = forward
        block._pcm_checkpointed = True


def apply_compile(blocks: nn.ModuleList) -> None:
    for block in blocks:
        block.compile()


def apply_fsdp(model: nn.Module, blocks: nn.ModuleList, *, param_dtype: torch.dtype,
               reshard_after_forward: bool = False, cpu_offload: bool = False) -> nn.Module:
    """FSDP2: one shard unit per block plus the root (embeddings, final norm, head).

    MixedPrecisionPolicy keeps fp32 master weights sharded and casts to `param_dtype` for compute;
    gradients are reduced in fp32.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    kw = {"mp_policy": mp}
    if cpu_offload:
        kw["offload_policy"] = CPUOffloadPolicy()
    for block in blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward, **kw)
    fully_shard(model, reshard_after_forward=reshard_after_forward, **kw)
    return model


@contextlib.contextmanager
def fsdp_view_warning_ignored() -> Iterator[None]:
    """Around a forward of an FSDP2 model: FSDP2 warns when a wrapped module returns a view tensor
    (in-place writes to it would be lost). A block also returns its final conv window and SSM state
    as views, which training never writes to, so the warning does not apply. The filter lives only
    for the `with` body; the process's warning filters are restored after it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
        yield


def apply_ddp(model: nn.Module, d: Dist) -> nn.Module:
    from torch.nn.parallel import DistributedDataParallel

    ids = [d.device.index] if d.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids)


def grad_norm_and_clip(model: nn.Module, max_norm: float) -> torch.Tensor:
    """Total gradient norm (before clipping) as a plain local tensor; clips in place when max_norm > 0.

    With FSDP2 the gradients are DTensor shards and torch computes the global norm across ranks.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"),
                                         foreach=True)
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm


def full_state_dict(model: nn.Module, d: Dist) -> dict[str, torch.Tensor] | None:
    """The full (unsharded) model state dict on the CPU of rank 0; None on other ranks."""
    if not d.distributed:
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return sd if d.is_main else None


def peak_flops_guess(device: torch.device) -> float | None:
    """Dense bf16 peak per device, for MFU; None where unknown (CPUs)."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    table = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}
    for key, value in table.items():
        if key in name:
            return value
    return None
