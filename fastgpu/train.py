"""The training loop of one process (one rank). Read it top to bottom: build, train, evaluate, record.

The per-step path does what a hand-written loop does plus a device-side loss add, two CUDA events
(host clock marks on CPU) and a progress-bar tick; values leave the device only every
`log_every_n_steps` steps. What is measured, and over which steps, is fastgpu/meter.py's business.
"""

import contextlib
import math
import os
import platform
import random
import sys
from pathlib import Path

import numpy as np
import torch
from hydra.utils import instantiate
from tqdm import tqdm

import fastgpu
from fastgpu import metrics as M
from fastgpu.checkpoint import PreemptionWatch, Progress, config_fingerprint, load_state, resumable_state, save_state
from fastgpu.compression import training_hook
from fastgpu.data import build_data
from fastgpu.errors import DivergedError, FastGPUError, Interrupted
from fastgpu.finalize import compress_and_deploy
from fastgpu.meter import RunMeter
from fastgpu.models import build_model, model_stats
from fastgpu.monitor import ResourceMonitor
from fastgpu.parallel import DistEnv, all_reduce, init_process_group, rank_param_max_diff, shutdown, wrap_model
from fastgpu.precision import build_precision
from fastgpu.results import CHECKPOINT_FILE, HistoryWriter, truncate_history, write_metrics
from fastgpu.step import evaluate, train_step


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


