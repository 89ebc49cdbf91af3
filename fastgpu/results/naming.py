"""What one sweep point knows about its sweep: which keys are swept, its readable name, W&B group and tags."""

import shutil
from pathlib import Path

from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

from fastgpu.components import component_name

SHORT_KEYS = {"channels_last": "cl", "data.batch_size": "bs", "parallel.nproc_per_node": "np", "optimizer.lr": "lr"}
NOT_A_SETTING = ("hydra.", "logger.", "+resume", "resume", "trainer.progress_bar")


def run_name(cfg) -> str:
    """The readable name of a single run: model-precision[-compile][-cl][-strategy]."""
    parts = [component_name(cfg.model), cfg.precision.name]
    if cfg.compile:
        parts.append("compile" if cfg.compile is True else f"compile-{cfg.compile}")
    if cfg.channels_last:
        parts.append("cl")
    if cfg.parallel.strategy != "none":
        parts.append(cfg.parallel.strategy)
    return "-".join(parts)


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~")


def shown(override: str) -> str:
    """An override as the user typed it: Hydra escapes a sweep's interpolations ('$\\{data.num_classes\\}')."""
    return override.replace("\\{", "{").replace("\\}", "}")


def swept_keys(sweep_dir) -> list:
    """Keys given several values in this sweep, in command-line order (read from Hydra's multirun.yaml)."""
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.exists():
        return []
    saved = OmegaConf.load(path)
    parser = OverridesParser.create()
    keys = [
        o.get_key_element().lstrip("+~")
        for o in parser.parse_overrides(list(saved.hydra.overrides.task))
        if o.is_sweep_override()
    ]
    params = OmegaConf.select(saved, "hydra.sweeper.params") or {}
    for key, value in params.items():
        if "," in str(value) and key not in keys:
            keys.append(key)
    return [k for k in keys if not k.startswith(NOT_A_SETTING)]


def point_name(overrides: list, keys: list) -> str:
    """A readable name from the swept values: bf16-compile-cl; false flags are left out."""
    values = {_key(o): o.split("=", 1)[1] for o in overrides if "=" in o}
    parts = []
    for key in keys:
        value = values.get(key)
        if value is None or value.lower() in ("false", "null"):
            continue
        short = SHORT_KEYS.get(key, key.rsplit(".", 1)[-1])
        if value.lower() == "true":
            parts.append(short)
        elif "." in key or value.replace(".", "").replace("-", "").isdigit():
            parts.append(f"{short}{value}")
        else:
            parts.append(value)
    return "-".join(parts) or "baseline"


def sweep_point_name(hydra_cfg, repeats: int = 1, repeat: int = 0) -> str:
    """A sweep point's name from its swept values; the runs of one repeated setting told apart by their round."""
    name = point_name(task_overrides(hydra_cfg), swept_keys(hydra_cfg.sweep.dir))
    return f"{name}-r{repeat}" if repeats > 1 else name


def row_label(name: str, baseline: bool) -> str:
    """A report row's name, marked when it is the baseline (a point named 'baseline' already says so)."""
    return f"{name} (baseline)" if baseline and name != "baseline" else name


def point_tags(overrides: list, keys: list) -> list:
    values = {_key(o): o.split("=", 1)[1] for o in overrides if "=" in o}
    return [f"{SHORT_KEYS.get(k, k)}={values[k]}"[:64] for k in keys if k in values]


def sweep_group(sweep_dir, experiment=None) -> str:
    """One W&B group per sweep: the experiment's name (or 'sweep') and the sweep dir's date and time."""
    stamp = "_".join(Path(sweep_dir).resolve().parts[-2:])
    return f"{experiment or 'sweep'}-{stamp}"


def task_overrides(hydra_cfg) -> list:
    return [o for o in hydra_cfg.overrides.task if not _key(o).startswith(NOT_A_SETTING)]


HYDRA_FILES = ("config.yaml", "hydra.yaml", "overrides.yaml")


def keep_hydra_files(point_dir) -> None:
    """Keep a finished point's .hydra files aside: a resumed sweep (other overrides) rewrites them on start."""
    hydra_dir = Path(point_dir) / ".hydra"
    (hydra_dir / "done").mkdir(exist_ok=True)
    for name in HYDRA_FILES:
        if (hydra_dir / name).exists():
            shutil.copy2(hydra_dir / name, hydra_dir / "done" / name)


def restore_hydra_files(point_dir) -> None:
    """Put a finished point's .hydra files back, byte for byte, after a resumed sweep skipped it."""
    hydra_dir = Path(point_dir) / ".hydra"
    for name in HYDRA_FILES:
        if (hydra_dir / "done" / name).exists():
            shutil.copy2(hydra_dir / "done" / name, hydra_dir / name)


def truthful(name: str, tags: list, requested: dict, ran: dict) -> tuple:
    """(name, tags) of what ran: each requested value that did not run (a precision fallback, a ddp request
    with one process) is replaced by what did, e.g. 'tf32-cl' -> 'fp32-cl' and tag precision=tf32 -> =fp32."""
    for key, asked in requested.items():
        actual = ran.get(key)
        if actual is None or actual == asked:
            continue
        parts = [actual if part == asked else part for part in name.split("-")]
        name = "-".join(part for part in parts if part != "none") or "baseline"
        tags = [f"{key}={actual}" if tag == f"{key}={asked}" else tag for tag in tags]
    return name, tags
