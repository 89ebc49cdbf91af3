"""`python -m fastgpu [overrides]`: compose the Hydra config, run it, print the summary. `python -m fastgpu report DIR`
and `status DIR` are the results commands (fastgpu/cli.py)."""

import sys

if __name__ == "__main__":  # the results verbs, before Hydra and torch load
    from fastgpu.cli import run_verb_if_asked

    run_verb_if_asked()

import dataclasses
import difflib
import os
import re
import time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from fastgpu.config import check_ranges, register_schema
from fastgpu.errors import FastGPUError
from fastgpu.job.launch import STORAGE_ERRNOS, RunFailed, launch, storage_error
from fastgpu.job.preflight import resume_config
from fastgpu.measure.startup import COMPOSED_ENV, IMPORTED_ENV
from fastgpu.results.naming import (
    keep_hydra_files,
    point_tags,
    restore_hydra_files,
    run_name,
    sweep_group,
    sweep_point_name,
    swept_keys,
    task_overrides,
)
from fastgpu.results.rundirs import discard_unused_run_dir, finished_point, pop_command_keys, sweep_resume_hint
from fastgpu.results.summary import format_summary
from fastgpu.sweep.registry import register_sweep_configs

CONFIG_PACKAGE = "pkg://fastgpu.conf"  # package data: found after a wheel install as in a checkout

register_schema()
register_sweep_configs()
os.environ[IMPORTED_ENV] = repr(time.time())  # fastgpu/measure/startup.py: the end of the imports phase


@hydra.main(config_path=CONFIG_PACKAGE, config_name="config", version_base="1.3")
def main(cfg):
    """The run's metrics (a dict); under the Optuna sweeper, the objectives it optimises (see `objectives`)."""
    os.environ[COMPOSED_ENV] = repr(time.time())
    hydra_cfg = HydraConfig.get()
    metrics = run_point(cfg, hydra_cfg)
    return objectives(metrics, hydra_cfg.sweeper) if "optuna" in str(hydra_cfg.sweeper.get("_target_")) else metrics


def run_point(cfg, hydra_cfg) -> dict:
    out_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    command = pop_command_keys(cfg)  # +resume / +overwrite: what this command asks, never saved with the run
    if multirun:
        done = finished_point(out_dir) if command["resume"] is True else None
        if done is not None:
            restore_hydra_files(out_dir)  # Hydra rewrote them with this resumed sweep's overrides
            return done
        name_sweep_point(cfg, hydra_cfg)
    try:
        if isinstance(command["resume"], str):
            out_dir, cfg = Path(command["resume"]), resume_config(Path(command["resume"]))
        elif cfg.logger.wandb.name is None:
            cfg.logger.wandb.name = run_name(cfg)
        check_ranges(cfg)  # a sweep point's data is checked when it builds: a failure there is recorded in its dir
        metrics = launch(cfg, out_dir, overwrite=command["overwrite"] is True)
    except FastGPUError as refused:  # a value out of range, a dir not this run's to write: nothing written
        print(f"fastgpu: error: {refused}", file=sys.stderr)
        if not multirun:
            discard_unused_run_dir(Path(hydra_cfg.runtime.output_dir))
            sys.exit(2)
        return {"status": "failed", "error_type": type(refused).__name__, "error": str(refused)}
    except RunFailed as failure:
        line = f"fastgpu: error: {failure.record['error']}"
        if multirun:
            print(f"{line} [{out_dir}]", file=sys.stderr)
            if failure.record["status"] == "interrupted":  # Ctrl-C or kill stops the sweep, not only this point
                print(sweep_resume_hint(out_dir, hydra_cfg.sweep.dir), file=sys.stderr)
                sys.exit(130)
            return failure.record
        if failure.record["status"] != "failed" or isinstance(failure.__cause__, FastGPUError):
            print(line, file=sys.stderr)
            sys.exit(1)
        raise failure.__cause__  # a bug, not a setting: keep the traceback
    if multirun and metrics.get("status") == "ok":
        keep_hydra_files(out_dir)
    if metrics and not multirun:
        print(format_summary(metrics, title=f"FastGPU run: {out_dir}"))
    return metrics


def objectives(metrics: dict, sweeper):
    """Optuna's values for a point: (throughput, accuracy) with two directions, throughput alone with one. A point
    that failed (oom, diverged, an impossible setting) scores 0 on both: a bad trial the sampler learns from,
    never an exception that ends the study. Maximising accuracy is minimising the accuracy lost against any
    fixed baseline; the report then compares every trial against the baseline it finds."""
    ok = metrics.get("status") == "ok"
    throughput = float(metrics.get("throughput") or 0.0) if ok else 0.0
    accuracy = float(metrics.get("accuracy") or 0.0) if ok else 0.0
    directions = sweeper.get("direction")
    if isinstance(directions, str) or directions is None or len(directions) < 2:
        return throughput
    return throughput, accuracy


