"""A rank's process: its device, threads and seeds; process groups and model wrapping (one process, DDP or
FSDP2), launched by FastGPU, torchrun or srun."""

import contextlib
import os
import random
import socket
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from fastgpu.errors import FastGPUError, choose


@dataclass
class DistEnv:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def external_launcher_env() -> Optional[DistEnv]:
    """Rank layout set by torchrun or Slurm's srun, if this process was started by one."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env.get("LOCAL_RANK", 0)), int(env["WORLD_SIZE"]))
    tasks = int(env.get("SLURM_NTASKS", "1"))
    if tasks > 1 and "SLURM_PROCID" in env:
        if "SLURM_STEP_ID" not in env:  # the batch script itself: one process, whatever --ntasks asked for
            from fastgpu.errors import FastGPUError

            raise FastGPUError(
                f"this Slurm job has {tasks} tasks but FastGPU was started without srun, so one process would wait "
                f"for {tasks - 1} ranks that never start; run `srun python -m fastgpu ...` in the batch script, "
                "or submit with --ntasks=1"
            )
        return DistEnv(int(env["SLURM_PROCID"]), int(env.get("SLURM_LOCALID", 0)), tasks)
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_master_addr() -> str:
    """The first host of the job's node list (the rendezvous host for srun-launched ranks)."""
    import subprocess

    nodelist = os.environ["SLURM_JOB_NODELIST"]
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, check=True)
        return out.stdout.split()[0]
    except (OSError, subprocess.CalledProcessError):
        return nodelist.split(",")[0].split("[")[0]


def init_process_group(env: DistEnv, device: torch.device, backend: str) -> None:
    if not env.distributed:
        return
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if "MASTER_ADDR" not in os.environ:
        os.environ["MASTER_ADDR"] = slurm_master_addr() if "SLURM_JOB_NODELIST" in os.environ else "127.0.0.1"
    if "MASTER_PORT" not in os.environ:
        job_id = int(os.environ.get("SLURM_JOB_ID", "0"))
        os.environ["MASTER_PORT"] = str(20000 + job_id % 20000)
    dist.init_process_group(
        backend, rank=env.rank, world_size=env.world_size, device_id=device if device.type == "cuda" else None
    )


def shutdown(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.barrier()  # without it gloo ranks can abort at teardown
        dist.destroy_process_group()


def _ddp(model: nn.Module, device: torch.device) -> nn.Module:
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def _fsdp(model: nn.Module, device: torch.device) -> nn.Module:
    from torch.distributed.fsdp import fully_shard

    for child in model.children():
        if any(p.requires_grad for p in child.parameters()):
            fully_shard(child)
    return fully_shard(model)


STRATEGIES = {"none": None, "ddp": _ddp, "fsdp": _fsdp}


def wrap_model(model: nn.Module, strategy: str, device: torch.device) -> tuple:
    """(model, what it was really wrapped in): 'none' when there is no process group to wrap over (a
    one-process ddp/fsdp request trains the bare model, and is recorded as such)."""
    wrap = choose(STRATEGIES, "parallel.strategy", strategy)
    if wrap is None or not dist.is_initialized():
        return model, "none"
    return wrap(model, device), strategy


def no_gradient_sync(model):
    """A context in which backward leaves gradients local (the inner steps of gradient accumulation): DDP's
    no_sync, FSDP2's set_requires_gradient_sync(False); a bare model has nothing to sync."""
    if hasattr(model, "no_sync"):
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):
        return _fsdp_without_sync(model)
    return contextlib.nullcontext()


@contextlib.contextmanager
def _fsdp_without_sync(model):
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


@torch.no_grad()
def rank_param_max_diff(model: nn.Module) -> float:
    """Largest |parameter - rank 0's parameter| over all ranks: 0 when data parallelism kept replicas equal."""
    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    reference = flat.clone()
    dist.broadcast(reference, src=0)
    diff = (flat - reference).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff)


def rank_hosts() -> str:
    """Every rank's hostname in rank order, comma-separated: where a multi-node job really ran."""
    host = socket.gethostname()
    if not dist.is_initialized():
        return host
    hosts = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, host)
    return ",".join(hosts)


def all_reduce_tensor(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """A tensor reduced across ranks (a copy on the backend's device; the tensor itself when not distributed)."""
    if not dist.is_initialized():
        return tensor
    reduced = tensor.to("cuda" if dist.get_backend() == "nccl" else "cpu", copy=True)
    dist.all_reduce(reduced, op={"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX}[op])
    return reduced


def all_reduce(values: list, op: str = "sum") -> list:
    """Reduce a few Python numbers across ranks (at the end of a run, never per step)."""
    if not dist.is_initialized():
        return values
    return all_reduce_tensor(torch.tensor(values, dtype=torch.float64), op).tolist()


def resolve_device(name: str, env: DistEnv) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise FastGPUError(f"trainer.device={name} but no CUDA GPU is visible; use trainer.device=cpu or auto")
        if device.index is None:
            device = torch.device("cuda", env.local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise FastGPUError(f"trainer.device={name!r} is not supported; use auto, cpu, cuda or cuda:N")
    return device


_DEFAULT_THREADS = torch.get_num_threads()  # as the process started: an earlier in-process point may have changed it


def set_cpu_threads(num_threads) -> None:
    """trainer.num_threads, else Slurm's CPUs per task, else the process's default shared by the ranks on this node."""
    shared = max(1, _DEFAULT_THREADS // int(os.environ.get("LOCAL_WORLD_SIZE") or 1))
    torch.set_num_threads(num_threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0)) or shared)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    # set both ways: an earlier point of an in-process sweep (hydra/launcher=basic) must not leave it on
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        torch.backends.cudnn.benchmark = False
