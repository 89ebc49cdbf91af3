"""Hydra callbacks: dirs refused before Hydra writes into them, and the sweep report at the end of every multirun."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from fastgpu.errors import refuse_or_exit


def check_repeats(config) -> None:
    """trainer.repeats is for the grid sweeper (fastgpu/sweep/repeats.py) and successive halving: another sweeper
    would ignore it."""
    repeats = config.trainer.get("repeats", 1)
    if repeats > 1 and not str(config.hydra.sweeper.get("_target_", "")).endswith(("GridSweeper", "HalvingSweeper")):
        from fastgpu.errors import FastGPUError

        raise FastGPUError(
            f"trainer.repeats={repeats} repeats the points of a grid sweep or of successive halving, and hydra/sweeper="
            f"{config.hydra.runtime.choices.get('hydra/sweeper')} decides by single runs; drop trainer.repeats "
            "(or repeat by sweeping trainer.seed=0,1,2)"
        )


class OwnedDirs(Callback):
    """Before Hydra writes into it: refuse a sweep dir holding another sweep; hold its lock while the sweep runs.
    (A single run's dir is checked by fastgpu.job.preflight.CheckBeforeWriting.)"""

    lock = None

    def on_multirun_start(self, config, **kwargs) -> None:
        from fastgpu.results.rundirs import DirLock, check_sweep_dir

        sweep_dir = Path(config.hydra.sweep.dir)
        refuse_or_exit(check_repeats, config)
        refuse_or_exit(check_sweep_dir, sweep_dir, config)
        self.lock = refuse_or_exit(DirLock(sweep_dir, "hydra.sweep.dir").acquire)
        # what the sweep was asked (its swept keys name the points): Hydra's basic sweeper writes it too, the
        # Optuna sweeper does not
        from omegaconf import OmegaConf

        OmegaConf.save(config, sweep_dir / "multirun.yaml")

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.lock is not None:
            self.lock.release()


def report_group(config) -> str:
    """The W&B group of the sweep's runs: logger.wandb.group, else one named by the sweep dir and experiment."""
    from fastgpu.results.naming import sweep_group

    experiment = config.hydra.runtime.choices.get("experiment")
    return config.logger.wandb.group or sweep_group(Path(config.hydra.sweep.dir), experiment)


class SweepReport(Callback):
    """Writes results.csv / report.md / plots, prints the table, logs a W&B sweep-report run.

    Exits non-zero when any point failed, so a sweep's exit code says whether it is complete.
    """

    def __init__(self):
        self.wandb = None

    def __getstate__(self) -> dict:  # sent to the fork server with Hydra's context: the sweep's own process stays
        return {**self.__dict__, "wandb": None}

    def on_multirun_start(self, config, **kwargs) -> None:
        from fastgpu.results.wandb_logger import wandb_mode

        if wandb_mode(config) != "disabled":  # W&B starts while the points run; only the report is left at the end
            from fastgpu.results.wandb_report import ReportLogger

            self.wandb = ReportLogger(config, Path(config.hydra.sweep.dir), report_group(config))

    def on_multirun_end(self, config, **kwargs) -> None:
        try:
            self._report(config)
        finally:
            if self.wandb is not None:
                self.wandb.close()  # no report (no point ran, or it failed): W&B's process ends, logging nothing

    def _report(self, config) -> None:
        from fastgpu.results.report import build_report, terminal_table

        sweep_dir = Path(config.hydra.sweep.dir)
        report = build_report(
            sweep_dir,
            list(config.report.baseline),
            config.report.accuracy_tolerance,
            config.report.min_gain,
            config.report.get("noise_floor"),
        )
        if not report["rows"]:
            return
        print(
            f"\nFastGPU sweep: {sweep_dir}\n{terminal_table(report['rows'])}\n{report['recommendation']}\n"
            f"report: {sweep_dir / 'report.md'}"
        )
        if self.wandb is not None:
            self.wandb.log(report)
        for row in report["unreadable"]:
            print(f"fastgpu: {row['error']}", file=sys.stderr)
        if report["failed"]:
            print(
                f"fastgpu: {len(report['failed'])} of {len(report['rows'])} sweep points failed; "
                f"see {sweep_dir / 'report.md'}",
                file=sys.stderr,
            )
            sys.exit(1)