def name_sweep_point(cfg, hydra_cfg) -> None:
    """W&B identity of a sweep point: shared group and job type, a name and tags from its swept values."""
    sweep_dir = hydra_cfg.sweep.dir
    keys = swept_keys(sweep_dir)
    overrides = task_overrides(hydra_cfg)
    experiment = hydra_cfg.runtime.choices.get("experiment")
    wandb_cfg = cfg.logger.wandb
    wandb_cfg.group = wandb_cfg.group or sweep_group(sweep_dir, experiment)
    repeats = cfg.trainer.get("repeats", 1)  # the runs of one setting: told apart by their round, pooled in the report
    if wandb_cfg.name is None:
        wandb_cfg.name = sweep_point_name(hydra_cfg, repeats, cfg.trainer.get("repeat", 0))
    elif repeats > 1:
        wandb_cfg.name = f"{wandb_cfg.name}-r{cfg.trainer.repeat}"
    wandb_cfg.tags = list(wandb_cfg.tags) + point_tags(overrides, keys) + ([experiment] if experiment else [])
    if wandb_cfg.job_type == "train":
        wandb_cfg.job_type = "sweep"


def config_error_line(exc: Exception) -> str:
    """Hydra's multi-line composition errors as one line that names the bad key or option and the fix."""
    text = str(exc)
    missing = re.match(
        r"In '[^']*': (Could not find '[^']+')\s+Available options in '([^']+)':\s+(.*?)Config search path", text, re.S
    )
    if missing:
        return f"{missing.group(1)}; available options in '{missing.group(2)}': {', '.join(missing.group(3).split())}"
    cause = exc.__cause__ if isinstance(exc.__cause__, OmegaConfBaseException) else exc
    line = text.splitlines()[0].rstrip(".")
    detail = str(cause).splitlines()[0] if cause is not exc else ""
    object_type = getattr(cause, "object_type", None)
    key = getattr(cause, "key", None)
    names = None
    if object_type is not None and dataclasses.is_dataclass(object_type):
        names = [f.name for f in dataclasses.fields(object_type)]
    elif isinstance(getattr(cause, "parent_node", None), DictConfig):  # a component's own keys (model, data, ...)
        names = [str(name) for name in cause.parent_node.keys()]
    close = []
    if key and names:
        close = difflib.get_close_matches(str(key), names, n=1) if key not in names else []
        if close:
            detail += f" (did you mean '{close[0]}'?)"
    hint = re.search(r"use (\+\S+)", text) if not close else None  # a typo wants its fix, not a new key
    return "; ".join(filter(None, [line, detail, f"to add a new key use {hint.group(1)}" if hint else ""]))


def skip_hydra_mode_probe(argv: list) -> None:
    """Hydra composes the whole config once more before a run only to read `hydra.mode` (0.3 s of a run's way to its
    first step). FastGPU's configs never set it: where the command cannot set it either (no hydra.mode, no
    experiment), the mode is the command line's (-m or not), as Hydra decides when that probe finds none."""
    if any(arg.lstrip("+").startswith(("hydra.mode", "experiment")) for arg in argv):
        return
    from hydra._internal.hydra import Hydra

    Hydra.get_mode = lambda self, config_name, overrides: None


def cli() -> None:
    # Let composition errors reach us instead of Hydra's multi-line report; we print one line.
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    skip_hydra_mode_probe(sys.argv[1:])
    try:
        main()
    except (HydraException, OmegaConfBaseException) as exc:
        print(f"fastgpu: error: {config_error_line(exc)}", file=sys.stderr)
        sys.exit(2)
    except FastGPUError as exc:  # refused before anything ran (a dir another run owns, a bad value)
        print(f"fastgpu: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except OSError as exc:  # Hydra writing .hydra/ or its log into a full or read-only dir
        if exc.errno not in STORAGE_ERRNOS:
            raise
        print(f"fastgpu: error: {storage_error(exc, Path(exc.filename or '.').parent)}", file=sys.stderr)
        sys.exit(2)


def exit_without_teardown(function) -> None:
    """Run `function`, then end the process as the interpreter would, less its teardown of torch's modules (0.4-0.8 s
    on 2 cores, paid by every run and sweep): other threads joined, exit handlers run (the fork server, locks, W&B's
    loggers), output flushed, the same exit code. An exception that escapes still prints its traceback."""
    import atexit
    import threading

    try:
        function()
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    exit_without_teardown(cli)
