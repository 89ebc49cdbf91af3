"""Slurm through submitit: FastGPU's Hydra launcher (hydra-submitit-launcher's, reporting as it goes;
registered as hydra_plugins.fastgpu_launcher.slurm_launcher.FastGPUSlurmLauncher)
and the GPUs-per-node -> tasks-per-node rule.

Each sweep point is one Slurm job. The submitting process prints each point's job id as it is
submitted and each point's status as it finishes (a failure at once, with its Slurm log), and writes
`<sweep dir>/jobs.json` so that `python -m fastgpu.sweep.status` and `python -m fastgpu.results.report` work from
the files alone — also after the submitting process is gone (the jobs keep running).
"""

import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from fastgpu.files import atomic_write

JOBS_FILE = "jobs.json"


def tasks_per_node(gpus_per_node, strategy: str, nproc_per_node) -> int:
    """One task (one DDP/FSDP rank) per GPU; without GPUs, parallel.nproc_per_node tasks; one for a plain run."""
    if strategy == "none":
        return 1
    gpus = int(gpus_per_node or 0)
    return gpus if gpus > 0 else int(nproc_per_node or 1)


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("fastgpu_tasks_per_node"):
        OmegaConf.register_new_resolver("fastgpu_tasks_per_node", tasks_per_node)


POLL_S = 2.0


def launch_and_report(launcher, job_overrides, initial_job_idx):
    """hydra-submitit-launcher's launch, printing job ids as points are submitted and statuses as they end."""
    import submitit

    executor, all_params = _prepare(launcher, job_overrides, initial_job_idx)
    sweep_dir = Path(str(launcher.config.hydra.sweep.dir))
    results, job_params = {}, []
    for params in all_params:
        done = _finished_point(launcher.config, sweep_dir / str(params[2]))
        if done is not None:  # a resumed sweep: this point is ok already, nothing to submit
            results[params[2]] = done
            print(f"[fastgpu] point {params[2]} is done (status ok), not resubmitted", flush=True)
        else:
            job_params.append(params)
    jobs = executor.map_array(launcher, *zip(*job_params)) if job_params else []
    earlier = json.loads((sweep_dir / JOBS_FILE).read_text()) if (sweep_dir / JOBS_FILE).exists() else {}
    records = {int(num): record for num, record in earlier.items()}
    for (overrides, _, num, _, _), job in zip(job_params, jobs):
        records[num] = {
            "job_id": job.job_id,
            "overrides": list(overrides),
            "dir": str(sweep_dir / str(num)),
            "stdout": str(job.paths.stdout),
            "stderr": str(job.paths.stderr),
        }
        print(f"[fastgpu] submitted point {num} as Slurm job {job.job_id}: {' '.join(overrides)}", flush=True)
    atomic_write(sweep_dir / JOBS_FILE, json.dumps({str(k): records[k] for k in sorted(records)}, indent=2) + "\n")

    pending = dict(zip([p[2] for p in job_params], jobs))
    while pending:
        for num, job in list(pending.items()):
            if not job.done():
                continue
            del pending[num]
            point_dir = Path(records[num]["dir"])
            try:
                results[num] = job.results()[0]
            except (submitit.core.utils.UncompletedJobError, submitit.core.utils.FailedJobError) as exc:
                results[num] = _record_lost_job(point_dir, job, exc)
            _report(num, job, point_dir)
        if pending:
            time.sleep(POLL_S)
    return [_as_job_return(results[p[2]], p[0]) for p in all_params]


def _finished_point(config, point_dir: Path):
    """A resumed sweep's point that already finished: its metrics, else None."""
    from fastgpu.results.store import point_metrics

    if config.get("resume") is not True:
        return None
    metrics = point_metrics(point_dir)
    return metrics if metrics.get("status") == "ok" else None


def _prepare(launcher, job_overrides, initial_job_idx):
    """The executor and per-job arguments exactly as hydra-submitit-launcher builds them."""
    import submitit
    from hydra.core.singleton import Singleton
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = dict(launcher.params)
    init_keys = {"max_num_timeout", "submitit_folder"}
    executor = submitit.AutoExecutor(
        cluster="slurm", folder=params["submitit_folder"], slurm_max_num_timeout=params["max_num_timeout"]
    )
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items() if k not in init_keys})
    Path(str(launcher.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
    job_params = [
        (
            list(overrides),
            "hydra.sweep.dir",
            initial_job_idx + i,
            f"job_id_for_{initial_job_idx + i}",
            Singleton.get_state(),
        )
        for i, overrides in enumerate(job_overrides)
    ]
    return executor, job_params


def _report(num, job, point_dir: Path) -> None:
    from fastgpu.results.store import point_metrics

    metrics = point_metrics(point_dir, missing={"status": "failed"})
    if metrics.get("status") == "ok":
        print(f"[fastgpu] point {num} (job {job.job_id}) ok", flush=True)
    else:
        print(
            f"[fastgpu] point {num} (job {job.job_id}) {metrics.get('status')}: {metrics.get('error', '')}; "
            f"log: {job.paths.stderr}",
            flush=True,
        )


def _record_lost_job(point_dir: Path, job, exc) -> dict:
    """A job that ended without a result (killed, out of memory, node failure): a failed point on record."""
    from fastgpu.errors import first_line
    from fastgpu.results.store import point_metrics, write_metrics

    reason = first_line(exc)
    record = {
        "status": "failed",
        "error_type": type(exc).__name__,
        "error": f"Slurm job {job.job_id} ended without a result ({reason[:200]}); see {job.paths.stderr}",
    }
    point_dir.mkdir(parents=True, exist_ok=True)
    earlier = point_metrics(point_dir)
    if earlier.get("status") in ("ok", "interrupted"):  # the run's own record (an interruption names its resume)
        return earlier
    write_metrics(point_dir, {**earlier, **record})
    return record


def _as_job_return(result, overrides):
    from hydra.core.utils import JobReturn, JobStatus

    if isinstance(result, JobReturn):
        return result
    completed = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)  # the failure is in the record, not raised
    completed.return_value = result
    return completed
