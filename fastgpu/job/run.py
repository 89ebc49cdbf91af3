"""One rank's run, top to bottom: build -> resume -> fit -> measure -> checkpoint -> finalize -> metrics.json."""

import math
import os
import platform
import socket
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch

import fastgpu
from fastgpu.components import component_name
from fastgpu.compress.finalize import compress_and_deploy
from fastgpu.compress.methods import training_hook
from fastgpu.config import compile_mode, deploys
from fastgpu.errors import BatchLargerThanData, FastGPUError
from fastgpu.job.recorder import Recorder
from fastgpu.measure.compiled import compile_record, start_compile_record
from fastgpu.measure.flops import counted_flops_of, mfu_figures
from fastgpu.measure.memory import memory_limit, peak_memory, reset_peak_memory
from fastgpu.measure.meter import RunMeter
from fastgpu.measure.monitor import ResourceMonitor
from fastgpu.measure.profiling import StepProfiler
from fastgpu.measure.reduce import all_reduce
from fastgpu.results.rundirs import POINT_START_ENV
from fastgpu.results.store import write_metrics
from fastgpu.train.checkpoint import Progress
from fastgpu.train.device import resolve_device, seed_everything, set_cpu_threads
from fastgpu.train.distributed import DistEnv, init_process_group, rank_hosts, shutdown
from fastgpu.train.loop import fit
from fastgpu.train.optim import build_optimizer, build_scheduler, optimizer_impl
from fastgpu.train.parallel import no_gradient_sync, rank_param_max_diff, wrap_model
from fastgpu.train.precision import build_precision, convert_for_precision
from fastgpu.train.signals import PreemptionWatch
from fastgpu.train.task import Task, batches_for, build_task
from fastgpu.zoo.data import build_data
from fastgpu.zoo.models import build_model, model_stats


@dataclass
class Job:
    """Everything the training loop works with, built once from the config."""

    cfg: object
    task: Task
    env: DistEnv
    device: torch.device
    precision: object
    data: object
    model: torch.nn.Module  # wrapped (DDP/FSDP) where that applies
    forward: object  # the model, compiled where compile=true
    parallel: str  # what the model is really wrapped in
    optimizer: torch.optim.Optimizer
    scheduler: object
    pruner: object
    memory_format: torch.memory_format
    total_steps: int  # optimizer steps
    steps_per_epoch: int  # optimizer steps per epoch (loader batches / trainer.accumulate_grad_batches)
    epochs: int
    metrics: object  # the task's evaluation metrics (fastgpu/measure/quality.py)
    stats: dict  # parameter count and size of the bare model

    @property
    def scaler(self):
        return self.precision.scaler

    def no_sync(self):
        """The backward of an inner accumulation step leaves gradients local (DDP, FSDP)."""
        return no_gradient_sync(self.model)

    def to_device(self, batch):
        x = batch[0].to(self.device, non_blocking=True, memory_format=self.memory_format)
        return x, batch[1].to(self.device, non_blocking=True)


_RUNS_IN_THIS_PROCESS = 0  # an in-process sweep (hydra/launcher=basic) trains several: the report flags it


def run(cfg, out_dir: Path, env: DistEnv) -> dict:
    global _RUNS_IN_THIS_PROCESS
    runs_before, _RUNS_IN_THIS_PROCESS = _RUNS_IN_THIS_PROCESS, _RUNS_IN_THIS_PROCESS + 1
    recorder = Recorder(cfg, out_dir, env.is_main)
    recorder.start()  # W&B's logger starts in a process of its own while the job builds
    try:
        return _build_and_train(cfg, out_dir, env, recorder, runs_before)
    finally:  # finished, failed or stopped: W&B logs what was recorded and finishes
        recorder.close_logger()


