"""Against a real two-node Slurm cluster on this machine (scripts/slurm/start.sh: nodes fastgpu-n1 and fastgpu-n2,
each its own hostname on its own loopback address): sweeps, DDP over srun tasks on one node and across both,
the GPU preset with fake GPUs, a requeued two-node job that resumes, a failing point, a cancelled one. Under CI=true a
cluster that cannot start fails these tests; elsewhere they are skipped with the reason."""

import json
import os
import subprocess
import time

import pytest
from conftest import IN_CI, REPO, offline_runs, read_offline_run, run_cli, start_cli

from fastgpu.results.store import read_history, read_metrics
from fastgpu.sweep.status import point_states, slurm_accounting

FAKE_KEY = "fedcba9876543210fedcba9876543210fedcba98"
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=2",
    "hydra.launcher.timeout_min=10",
    "trainer.progress_bar=false",
    "inference.repeats=3",
]


@pytest.fixture(scope="module", autouse=True)
def slurm_cluster():
    reason = None
    if os.geteuid() != 0:
        reason = "starting the Slurm cluster needs root"
    else:
        started = subprocess.run(
            ["bash", str(REPO / "scripts" / "slurm" / "start.sh")], capture_output=True, text=True, timeout=600
        )
        if started.returncode != 0:
            reason = f"scripts/slurm/start.sh failed: {(started.stdout + started.stderr)[-1500:]}"
    if reason:
        if IN_CI:
            pytest.fail(reason)
        print(f"skipping Slurm tests: {reason}")
        pytest.skip(reason)
    yield


def _sbatch_text(sweep_dir):
    return "\n".join(p.read_text() for p in (sweep_dir / ".submitit").rglob("*_submission.sh"))


