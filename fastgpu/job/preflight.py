"""What a command is checked for before Hydra or FastGPU write anything (Hydra's on_run_start): every value in its
range, the run a `+resume=<dir>` names, the dataset's folder and a batch that fits it. A refusal is one line and
leaves no dir behind. Sweep points are checked again when they run, where a refusal is that point's failure."""

import os
from pathlib import Path

from hydra.experimental.callback import Callback

from fastgpu.components import check_targets
from fastgpu.errors import FastGPUError, refuse_or_exit
from fastgpu.results.rundirs import in_use_error, read_holder, requeued_attempt, run_status
from fastgpu.results.store import (
    CHECKPOINT_FILE,
    CONFIG_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    PREVIOUS_CHECKPOINT_FILE,
)


class CheckBeforeWriting(Callback):
    """Hydra's on_run_start, before it writes its .hydra/ files and log: the command's values, then its run dir (one
    holding a finished run, one another process writes, an interrupted run of other settings)."""

    def on_multirun_start(self, config, **kwargs) -> None:  # before the sweep's dir is written (OwnedDirs)
        refuse_or_exit(check_halving_budget, config)

    def on_run_start(self, config, **kwargs) -> None:
        refuse_or_exit(check_before_writing, config)
        if not isinstance(config.get("resume"), str):  # +resume=<dir> continues that dir, not hydra.run.dir
            refuse_or_exit(
                check_run_dir, Path(config.hydra.run.dir), config, "hydra.run.dir", config.get("overwrite") is True
            )


def check_before_writing(cfg) -> None:
    from fastgpu.config import check_ranges

    resume = cfg.get("resume")
    if isinstance(resume, str):
        resume_config(Path(resume))  # that run's own settings were checked when it started
        return
    check_targets(cfg)
    check_ranges(cfg)
    if cfg.trainer.get("repeats", 1) > 1:  # on_run_start: a single run, not a sweep point
        raise FastGPUError(
            f"trainer.repeats={cfg.trainer.repeats} repeats the points of a sweep; add -m "
            "(python -m fastgpu -m ... trainer.repeats=3)"
        )
    check_data(cfg)
    from fastgpu.job.fit_check import check_one_batch

    check_one_batch(cfg)  # the model and the data on one batch: a misfit is one line before anything is written
    from fastgpu.train.distributed import external_launcher_env

    external_launcher_env()  # a multi-task Slurm job started without srun is refused here


def check_data(cfg) -> None:
    from fastgpu.zoo.data import check_data_source

    ranks = cfg.parallel.nproc_per_node if cfg.parallel.strategy != "none" else 1
    check_data_source(cfg.data, ranks, cfg.trainer.accumulate_grad_batches)


def resume_config(run_dir: Path):
    """`+resume=<run dir>`: that run's own config, if it holds an unfinished checkpoint of it."""
    from omegaconf import OmegaConf

    from fastgpu.results.rundirs import pop_command_keys
    from fastgpu.train.checkpoint import resumable
    from fastgpu.train.fingerprint import config_fingerprint

    if not (run_dir / CONFIG_FILE).exists() or not (run_dir / CHECKPOINT_FILE).exists():
        raise FastGPUError(
            f"+resume={run_dir}: no {CONFIG_FILE} and {CHECKPOINT_FILE} there; pass the dir of an interrupted run"
        )
    cfg = OmegaConf.load(run_dir / CONFIG_FILE)
    pop_command_keys(cfg)  # a run saved before +overwrite stopped being stored: it must not apply again
    if not resumable(run_dir / CHECKPOINT_FILE, config_fingerprint(cfg)):  # a corrupt checkpoint raises its own line
        raise FastGPUError(
            f"+resume={run_dir}: its checkpoint is complete (the run finished) or from other settings; "
            "start a new run, or pass +overwrite=true with hydra.run.dir to replace it"
        )
    return cfg


def check_run_dir(out_dir: Path, cfg, key: str = "hydra.run.dir", overwrite: bool = False) -> None:
    """Refuse a dir another process writes, a finished run (unless `overwrite`, the command's +overwrite=true), and
    an interrupted run of other settings. With `overwrite` the earlier run's results are removed first."""
    out_dir = Path(out_dir)
    holder = read_holder(out_dir)
    if holder is not None and holder.get("pid") != os.getpid():
        raise in_use_error(out_dir, holder, key)
    if overwrite and not requeued_attempt():
        for name in (METRICS_FILE, HISTORY_FILE, CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
            (out_dir / name).unlink(missing_ok=True)
        return
    if (out_dir / METRICS_FILE).exists() and run_status(out_dir) == "ok" and not overwrite:
        raise FastGPUError(
            f"{out_dir} already holds a finished run (status ok); choose another {key}, "
            "or pass +overwrite=true to replace it"
        )
    if (out_dir / CHECKPOINT_FILE).exists():
        from fastgpu.train.checkpoint import interrupted_fingerprint
        from fastgpu.train.fingerprint import config_fingerprint

        saved, wanted = interrupted_fingerprint(out_dir / CHECKPOINT_FILE), config_fingerprint(cfg)
        if saved is not None and saved != wanted:
            raise FastGPUError(
                f"{out_dir} holds an interrupted run of other settings (fingerprint {saved}; this run's is {wanted}); "
                f"continue it with +resume={out_dir}, choose another {key}, or pass +overwrite=true"
            )


def check_halving_budget(config) -> None:
    """Refuse, before anything trains or is written, a halving sweep whose full budget is under
    `hydra.sweeper.min_budget_ratio` probes: each rung pays every point's fixed cost again (process start, data,
    evaluation: a point's time_to_first_step_s and eval_time_s), so on a short budget halving costs more than the
    grid (experiments/search_benchmark.py --short). An epochs budget is counted with the base data.batch_size."""
    sweeper = config.hydra.sweeper
    ratio = sweeper.get("min_budget_ratio", 0) or 0
    if not str(sweeper.get("_target_", "")).endswith("HalvingSweeper") or ratio <= 0:
        return
    trainer = config.trainer
    probe = trainer.warmup_steps + sweeper.probe_steps
    full = trainer.max_steps
    if full is None:
        from fastgpu.zoo.data import build_data

        steps_per_epoch = len(build_data(config.data, trainer.seed).train) // trainer.accumulate_grad_batches
        full = trainer.epochs * steps_per_epoch
    if full < ratio * probe:
        from fastgpu.errors import FastGPUError

        raise FastGPUError(
            f"hydra/sweeper=halving: the full budget ({full} steps a point) is only {full / probe:.1f}x the probe "
            f"({probe} steps, warm-up included), and every rung pays each point's fixed cost again (its start, data "
            f"and evaluation: time_to_first_step_s and eval_time_s in metrics.json), so halving would cost more than "
            f"the grid; drop hydra/sweeper=halving, give the points a budget of {ratio:g}+ probes (trainer.max_steps "
            "or trainer.epochs) or a shorter probe (hydra.sweeper.probe_steps), or set hydra.sweeper.min_budget_ratio=0"
        )