def _build_and_train(cfg, out_dir: Path, env: DistEnv, recorder: Recorder, runs_before: int) -> dict:
    job = build(cfg, env)
    recorder.startup.mark("built")
    tcfg = cfg.trainer
    monitor = ResourceMonitor(job.device, tcfg.monitor_interval_s)
    # the meter and the profiler count loader batches; warmup_steps and profile_steps are optimizer steps, like
    # max_steps and log_every_n_steps
    batches = tcfg.accumulate_grad_batches
    warmup_steps, profiler = tcfg.warmup_steps * batches, None
    if tcfg.profile and env.is_main:  # the profiled steps are warm-up for the meter: its overhead is never timed
        profiler = StepProfiler(out_dir, job.device, warmup_steps, tcfg.profile_steps * batches)
        warmup_steps = StepProfiler.steps_taken(warmup_steps, tcfg.profile_steps * batches)
    meter = RunMeter(job.device, warmup_steps, monitor, tcfg.sync_debug, profiler=profiler, batches_per_step=batches)
    p = recorder.open(job, meter, monitor)
    reset_peak_memory(job.device)
    monitor.start()
    started_at = utc_now()
    try:
        with PreemptionWatch() as preemption, memory_limit(tcfg.memory_limit_mb, job.device):
            fit(job, p, meter, recorder, preemption)
    finally:
        meter.close()
        if profiler is not None:
            profiler.close()
    # where and when it trained: the report flags points timed on one host at the same time
    when = {"host": socket.gethostname(), "hosts": rank_hosts(), "started_at": started_at, "ended_at": utc_now()}
    recorder.record_samples(p.step)
    resources = monitor.stop()
    measured = meter.summary(env.world_size, all_reduce, monitor.samples, cfg.trainer.log_every_n_steps)
    if job.data.skipped is not None:  # every rank's count of unreadable samples skipped (data.on_corrupt=skip)
        measured["skipped_samples"] = int(all_reduce([job.data.skipped_samples()])[0])
    metrics = summarize(job, p, {**when, **measured, "runs_before_in_process": runs_before})
    metrics.update(recorder.startup.figures(fresh_process=runs_before == 0))
    metrics.update(compile_record(compile_mode(cfg)))
    if job.task.unit == "tokens":  # the same figure by the name language-model tables use
        metrics["tokens_per_s"] = metrics["throughput"]
    # counted after training on the model built afresh on the meta device: nothing on the way to the first step
    flops, flops_unavailable = (None, None)
    if env.is_main:
        flops, flops_unavailable = counted_flops_of(cfg.model, *example_of(job))
    metrics.update(
        mfu_figures(
            flops,
            job.task.unit,
            metrics["throughput"],
            job.device.type,
            metrics["device_name"],
            job.precision.name,
            env.world_size,
            flops_unavailable,
        )
    )
    if profiler is not None:
        metrics["profile_trace"] = str(profiler.path.relative_to(out_dir)) if profiler.path.exists() else None
        metrics["profile_top_ops"] = profiler.top_ops
    metrics["name"] = recorder.rename(job)  # by what ran: a precision fallback, an unwrapped ddp request
    metrics.update({k: v for k, v in resources.items() if k in ("monitor_samples", "max_gpu_mem_used_mb")})
    if job.pruner is not None:
        job.pruner.finish()
    model_state = recorder.checkpoint(job, meter, complete=True)
    shutdown(env)
    if env.is_main:
        write_metrics(out_dir, metrics)  # the training results are safe before compression and export start
        if deploys(cfg):
            metrics.update(compress_and_deploy(cfg, model_state, job.device, job.precision, p.val, out_dir))
        else:
            metrics.update(compression="none", deploy_note=NOT_DEPLOYED)
        recorder.finish(metrics)
    return metrics


NOT_DEPLOYED = "not measured: deploy=true exports the model and times inference (auto: when compressing)"


def build(cfg, env: DistEnv) -> Job:
    tcfg = cfg.trainer
    task = build_task(cfg.task)
    if cfg.channels_last and task.unit == "tokens":
        raise FastGPUError("channels_last=true is a layout of 4-D image batches; a language model's are token ids")
    device = resolve_device(tcfg.device, env)
    precision = build_precision(cfg.precision, device)
    init_process_group(env, device, cfg.parallel.backend)
    set_cpu_threads(tcfg.num_threads)
    seed_everything(tcfg.seed, tcfg.deterministic)
    torch.backends.cudnn.benchmark = cudnn_benchmark(tcfg)
    data = batches_for(task, build_data(cfg.data, tcfg.seed, env.rank, env.world_size, device))
    bare = build_model(cfg.model)
    stats = model_stats(bare)
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    bare = bare.to(device, memory_format=torch.channels_last) if cfg.channels_last else bare.to(device)
    if hasattr(bare, "check_device"):  # a model that knows what it needs of the device (GPT: its attention kernel)
        bare.check_device(device, precision.autocast_dtype)
    bare = convert_for_precision(precision, bare)
    model, parallel = wrap_model(bare, cfg.parallel, device)
    accumulate = tcfg.accumulate_grad_batches
    batches, stream = loader_length(data.train, tcfg.max_steps)
    steps_per_epoch = batches // accumulate
    if steps_per_epoch == 0:
        raise BatchLargerThanData(
            f"data.batch_size={cfg.data.batch_size} x trainer.accumulate_grad_batches={accumulate} is larger than "
            "the training set on each rank; lower either"
        )
    total_steps = tcfg.max_steps or steps_per_epoch * tcfg.epochs
    if cfg.compression.name == "prune" and cfg.compression.schedule == "gradual" and parallel == "fsdp":
        raise FastGPUError(
            "gradual pruning works with parallel=none or ddp, not fsdp; use compression.schedule=oneshot"
        )
    optimizer = build_optimizer(cfg.optimizer, model.parameters())
    if compile_mode(cfg):
        start_compile_record()
    return Job(
        cfg=cfg,
        task=task,
        env=env,
        device=device,
        precision=precision,
        data=data,
        model=model,
        parallel=parallel,
        forward=torch.compile(model, mode=compile_mode(cfg)) if compile_mode(cfg) else model,
        optimizer=optimizer,
        scheduler=build_scheduler(cfg.scheduler, optimizer, total_steps),  # None: constant lr
        pruner=training_hook(cfg.compression, bare, total_steps),  # None unless gradual pruning
        memory_format=memory_format,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        # a stream is passed over again until max_steps (each pass, however short, an epoch)
        epochs=total_steps if stream else math.ceil(total_steps / steps_per_epoch),
        metrics=task.metrics(device),
        stats=stats,
    )


