"""What FastGPU's own Hydra sweepers share: they choose the next points from the results of the last ones
(successive halving, the max-batch bisection) and launch them through whatever launcher is configured (in this
process, local submitit, Slurm). Points are numbered on from the last launched, so each rung or probe is a real
point dir with its own metrics.json, and a resumed sweep (`+resume=true`) lands every point in the same dir.

Torch-free: Hydra imports sweepers on every start.
"""

import json
import math
import time
from pathlib import Path

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.sweeper import Sweeper
from omegaconf import OmegaConf

from fastgpu.files import atomic_write


class AdaptiveSweeper(Sweeper):
    ledger_file = ""  # the sweep dir's record of what was decided (halving.json, max_batch.json)

    def __init__(self, params=None):
        self.params = dict(params or {})
        self.hydra_context = self.config = self.launcher = None
        self.next_job = 0
        self.swept = []  # the keys the grid varies

    def setup(self, *, hydra_context, task_function, config) -> None:
        from hydra.core.plugins import Plugins

        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    @property
    def sweep_dir(self) -> Path:
        return Path(str(self.config.hydra.sweep.dir))

    def grid(self, arguments) -> list:
        """Every point of the grid the command line and `params` describe (BasicSweeper's cartesian product)."""
        parser = OverridesParser.create(config_loader=self.hydra_context.config_loader)
        overrides = parser.parse_overrides([f"{k}={v}" for k, v in self.params.items()] + list(arguments))
        self.swept = [o.get_key_element() for o in overrides if o.is_sweep_override()]
        (points,) = BasicSweeper.split_arguments(overrides, None)
        return points

    def start(self) -> None:
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, self.sweep_dir / "multirun.yaml")

    def run(self, points: list) -> list:
        """Launch `points` (override lists) as the next numbered jobs; each one's metrics with its `job` number
        (a job that raised instead of returning counts as failed) and `launch_wall_s`, its share of the launch's
        wall time on this sweep's clock (process start, data, evaluation and export included)."""
        self.validate_batch_is_legal(points)
        started = time.perf_counter()
        returns = self.launcher.launch(points, initial_job_idx=self.next_job)
        wall_share = (time.perf_counter() - started) / max(len(points), 1)
        results = []
        for job, overrides, ret in zip(range(self.next_job, self.next_job + len(points)), points, returns):
            try:
                metrics = dict(ret.return_value or {})
            except Exception as exc:  # noqa: BLE001 - Hydra re-raises the job's own exception here
                metrics = {"status": "failed", "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
            results.append({**metrics, "job": job, "overrides": list(overrides), "launch_wall_s": wall_share})
        self.next_job += len(points)
        return results

    def write_ledger(self, ledger: dict) -> None:
        atomic_write(self.sweep_dir / self.ledger_file, json.dumps(ledger, indent=1) + "\n")


def speed(result: dict) -> float:
    """A result's steady throughput, or -inf where it did not finish (so it ranks last)."""
    value = result.get("throughput") if result.get("status") == "ok" else None
    return value if value is not None and math.isfinite(value) else -math.inf
