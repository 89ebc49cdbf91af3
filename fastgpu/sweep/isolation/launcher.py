"""FastGPU's default sweep launcher (`hydra/launcher=isolated`): every point in a process of its own, forked by a
fork server that never touched CUDA and never imported the user's modules (see this package's docstring).

In one process, a point inherits what the points before it left: allocator state and a grown heap, dynamo caches,
threads, deterministic flags, a lifetime peak RSS, W&B's service (the second of two identical points ran 24-32%
slower: experiments/isolation.py, docs/performance.md). A fork from the sweep's own process is not safe either:
once the user's module ran `torch.cuda.is_available()` there, every later fork is a "bad fork" that cannot use CUDA.
The fork server starts each point from the same untouched state at a cost of milliseconds, with torch, FastGPU,
Hydra and W&B imported.

Points run one at a time. A point killed by a signal (SIGKILL, the out-of-memory killer, a segfault) is one failed
point: the sweep writes its record (signal, peak memory), goes on and reports it; `+resume=true` reruns it alone,
and never runs, so never rewrites, a finished point. A signal to the sweep (Ctrl-C, kill, HUP, Slurm's) goes on to
the point, which saves and stops, and the sweep stops with the point's exit code. `in_process: true` runs every
point in the sweep's process (Hydra's basic launcher; `+experiment=ab` alternates two settings there on purpose).
Import-light: Hydra scans hydra_plugins, and this module with it, on every start.
"""

import atexit
import copy
import logging
import shutil
import sys
import tempfile
from pathlib import Path

from hydra._internal.core_plugins.basic_launcher import BasicLauncher
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, setup_globals
from omegaconf import OmegaConf, open_dict, read_write

from fastgpu.results.naming import shown, sweep_point_name
from fastgpu.results.rundirs import finished_point, remove_lock_of, sweep_resume_hint
from fastgpu.results.store import add_failure
from fastgpu.results.wandb_logger import wandb_mode
from fastgpu.sweep.isolation.ending import ended_record, oom_kills
from fastgpu.sweep.isolation.handle import Ended, PointServer, Tainted
from fastgpu.sweep.isolation.payload import read_payload
from fastgpu.sweep.isolation.relay import SignalRelay

log = logging.getLogger(__name__)
EAGER = ["fastgpu.job.run", "torch._dynamo"]


