"""The training loop of one process (one rank). Read it top to bottom: build, train, evaluate, record.

The per-step path does what a hand-written loop does plus a device-side loss add, two host clock
reads and a progress-bar tick; values leave the device only every `log_every_n_steps` steps.
"""

import contextlib
import math
import os
import platform
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from tqdm import tqdm

import fastgpu
from fastgpu import metrics as M
from fastgpu.checkpoint import PreemptionWatch, Progress, config_fingerprint, load_state, resumable_state, save_state
from fastgpu.compression import training_hook
from fastgpu.data import build_data
from fastgpu.errors import DivergedError, FastGPUError
from fastgpu.finalize import compress_and_deploy
from fastgpu.models import build_model, model_stats
from fastgpu.monitor import ResourceMonitor
from fastgpu.parallel import DistEnv, all_reduce, init_process_group, shutdown, wrap_model
from fastgpu.precision import build_precision
from fastgpu.results import CHECKPOINT_FILE, HistoryWriter, truncate_history, write_metrics


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


def run_name(cfg) -> str:
    parts = [cfg.model.name, cfg.precision.name]
    if cfg.compile:
        parts.append("compile")
    if cfg.channels_last:
        parts.append("cl")
    if cfg.parallel.strategy != "none":
        parts.append(cfg.parallel.strategy)
    return "-".join(parts)


