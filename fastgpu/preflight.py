"""What a command is checked for before Hydra or FastGPU write anything (Hydra's on_run_start): every value in its
range, the run a `+resume=<dir>` names, the dataset's folder and a batch that fits it. A refusal is one line and
leaves no dir behind. Sweep points are checked again when they run, where a refusal is that point's failure."""

from pathlib import Path

from fastgpu.errors import FastGPUError
from fastgpu.results import CHECKPOINT_FILE, CONFIG_FILE


def check_before_writing(cfg) -> None:
    from fastgpu.config import check_ranges

    resume = cfg.get("resume")
    if isinstance(resume, str):
        resume_config(Path(resume))  # that run's own settings were checked when it started
        return
    check_ranges(cfg)
    check_data(cfg)
    from fastgpu.parallel import external_launcher_env

    external_launcher_env()  # a multi-task Slurm job started without srun is refused here


def check_data(cfg) -> None:
    from fastgpu.data import check_data_source

    ranks = cfg.parallel.nproc_per_node if cfg.parallel.strategy != "none" else 1
    check_data_source(cfg.data, ranks, cfg.trainer.accumulate_grad_batches)


def resume_config(run_dir: Path):
    """`+resume=<run dir>`: that run's own config, if it holds an unfinished checkpoint of it."""
    from omegaconf import OmegaConf

    from fastgpu.checkpoint import config_fingerprint, resumable
    from fastgpu.rundir import pop_command_keys

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