def set_cpu_threads(num_threads) -> None:
    threads = num_threads or int(os.environ.get("SLURM_CPUS_PER_TASK", 0))
    if threads:
        torch.set_num_threads(threads)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def train(cfg, out_dir: Path, env: DistEnv) -> dict:
    tcfg = cfg.trainer
    device = resolve_device(tcfg.device, env)
    precision = build_precision(cfg.precision, device)
    init_process_group(env, device, cfg.parallel.backend)
    set_cpu_threads(tcfg.num_threads)
    seed_everything(tcfg.seed, tcfg.deterministic)
    main = env.is_main

    data = build_data(cfg.data, tcfg.seed, env.rank, env.world_size, device)
    model = build_model(cfg.model, cfg.data)
    stats = model_stats(model)
    memory_format = torch.channels_last if cfg.channels_last else torch.preserve_format
    model = model.to(device, memory_format=torch.channels_last) if cfg.channels_last else model.to(device)
    bare_model = model
    model, parallel = wrap_model(model, cfg.parallel.strategy, device)
    forward = torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    steps_per_epoch = len(data.train)
    if steps_per_epoch == 0:
        raise FastGPUError(
            f"data.batch_size={cfg.data.batch_size} is larger than the training set on each rank; lower it"
        )
    total_steps = tcfg.max_steps or steps_per_epoch * tcfg.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=total_steps)  # None: constant lr
    if cfg.compression.name == "prune" and cfg.compression.schedule == "gradual" and parallel == "fsdp":
        raise FastGPUError(
            "gradual pruning works with parallel=none or ddp, not fsdp; use compression.schedule=oneshot"
        )
    pruner = training_hook(cfg.compression, bare_model, total_steps)  # None unless gradual pruning
    scaler = precision.scaler
    eval_collection = M.eval_metrics(cfg.data.num_classes, device)
    monitor = ResourceMonitor(device, tcfg.monitor_interval_s)
    meter = RunMeter(device, tcfg.warmup_steps, monitor, tcfg.sync_debug)

    # Resume: an unfinished checkpoint of this same configuration in the run dir (requeued job, +resume)
    checkpoint_path = out_dir / CHECKPOINT_FILE
    fingerprint = config_fingerprint(cfg)
    p = Progress()
    saved = resumable_state(checkpoint_path, fingerprint)  # loaded once, used below
    if saved is not None:
        if pruner is not None:
            raise FastGPUError(
                "a run with compression.schedule=gradual cannot resume; rerun it or use schedule=oneshot"
            )
        p = load_state(saved, model, optimizer, scheduler, scaler)
        meter.load_state_dict(p.meter)
        del saved
        if main:
            truncate_history(out_dir, p.history_lines)
            print(
                f"fastgpu: resuming {out_dir} at step {p.step} (epoch {p.epoch}, batch {p.batch_in_epoch})",
                file=sys.stderr,
            )

    history = HistoryWriter(out_dir) if main else None
    logger = None
    if main:
        from fastgpu.wandb_logger import WandbLogger

        logger = WandbLogger(cfg, out_dir, resume_id=p.wandb_id)
        p.wandb_id = logger.run.id

    def record(entry: dict) -> None:
        if main:
            history.write(entry)
            logger.log(entry)
            p.history_lines += 1

    def checkpoint(complete: bool = False) -> dict:
        keep = tcfg.checkpoint or not complete
        if main and not keep:
            checkpoint_path.unlink(missing_ok=True)  # no stale periodic state once the run is done
        p.meter = meter.state_dict()
        return save_state(
            checkpoint_path if keep else None, model, optimizer, scheduler, scaler, p, fingerprint, main, complete
        )

    def to_device(batch):
        x = batch[0].to(device, non_blocking=True, memory_format=memory_format)
        return x, batch[1].to(device, non_blocking=True)

    def log_interval(epoch: int) -> None:
        interval = meter.collect()
        total_loss = float(loss_sum)
        mean_loss = (total_loss - p.logged_loss_sum) / (p.step - p.logged_step)
        if not math.isfinite(mean_loss):
            raise DivergedError(
                f"training loss became {mean_loss} at step {p.step}; lower optimizer.lr, "
                "or use precision=fp32/bf16 if this is fp16 overflow"
            )
        p.logged_loss_sum, p.logged_step = total_loss, p.step
        entry = {"step": p.step, "epoch": epoch, "train/loss": mean_loss, "lr": optimizer.param_groups[0]["lr"]}
        if interval:
            entry["train/step_time_ms"] = 1e3 * sum(interval) / len(interval)
            entry["train/samples_per_s"] = len(interval) * cfg.data.batch_size * env.world_size / sum(interval)
        record(entry)
        for sample in monitor.drain():
            record({"step": p.step, **sample})
        bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)

    loss_sum = torch.full((), p.loss_sum, device=device)
    scaler_sync = meter.sync_allowed if scaler.is_enabled() else contextlib.nullcontext
    bar = tqdm(
        total=total_steps, initial=p.step, unit="step", dynamic_ncols=True, disable=not (main and tcfg.progress_bar)
    )
    M.reset_peak_memory(device)
    monitor.start()
    every = tcfg.checkpoint_every_n_steps or math.inf
    preemption = PreemptionWatch().__enter__()  # left by an Interrupted exception: launch hands the signal on
    try:
        for epoch in range(p.epoch, epochs):
            model.train()
            data.train_sampler.set_epoch(epoch, skip=p.batch_in_epoch * cfg.data.batch_size)
            p.epoch = epoch
            for x, y in meter.batches(data.train, to_device):
                loss_sum += train_step(forward, x, y, optimizer, scaler, precision.autocast, scaler_sync)
                if scheduler is not None:
                    scheduler.step()
                p.step += 1
                p.batch_in_epoch += 1
                meter.step_end()
                bar.update()
                log_step = p.step % tcfg.log_every_n_steps == 0 or p.step == 1
                stop = preemption.requested
                if log_step or stop or p.step % every == 0 or pruner is not None:
                    with meter.sync_allowed():
                        if pruner is not None and p.step >= pruner.next_step:
                            pruner(p.step)
                        if log_step:
                            log_interval(epoch)
                        if env.distributed:  # ranks agree on a preemption at log steps (a collective)
                            stop = log_step and all_reduce([float(preemption.requested)], "max")[0] > 0
                        if stop or p.step % every == 0:
                            meter.collect()
                            p.loss_sum = float(loss_sum)
                            checkpoint()
                        if stop:
                            raise Interrupted(preemption, p.step, checkpoint_path)
                if p.step >= total_steps:
                    break

            epoch_energy = meter.epoch_end()
            is_last = p.step >= total_steps
            if (epoch + 1) % tcfg.eval_every_n_epochs == 0 or is_last:
                with meter.evaluating():
                    p.val = evaluate(model, data.val, precision.autocast, device, memory_format, eval_collection)
                p.best_accuracy = max(p.best_accuracy, p.val["accuracy"])
                if p.time_to_target is None and p.val["accuracy"] >= tcfg.target_accuracy:
                    p.time_to_target, p.steps_to_target = meter.train_time(), p.step
                epoch_record = {
                    "step": p.step,
                    "epoch": epoch,
                    "epoch_time_s": meter.state.epoch_times[-1],
                    **{f"val/{k}": v for k, v in p.val.items()},
                }
                if epoch_energy is not None:
                    epoch_record["epoch_energy_j"] = epoch_energy
                record(epoch_record)
                bar.set_postfix(
                    loss=f"{p.logged_loss_sum / max(p.logged_step, 1):.4f}",
                    val_acc=f"{p.val['accuracy']:.3f}",
                    refresh=False,
                )
            p.batch_in_epoch = 0
            if is_last:
                break
    finally:
        meter.close()
    preemption.__exit__()
    bar.close()
    for sample in monitor.drain():
        record({"step": p.step, **sample})
    resources = monitor.stop()
    measured = meter.summary(cfg.data.batch_size, env.world_size, all_reduce, monitor.samples)
    # time to target: training steps until the first evaluation at the target, warm-up/compilation
    # included, evaluation excluded; the slowest rank's
    (time_to_target,) = all_reduce([p.time_to_target or 0.0], "max")
    memory = M.peak_memory(device)
    memory = dict(zip(memory, all_reduce(list(memory.values()), op="max")))

    val = p.val
    metrics = {
        "status": "ok",
        "name": cfg.logger.wandb.name,
        **measured,
        "time_to_target_s": time_to_target if p.time_to_target is not None else None,
        "steps_to_target": p.steps_to_target,
        "target_accuracy": tcfg.target_accuracy,
        "val_loss": val.get("loss"),
        "accuracy": val.get("accuracy"),
        "best_accuracy": p.best_accuracy,
        "precision": val.get("precision"),
        "recall": val.get("recall"),
        "f1": val.get("f1"),
        **memory,
        **{k: v for k, v in resources.items() if k in ("monitor_samples", "max_gpu_mem_used_mb")},
        **stats,
        "steps": p.step,
        "epochs": p.epoch + 1,
        "batch_size": cfg.data.batch_size,
        "global_batch_size": cfg.data.batch_size * env.world_size,
        "world_size": env.world_size,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "precision_mode": precision.name,
        "compile": bool(cfg.compile),
        "channels_last": bool(cfg.channels_last),
        "parallel": parallel,
        "parallel_requested": cfg.parallel.strategy,
        "wandb_run_id": p.wandb_id,
        "torch_version": torch.__version__,
        "fastgpu_version": fastgpu.__version__,
    }
    if parallel == "ddp":
        metrics["rank_param_max_diff"] = rank_param_max_diff(model)
    if pruner is not None:
        pruner.finish()
    p.loss_sum = float(loss_sum)
    model_state = checkpoint(complete=True)
    shutdown(env)
    if main:
        write_metrics(out_dir, metrics)  # the training results are safe before compression and export start
        metrics.update(compress_and_deploy(cfg, model_state, device, precision, val, out_dir))
        history.close()
        write_metrics(out_dir, metrics)
        logger.finish(metrics)
    return metrics