@torch.no_grad()
def evaluate(model, loader, precision, device, memory_format, collection) -> dict:
    """Loss and metrics over `loader`; leaves the model in eval mode (the train loop switches back)."""
    try:
        model.eval()
    except NotImplementedError:  # an exported (quantised) program is in eval mode already
        pass
    autocast = precision.autocast if precision is not None else contextlib.nullcontext
    collection.reset()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with autocast():
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        count += y.numel()
        collection.update(logits, y)
    results = {k: float(v) for k, v in collection.compute().items()}
    loss_total, n = all_reduce([float(loss_sum), float(count)])
    results["loss"] = loss_total / max(n, 1)
    return results


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
    model = wrap_model(model, cfg.parallel.strategy, device)
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
    if cfg.compression.name == "prune" and cfg.compression.schedule == "gradual" and cfg.parallel.strategy == "fsdp":
        raise FastGPUError(
            "gradual pruning works with parallel=none or ddp, not fsdp; use compression.schedule=oneshot"
        )
    pruner = training_hook(cfg.compression, bare_model, total_steps)  # None unless gradual pruning
    scaler = precision.scaler
    eval_collection = M.eval_metrics(cfg.data.num_classes, device)

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
        return save_state(
            checkpoint_path if keep else None, model, optimizer, scheduler, scaler, p, fingerprint, main, complete
        )

    clock = M.StepClock(device)
    loss_sum = torch.full((), p.loss_sum, device=device)
    bar = tqdm(
        total=total_steps, initial=p.step, unit="step", dynamic_ncols=True, disable=not (main and tcfg.progress_bar)
    )
    M.reset_peak_memory(device)
    monitor = ResourceMonitor(device, tcfg.monitor_interval_s)
    monitor.start()
    every = tcfg.checkpoint_every_n_steps or math.inf
    preemption = PreemptionWatch().__enter__()
    epoch_energy = None
    for epoch in range(p.epoch, epochs):
        model.train()
        data.train_sampler.set_epoch(epoch, skip=p.batch_in_epoch * cfg.data.batch_size)
        p.epoch = epoch
        M.synchronize(device)
        epoch_start = time.perf_counter()
        energy_start = monitor.energy_j()
        clock.start()
        batches = iter(data.train)
        while p.step < total_steps:
            fetch_start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            p.data_waits.append(time.perf_counter() - fetch_start)
            x = batch[0].to(device, non_blocking=True, memory_format=memory_format)
            y = batch[1].to(device, non_blocking=True)
            with precision.autocast():
                loss = F.cross_entropy(forward(x), y)
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            if scheduler is not None:
                scheduler.step()
            loss_sum += loss.detach()
            p.step += 1
            p.batch_in_epoch += 1
            if pruner is not None and p.step >= pruner.next_step:
                pruner(p.step)
            clock.step()
            bar.update()

            log_step = p.step % tcfg.log_every_n_steps == 0 or p.step == 1
            if log_step:
                interval = clock.collect()
                p.step_times += interval
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
            # ranks agree on a preemption at log steps (a collective); one process checks every step
            stop = (
                preemption.requested
                if not env.distributed
                else (log_step and all_reduce([float(preemption.requested)], "max")[0] > 0)
            )
            if stop or p.step % every == 0:
                p.step_times += clock.collect()
                p.loss_sum = float(loss_sum)
                checkpoint()
                if stop:
                    raise Interrupted(preemption, p.step, out_dir)

        p.step_times += clock.collect()
        M.synchronize(device)
        p.epoch_times.append(time.perf_counter() - epoch_start)
        epoch_energy = monitor.energy_j()
        if epoch_energy is not None:
            epoch_energy -= energy_start
            p.train_energy += epoch_energy
        is_last = p.step >= total_steps
        if (epoch + 1) % tcfg.eval_every_n_epochs == 0 or is_last:
            eval_start = time.perf_counter()
            p.val = evaluate(model, data.val, precision, device, memory_format, eval_collection)
            p.eval_time += time.perf_counter() - eval_start
            p.best_accuracy = max(p.best_accuracy, p.val["accuracy"])
            if p.time_to_target is None and p.val["accuracy"] >= tcfg.target_accuracy:
                p.time_to_target, p.steps_to_target = sum(p.step_times), p.step
            epoch_record = {
                "step": p.step,
                "epoch": epoch,
                "epoch_time_s": p.epoch_times[-1],
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
    preemption.__exit__()
    bar.close()
    for sample in monitor.drain():
        record({"step": p.step, **sample})
    resources = monitor.stop()

    # Throughput: steps after warm-up only, summed over ranks (samples) against the slowest rank (time).
    warmup = min(tcfg.warmup_steps, max(len(p.step_times) - 1, 0))
    steady, steady_waits = p.step_times[warmup:], p.data_waits[warmup:]
    samples, seconds = len(steady) * cfg.data.batch_size, sum(steady)
    (samples,) = all_reduce([samples])
    (seconds,) = all_reduce([seconds], op="max")
    memory = M.peak_memory(device)
    memory = dict(zip(memory, all_reduce(list(memory.values()), op="max")))
    # GPU energy of the training steps (evaluation excluded), summed over ranks' GPUs
    has_energy, energy = all_reduce([float(epoch_energy is not None), p.train_energy])
    if has_energy == env.world_size:
        resources["energy_j"] = energy
        resources["energy_per_sample_j"] = energy / (p.step * cfg.data.batch_size * env.world_size)

    val = p.val
    metrics = {
        "status": "ok",
        "name": cfg.logger.wandb.name,
        "throughput": samples / seconds if seconds > 0 else None,
        "step_time_p50_ms": 1e3 * M.percentile(steady, 0.5),
        "step_time_p90_ms": 1e3 * M.percentile(steady, 0.9),
        "data_time_share": sum(steady_waits) / seconds if seconds > 0 else None,
        "warmup_time_s": sum(p.step_times[:warmup]),
        "train_time_s": sum(p.step_times),
        "epoch_time_s": M.percentile(p.epoch_times, 0.5),
        "eval_time_s": p.eval_time,
        "time_to_target_s": p.time_to_target,
        "steps_to_target": p.steps_to_target,
        "target_accuracy": tcfg.target_accuracy,
        "val_loss": val.get("loss"),
        "accuracy": val.get("accuracy"),
        "best_accuracy": p.best_accuracy,
        "precision": val.get("precision"),
        "recall": val.get("recall"),
        "f1": val.get("f1"),
        **memory,
        **resources,
        **stats,
        "steps": p.step,
        "epochs": p.epoch + 1,
        "timed_steps": len(steady),
        "batch_size": cfg.data.batch_size,
        "global_batch_size": cfg.data.batch_size * env.world_size,
        "world_size": env.world_size,
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "precision_mode": precision.name,
        "compile": bool(cfg.compile),
        "channels_last": bool(cfg.channels_last),
        "parallel": cfg.parallel.strategy,
        "wandb_run_id": p.wandb_id,
        "torch_version": torch.__version__,
        "fastgpu_version": fastgpu.__version__,
    }
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


class Interrupted(FastGPUError):
    """Training stopped on a preemption/kill signal after saving its full state."""

    status = "interrupted"

    def __init__(self, watch, step: int, out_dir: Path):
        name = signal.Signals(watch.signum).name
        super().__init__(
            f"stopped by {name} at step {step}; state saved in {out_dir / CHECKPOINT_FILE}; "
            f"continue with: python -m fastgpu +resume={out_dir}"
        )
        self.watch = watch
