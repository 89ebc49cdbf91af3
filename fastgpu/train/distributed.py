"""Process groups: the rank layout set by FastGPU, torchrun or srun, rendezvous, teardown."""

import os
import socket
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist


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


def rank_hosts() -> str:
    """Every rank's hostname in rank order, comma-separated: where a multi-node job really ran."""
    host = socket.gethostname()
    if not dist.is_initialized():
        return host
    hosts = [None] * dist.get_world_size()
    dist.all_gather_object(hosts, host)
    return ",".join(hosts)
