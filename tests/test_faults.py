"""Bad input and injected faults. Every case: exit code != 0, exactly one line on stderr naming the cause and
the fix (no traceback), every file already written byte-identical (checksums), no temporary file left.

The disk faults are real: a full tmpfs and a read-only bind mount, each in a private mount namespace (root)."""

import dataclasses
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
import typing

import numpy as np
import pytest
from conftest import IN_CI, REPO, compose_cfg, run_cli, start_cli
from PIL import Image

from fastgpu.config import RANGES, FastGPUConfig, check_ranges
from fastgpu.errors import FastGPUError
from fastgpu.results.store import read_history, read_metrics

QUIET = {"WANDB_MODE": "disabled"}
SMALL = ["trainer.progress_bar=false", "trainer.monitor_interval_s=0", "inference.benchmark=false", "export=[]"]
# slow enough (40 ms/step, 66 steps) that a signal lands mid-training; a checkpoint every 5 steps
SLOW = [*SMALL, "trainer.epochs=3", "trainer.sleep_ms=40", "trainer.log_every_n_steps=5"]
SLOW += ["trainer.checkpoint_every_n_steps=5"]


def checksums(directory) -> dict:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def assert_refused(result, *words):
    """Failed, with one line on stderr that names the cause: no traceback, nothing else."""
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stdout[-2000:]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert lines[0].startswith("fastgpu: error: "), lines[0]
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def assert_no_temporary_files(directory):
    assert not [p for p in directory.rglob("*.tmp")], list(directory.rglob("*.tmp"))


# -- values out of range ---------------------------------------------------------------------------------------


def _edges(valid):
    """(a value just outside the range, a valid value on its edge)."""
    if valid.choices:
        return "no-such-choice", valid.choices[0]
    if valid.low_open:  # the bound itself is the bad value
        return valid.low, valid.low + (0.5 * (valid.high - valid.low) if valid.high is not None else 1)
    return valid.low - 1, valid.low


@pytest.fixture(scope="module")
def default_cfg():
    cfg = compose_cfg()
    check_ranges(cfg)  # the defaults are valid
    return cfg


@pytest.mark.parametrize("key", sorted(RANGES))
def test_each_value_is_checked_against_its_range_at_composition(key, default_cfg):
    from omegaconf import OmegaConf, open_dict

    valid = RANGES[key]
    bad, edge = _edges(valid)
    cfg = default_cfg.copy()
    if isinstance(OmegaConf.select(cfg, key), list) or OmegaConf.is_list(OmegaConf.select(cfg, key)):
        bad, edge = [8, bad], [edge]  # a list: each element is checked
    with open_dict(cfg):  # an optimizer's or scheduler's key the default one does not have (+optimizer.betas=...)
        OmegaConf.update(cfg, key, edge)
    check_ranges(cfg)  # and so is the edge
    OmegaConf.update(cfg, key, bad)
    with pytest.raises(FastGPUError) as refused:
        check_ranges(cfg)
    stored = OmegaConf.select(cfg, key)  # as the schema typed it (0 -> 0.0 for a float)
    assert str(refused.value) == f"{key}={stored!r} is out of range; use {valid.expected}"
    if valid.high is not None and not isinstance(bad, list):  # and above the top
        OmegaConf.update(cfg, key, valid.high + (0 if valid.high_open else 1))
        with pytest.raises(FastGPUError, match=f"^{key}="):
            check_ranges(cfg)


def _numeric_fields(schema, prefix=""):
    for field in dataclasses.fields(schema):
        key = f"{prefix}{field.name}"
        kind = typing.get_args(field.type) or (field.type,)
        if dataclasses.is_dataclass(field.type) or (
            field.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(field.default_factory)
        ):
            yield from _numeric_fields(field.default_factory, f"{key}.")
        elif int in kind or float in kind:
            yield key


