"""Full training state, saved atomically every N steps, on a preemption signal and at the end; and resume.

The state is what an uninterrupted run would have in memory at that step: model, optimizer, scheduler,
grad scaler, RNG states, the position in the data order, the measurements so far, how many history
lines were written, and the W&B run id (so the resumed run continues the same W&B run).
"""

import errno
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from fastgpu.errors import FastGPUError, described
from fastgpu.files import atomic_write, disk_of
from fastgpu.results.store import PREVIOUS_CHECKPOINT_FILE


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    batch_in_epoch: int = 0  # batches of `epoch` already trained
    loss_sum: float = 0.0
    logged_loss_sum: float = 0.0
    logged_step: int = 0
    meter: dict = field(default_factory=dict)  # RunMeter.state_dict(): the measurements so far
    best_accuracy: float = 0.0
    time_to_target: Optional[float] = None
    steps_to_target: Optional[int] = None
    val: dict = field(default_factory=dict)
    history_lines: int = 0
    wandb_id: Optional[str] = None


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, state: dict) -> None:
    """Write to a temporary file, then rename: a kill mid-write never leaves a broken checkpoint, and a failed
    write (disk full, read-only) leaves no temporary file. The state it replaces is kept as checkpoint.prev.pt."""
    try:
        atomic_write(path, lambda tmp: _save(state, tmp), keep_as=path.with_name(PREVIOUS_CHECKPOINT_FILE))
    except RuntimeError as exc:  # torch's zip writer reports a full disk as "unexpected pos N vs M"
        needed = state_bytes(state)
        if disk_of(path.parent)[1] >= needed:
            raise
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        full.needed_bytes = needed
        raise full from exc


def _save(state: dict, tmp: Path) -> None:
    # a file we close ourselves: a failed write frees its space at once (torch's own file stays open until its writer
    # is collected, and the metrics.json that records the failure would not fit)
    with open(tmp, "wb") as file:
        torch.save(state, file)


def state_bytes(state) -> int:
    """The bytes of the tensors in a (nested) state: about what its checkpoint file needs."""
    if isinstance(state, torch.Tensor):
        return state.nbytes
    if isinstance(state, dict):
        return sum(state_bytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_bytes(v) for v in state)
    return 0


def load_checkpoint(path: Path) -> dict:
    """torch.load, but a corrupt or truncated file is one line naming the previous good state."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for a damaged file
        previous = path.with_name(PREVIOUS_CHECKPOINT_FILE)
        fallback = (
            f"the previous good state is {previous.name}: `mv {previous} {path}` to continue from it"
            if previous.exists()
            else f"there is no previous state; remove it to start {path.parent} again"
        )
        raise FastGPUError(f"{path} is corrupt ({described(exc, 120)}); {fallback}") from None


def save_state(
    path: Path, model, optimizer, scheduler, scaler, progress: Progress, fingerprint: str, main: bool, complete: bool
) -> dict:
    """Gather the full (unsharded) state on every rank (a collective under FSDP); rank 0 writes it
    atomically. Returns the model state."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    model_state, optim_state = get_state_dict(
        model, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
    )
    if main and path is not None:
        state = {
            "model": model_state,
            "optimizer": optim_state,
            "progress": asdict(progress),
            "rng": rng_state(),
            "fingerprint": fingerprint,
            "complete": complete,
            "step": progress.step,
            "epoch": progress.epoch,
        }
        if scheduler is not None:
            state["scheduler"] = scheduler.state_dict()
        if scaler.is_enabled():
            state["scaler"] = scaler.state_dict()
        save_checkpoint(path, state)
    return model_state


def resumable_state(path: Path, fingerprint: str) -> Optional[dict]:
    """The saved state if it is an unfinished checkpoint of this very configuration, else None."""
    if not path.exists():
        return None
    state = load_checkpoint(path)
    return state if not state.get("complete", True) and state.get("fingerprint") == fingerprint else None


def interrupted_fingerprint(path: Path) -> Optional[str]:
    """The configuration fingerprint of an unfinished checkpoint (an interrupted run); None if it finished."""
    state = load_checkpoint(path)
    return None if state.get("complete", True) else state.get("fingerprint")


def resumable(path: Path, fingerprint: str) -> bool:
    return resumable_state(path, fingerprint) is not None


def load_state(state: dict, model, optimizer, scheduler, scaler) -> Progress:
    """Put a saved state (from resumable_state) back into the run's objects; return its progress."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    set_state_dict(
        model,
        optimizer,
        model_state_dict=state["model"],
        optim_state_dict=state["optimizer"],
        options=StateDictOptions(full_state_dict=True),
    )
    if scheduler is not None and "scheduler" in state:
        scheduler.load_state_dict(state["scheduler"])
    if "scaler" in state:
        scaler.load_state_dict(state["scaler"])
    restore_rng(state["rng"])
    return Progress(**state["progress"])
