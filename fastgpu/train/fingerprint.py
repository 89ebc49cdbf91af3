"""A run's configuration fingerprint: what must match for a checkpoint to continue it. Torch-free."""

import hashlib
import json

from omegaconf import OmegaConf


def config_fingerprint(cfg) -> str:
    """What must match for a checkpoint to continue a run: every setting but logging and launching."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    for key in ("logger", "resume", "overwrite", "hydra", "inference", "export", "report"):
        plain.pop(key, None)
    for key in (
        "progress_bar",
        "monitor_interval_s",
        "num_threads",
        "checkpoint_every_n_steps",
        "log_every_n_steps",
        "sync_debug",
    ):
        plain.get("trainer", {}).pop(key, None)
    return hashlib.sha256(json.dumps(plain, sort_keys=True, default=str).encode()).hexdigest()[:16]
