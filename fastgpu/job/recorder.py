"""What a run writes: history.jsonl and, by a logger following it, the W&B run (rank 0), checkpoint.pt (gathered
from every rank), and the resume of an unfinished checkpoint of the same configuration."""

import sys
from pathlib import Path

from fastgpu.errors import FastGPUError
from fastgpu.measure.startup import StartupClock
from fastgpu.results.naming import truthful
from fastgpu.results.store import (
    CHECKPOINT_FILE,
    PREVIOUS_CHECKPOINT_FILE,
    HistoryWriter,
    truncate_history,
    write_metrics,
)
from fastgpu.train.checkpoint import Progress, load_state, resumable_state, save_state
from fastgpu.train.fingerprint import config_fingerprint


class Recorder:
    """What a run writes: history.jsonl and, by a logger following it, the W&B run (rank 0), checkpoint.pt
    (gathered from every rank)."""

    def __init__(self, cfg, out_dir: Path, main: bool):
        self.cfg, self.out_dir, self.main = cfg, Path(out_dir), main
        self.checkpoint_path = self.out_dir / CHECKPOINT_FILE
        self.fingerprint = config_fingerprint(cfg)
        self.history = self.logger = self.monitor = self.saved = None
        self.startup = StartupClock()  # the way to the first step, phase by phase

    def start(self) -> None:
        """Before the job builds: read an unfinished checkpoint of this same configuration (a requeued job, +resume),
        cut the history back to it (or to nothing on a fresh start), and start W&B's logger (rank 0) under the run's
        id, so that W&B's start overlaps the build."""
        self.saved = resumable_state(self.checkpoint_path, self.fingerprint)
        if self.main:
            from fastgpu.results.wandb_logger import WANDB_UNREACHABLE, WandbLogger

            progress = self.saved["progress"] if self.saved else {}
            lines = progress.get("history_lines", 0)
            truncate_history(self.out_dir, lines)  # what an interrupted run logged after its last checkpoint goes
            sweep = self.out_dir.parent if (self.out_dir.parent / "multirun.yaml").exists() else None
            marker = sweep / WANDB_UNREACHABLE if sweep else None
            self.logger = WandbLogger(self.cfg, self.out_dir, progress.get("wandb_id"), lines, marker)

    def close_logger(self) -> None:
        """W&B logs what the run recorded and finishes (whether the run finished or failed)."""
        if self.logger is not None:
            self.logger.close()

    def open(self, job, meter, monitor) -> Progress:
        """Continue from the checkpoint `start` read, or start afresh; open the history and wait for the W&B run;
        returns the progress to continue from."""
        self.p, self.monitor, saved = Progress(), monitor, self.saved
        if saved is not None:
            if job.pruner is not None:
                raise FastGPUError(
                    "a run with compression.schedule=gradual cannot resume; rerun it or use schedule=oneshot"
                )
            self.p = load_state(saved, job.model, job.optimizer, job.scheduler, job.scaler)
            meter.load_state_dict(self.p.meter)
            if self.main:
                print(
                    f"fastgpu: resuming {self.out_dir} at step {self.p.step} (epoch {self.p.epoch}, "
                    f"batch {self.p.batch_in_epoch})",
                    file=sys.stderr,
                )
        elif self.main:  # a fresh start: nothing of an earlier failed attempt stays to be mixed in
            for name in (CHECKPOINT_FILE, PREVIOUS_CHECKPOINT_FILE):
                (self.out_dir / name).unlink(missing_ok=True)
        if self.main:
            self.history = HistoryWriter(self.out_dir)
            self.p.wandb_id = self.logger.id
        return self.p

    def record(self, entry: dict) -> None:
        if self.main:
            self.history.write(entry)  # W&B's logger follows this file
            self.p.history_lines += 1

    def record_samples(self, step: int) -> None:
        """The resource sampler's samples since the last call, as history records at `step`."""
        for sample in self.monitor.drain():
            self.record({"step": step, **sample})

    def checkpoint(self, job, meter, complete: bool = False) -> dict:
        """Save the full training state (a collective under FSDP); returns the model state."""
        keep = self.cfg.trainer.checkpoint or not complete
        if self.main and not keep:
            self.checkpoint_path.unlink(missing_ok=True)  # no stale periodic state once the run is done
        self.p.meter = meter.state_dict()
        path = self.checkpoint_path if keep else None
        return save_state(
            path, job.model, job.optimizer, job.scheduler, job.scaler, self.p, self.fingerprint, self.main, complete
        )

    def rename(self, job) -> str:
        """Name and tag the run by what ran; returns the name."""
        wandb_cfg = self.cfg.logger.wandb
        if not wandb_cfg.name:
            return None
        requested = {"precision": self.cfg.precision.name, "parallel": self.cfg.parallel.strategy}
        ran = {"precision": job.precision.name, "parallel": job.parallel}
        name, tags = truthful(wandb_cfg.name or "", list(wandb_cfg.tags), requested, ran)
        if job.env.world_size > 1:
            tags.append(f"global_batch_size={self.cfg.data.batch_size * job.env.world_size}")
        if self.logger is not None:
            self.logger.rename(name, tags)
        return name

    def finish(self, metrics: dict) -> None:
        self.history.close()
        write_metrics(self.out_dir, metrics)
        self.close_logger()
