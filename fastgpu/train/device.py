"""A rank's device, CPU threads and seeds."""

import os
import random

import numpy as np
import torch

from fastgpu.errors import FastGPUError
from fastgpu.train.distributed import DistEnv


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
    # set both ways: an earlier point of an in-process sweep (hydra/launcher=basic) must not leave it on. Only when it
    # changes: the call imports torch._inductor's config and with it torch._dynamo, ~3 s of every process's start-up
    if deterministic or torch.are_deterministic_algorithms_enabled():
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if deterministic:
        torch.backends.cudnn.benchmark = False
