"""A run's configuration fingerprint: what must match for a checkpoint to continue it. Torch-free."""

import hashlib
import json

from omegaconf import OmegaConf

NOT_FINGERPRINTED = ("logger", "resume", "overwrite", "hydra", "inference", "export", "report")


def config_fingerprint(cfg) -> str:
    """What must match for a checkpoint to continue a run: every setting but logging and launching, resolved (a run
    saves its config resolved, and `+resume=<dir>` fingerprints that copy: `${data.num_classes}` must read the same
    as the 10 it resolved to)."""
    kept = [key for key in cfg if key not in NOT_FINGERPRINTED]
    plain = OmegaConf.to_container(OmegaConf.masked_copy(cfg, kept), resolve=True)
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