def test_every_number_in_the_schema_has_a_range():
    unchecked = [key for key in _numeric_fields(FastGPUConfig) if key not in RANGES]
    assert unchecked == [], f"no valid range for {unchecked}"


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["optimizer.lr=-1"], ["optimizer.lr=-1", "> 0"]),  # was a 71-line traceback
        (["optimizer.momentum=2"], ["optimizer.momentum=2", "[0, 1)"]),  # was accepted, then diverged
        (["trainer.device=tpu"], ["trainer.device='tpu'", "cuda:N"]),
        (["data=imagefolder", "data.root=pyproject.toml"], ["is a file", "folder"]),  # wrote a run dir
        (["data.batch_size=5000"], ["larger than the training set", "1437 of 1437"]),
        (["+resume=does/not/exist"], ["+resume=does/not/exist", "interrupted run"]),  # left outputs/DATE/TIME
    ],
)
def test_bad_input_is_one_line_before_anything_is_written(tmp_path, overrides, words, cli_in_process):
    """Refused before Hydra writes its run dir: nothing appears where the run would have gone (outputs/ by
    default, relative to where the command runs) and no W&B run starts."""
    shutil.copy(REPO / "pyproject.toml", tmp_path)  # a file where a folder belongs
    result = cli_in_process(*overrides, cwd=tmp_path, env=QUIET)
    assert_refused(result, *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pyproject.toml"]


# -- run and sweep dirs ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("finished") / "run"
    result = run_cli(*SMALL, "trainer.max_steps=5", f"hydra.run.dir={run_dir}", env=QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


def test_a_finished_run_is_never_overwritten_unless_asked(finished_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(finished_run, run_dir)
    before = checksums(run_dir)
    result = run_cli(*SMALL, "trainer.max_steps=5", f"hydra.run.dir={run_dir}", env=QUIET)
    assert_refused(result, str(run_dir), "finished run", "+overwrite=true")
    assert checksums(run_dir) == before  # .hydra/ and the log included: refused before Hydra writes

    replaced = run_cli(*SMALL, "trainer.max_steps=3", "+overwrite=true", f"hydra.run.dir={run_dir}", env=QUIET)
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert read_metrics(run_dir)["steps"] == 3
    assert [h["step"] for h in read_history(run_dir) if "train/loss" in h] == [1]  # one run's history, not two


def test_a_dir_another_live_process_writes_is_refused_and_a_dead_writers_lock_is_taken_over(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / ".fastgpu.lock").write_text(f'{{"pid": {os.getpid()}, "host": "{os.uname().nodename}"}}')
    before = checksums(run_dir)
    result = run_cli(*SMALL, "trainer.max_steps=3", f"hydra.run.dir={run_dir}", env=QUIET)
    assert_refused(result, f"in use by pid {os.getpid()}", "choose another hydra.run.dir")
    assert checksums(run_dir) == before

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / ".fastgpu.lock").write_text(f'{{"pid": {dead.pid}, "host": "{os.uname().nodename}"}}')
    result = run_cli(*SMALL, "trainer.max_steps=3", f"hydra.run.dir={run_dir}", env=QUIET)
    assert result.returncode == 0, result.stderr[-3000:]
    assert not (run_dir / ".fastgpu.lock").exists()  # released at the end


def test_a_second_sweep_into_a_sweep_dir_is_refused_while_and_after_the_first(tmp_path):
    sweep_dir = tmp_path / "sweep"
    first = run_cli("-m", *SMALL, "trainer.max_steps=3", f"hydra.sweep.dir={sweep_dir}", env=QUIET)
    assert first.returncode == 0, first.stderr[-3000:]
    before = checksums(sweep_dir)
    again = run_cli("-m", *SMALL, "trainer.max_steps=4", f"hydra.sweep.dir={sweep_dir}", env=QUIET)
    assert_refused(again, "already holds a sweep", "+resume=true")
    assert checksums(sweep_dir) == before

    (sweep_dir / ".fastgpu.lock").write_text(f'{{"pid": {os.getpid()}, "host": "{os.uname().nodename}"}}')
    running = run_cli("-m", *SMALL, "trainer.max_steps=4", "+resume=true", f"hydra.sweep.dir={sweep_dir}", env=QUIET)
    assert_refused(running, f"in use by pid {os.getpid()}", "hydra.sweep.dir")
    assert {k: v for k, v in checksums(sweep_dir).items() if k != ".fastgpu.lock"} == before


def test_default_run_dirs_are_unique_to_the_microsecond():
    text = (REPO / "fastgpu" / "conf" / "config.yaml").read_text()
    assert "dir: outputs/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}" in text
    assert "dir: outputs/multirun/${now:%Y-%m-%d}/${now:%H-%M-%S-%f}" in text


# -- signals and checkpoints ---------------------------------------------------------------------------------------


def _ctrl_c_at(step, run_dir, *overrides):
    """Start a SLOW run, press Ctrl-C (SIGINT to the launching process) once it logged `step`; the result."""
    process = start_cli(*SLOW, *overrides, f"hydra.run.dir={run_dir}", env=QUIET)
    deadline = time.time() + 120
    while not ((run_dir / "history.jsonl").exists() and any(h["step"] >= step for h in read_history(run_dir))):
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess([], process.returncode, "", stderr)


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory):
    """A run stopped by Ctrl-C mid-training: what every checkpoint fault starts from."""
    run_dir = tmp_path_factory.mktemp("interrupted") / "run"
    return run_dir, _ctrl_c_at(15, run_dir)


def test_ctrl_c_saves_the_state_and_names_the_resume_command(interrupted_run):
    run_dir, result = interrupted_run
    assert_refused(result, "stopped by SIGINT at step", f"+resume={run_dir}")
    assert read_metrics(run_dir)["status"] == "interrupted"
    assert (run_dir / "checkpoint.pt").exists() and (run_dir / "checkpoint.prev.pt").exists()
    assert not (run_dir / ".fastgpu.lock").exists()
    assert_no_temporary_files(run_dir)


def test_ctrl_c_to_a_run_that_started_its_own_ddp_workers_stops_them_together_with_a_checkpoint(tmp_path):
    run_dir = tmp_path / "run"
    # the signal goes to the launching process only: it passes it on to its workers
    result = _ctrl_c_at(5, run_dir, "parallel=ddp", "parallel.nproc_per_node=2")
    assert_refused(result, "stopped by SIGINT at step")
    assert read_metrics(run_dir)["status"] == "interrupted"
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / ".fastgpu.lock").exists()


