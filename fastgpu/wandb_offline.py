"""Read an offline W&B run (`offline-run-*/run-*.wandb`) back: run info, config, summary and history.

wandb writes no summary or config file offline; everything is inside the `.wandb` file, a LevelDB-log
framed stream (32 KiB blocks, 7-byte record headers) of `wandb_internal_pb2.Record` protobufs.
"""

import json
import struct
from pathlib import Path

BLOCK = 32 * 1024
HEADER = 7  # checksum (4), length (2), type (1); the file also starts with a 7-byte ':W&B' header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def _records(data: bytes):
    pos, pending = HEADER, b""
    while pos + HEADER <= len(data):
        if BLOCK - pos % BLOCK < HEADER:  # block trailer too small for a header: padding
            pos += BLOCK - pos % BLOCK
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield chunk
        elif kind == FIRST:
            pending = chunk
        elif kind == MIDDLE:
            pending += chunk
        elif kind == LAST:
            yield pending + chunk
            pending = b""


def _set(tree: dict, path: list, value) -> None:
    for part in path[:-1]:
        tree = tree.setdefault(part, {})
    tree[path[-1]] = value


def read_offline_run(run_dir) -> dict:
    """{'id', 'name', 'group', 'job_type', 'tags', 'project', 'config', 'summary', 'history'} of one offline run."""
    from wandb.proto import wandb_internal_pb2 as pb

    path = next(Path(run_dir).glob("run-*.wandb"))
    run = {"config": {}, "summary": {}, "history": []}
    for raw in _records(path.read_bytes()):
        record = pb.Record()
        record.ParseFromString(raw)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            r = record.run
            run.update(
                id=r.run_id,
                name=r.display_name,
                group=r.run_group,
                job_type=r.job_type,
                tags=list(r.tags),
                project=r.project,
            )
            for item in r.config.update:
                _set(run["config"], [item.key] if item.key else list(item.nested_key), json.loads(item.value_json))
        elif kind == "config":
            for item in record.config.update:
                _set(run["config"], [item.key] if item.key else list(item.nested_key), json.loads(item.value_json))
        elif kind == "summary":
            for item in record.summary.update:
                _set(run["summary"], [item.key] if item.key else list(item.nested_key), json.loads(item.value_json))
        elif kind == "history":
            run["history"].append(
                {(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item}
            )
    # config values are stored as {"value": ...} wrappers
    run["config"] = {k: (v["value"] if isinstance(v, dict) and "value" in v else v) for k, v in run["config"].items()}
    return run


def offline_runs(root) -> list:
    """Every offline run under `root` (a run dir or a sweep dir), read back."""
    return [read_offline_run(d) for d in sorted(Path(root).rglob("offline-run-*")) if d.is_dir()]
