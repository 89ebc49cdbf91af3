"""What a point sends back to the sweep: a file the point writes atomically and the sweep reads without trusting it.

A file rather than a pipe: the sweep waits for the point's exit, never for an end-of-file that a process the point
forked could hold open, and a result of any size is never stuck in a full pipe."""

import pickle
from pathlib import Path

from fastgpu.errors import described
from fastgpu.files import atomic_write


def write_payload(path: Path, kind: str, value, imported: list) -> None:
    """kind 'ok' (value: Hydra's JobReturn), 'exit' (value: the point's exit code: it stopped the sweep) or 'error'
    (value: a failure record)."""
    atomic_write(path, _dumps(kind, value, imported))


def _dumps(kind: str, value, imported: list) -> bytes:
    try:
        return pickle.dumps((kind, value, imported))
    except Exception:  # a config node typed by a class defined in a function (a plugin's preset): plain configs
        try:
            return pickle.dumps((kind, _portable(value), imported))
        except Exception as exc:  # an unpicklable return value: its text still reaches the sweep
            record = failure("UnsendableResult", f"its result could not be sent back ({described(exc, 200)})")
            return pickle.dumps(("error", record, imported))


def read_payload(path: Path):
    """(kind, value, imported modules), None where the point wrote nothing, and an 'error' record where what it wrote
    cannot be read (truncated, or an object that will not unpickle here)."""
    try:
        blob = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    try:
        kind, value, imported = pickle.loads(blob)
        if kind not in ("ok", "exit", "error"):
            raise ValueError(f"unknown kind {kind!r}")
        return kind, value, list(imported)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - unpickling runs the sender's code: anything can come of it
        return "error", failure("UnreadableResult", f"its result could not be read back ({described(exc, 200)})"), []


def failure(error_type: str, error: str) -> dict:
    return {"status": "failed", "error_type": error_type, "error": error}


def _portable(result):
    """The JobReturn with its configs as plain containers (same keys and values, no structured types)."""
    from omegaconf import OmegaConf

    for attr in ("cfg", "hydra_cfg"):
        value = getattr(result, attr, None)
        if value is not None:
            setattr(result, attr, OmegaConf.create(OmegaConf.to_container(value, resolve=False)))
    return result