def test_ctrl_c_during_a_sweep_stops_the_sweep_and_names_its_resume(tmp_path):
    sweep_dir = tmp_path / "sweep"
    process = start_cli("-m", *SLOW, "trainer.seed=0,1,2", f"hydra.sweep.dir={sweep_dir}", env=QUIET)
    deadline = time.time() + 120
    while not any(h["step"] >= 5 for h in _history_or_none(sweep_dir / "0")):
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    assert f"continue it with the same command and hydra.sweep.dir={sweep_dir} +resume=true" in stderr
    assert read_metrics(sweep_dir / "0")["status"] == "interrupted" and not (sweep_dir / "1").exists()


def _history_or_none(run_dir) -> list:
    return read_history(run_dir) if (run_dir / "history.jsonl").exists() else []


def test_an_interrupted_dir_is_not_continued_with_other_settings(interrupted_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run[0], run_dir)
    before = checksums(run_dir)
    result = run_cli(*SLOW, "optimizer.lr=0.02", f"hydra.run.dir={run_dir}", env=QUIET)
    line = assert_refused(result, "interrupted run of other settings", f"+resume={run_dir}")
    assert line.count("fingerprint") == 1 and "this run's is" in line  # both fingerprints named
    assert checksums(run_dir) == before


def test_a_corrupt_checkpoint_names_the_previous_good_state_which_resumes(interrupted_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run[0], run_dir)
    checkpoint = run_dir / "checkpoint.pt"
    checkpoint.write_bytes(checkpoint.read_bytes()[: checkpoint.stat().st_size // 2])  # truncated mid-write
    before = checksums(run_dir)
    result = run_cli(f"+resume={run_dir}", env=QUIET)
    assert_refused(result, f"{checkpoint} is corrupt", "checkpoint.prev.pt")
    assert checksums(run_dir) == before

    os.replace(run_dir / "checkpoint.prev.pt", checkpoint)  # what the message says to do
    resumed = run_cli(f"+resume={run_dir}", env=QUIET)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert read_metrics(run_dir)["status"] == "ok" and read_metrics(run_dir)["steps"] == 66


def _in_mount_namespace(script: str):
    """Run a shell script in a private mount namespace (its mounts vanish with it); needs root."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        reason = "mounting a full or read-only filesystem needs root and unshare"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    return subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
        cwd=REPO,
        env={**os.environ, **QUIET},
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_full_disk_is_one_line_and_keeps_the_previous_state(interrupted_run, tmp_path):
    source, mount = interrupted_run[0], tmp_path / "disk"
    mount.mkdir()
    size_kb = sum(p.stat().st_size for p in source.rglob("*") if p.is_file()) // 1024 + 64
    script = f"""set -e
mount -t tmpfs -o size={size_kb}k tmpfs {mount}
cp -a {source} {mount}/run
dd if=/dev/zero of={mount}/filler bs=4k 2>/dev/null || true   # fill what is left
cd {mount}/run && find . -type f | sort | xargs sha256sum > {tmp_path}/before.txt && cd {REPO}
set +e
{sys.executable} -m fastgpu +resume={mount}/run hydra.run.dir={tmp_path}/hydra 2> {tmp_path}/stderr.txt
echo $? > {tmp_path}/rc.txt
cd {mount}/run && find . -type f | sort | xargs sha256sum > {tmp_path}/after.txt
find {mount}/run -name '*.tmp' > {tmp_path}/tmp_files.txt
"""
    done = _in_mount_namespace(script)
    assert done.returncode == 0, done.stderr[-3000:]
    result = subprocess.CompletedProcess(
        [], int((tmp_path / "rc.txt").read_text()), "", (tmp_path / "stderr.txt").read_text()
    )
    assert_refused(result, "No space left on device", "free disk space")
    assert (tmp_path / "after.txt").read_text() == (tmp_path / "before.txt").read_text()
    assert (tmp_path / "tmp_files.txt").read_text() == ""


def test_a_disk_that_fills_during_a_checkpoint_is_one_line_with_the_last_good_state_and_a_failed_record(
    interrupted_run, tmp_path
):
    """The disk has room for two checkpoints and not the third (a checkpoint every 5 steps)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    checkpoint_kb = (interrupted_run[0] / "checkpoint.pt").stat().st_size // 1024
    script = f"""set -e
mount -t tmpfs -o size={checkpoint_kb * 5 // 2 + 64}k tmpfs {mount}
set +e
{sys.executable} -m fastgpu {" ".join(SLOW)} hydra.run.dir={mount}/run 2> {tmp_path}/stderr.txt
echo $? > {tmp_path}/rc.txt
cp -a {mount}/run {tmp_path}/after
"""
    done = _in_mount_namespace(script)
    assert done.returncode == 0, done.stderr[-3000:]
    result = subprocess.CompletedProcess(
        [], int((tmp_path / "rc.txt").read_text()), "", (tmp_path / "stderr.txt").read_text()
    )
    line = assert_refused(result, "checkpoint.pt: No space left on device", f"the disk at {mount} has")
    assert "this write needs about 0.6 MB" in line, line  # the state's size: a 77k-parameter CNN and its momentum
    after = tmp_path / "after"
    import torch

    steps = [torch.load(after / name, weights_only=False)["step"] for name in ("checkpoint.pt", "checkpoint.prev.pt")]
    assert steps == [10, 5]  # the last good state and the one before it, both whole
    record = read_metrics(after)
    assert record["status"] == "failed" and record["error"] == line.removeprefix("fastgpu: error: ")
    assert_no_temporary_files(after)


def test_a_read_only_run_dir_is_one_line_and_keeps_the_previous_state(interrupted_run, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(interrupted_run[0], run_dir)
    before = checksums(run_dir)
    script = f"""set -e
mount --bind {run_dir} {run_dir} && mount -o remount,ro,bind {run_dir}
set +e
{sys.executable} -m fastgpu +resume={run_dir} hydra.run.dir={tmp_path}/hydra 2> {tmp_path}/stderr.txt
echo $? > {tmp_path}/rc.txt
"""
    done = _in_mount_namespace(script)
    assert done.returncode == 0, done.stderr[-3000:]
    result = subprocess.CompletedProcess(
        [], int((tmp_path / "rc.txt").read_text()), "", (tmp_path / "stderr.txt").read_text()
    )
    assert_refused(result, "Read-only file system", "writable")
    assert checksums(run_dir) == before
    assert_no_temporary_files(run_dir)


def test_a_new_run_under_a_read_only_dir_is_one_line(tmp_path):
    script = f"""set -e
mkdir -p {tmp_path}/ro && mount -t tmpfs -o ro tmpfs {tmp_path}/ro
set +e
{sys.executable} -m fastgpu trainer.max_steps=2 hydra.run.dir={tmp_path}/ro/run 2> {tmp_path}/stderr.txt
echo $? > {tmp_path}/rc.txt
"""
    done = _in_mount_namespace(script)
    assert done.returncode == 0, done.stderr[-3000:]
    stderr = (tmp_path / "stderr.txt").read_text()
    result = subprocess.CompletedProcess([], int((tmp_path / "rc.txt").read_text()), "", stderr)
    assert_refused(result, f"cannot write {tmp_path}/ro/run", "Read-only file system")


# -- data faults ---------------------------------------------------------------------------------------------------


def _image_folder(root, corrupt=()):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(3):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"img_{i}.jpg")
    for path in corrupt:
        (root / path).write_bytes((root / path).read_bytes()[:100])  # a truncated JPEG
    return root


IMAGES = [*SMALL, "data=imagefolder", "data.num_classes=3", "data.image_size=32", "data.batch_size=4"]
IMAGES += ["data.num_workers=0", "data.pin_memory=false", "data.persistent_workers=false", "data.prefetch_factor=null"]


@pytest.mark.parametrize("workers", [0, 1])
def test_a_corrupt_image_fails_the_run_naming_the_file(tmp_path, workers):
    root = _image_folder(tmp_path / "images", corrupt=["train/class_1/img_2.jpg"])
    result = run_cli(
        *IMAGES,
        f"data.root={root}",
        f"data.num_workers={workers}",
        "trainer.epochs=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        env=QUIET,
    )
    assert_refused(result, str(root / "train/class_1/img_2.jpg"), "data.on_corrupt=skip")


def test_corrupt_images_are_skipped_and_counted_when_asked(tmp_path):
    root = _image_folder(tmp_path / "images", corrupt=["train/class_1/img_2.jpg"])
    result = run_cli(
        *IMAGES,
        f"data.root={root}",
        "data.on_corrupt=skip",
        "trainer.epochs=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        env=QUIET,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_metrics(tmp_path / "run")
    assert metrics["status"] == "ok" and metrics["skipped_samples"] == 2  # one file, drawn once in each of 2 epochs


@pytest.mark.parametrize("layout", ["no class folders", "classes without images"])
def test_an_empty_image_folder_is_one_line(tmp_path, layout):
    root = tmp_path / "images"
    for split in ("train", "val"):
        (root / split).mkdir(parents=True)
        if layout == "classes without images":
            (root / split / "class_0").mkdir()
    result = run_cli(*IMAGES, f"data.root={root}", f"hydra.run.dir={tmp_path / 'run'}", env=QUIET)
    assert_refused(result, str(root / "train"), "one folder per class")


# -- W&B unreachable -------------------------------------------------------------------------------------------


def test_wandb_online_without_a_key_logs_offline_with_one_warning(tmp_path, monkeypatch):
    from fastgpu.results.wandb_logger import open_run

    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc: no key anywhere
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # should it try anyway: a closed port, nothing sent
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run = open_run("online", project="fastgpu-test", dir=str(tmp_path))
    try:
        assert run.settings.mode == "offline"
    finally:
        run.finish()
    assert list((tmp_path / "wandb").glob("offline-run-*"))


def test_wandb_online_with_no_network_falls_back_offline_and_a_sweep_waits_for_it_once(tmp_path):
    """A key and no reachable server: W&B's init gives up after INIT_TIMEOUT_S (not its default 90 s plus a
    CommError that ended the run), the run logs offline and says how to upload it; the sweep's later points and its
    report go offline at once (the first point left .wandb_unreachable in the sweep dir)."""
    env = {k: v for k, v in os.environ.items() if k != "WANDB_MODE"}
    env.update(
        WANDB_API_KEY="0123456789abcdef0123456789abcdef01234567",
        WANDB_BASE_URL="http://127.0.0.1:9",  # a closed loopback port: unreachable, and no traffic leaves
        HOME=str(tmp_path),
    )
    sweep_dir = tmp_path / "sweep"
    result = subprocess.run(
        [sys.executable, "-m", "fastgpu", "-m", *SMALL, "trainer.max_steps=3", "trainer.seed=0,1,2"]
        + ["logger.wandb.mode=online", f"hydra.sweep.dir={sweep_dir}"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    tried = [line for line in result.stderr.splitlines() if "W&B online failed" in line]
    assert len(tried) == 1 and "wandb sync " in tried[0] and "offline-run-" in tried[0], result.stderr
    told = [line for line in result.stderr.splitlines() if "did not answer earlier in this sweep" in line]
    assert len(told) == 3, result.stderr  # points 1 and 2, and the report: never tried again
    assert all(read_metrics(sweep_dir / str(i))["status"] == "ok" for i in range(3))
    assert len(list(sweep_dir.glob("*/wandb/offline-run-*"))) == 3 and len(list(sweep_dir.glob("wandb/offline-*"))) == 1


def test_killing_wandbs_logger_mid_run_neither_stops_nor_fails_the_run(tmp_path):
    """W&B logs from a process of its own (fastgpu/results/wandb_sidecar.py): SIGKILL it and its service while the
    run trains, and the run trains to the end, writes every result and says W&B's record is incomplete."""
    import psutil

    run_dir = tmp_path / "run"
    process = start_cli(*SLOW, f"hydra.run.dir={run_dir}", env={"WANDB_MODE": "offline"})
    deadline = time.monotonic() + 120
    while not any("train/loss" in h for h in _history_or_none(run_dir)):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()[-2000:]
        time.sleep(0.05)
    loggers = [
        p for p in psutil.Process(process.pid).children(recursive=True) if "wandb_sidecar" in " ".join(p.cmdline())
    ]
    assert len(loggers) == 1
    for victim in [*loggers[0].children(recursive=True), loggers[0]]:  # W&B's service, then the logger
        victim.kill()
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr[-2000:]
    metrics = read_metrics(run_dir)
    assert metrics["status"] == "ok" and metrics["steps"] == 3 * (1437 // 64)
    assert "W&B's logger did not complete" in stderr and "history.jsonl and metrics.json hold the run" in stderr


def _history_or_none(run_dir):
    try:
        return read_history(run_dir)
    except (OSError, ValueError):
        return []
