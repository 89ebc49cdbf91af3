"""Hydra callbacks: dirs refused before Hydra writes into them, and the sweep report at the end of every multirun."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback


class OwnedDirs(Callback):
    """Before Hydra writes its .hydra/ files and log: refuse a run dir holding a finished run or one another
    process writes, and a sweep dir holding another sweep; hold the sweep dir's lock while the sweep runs."""

    lock = None

    def on_run_start(self, config, **kwargs) -> None:
        from fastgpu.preflight import check_before_writing
        from fastgpu.rundir import check_run_dir

        _refuse_or_go(check_before_writing, config)
        if not isinstance(config.get("resume"), str):  # +resume=<dir> continues that dir, not hydra.run.dir
            _refuse_or_go(
                check_run_dir, Path(config.hydra.run.dir), config, "hydra.run.dir", config.get("overwrite") is True
            )

    def on_multirun_start(self, config, **kwargs) -> None:
        from fastgpu.rundir import DirLock, check_sweep_dir

        sweep_dir = Path(config.hydra.sweep.dir)
        _refuse_or_go(check_sweep_dir, sweep_dir, config)
        self.lock = _refuse_or_go(DirLock(sweep_dir, "hydra.sweep.dir").acquire)
        # what the sweep was asked (its swept keys name the points): Hydra's basic sweeper writes it too, the
        # Optuna sweeper does not
        from omegaconf import OmegaConf

        OmegaConf.save(config, sweep_dir / "multirun.yaml")

    def on_multirun_end(self, config, **kwargs) -> None:
        if self.lock is not None:
            self.lock.release()


def _refuse_or_go(check, *args):
    """Hydra turns a callback's exception into a warning and goes on: a refusal must exit here, in one line."""
    from fastgpu.errors import FastGPUError

    try:
        return check(*args)
    except FastGPUError as exc:
        print(f"fastgpu: error: {exc}", file=sys.stderr)
        sys.exit(2)


class SweepReport(Callback):
    """Writes results.csv / report.md / plots, prints the table, logs a W&B sweep-report run.

    Exits non-zero when any point failed, so a sweep's exit code says whether it is complete.
    """

    def on_multirun_end(self, config, **kwargs) -> None:
        from fastgpu.report import build_report, terminal_table
        from fastgpu.sweep import sweep_group

        sweep_dir = Path(config.hydra.sweep.dir)
        report = build_report(
            sweep_dir, list(config.report.baseline), config.report.accuracy_tolerance, config.report.min_gain
        )
        if not report["rows"]:
            return
        print(
            f"\nFastGPU sweep: {sweep_dir}\n{terminal_table(report['rows'])}\n{report['recommendation']}\n"
            f"report: {sweep_dir / 'report.md'}"
        )
        experiment = config.hydra.runtime.choices.get("experiment")
        group = config.logger.wandb.group or sweep_group(sweep_dir, experiment)
        from fastgpu.wandb_logger import log_sweep_report

        log_sweep_report(config, sweep_dir, group, report)
        for row in report["unreadable"]:
            print(f"fastgpu: {row['error']}", file=sys.stderr)
        if report["failed"]:
            print(
                f"fastgpu: {len(report['failed'])} of {len(report['rows'])} sweep points failed; "
                f"see {sweep_dir / 'report.md'}",
                file=sys.stderr,
            )
            sys.exit(1)
