"""The training loop: epochs of steps, the work of log steps, evaluation. `fit()` reads top to bottom like the
epoch loop of torchvision's reference scripts; what is measured lives in the meter (fastgpu/measure/meter.py), what is
written in the recorder (fastgpu/job/run.py).

Per step it does what a hand-written loop does plus a device-side loss add, two CUDA events (host clock marks
on CPU) and a progress-bar tick; the device is read only at log steps, epoch ends and evaluation.
"""

import contextlib
import math
import time

import torch
from tqdm import tqdm

from fastgpu.errors import DivergedError, Interrupted
from fastgpu.measure.quality import evaluate
from fastgpu.measure.reduce import all_reduce
from fastgpu.train.step import backward_step, optimizer_step


def fit(job, p, meter, recorder, preemption) -> None:
    """Train from progress `p` to `job.total_steps`, evaluating every `trainer.eval_every_n_epochs`."""
    tcfg = job.cfg.trainer
    loss_sum = running_loss_sum(p.loss_sum, job.device)
    scaler_sync = meter.sync_allowed if job.scaler.is_enabled() else contextlib.nullcontext
    checkpoint_every = tcfg.checkpoint_every_n_steps or math.inf
    show = job.env.is_main and tcfg.progress_bar
    bar = tqdm(total=job.total_steps, initial=p.step, unit="step", dynamic_ncols=True, disable=not show)
    accumulate = tcfg.accumulate_grad_batches
    batches_per_epoch = job.steps_per_epoch * accumulate  # a last incomplete accumulation is left out
    for epoch in range(p.epoch, job.epochs):
        job.model.train()
        job.data.train_sampler.set_epoch(epoch, skip=p.batch_in_epoch * job.cfg.data.batch_size)
        p.epoch = epoch
        for x, y in meter.batches(job.data.train, job.to_device, job.task.units):
            p.batch_in_epoch += 1
            micro = p.batch_in_epoch % accumulate
            with job.no_sync() if micro else contextlib.nullcontext():  # gradients all-reduced on the last only
                loss_sum += backward_step(
                    job.forward, x, y, job.scaler, job.precision.autocast, accumulate, job.task.loss
                )
            if micro:
                meter.step_end()
                continue
            optimizer_step(job.optimizer, job.scaler, scaler_sync)
            if job.scheduler is not None:
                job.scheduler.step()
            if tcfg.sleep_ms:
                time.sleep(tcfg.sleep_ms / 1e3)
            meter.step_end()
            p.step += 1
            bar.update()
            log_step = p.step % tcfg.log_every_n_steps == 0 or p.step == 1
            periodic = p.step % checkpoint_every == 0
            if log_step or periodic or preemption.requested or job.pruner is not None:
                with meter.sync_allowed():
                    _between_steps(job, p, meter, recorder, preemption, loss_sum, log_step, periodic, bar)
                meter.loader_wait()  # that work is the step's time, not time spent waiting for data
            if p.step >= job.total_steps or p.batch_in_epoch >= batches_per_epoch:
                break
        epoch_energy = meter.epoch_end()
        if (epoch + 1) % tcfg.eval_every_n_epochs == 0 or p.step >= job.total_steps:
            _evaluate(job, p, meter, recorder, epoch, epoch_energy, bar)
        p.batch_in_epoch = 0
        if p.step >= job.total_steps:
            break
    p.loss_sum = float(loss_sum)
    bar.close()


def running_loss_sum(start: float, device) -> torch.Tensor:
    """The sum of every step's loss, on the device (no sync per step), in float64: after 10^6 steps of loss ~2 a
    float32 sum keeps steps of 0.25, and the logged mean loss (and the divergence check that reads it) would move in
    steps of that size over the log interval."""
    return torch.full((), start, dtype=torch.float64, device=device)


def _between_steps(job, p, meter, recorder, preemption, loss_sum, log_step, periodic, bar) -> None:
    """Gradual pruning, the log step, and a checkpoint (every N steps, or to stop on a preemption signal)."""
    if job.pruner is not None and p.step >= job.pruner.next_step:
        job.pruner(p.step)
    if log_step:
        _log(job, p, meter, recorder, loss_sum, bar)
    stop = preemption.requested
    if job.env.distributed:  # ranks agree on a stop at log steps (a collective), so they stop together
        stop = log_step and all_reduce([float(stop)], "max")[0] > 0
    if periodic or stop:  # read after the log step: the signal may have come during it
        meter.collect()
        p.loss_sum = float(loss_sum)
        recorder.checkpoint(job, meter)
    if stop:
        raise Interrupted(preemption, p.step, recorder.checkpoint_path)


def _log(job, p, meter, recorder, loss_sum, bar) -> None:
    interval = meter.collect()  # a device sync: the steps before are done
    recorder.startup.mark("first_step")  # the first log step of this process follows its first step
    total_loss = float(loss_sum)
    mean_loss = (total_loss - p.logged_loss_sum) / (p.step - p.logged_step)
    if not math.isfinite(mean_loss):
        raise DivergedError(
            f"training loss became {mean_loss} at step {p.step}; lower optimizer.lr, "
            "or use precision=fp32/bf16 if this is fp16 overflow"
        )
    p.logged_loss_sum, p.logged_step = total_loss, p.step
    entry = {"step": p.step, "epoch": p.epoch, "train/loss": mean_loss, "lr": job.optimizer.param_groups[0]["lr"]}
    if interval:  # meter steps are loader batches: with accumulation, an optimizer step is several of them
        entry["train/step_time_ms"] = 1e3 * sum(interval) / len(interval)
        units = sum(meter.state.step_samples[-len(interval) :]) * job.env.world_size  # this rank's, times ranks
        entry[f"train/{job.task.unit}_per_s"] = units / sum(interval)
    recorder.record(entry)
    recorder.record_samples(p.step)
    bar.set_postfix(loss=f"{mean_loss:.4f}", refresh=False)


def reached_target(job, val: dict) -> bool:
    """Classification: val accuracy at trainer.target_accuracy; a language model: val perplexity at or below
    trainer.target_perplexity (none by default: next-token accuracy has no target that fits every text)."""
    if job.task.unit == "tokens":
        target = job.cfg.trainer.get("target_perplexity")
        return target is not None and val.get("perplexity") is not None and val["perplexity"] <= target
    return val["accuracy"] >= job.cfg.trainer.target_accuracy


def _evaluate(job, p, meter, recorder, epoch, epoch_energy, bar) -> None:
    with meter.evaluating():
        p.val = evaluate(job.model, job.data.val, job.precision.autocast, job.device, job.memory_format, job.metrics)
    p.best_accuracy = max(p.best_accuracy, p.val["accuracy"])
    if p.time_to_target is None and reached_target(job, p.val):
        p.time_to_target, p.steps_to_target = meter.train_time(), p.step
    entry = {"step": p.step, "epoch": epoch, "epoch_time_s": meter.state.epoch_times[-1]}
    entry.update({f"val/{k}": v for k, v in p.val.items()})
    if epoch_energy is not None:
        entry["epoch_energy_j"] = epoch_energy
    recorder.record(entry)
    # beside the last interval's train loss as _log showed it (not the mean since the start, under the same name)
    train = (getattr(bar, "postfix", None) or "").split(", val_loss=")[0]
    shown = f"val_loss={p.val['loss']:.4f}, val_acc={p.val['accuracy']:.3f}"
    bar.set_postfix_str(f"{train}, {shown}" if train else shown, refresh=False)
