"""Hydra callbacks: the sweep report at the end of every multirun."""

import sys
from pathlib import Path

from hydra.experimental.callback import Callback


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
        if report["failed"]:
            print(
                f"fastgpu: {len(report['failed'])} of {len(report['rows'])} sweep points failed; "
                f"see {sweep_dir / 'report.md'}",
                file=sys.stderr,
            )
            sys.exit(1)
