"""The default launcher on the user's real path: their model module asks CUDA at import, a point is killed, the sweep
is killed, the terminal closes, and what a point sends back cannot be read. Each sweep trains the user's own model
(experiments/user_model/cudanet.py, outside the package, on PYTHONPATH) for a second or two a point."""

import os
import pickle
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import NO_DEPLOY, REPO, start_cli

from fastgpu.results.store import read_history, read_metrics
from fastgpu.sweep.isolation.ending import killed_record
from fastgpu.sweep.isolation.payload import read_payload, write_payload
from fastgpu.sweep.isolation.relay import RELAYED, SignalRelay

USER_MODEL = [
    "model=custom",
    "model._target_=cudanet.net",
    "+model.features=16",
    "+model.num_classes=${data.num_classes}",
    "data=custom",
    "data._target_=cudanet.blobs",
    "data.num_classes=4",
    "trainer.progress_bar=false",
    "trainer.monitor_interval_s=0",
    *NO_DEPLOY,
]
# 36 steps of >= 40 ms, a checkpoint every 5: a signal lands mid-training
SLOW = ["trainer.epochs=3", "trainer.sleep_ms=40", "trainer.log_every_n_steps=5", "trainer.checkpoint_every_n_steps=5"]
# the sweep's own process asks CUDA before the sweep starts
CUDA_ASKED_FIRST = "import sys, torch; torch.cuda.is_available(); from fastgpu.__main__ import cli; cli()"


@pytest.fixture
def user_env(tmp_path):
    """The user's module (it asks CUDA at import) on PYTHONPATH, as a user's own package would be."""
    modules = REPO / "experiments" / "user_model"
    return {"PYTHONPATH": str(modules), "FORK_LOG": str(tmp_path / "forks.log"), "WANDB_MODE": "disabled"}


def sweep(args, env, code=None):
    """`python -m fastgpu -m ARGS` (or `python -c CODE -m ARGS`) run to its end."""
    command = [sys.executable, "-m", "fastgpu"] if code is None else [sys.executable, "-c", code]
    return subprocess.run(
        [*command, "-m", *args], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True, timeout=300
    )


def wait_for_training(sweep_dir, point: int, process, step: int = 5) -> None:
    deadline = time.time() + 120
    history = sweep_dir / str(point) / "history.jsonl"
    while not (history.exists() and any(h["step"] >= step for h in read_history(sweep_dir / str(point)))):
        assert time.time() < deadline and process.poll() is None, process.communicate()
        time.sleep(0.02)


