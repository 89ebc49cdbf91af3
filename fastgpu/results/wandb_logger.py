"""Weights & Biases: one run per training job, online, offline (default) or disabled."""

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from fastgpu.results.figures import wandb_summaries

MODES = ("online", "offline", "disabled")
# online: how long wandb.init may try to reach the server before the run logs offline instead (W&B's default: 90 s)
INIT_TIMEOUT_S = 10


def open_run(mode: str, console: str = "off", **init_kwargs):
    """wandb.init in `mode`; online with no API key or no reachable server becomes offline, with one warning that
    names the `wandb sync` command to upload it later. W&B never stops or stalls training.

    W&B's own system-metrics sampler is off: FastGPU's (fastgpu/measure/monitor.py) logs `system/*` into the same
    run, and a second sampler competes with training for the cores."""
    import wandb

    def settings(**extra):
        return wandb.Settings(quiet=True, console=console, x_disable_stats=True, **extra)

    if mode != "online":
        return wandb.init(mode=mode, settings=settings(), **init_kwargs)
    try:
        return wandb.init(mode="online", settings=settings(init_timeout=INIT_TIMEOUT_S), **init_kwargs)
    except Exception as exc:  # UsageError (no key), CommError (no network, a refused key), a timeout
        from fastgpu.errors import described

        # under a new id: W&B's service still holds the id the failed online attempt registered ("run ID is in use")
        run = wandb.init(mode="offline", settings=settings(), **{**init_kwargs, "id": None, "resume": None})
        print(
            f"fastgpu: warning: W&B online failed ({described(exc, 160)}); logging offline instead: upload it later "
            f"with `wandb sync {run.settings.sync_dir}` (or set logger.wandb.mode=offline)",
            file=sys.stderr,
        )
        return run


class WandbLogger:
    """One training job's W&B run. It opens in a background thread, so W&B's import and its service's start overlap
    the job's build; `ready()` waits for it, before the first step, so it never competes with timed steps. With W&B
    disabled nothing of W&B is imported and every call does nothing."""

    def __init__(self, cfg, out_dir: Path, resume_id=None):
        import threading

        from fastgpu.errors import FastGPUError

        mode = os.environ.get("WANDB_MODE") or cfg.logger.wandb.mode
        if mode not in MODES:
            raise FastGPUError(f"logger.wandb.mode={mode!r} is not known; use one of {', '.join(MODES)}")
        wcfg = cfg.logger.wandb
        self.out_dir, self.id, self.run, self._opened = Path(out_dir), None, None, {}
        self.lost = mode == "disabled"  # every call below is skipped
        self._opening = None
        if self.lost:
            return
        init = dict(
            project=wcfg.project,
            entity=wcfg.entity,
            group=wcfg.group,
            job_type=wcfg.job_type,
            name=wcfg.name,
            tags=list(wcfg.tags),
            notes=wcfg.notes,
            dir=str(out_dir),
            config=OmegaConf.to_container(cfg, resolve=True),
            reinit="finish_previous",
            id=resume_id,
            resume="allow" if resume_id else None,
        )
        console = wcfg.get("console", "off")  # absent from configs saved before the key existed
        self._opening = threading.Thread(
            target=self._open, args=(mode, console, init), name="fastgpu-wandb-open", daemon=True
        )
        self._opening.start()

    def _open(self, mode: str, console: str, init: dict) -> None:
        try:
            self._opened["run"] = self._open_run(mode, console, init)
        except BaseException as exc:  # raised again by ready(), in the run's own thread
            self._opened["error"] = exc

    def ready(self) -> None:
        """Wait for the run to be open; raise what opening it raised."""
        if self._opening is None:
            return
        self._opening.join()
        if "error" in self._opened:
            raise self._opened.pop("error")
        self.run = self._opened["run"]
        self.id = self.run.id

    @staticmethod
    def _open_run(mode: str, console: str, init: dict):
        run = open_run(mode, console, **init)
        for key, summary in wandb_summaries().items():  # best accuracy in the runs table, not the last one
            run.define_metric(key, summary=summary, step_metric="step")
        run.define_metric("step", hidden=True)
        return run

    def log(self, record: dict) -> None:
        if not self.lost:
            self._guarded(self.run.log, record)

    def rename(self, name: str, tags: list) -> None:
        def apply():
            self.run.name = name
            self.run.tags = tuple(tags)

        self._guarded(apply)

    def finish(self, summary: dict, exit_code: int = 0) -> None:
        if self.lost:
            return
        self._guarded(self.run.summary.update, {k: v for k, v in summary.items() if v is not None})
        if summary.get("profile_trace"):  # trainer.profile=true: the Chrome trace travels with the run
            self._guarded(self._log_trace, self.out_dir / summary["profile_trace"])
        self._guarded(self.run.finish, exit_code=exit_code)

    def _log_trace(self, path: Path) -> None:
        import wandb

        artifact = wandb.Artifact(f"profile-{self.run.id}", type="profile")
        artifact.add_file(str(path), name="trace.json")
        self.run.log_artifact(artifact)

    def _guarded(self, call, *args, **kwargs) -> None:
        """W&B's service process can die under a run (Slurm signals every process of a job being preempted):
        training goes on without W&B, history.jsonl and metrics.json keep the record, a resume reopens the run."""
        if self.lost:
            return
        try:
            call(*args, **kwargs)
        except Exception as exc:
            import sys

            from fastgpu.errors import described

            self.lost = True
            print(
                f"fastgpu: warning: W&B stopped logging ({described(exc)}); the local record goes on", file=sys.stderr
            )


def log_sweep_report(cfg, sweep_dir: Path, group: str, report: dict) -> None:
    """One extra run of job_type sweep-report in the sweep's group: the results table and the plots."""
    import wandb

    from fastgpu.results.report import COLUMNS

    wcfg = cfg.logger.wandb
    mode = os.environ.get("WANDB_MODE") or wcfg.mode
    if mode == "disabled":
        return
    run = open_run(
        mode,
        project=wcfg.project,
        entity=wcfg.entity,
        group=group,
        job_type="sweep-report",
        name=f"report-{group}",
        dir=str(sweep_dir),
        reinit="finish_previous",
        config={"sweep_dir": str(sweep_dir)},
    )
    columns = COLUMNS + ["baseline"]
    table = wandb.Table(columns=columns, data=[[row.get(c) for c in columns] for row in report["rows"]])
    run.log({"results": table, **{f"plots/{p.stem}": wandb.Image(str(p)) for p in report["plots"]}})
    run.summary["recommendation"] = report["recommendation"]
    run.summary["failed_points"] = len(report["failed"])
    search = report.get("halving") or {}
    for key in ("sweep_cost_saved", "device_hours_spent", "device_hours_full_grid", "steps_spent", "steps_full_grid"):
        if search.get(key) is not None:
            run.summary[key] = search[key]
    run.finish()
