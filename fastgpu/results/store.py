"""A run's local record: metrics.json (final summary) and history.jsonl (per log step / epoch). Torch-free, so
the report and status commands start fast; checkpoint.pt is fastgpu/train/checkpoint.py's."""

import json
import math
from pathlib import Path

from fastgpu.files import atomic_write
from fastgpu.results.figures import ordered

METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
PREVIOUS_CHECKPOINT_FILE = "checkpoint.prev.pt"  # the state saved before checkpoint.pt: one good state in reserve
CONFIG_FILE = "config.yaml"  # the resolved config of the run (Hydra's .hydra/ has it too, when Hydra launched it)


def _jsonable(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(out_dir: Path, metrics: dict) -> None:
    clean = {k: _jsonable(v) for k, v in ordered(metrics).items()}
    atomic_write(Path(out_dir) / METRICS_FILE, json.dumps(clean, indent=2) + "\n")


def add_failure(out_dir: Path, record: dict) -> None:
    """Write a failure into metrics.json, keeping what the run recorded before it failed (e.g. training results when
    compression failed, or the results of a point killed during its export)."""
    earlier = point_metrics(out_dir)
    if earlier.get("status") == UNREADABLE:
        earlier = {}
    write_metrics(out_dir, {**earlier, **record})


def read_metrics(out_dir: Path) -> dict:
    return json.loads((Path(out_dir) / METRICS_FILE).read_text())


UNREADABLE = "unreadable"  # the status of a point whose metrics.json cannot be parsed (truncated, edited, damaged)


def point_metrics(point_dir: Path, missing=None) -> dict:
    """A point's metrics.json for the report and status: `missing` where there is none, and a record with status
    `unreadable` and a one-line error naming the file where it cannot be read."""
    path = Path(point_dir) / METRICS_FILE
    if not path.exists():
        return dict(missing or {})
    try:
        metrics = read_metrics(point_dir)
        if not isinstance(metrics, dict):
            raise ValueError("not a JSON object")
        return metrics
    except (OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return {
            "status": UNREADABLE,
            "error_type": type(exc).__name__,
            "error": f"{path} is unreadable ({reason}); rerun this point (the sweep's command with +resume=true)",
        }


def read_history(out_dir: Path) -> list:
    path = Path(out_dir) / HISTORY_FILE
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_history(out_dir: Path, lines: int) -> None:
    """Drop what an interrupted run logged after its last checkpoint (the resumed run logs it again)."""
    path = Path(out_dir) / HISTORY_FILE
    if path.exists():
        kept = path.read_text().splitlines(keepends=True)[:lines]
        atomic_write(path, "".join(kept))


class HistoryWriter:
    """Appends one JSON line per record; opened once, flushed at each (infrequent) write."""

    def __init__(self, out_dir: Path):
        self._file = open(Path(out_dir) / HISTORY_FILE, "a")

    def write(self, record: dict) -> None:
        self._file.write(json.dumps({k: _jsonable(v) for k, v in record.items()}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_ledger(sweep_dir, name: str):
    """A search sweeper's record of what it decided (halving.json, max_batch.json), or None."""
    path = Path(sweep_dir) / name
    return json.loads(path.read_text()) if path.exists() else None