def loader_length(loader, max_steps) -> tuple:
    """(batches per epoch, whether the data is a stream without a length): a stream (an IterableDataset) counts as
    trainer.max_steps batches, which it may end before."""
    try:
        return len(loader), False
    except TypeError:
        if max_steps is None:
            raise FastGPUError(
                "the training data is a stream without a length (an IterableDataset); set trainer.max_steps"
            ) from None
        return max_steps, True


def example_of(job: Job) -> tuple:
    """(one validation sample's input, as a batch of 2, and the units it holds): for counting FLOPs."""
    x, y = next(iter(job.data.val))
    return x[:2], job.task.units(y[:2]) / 2


def cudnn_benchmark(tcfg) -> bool:
    """trainer.cudnn_benchmark, where null means on unless the run must be deterministic."""
    if tcfg.cudnn_benchmark is None:
        return not tcfg.deterministic
    return bool(tcfg.cudnn_benchmark)


def summarize(job: Job, p: Progress, measured: dict) -> dict:
    """metrics.json: the meter's figures, quality, memory, model and the setting that ran."""
    env, cfg = job.env, job.cfg
    # time to target: training step time until the first evaluation at the target, warm-up/compilation
    # included, evaluation excluded; the slowest rank's
    (time_to_target,) = all_reduce([p.time_to_target or 0.0], "max")
    memory = peak_memory(job.device)
    memory = dict(zip(memory, all_reduce(list(memory.values()), op="max")))
    val = p.val
    metrics = {
        "status": "ok",
        "name": cfg.logger.wandb.name,
        **measured,
        "time_to_target_s": time_to_target if p.time_to_target is not None else None,
        "steps_to_target": p.steps_to_target,
        **target_of(job),
        "val_loss": val.get("loss"),
        **{k: val.get(k) for k in ("accuracy", "precision", "recall", "f1")},
        **{k: val[k] for k in ("perplexity",) if k in val},
        "best_accuracy": p.best_accuracy,
        **memory,
        **job.stats,
        "task": job.task.name,
        "throughput_unit": job.task.unit,
        "steps": p.step,
        "steps_per_epoch": job.steps_per_epoch,
        "epochs": p.epoch + 1,
        "data": component_name(cfg.data),
        "data_loader": cfg.data.loader,
        "batch_size": cfg.data.batch_size,
        "global_batch_size": cfg.data.batch_size * env.world_size * cfg.trainer.accumulate_grad_batches,
        "accumulate_grad_batches": cfg.trainer.accumulate_grad_batches,
        "world_size": env.world_size,
        "device": job.device.type,
        "device_name": device_name(job.device),
        "precision_mode": job.precision.name,
        "compile": bool(cfg.compile),
        "compile_mode": compile_mode(cfg),
        "optimizer_impl": optimizer_impl(job.optimizer),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "activation_checkpointing": bool(cfg.model.get("activation_checkpointing", False)),
        "channels_last": bool(cfg.channels_last),
        "parallel": job.parallel,
        "parallel_requested": cfg.parallel.strategy,
        "wandb_run_id": p.wandb_id,
        # a process forked after CUDA was asked anything cannot use CUDA (fastgpu/sweep/isolation/forks.py)
        "bad_fork": torch.cuda._is_in_bad_fork(),
        "point_start": os.environ.get(POINT_START_ENV),  # how a sweep point's process started (None: not a point)
        "torch_version": torch.__version__,
        "fastgpu_version": fastgpu.__version__,
    }
    if job.parallel == "ddp":
        metrics["rank_param_max_diff"] = rank_param_max_diff(job.model)
    return metrics


def target_of(job: Job) -> dict:
    """What time-to-target timed: an accuracy, or a language model's perplexity (left out, with why, when unset)."""
    if job.task.unit != "tokens":
        return {"target_accuracy": job.cfg.trainer.target_accuracy}
    target = job.cfg.trainer.get("target_perplexity")
    if target is None:
        return {"target_perplexity": None, "time_to_target_note": "not timed: set trainer.target_perplexity"}
    return {"target_perplexity": target}


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