def test_two_point_sweep_through_slurm(tmp_path):
    sweep_dir = tmp_path / "s"
    result = run_cli(
        "-m",
        *SLURM,
        "optimizer.lr=0.05,0.1",
        "trainer.epochs=2",
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_MODE": "offline", "WANDB_API_KEY": FAKE_KEY},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    for num in ("0", "1"):
        assert f"submitted point {num} as Slurm job {jobs[num]['job_id']}" in result.stdout
        assert f"point {num} (job {jobs[num]['job_id']}) ok" in result.stdout
        assert read_metrics(sweep_dir / num)["status"] == "ok"
    assert (sweep_dir / "report.md").exists() and "Recommendation" in result.stdout
    assert [s["state"] for s in point_states(sweep_dir)] == ["ok", "ok"]
    assert "--ntasks-per-node=1" in _sbatch_text(sweep_dir)
    for path in sweep_dir.rglob("*"):  # the key reaches jobs through the environment only
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def _ddp_sweep(sweep_dir, *launcher):
    return start_cli(
        "-m",
        *SLURM,
        *launcher,
        "parallel=ddp",
        "trainer.epochs=3",
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_MODE": "offline"},
        stderr=subprocess.STDOUT,
    )


def test_ddp_across_two_nodes_trains_exactly_like_two_tasks_on_one(tmp_path):
    one_node = _ddp_sweep(tmp_path / "one", "parallel.nproc_per_node=2")
    two_nodes = _ddp_sweep(tmp_path / "two", "hydra.launcher.nodes=2", "hydra.launcher.tasks_per_node=1")
    for sweep in (one_node, two_nodes):
        output, _ = sweep.communicate(timeout=300)
        assert sweep.returncode == 0, output[-3000:]
    assert "--ntasks-per-node=2" in _sbatch_text(tmp_path / "one")
    assert "--nodes=2" in _sbatch_text(tmp_path / "two") and "--ntasks-per-node=1" in _sbatch_text(tmp_path / "two")
    one, two = read_metrics(tmp_path / "one" / "0"), read_metrics(tmp_path / "two" / "0")
    assert one["world_size"] == two["world_size"] == 2
    assert len(set(one["hosts"].split(","))) == 1  # both ranks on one node
    assert two["hosts"] == "fastgpu-n1,fastgpu-n2"  # rank 0 and rank 1 on their own hostnames
    assert two["rank_param_max_diff"] == 0.0 and two["accuracy"] > 0.9
    for key in ("accuracy", "val_loss", "f1", "steps"):  # the same global batch, the same gradients
        assert two[key] == pytest.approx(one[key], rel=1e-5, abs=1e-6), key
    for sweep_dir in (tmp_path / "one", tmp_path / "two"):
        assert sorted(p.name for p in sweep_dir.iterdir() if p.is_dir() and not p.name.startswith(".")) == [
            "0",
            "wandb",
        ]
        assert len(offline_runs(sweep_dir / "0")) == 1  # rank 0 alone logs


USER_NET = """
from torch import nn


def net(num_classes: int, width: int = 32) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))
"""


def test_gpu_node_preset_with_fake_gpus_is_accepted_and_runs_a_users_model(tmp_path):
    sweep_dir = tmp_path / "s"
    (tmp_path / "usernet.py").write_text(USER_NET)  # a model that exists only here, imported by each Slurm task
    result = run_cli(
        "-m",
        "model=custom",
        "model._target_=usernet.net",
        "+model.num_classes=${data.num_classes}",
        "hydra/launcher=slurm_gpu",
        "hydra.launcher.gpus_per_node=2",
        "hydra.launcher.cpus_per_task=1",
        "hydra.launcher.mem_gb=2",
        "hydra.launcher.timeout_min=10",
        "parallel=ddp",
        "trainer.device=cpu",
        "trainer.epochs=2",
        "trainer.progress_bar=false",
        "inference.repeats=3",
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_MODE": "disabled", "PYTHONPATH": f"{tmp_path}:{REPO}"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    sbatch = _sbatch_text(sweep_dir)
    assert "--gpus-per-node=2" in sbatch and "--ntasks-per-node=2" in sbatch  # one task per GPU, derived
    assert "#SBATCH --exclusive" in sbatch  # a whole node per point: nothing else in its timings
    metrics = read_metrics(sweep_dir / "0")
    assert metrics["world_size"] == 2 and metrics["params"] == 64 * 32 + 32 + 32 * 10 + 10  # the user's model


def test_requeued_two_node_job_resumes_from_its_checkpoint_to_the_same_result(tmp_path):
    sweep_dir = tmp_path / "s"
    # two identical two-node DDP trainings (notes differ, training does not): point 1 is requeued mid-run,
    # point 0 is the reference
    args = [
        *SLURM,
        "hydra.launcher.nodes=2",
        "hydra.launcher.tasks_per_node=1",
        "parallel=ddp",
        "logger.wandb.notes=reference,requeued",
        "trainer.epochs=10",
        "trainer.log_every_n_steps=10",
        "trainer.checkpoint_every_n_steps=20",
        "trainer.monitor_interval_s=0",
        "inference.benchmark=false",
        "+overwrite=true",  # acts on the first attempt only: the requeued one continues from its checkpoint
        f"hydra.sweep.dir={sweep_dir}",
    ]
    sweep = start_cli("-m", *args, env={"WANDB_MODE": "offline"}, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        history = sweep_dir / "1" / "history.jsonl"
        if history.exists() and any(h.get("step", 0) >= 40 for h in read_history(sweep_dir / "1")):
            break
        assert sweep.poll() is None, sweep.communicate()[0][-3000:]
        time.sleep(0.1)
    job_id = json.loads((sweep_dir / "jobs.json").read_text())["1"]["job_id"]
    subprocess.run(["scontrol", "requeue", job_id], check=True)
    output, _ = sweep.communicate(timeout=400)
    assert sweep.returncode == 0, output[-3000:]

    reference, resumed = read_metrics(sweep_dir / "0"), read_metrics(sweep_dir / "1")
    assert resumed["status"] == "ok" and resumed["steps"] == reference["steps"] == 110  # 11 global batches an epoch
    assert resumed["hosts"] == reference["hosts"] == "fastgpu-n1,fastgpu-n2"
    for key in ("accuracy", "val_loss", "f1"):
        assert resumed[key] == pytest.approx(reference[key], rel=1e-5, abs=1e-7), key
    log = "".join(p.read_text() for p in (sweep_dir / ".submitit").rglob(f"{job_id}_0_log.err"))
    assert "resuming" in log and "at step" in log
    # two offline run dirs (the killed attempt, the resumed one) of one W&B run id
    attempts = sorted((sweep_dir / "1" / "wandb").glob("offline-run-*"))
    assert len(attempts) == 2 and {p.name.rsplit("-", 1)[1] for p in attempts} == {resumed["wandb_run_id"]}
    # the resumed attempt's record (the killed one's may be empty: Slurm's SIGTERM reaches W&B's service too)
    assert read_offline_run(attempts[-1])["summary"]["steps"] == 110


def test_a_failing_point_is_reported_with_its_log_while_the_other_completes(tmp_path):
    sweep_dir = tmp_path / "s"
    result = run_cli(
        "-m",
        *SLURM,
        "precision=fp32,fp16",
        "trainer.epochs=2",
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_MODE": "disabled"},
    )
    assert result.returncode == 1
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    line = next(s for s in result.stdout.splitlines() if f"point 1 (job {jobs['1']['job_id']}) failed" in s)
    assert "fp16 needs a CUDA GPU" in line and f"log: {jobs['1']['stderr']}" in line
    assert os.path.exists(jobs["1"]["stderr"])
    assert read_metrics(sweep_dir / "0")["status"] == "ok"
    states = {s["point"]: s["state"] for s in point_states(sweep_dir)}
    assert states == {0: "ok", 1: "failed"}


def test_jobs_outlive_the_submitting_process_and_the_report_is_built_after(tmp_path):
    from fastgpu.results.report import main as report_main

    sweep_dir = tmp_path / "s"
    sweep = subprocess.Popen(
        [
            "python",
            "-m",
            "fastgpu",
            "-m",
            *SLURM,
            "optimizer.lr=0.05,0.1",
            "trainer.epochs=3",
            f"hydra.sweep.dir={sweep_dir}",
        ],
        cwd=REPO,
        env={**os.environ, "WANDB_MODE": "disabled"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (sweep_dir / "jobs.json").exists():
        assert time.time() < deadline and sweep.poll() is None
        time.sleep(0.1)
    sweep.kill()  # the submitting side goes away; the Slurm jobs do not
    sweep.wait()
    job_ids = [j["job_id"] for j in json.loads((sweep_dir / "jobs.json").read_text()).values()]
    while [state for state, _ in slurm_accounting(job_ids).values()] != ["COMPLETED", "COMPLETED"]:
        assert time.time() < deadline, slurm_accounting(job_ids)
        time.sleep(0.5)
    assert {s["state"] for s in point_states(sweep_dir)} == {"ok"}
    assert report_main([str(sweep_dir)]) == 0 and (sweep_dir / "report.md").exists()


def test_a_cancelled_point_keeps_its_resume_record_and_a_resumed_sweep_submits_only_what_is_not_done(tmp_path):
    sweep_dir = tmp_path / "s"
    args = [
        *SLURM,
        "logger.wandb.notes=quick,cancelled",
        "trainer.epochs=5",
        "trainer.sleep_ms=30",
        "trainer.log_every_n_steps=5",
        "trainer.monitor_interval_s=0",
        "inference.benchmark=false",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    sweep = start_cli("-m", *args, env={"WANDB_MODE": "disabled"}, stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while not ((sweep_dir / "1" / "history.jsonl").exists() and read_history(sweep_dir / "1")):
        assert time.time() < deadline and sweep.poll() is None
        time.sleep(0.1)
    job_id = json.loads((sweep_dir / "jobs.json").read_text())["1"]["job_id"]
    subprocess.run(["scancel", job_id], check=True)
    output, _ = sweep.communicate(timeout=300)
    assert sweep.returncode == 1, output[-3000:]  # one point did not finish
    record = read_metrics(sweep_dir / "1")
    assert record["status"] == "interrupted" and "stopped by SIGTERM" in record["error"], record
    assert f"+resume={sweep_dir / '1'}" in record["error"]  # the hint survives the submitter's bookkeeping
    assert (sweep_dir / "1" / "checkpoint.pt").exists()
    states = {s["point"]: s["state"] for s in point_states(sweep_dir)}
    assert states == {0: "ok", 1: "cancelled"}

    done = (sweep_dir / "0" / "metrics.json").read_bytes()
    resumed = run_cli("-m", *args, "+resume=true", env={"WANDB_MODE": "disabled"})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "point 0 is done (status ok), not resubmitted" in resumed.stdout
    assert "submitted point 0" not in resumed.stdout and "submitted point 1" in resumed.stdout
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    assert jobs["1"]["job_id"] != job_id and jobs["0"]["job_id"] != jobs["1"]["job_id"]
    assert (sweep_dir / "0" / "metrics.json").read_bytes() == done  # the finished point is untouched
    assert read_metrics(sweep_dir / "1")["status"] == "ok" and read_metrics(sweep_dir / "1")["steps"] == 110
    log = "".join(p.read_text() for p in (sweep_dir / ".submitit").rglob(f"{jobs['1']['job_id']}_*log.err"))
    assert "resuming" in log


def test_halving_runs_its_rungs_as_slurm_jobs(tmp_path):
    sweep_dir = tmp_path / "h"
    result = run_cli(
        "-m",
        *SLURM,
        "hydra/sweeper=halving",
        "hydra.sweeper.min_budget_ratio=0",  # a short budget: the mechanics, not the cost
        "hydra.sweeper.eta=2",
        "hydra.sweeper.probe_steps=10",
        "model=mlp",
        "trainer.sleep_ms=0,30,60",
        "trainer.max_steps=60",
        "trainer.warmup_steps=2",
        "trainer.log_every_n_steps=5",  # the final rung's speed-ups get an interval from 11 log intervals
        "report.baseline=['trainer.sleep_ms=60']",
        "inference.benchmark=false",
        "export=[]",
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ledger = json.loads((sweep_dir / "halving.json").read_text())
    assert [[p["job"] for p in rung["points"]] for rung in ledger["rungs"]] == [[0, 1, 2], [3, 4]]
    assert [p["decision"] for p in ledger["rungs"][0]["points"]] == ["promoted", "stopped_early", "promoted"]
    jobs = json.loads((sweep_dir / "jobs.json").read_text())
    for num in range(5):  # every rung's points were Slurm jobs of their own
        assert f"submitted point {num} as Slurm job {jobs[str(num)]['job_id']}" in result.stdout
    assert [read_metrics(sweep_dir / str(n))["steps"] for n in range(5)] == [12, 12, 12, 60, 60]
    assert "Recommendation: 'sleep_ms0'" in result.stdout