def files_of(directory) -> dict:
    """Every file's bytes and modification time: 'byte-identical and untouched'."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*")) if p.is_file()}


# -- every point can use CUDA -------------------------------------------------------------------------------------


STARTS = {  # what was asked of CUDA before the points, and how points 1 and 2 then start
    "module-asks-cuda": ([], None, "fork server (forked from the sweep's process)"),
    "sweep-process-asked-cuda": ([], CUDA_ASKED_FIRST, "fresh interpreter (the sweep's process had asked CUDA"),
    # the user let the server import their module ahead of points: its import makes the server's forks unsafe
    "warm-import-asks-cuda": (["hydra.launcher.warm_packages=[cudanet]"], None, "cold (warm imports made forks unsafe"),
}


@pytest.mark.parametrize("case", list(STARTS))
def test_every_point_starts_clean_whatever_the_users_module_or_the_sweeps_process_did(tmp_path, user_env, case):
    extra, code, started = STARTS[case]
    sweep_dir = tmp_path / "s"
    args = [*USER_MODEL, *extra, "trainer.epochs=1", "trainer.seed=0,1,2", f"hydra.sweep.dir={sweep_dir}"]
    result = sweep(args, user_env, code)
    assert result.returncode == 0, result.stderr[-3000:]
    seen = dict(line.split() for line in (tmp_path / "forks.log").read_text().splitlines())  # pid: bad fork
    assert len(seen) == 3  # three points, three processes (each builds the model more than once)
    assert list(seen.values()) == ["False"] * 3  # the user's code saw a process that can use CUDA
    # the interpolation the user typed, as typed (Hydra escapes it: $\{data.num_classes\})
    assert "+model.num_classes=${data.num_classes}" in result.stdout and "$\\{" not in result.stdout
    assert "$\\{" not in (sweep_dir / "results.csv").read_text()
    for point in range(3):
        metrics = read_metrics(sweep_dir / str(point))
        assert metrics["status"] == "ok" and metrics["bad_fork"] is False
        assert started in metrics["point_start"] or point == 0, metrics["point_start"]


def test_a_fork_after_cuda_was_asked_is_detected():
    """The negative check behind the test above: the probe tells a clean process from one whose forks are bad."""
    code = (
        "from fastgpu.sweep.isolation.forks import fork_is_clean; import torch; before = fork_is_clean(); "
        "torch.cuda.is_available(); print(repr(before)); print(repr(fork_is_clean()))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    before, after = result.stdout.splitlines()
    assert before == "(True, '')" and after.startswith("(False, 'had asked CUDA for its devices"), result.stdout


# -- a killed point is one failed point ---------------------------------------------------------------------------


def test_a_killed_point_is_one_failed_point_and_resume_reruns_it_alone(tmp_path, user_env):
    sweep_dir = tmp_path / "s"
    args = [*USER_MODEL, *SLOW, "optimizer.lr=0.05,0.04,0.03", f"hydra.sweep.dir={sweep_dir}"]
    process = start_cli("-m", *args, env=user_env)
    wait_for_training(sweep_dir, 0, process)
    point_pid = int(__import__("json").loads((sweep_dir / "0" / ".fastgpu.lock").read_text())["pid"])
    assert point_pid != process.pid
    os.kill(point_pid, signal.SIGKILL)
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 1, stderr[-3000:]
    assert "1 of 3 sweep points failed" in stderr and "Traceback" not in stderr
    killed = read_metrics(sweep_dir / "0")
    assert killed["status"] == "killed" and killed["signal"] == "SIGKILL"
    assert "killed by SIGKILL" in killed["error"] and "not out of memory" in killed["error"]
    assert [read_metrics(sweep_dir / str(p))["status"] for p in (1, 2)] == ["ok", "ok"]  # the sweep went on
    assert "**killed** — killed by SIGKILL" in (sweep_dir / "report.md").read_text()
    assert not (sweep_dir / "0" / ".fastgpu.lock").exists()

    finished = {p: files_of(sweep_dir / str(p)) for p in (1, 2)}
    resumed = sweep([*args, "+resume=true"], user_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stderr.count("is done (status ok), skipping") == 2
    assert read_metrics(sweep_dir / "0")["status"] == "ok"
    assert {p: files_of(sweep_dir / str(p)) for p in (1, 2)} == finished


def test_how_a_point_died_is_one_line_with_the_fix():
    gb = 2**30
    oom = killed_record(signal.SIGKILL, 20 * gb, 24 * gb, False, 256)
    assert oom["status"] == "oom" and "likely out of memory: lower data.batch_size (now 256)" in oom["error"]
    assert "peak 20.0 GB of 24.0 GB" in oom["error"]
    counted = killed_record(signal.SIGKILL, gb // 10, 24 * gb, True, 64)  # the cgroup counted an OOM kill
    assert counted["status"] == "oom" and "out-of-memory killer" in counted["error"]
    sent = killed_record(signal.SIGKILL, gb // 10, 24 * gb, False, 64)
    assert sent["status"] == "killed" and "not out of memory" in sent["error"] and "+resume=true" in sent["error"]
    segv = killed_record(signal.SIGSEGV, gb, 24 * gb, False, 64)
    assert segv["signal"] == "SIGSEGV" and "segmentation fault" in segv["error"]
    assert all("\n" not in r["error"] for r in (oom, counted, sent, segv))


# -- no orphans ---------------------------------------------------------------------------------------------------


def test_a_killed_sweep_leaves_no_process_and_resume_completes_it(tmp_path, user_env):
    sweep_dir = tmp_path / "s"
    args = [*USER_MODEL, *SLOW, "trainer.seed=0,1", f"hydra.sweep.dir={sweep_dir}"]
    env = {**user_env, "WANDB_MODE": "offline"}  # W&B's service runs in a session of its own: it must go too
    process = start_cli("-m", *args, env=env)
    wait_for_training(sweep_dir, 0, process)
    tree = psutil.Process(process.pid).children(recursive=True)
    assert {p.name() for p in tree} >= {"wandb-core"} and len(tree) >= 3  # fork server, point, W&B
    process.kill()
    process.wait()
    deadline = time.time() + 2
    alive = tree
    while alive and time.time() < deadline:
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        time.sleep(0.02)
    assert not alive, [(p.pid, p.name()) for p in alive]

    resumed = sweep([*args, "+resume=true"], env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [read_metrics(sweep_dir / str(p))["status"] for p in (0, 1)] == ["ok", "ok"]


def test_a_closed_terminal_stops_the_sweep_like_sigterm_and_resume_continues_the_point(tmp_path, user_env):
    sweep_dir = tmp_path / "s"
    args = [*USER_MODEL, *SLOW, "trainer.seed=0,1", f"hydra.sweep.dir={sweep_dir}"]
    process = start_cli("-m", *args, env=user_env)
    wait_for_training(sweep_dir, 0, process, step=10)
    process.send_signal(signal.SIGHUP)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130, stderr[-3000:]
    assert "stopped by SIGHUP at step" in stderr and f"hydra.sweep.dir={sweep_dir} +resume=true" in stderr
    assert read_metrics(sweep_dir / "0")["status"] == "interrupted" and not (sweep_dir / "1").exists()

    resumed = sweep([*args, "+resume=true"], user_env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming {sweep_dir / '0'} at step" in resumed.stderr  # from its checkpoint, not from step 0
    assert [read_metrics(sweep_dir / str(p))["status"] for p in (0, 1)] == ["ok", "ok"]


def test_each_relayed_signal_reaches_the_point_exactly_once():
    handlers = "".join(f"signal.signal({int(s)}, lambda n, f: print(n, flush=True))\n" for s in RELAYED)
    child = subprocess.Popen(  # a point that prints each signal it receives
        [sys.executable, "-c", f"import signal, sys\n{handlers}print('ready', flush=True)\nsys.stdin.read()"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "ready"
    with SignalRelay() as relay:
        os.kill(os.getpid(), signal.SIGUSR2)  # before the point is attached: it waits for the point
        relay.attach(child.pid)
        assert child.stdout.readline().strip() == str(int(signal.SIGUSR2))
        for signum in RELAYED:  # to the sweep, as a terminal, a kill or Slurm sends it
            os.kill(os.getpid(), signum)
            assert child.stdout.readline().strip() == str(int(signum))
        relay.detach()
        os.kill(os.getpid(), signal.SIGTERM)  # between points: kept for the sweep, never sent on
    child.stdin.close()
    assert child.stdout.read() == "" and child.wait(timeout=30) == 0  # nothing more: each one exactly once
    assert relay.stop_requested and relay.last == "SIGTERM"


# -- what a point sends back --------------------------------------------------------------------------------------


class NeedsTwoArguments(Exception):
    def __init__(self, a, b):  # pickles, but does not unpickle: Exception's reduce passes one argument
        super().__init__(f"{a}{b}")


def test_what_a_point_sends_back_never_crashes_the_sweep(tmp_path):
    path = tmp_path / "0.pkl"
    assert read_payload(path) is None  # it wrote nothing: the sweep asks how it ended
    write_payload(path, "ok", {"status": "ok", "throughput": 1.0}, ["torch"])
    assert read_payload(path) == ("ok", {"status": "ok", "throughput": 1.0}, ["torch"])

    path.write_bytes(path.read_bytes()[:20])  # truncated
    kind, record, _ = read_payload(path)
    assert kind == "error" and record["status"] == "failed" and "could not be read back" in record["error"]

    path.write_bytes(pickle.dumps(("error", NeedsTwoArguments(1, 2), [])))
    kind, record, _ = read_payload(path)
    assert kind == "error" and record["error_type"] == "UnreadableResult" and "TypeError" in record["error"]
