"""The training loop of one process (one rank). Read it top to bottom: build, train, evaluate, record.

The per-step path does what a hand-written loop does plus a device-side loss add, two host clock
reads and a progress-bar tick; values leave the device only every `log_every_n_steps` steps.
"""

import math
import os
import platform
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from tqdm import tqdm

import fastgpu
from fastgpu import metrics as M
from fastgpu.data import build_data
from fastgpu.errors import DivergedError, FastGPUError
from fastgpu.models import build_model, model_stats
from fastgpu.monitor import ResourceMonitor
from fastgpu.parallel import DistEnv, all_reduce, init_process_group, shutdown, wrap_model
from fastgpu.precision import build_precision
from fastgpu.results import CHECKPOINT_FILE, HistoryWriter, save_checkpoint, write_metrics


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
    model.eval()
    collection.reset()
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    count = torch.zeros((), device=device, dtype=torch.float64)
    for x, y in loader:
        x = x.to(device, non_blocking=True, memory_format=memory_format)
        y = y.to(device, non_blocking=True)
        with precision.autocast():
            logits = model(x).float()
        loss_sum += F.cross_entropy(logits, y, reduction="sum")
        count += y.numel()
        collection.update(logits, y)
    results = {k: float(v) for k, v in collection.compute().items()}
    loss_total, n = all_reduce([float(loss_sum), float(count)])
    results["loss"] = loss_total / max(n, 1)
    model.train()
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
    model = wrap_model(model, cfg.parallel.strategy, device)
    forward = torch.compile(model, mode=cfg.compile_mode) if cfg.compile else model
    optimizer = instantiate(cfg.optimizer)(model.parameters())
    steps_per_epoch = len(data.train)
    if steps_per_epoch == 0:
        raise FastGPUError(f"data.batch_size={cfg.data.batch_size} is larger than the training set on each rank; lower it")
    total_steps = tcfg.max_steps or steps_per_epoch * tcfg.epochs
    epochs = math.ceil(total_steps / steps_per_epoch)
    scheduler = instantiate(cfg.scheduler)(optimizer, total_steps=total_steps)  # None: constant lr
    scaler = precision.scaler
    eval_collection = M.eval_metrics(cfg.data.num_classes, device)

    history = HistoryWriter(out_dir) if main else None
    logger = None
    if main:
        from fastgpu.wandb_logger import WandbLogger

        logger = WandbLogger(cfg, out_dir)

    def record(entry: dict) -> None:
        if main:
            history.write(entry)
            logger.log(entry)

    clock = M.StepClock(device)
    step_times, data_waits, epoch_times, val, eval_time = [], [], [], {}, 0.0
    best_accuracy, time_to_target, steps_to_target = 0.0, None, None
    loss_sum = torch.zeros((), device=device)
    logged_loss_sum, logged_step = 0.0, 0
    bar = tqdm(total=total_steps, unit="step", dynamic_ncols=True, disable=not (main and tcfg.progress_bar))
    M.reset_peak_memory(device)
    monitor = ResourceMonitor(device, tcfg.monitor_interval_s)
    monitor.start()
    train_energy = 0.0
    step = 0
    model.train()
    for epoch in range(epochs):
        if data.train_sampler is not None:
            data.train_sampler.set_epoch(epoch)
        M.synchronize(device)
        epoch_start = time.perf_counter()
        energy_start = monitor.energy_j()
        clock.start()
        batches = iter(data.train)
        while step < total_steps:
            fetch_start = time.perf_counter()
            batch = next(batches, None)
            if batch is None:
                break
            data_waits.append(time.perf_counter() - fetch_start)
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
            step += 1
            clock.step()
            bar.update()

            if step % tcfg.log_every_n_steps == 0 or step == 1:
                interval = clock.collect()
                step_times += interval
                total_loss = float(loss_sum)
                mean_loss = (total_loss - logged_loss_sum) / (step - logged_step)
                if not math.isfinite(mean_loss):
                    raise DivergedError(
                        f"training loss became {mean_loss} at step {step}; lower optimizer.lr, "
                        "or use precision=fp32/bf16 if this is fp16 overflow"
                    )
                logged_loss_sum, logged_step = total_loss, step
                entry = {"step": step, "epoch": epoch, "train/loss": mean_loss, "lr": optimizer.param_groups[0]["lr"]}
                if interval:
                    entry["train/step_time_ms"] = 1e3 * sum(interval) / len(interval)
                    entry["train/samples_per_s"] = len(interval) * cfg.data.batch_size * env.world_size / sum(interval)
                record(entry)
                for sample in monitor.drain():
                    record({"step": step, **sample})
                bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)

        step_times += clock.collect()
        M.synchronize(device)
        epoch_times.append(time.perf_counter() - epoch_start)
        epoch_energy = monitor.energy_j()
        if epoch_energy is not None:
            epoch_energy -= energy_start
            train_energy += epoch_energy
        is_last = step >= total_steps
        if (epoch + 1) % tcfg.eval_every_n_epochs == 0 or is_last:
            eval_start = time.perf_counter()
            val = evaluate(model, data.val, precision, device, memory_format, eval_collection)
            eval_time += time.perf_counter() - eval_start
            best_accuracy = max(best_accuracy, val["accuracy"])
            if time_to_target is None and val["accuracy"] >= tcfg.target_accuracy:
                time_to_target, steps_to_target = sum(step_times), step
            epoch_record = {"step": step, "epoch": epoch, "epoch_time_s": epoch_times[-1], **{f"val/{k}": v for k, v in val.items()}}
            if epoch_energy is not None:
                epoch_record["epoch_energy_j"] = epoch_energy
            record(epoch_record)
            bar.set_postfix(loss=f"{logged_loss_sum / max(logged_step, 1):.4f}", val_acc=f"{val['accuracy']:.3f}", refresh=False)
        if is_last:
            break
    bar.close()
    for sample in monitor.drain():
        record({"step": step, **sample})
    resources = monitor.stop()

    # Throughput: steps after warm-up only, summed over ranks (samples) against the slowest rank (time).
    warmup = min(tcfg.warmup_steps, max(len(step_times) - 1, 0))
    steady, steady_waits = step_times[warmup:], data_waits[warmup:]
    samples, seconds = len(steady) * cfg.data.batch_size, sum(steady)
    samples, = all_reduce([samples])
    seconds, = all_reduce([seconds], op="max")
    memory = M.peak_memory(device)
    memory = dict(zip(memory, all_reduce(list(memory.values()), op="max")))
    # GPU energy of the training steps (evaluation excluded), summed over ranks' GPUs
    has_energy, energy = all_reduce([float(epoch_energy is not None), train_energy])
    if has_energy == env.world_size:
        resources["energy_j"] = energy
        resources["energy_per_sample_j"] = energy / (step * cfg.data.batch_size * env.world_size)

    metrics = {
        "status": "ok",
        "name": cfg.logger.wandb.name,
        "throughput": samples / seconds if seconds > 0 else None,
        "step_time_p50_ms": 1e3 * M.percentile(steady, 0.5),
        "step_time_p90_ms": 1e3 * M.percentile(steady, 0.9),
        "data_time_share": sum(steady_waits) / seconds if seconds > 0 else None,
        "warmup_time_s": sum(step_times[:warmup]),
        "train_time_s": sum(step_times),
        "epoch_time_s": M.percentile(epoch_times, 0.5),
        "eval_time_s": eval_time,
        "time_to_target_s": time_to_target,
        "steps_to_target": steps_to_target,
        "target_accuracy": tcfg.target_accuracy,
        "val_loss": val.get("loss"),
        "accuracy": val.get("accuracy"),
        "best_accuracy": best_accuracy,
        "precision": val.get("precision"),
        "recall": val.get("recall"),
        "f1": val.get("f1"),
        **memory,
        **resources,
        **stats,
        "steps": step,
        "epochs": epoch + 1,
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
        "torch_version": torch.__version__,
        "fastgpu_version": fastgpu.__version__,
    }
    if tcfg.checkpoint:
        _save_final_checkpoint(out_dir / CHECKPOINT_FILE, model, optimizer, scheduler, scaler, step, epoch, main)
    if main:
        history.close()
        write_metrics(out_dir, metrics)
        logger.finish(metrics)
    shutdown(env)
    return metrics


def _save_final_checkpoint(path, model, optimizer, scheduler, scaler, step, epoch, main) -> None:
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    # Collective under FSDP: every rank takes part, rank 0 writes the gathered full state.
    model_state, optim_state = get_state_dict(model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if main:
        state = {"model": model_state, "optimizer": optim_state, "step": step, "epoch": epoch}
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        save_checkpoint(path, state)