class IsolatedLauncher(BasicLauncher):
    def __init__(self, in_process: bool = False, warm_packages=()) -> None:
        super().__init__()
        self.in_process = in_process
        self.warm_packages = tuple(warm_packages or ())  # beyond torch, FastGPU, Hydra, W&B (warm.ALLOWED)
        self._server = None
        self._cold_because = ""  # set once the server's own warm imports made its forks unsafe
        self._imported = {}  # what points imported, in order: the server imports the allowed ones before a fork
        self._payloads = None

    def setup(self, *, hydra_context, task_function, config) -> None:
        """The fork server starts here, before the sweeper composes its points, so that its imports (what every point
        needs: the training code, torch's compiler stack that torch.optim imports, W&B) overlap that work."""
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        if not self.in_process:
            self._ready_server()

    def launch(self, job_overrides, initial_job_idx):
        if self.in_process:
            return BasicLauncher.launch(self, job_overrides, initial_job_idx)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        log.info(f"Launching {len(job_overrides)} jobs, each in a process of its own")
        with SignalRelay() as relay:
            return [self._launch_point(list(o), initial_job_idx + i, relay) for i, o in enumerate(job_overrides)]

    def _launch_point(self, overrides: list, idx: int, relay: SignalRelay) -> JobReturn:
        log.info(f"\t#{idx} : {' '.join(map(shown, filter_overrides(overrides)))}")
        config = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
        with open_dict(config):
            config.hydra.job.id = idx
            config.hydra.job.num = idx
        out_dir = point_dir(config)
        done = finished_point(out_dir) if config.get("resume") is True else None
        if done is not None:  # not run at all, so nothing of it is rewritten
            return job_return(overrides, config, out_dir, done)
        if relay.stop_requested:  # a signal between points: this one does not start
            print(f"fastgpu: stopped by {relay.last}", file=sys.stderr)
            print(sweep_resume_hint(out_dir, config.hydra.sweep.dir), file=sys.stderr)
            sys.exit(130)
        ended, payload, oom_killed = self._run(config, idx, relay)
        if payload is None:  # killed, or its server died under it: how it ended is the record
            record = self._ending(ended, config, oom_killed)
        else:
            kind, value, imported = payload
            self._imported.update(dict.fromkeys(imported))
            if kind == "exit":  # the point ended the sweep (stopped by a signal, having said how to resume)
                sys.exit(value)
            if kind == "ok" and not relay.stop_requested:
                return value
            record = value if kind == "error" else None
        if record is not None:
            record = self._record_failure(out_dir, config, overrides, record, ended.pid)
        if relay.stop_requested:  # it ended without seeing the signal: the sweep stops all the same
            print(sweep_resume_hint(out_dir, config.hydra.sweep.dir), file=sys.stderr)
            sys.exit(130)
        return job_return(overrides, config, out_dir, record)

    def _run(self, config, idx: int, relay: SignalRelay) -> tuple:
        import cloudpickle

        payload_path = self._payload_dir() / f"{idx}.pkl"
        payload_path.unlink(missing_ok=True)
        blob = cloudpickle.dumps(config)
        kills_before = oom_kills()
        for _ in range(2):
            server = self._ready_server()
            try:
                ended = server.run(blob, payload_path, list(self._imported), relay)
                break
            except Tainted as why:  # once: a cold server imports nothing beyond what the sweep's process has
                self._cold_because = f"warm imports made forks unsafe: {why}"
        else:
            ended = Ended(None, server_death=f"could not fork cleanly ({self._cold_because})")
        kills_after = oom_kills()
        return ended, read_payload(payload_path), None not in (kills_before, kills_after) and kills_after > kills_before

    def _ready_server(self) -> PointServer:
        if self._server is None or not self._server.alive():
            from hydra.core.singleton import Singleton

            init = {
                "hydra_context": self.hydra_context,
                "task_function": self.task_function,
                "sys_path": list(sys.path),
                "singletons": Singleton.get_state(),
                # what every point imports, imported once by the server: a point's job, the compiler stack the first
                # optimizer imports, W&B (each point forks its logger from it: fastgpu/results/wandb_logger.py)
                "eager": EAGER + ([] if wandb_mode(self.config) == "disabled" else ["wandb"]),
            }
            if self._server is None:
                atexit.register(self._shutdown)
            self._server = PointServer(init, self._cold_because, self.warm_packages)
        return self._server

    def _payload_dir(self) -> Path:
        if self._payloads is None:
            self._payloads = Path(tempfile.mkdtemp(prefix="fastgpu-points-"))
        return self._payloads

    def _shutdown(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self._payloads is not None:
            shutil.rmtree(self._payloads, ignore_errors=True)

    @staticmethod
    def _ending(ended: Ended, config, oom_killed: bool) -> dict:
        if ended.status is None:
            return {
                "status": "failed",
                "error_type": "ServerDied",
                "error": f"the fork server running it {ended.server_death}, and the point with it; "
                "rerun it with the sweep's command and +resume=true",
            }
        return ended_record(ended.status, ended.peak_rss, oom_killed, OmegaConf.select(config, "data.batch_size"))

    @staticmethod
    def _record_failure(out_dir: Path, config, overrides: list, record: dict, pid) -> dict:
        """The point's metrics.json says how it ended (kept: what it recorded before); the report lists it."""
        repeats = OmegaConf.select(config, "trainer.repeats", default=1)
        name = sweep_point_name(config.hydra, repeats, OmegaConf.select(config, "trainer.repeat", default=0))
        record = {**record, "name": name, "batch_size": OmegaConf.select(config, "data.batch_size")}
        hydra_dir = out_dir / ".hydra"
        try:
            if not (hydra_dir / "overrides.yaml").exists():  # died before Hydra wrote it: the report lists it anyway
                hydra_dir.mkdir(parents=True, exist_ok=True)
                OmegaConf.save(OmegaConf.create(list(overrides)), hydra_dir / "overrides.yaml")
            add_failure(out_dir, record)
            remove_lock_of(out_dir, pid)
        except OSError:  # a full or read-only disk: the line below is the record
            pass
        print(f"fastgpu: error: {record['error']} [{out_dir}]", file=sys.stderr)
        return record


def point_dir(config) -> Path:
    """Where Hydra's run_job puts this point: hydra.sweep.dir / hydra.sweep.subdir, resolved as run_job does."""
    from hydra.core.hydra_config import HydraConfig

    previous = HydraConfig.instance().cfg
    HydraConfig.instance().set_config(config)
    try:
        return Path(str(OmegaConf.select(config, "hydra.sweep.dir"))) / str(
            OmegaConf.select(config, "hydra.sweep.subdir")
        )
    finally:
        HydraConfig.instance().cfg = previous


def job_return(overrides: list, config, out_dir: Path, value) -> JobReturn:
    """The JobReturn of a point the sweep answers for (skipped as done, or ended without sending one back)."""
    task_cfg = copy.deepcopy(config)
    with read_write(task_cfg), open_dict(task_cfg):
        del task_cfg["hydra"]
    return JobReturn(
        overrides=overrides,
        cfg=task_cfg,
        hydra_cfg=OmegaConf.masked_copy(config, "hydra"),
        working_dir=str(out_dir),
        task_name=str(config.hydra.job.name),
        status=JobStatus.COMPLETED,
        _return_value=value,
    )
