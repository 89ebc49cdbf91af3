"""Sweeps: one comparable result per point, failures recorded, resume, W&B groups, the sweep report."""

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import NO_DEPLOY, compose_cfg, offline_runs, run_cli
from matplotlib.image import imread

from fastgpu.job.launch import failure_record
from fastgpu.results.naming import point_name
from fastgpu.results.report import main as report_main
from fastgpu.results.store import read_metrics

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"
TINY = ["trainer.epochs=2", "trainer.progress_bar=false", *NO_DEPLOY]


@pytest.fixture(scope="module")
def sweep_2x2(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep") / "s"
    result = run_cli(
        "-m",
        "precision=fp32,bf16",
        "channels_last=false,true",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_API_KEY": FAKE_KEY, "WANDB_MODE": "offline"},
    )
    return sweep_dir, result


def test_2x2_sweep_writes_a_result_per_point_and_the_report(sweep_2x2):
    sweep_dir, result = sweep_2x2
    assert result.returncode == 0, result.stderr
    points = {p.name: read_metrics(p) for p in sweep_dir.iterdir() if (p / "metrics.json").exists()}
    assert sorted(points) == ["0", "1", "2", "3"]
    assert {m["name"] for m in points.values()} == {"fp32", "fp32-cl", "bf16", "bf16-cl"}
    assert all(m["status"] == "ok" and m["accuracy"] > 0.8 for m in points.values())
    # each point trained in a process of its own (the default launcher), compiled nothing
    assert all(m["runs_before_in_process"] == 0 and m["compile_outcome"] == "eager" for m in points.values())
    # forked from the warm fork server: nothing imported or composed in the point, its first step soon after its fork
    for m in points.values():
        assert m["startup_imports_s"] == 0 and m["startup_composition_s"] < m["time_to_first_step_s"]
        assert m["startup_build_s"] < 2 and "export_s" not in m  # W&B's logger forked, nothing deployed

    with open(sweep_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 4
    for row in rows:
        metrics = points[str(row["point"])]
        for key in ["throughput", "accuracy", "step_time_p50_ms", "step_time_p90_ms", "f1", "model_size_mb"]:
            assert float(row[key]) == pytest.approx(metrics[key]), key
        assert row["name"] == metrics["name"]
    baseline = [r for r in rows if r["baseline"] == "True"]
    assert len(baseline) == 1 and baseline[0]["name"] == "fp32" and float(baseline[0]["speedup"]) == pytest.approx(1.0)
    for row in rows:  # speed-up and accuracy delta are against the baseline's numbers
        assert float(row["speedup"]) == pytest.approx(float(row["throughput"]) / float(baseline[0]["throughput"]))
        assert float(row["accuracy_delta"]) == pytest.approx(float(row["accuracy"]) - float(baseline[0]["accuracy"]))
    throughputs = [float(r["throughput"]) for r in rows]
    assert throughputs == sorted(throughputs, reverse=True)  # best first

    report = (sweep_dir / "report.md").read_text()
    assert "Recommendation: " in report and "fp32 (baseline)" in report
    assert "Recommendation: " in result.stdout and "samples/s" in result.stdout  # the table in the terminal
    for png in ["throughput_vs_accuracy.png", "peak_memory.png", "training_curves.png"]:
        image = imread(sweep_dir / png)
        assert image.shape[0] > 200 and image.shape[1] > 200 and np.std(image) > 0.05, png


def test_2x2_sweep_wandb_runs_share_a_group_and_hold_the_points_numbers(sweep_2x2):
    sweep_dir, _ = sweep_2x2
    runs = offline_runs(sweep_dir)
    points = [r for r in runs if r["job_type"] == "sweep"]
    reports = [r for r in runs if r["job_type"] == "sweep-report"]
    assert len(points) == 4 and len(reports) == 1
    groups = {r["group"] for r in runs}
    assert len(groups) == 1 and groups.pop().startswith("sweep-")
    for run in points:
        (point_dir,) = [
            p for p in sweep_dir.iterdir() if (p / "metrics.json").exists() and read_metrics(p)["name"] == run["name"]
        ]
        metrics = read_metrics(point_dir)
        assert run["summary"]["throughput"] == pytest.approx(metrics["throughput"])
        assert run["summary"]["accuracy"] == pytest.approx(metrics["accuracy"])
        assert f"precision={run['config']['precision']['name']}" in run["tags"]
        assert run["config"]["channels_last"] == ("cl" in run["name"])
    assert reports[0]["summary"]["recommendation"].startswith("Recommendation: ")


def test_sweep_never_writes_the_wandb_key(sweep_2x2):
    sweep_dir, _ = sweep_2x2
    for path in sweep_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path


def test_failed_point_is_reported_the_sweep_exits_nonzero_and_resume_reruns_only_it(tmp_path, monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("needs a device where fp16 is impossible")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    sweep_dir = tmp_path / "s"
    first = run_cli("-m", "precision=fp32,fp16", *TINY, f"hydra.sweep.dir={sweep_dir}")
    assert first.returncode != 0
    assert "1 of 2 sweep points failed" in first.stderr
    ok, failed = read_metrics(sweep_dir / "0"), read_metrics(sweep_dir / "1")
    assert ok["status"] == "ok"
    assert (
        failed["status"] == "failed"
        and failed["error_type"] == "FastGPUError"
        and "fp16 needs a CUDA GPU" in failed["error"]
    )
    with open(sweep_dir / "results.csv") as f:
        rows = {r["point"]: r for r in csv.DictReader(f)}
    assert (
        rows["1"]["status"] == "failed"
        and "fp16 needs a CUDA GPU" in rows["1"]["error"]
        and rows["0"]["status"] == "ok"
    )
    assert "## Failed points" in (sweep_dir / "report.md").read_text()

    done_files = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (sweep_dir / "0").iterdir() if p.is_file()}
    # fix the failing point's setting, then resume the same sweep
    second = run_cli(
        "-m", "precision=fp32,fp16", "precision.fallback=fp32", *TINY, f"hydra.sweep.dir={sweep_dir}", "+resume=true"
    )
    assert second.returncode == 0, second.stderr
    assert "is done (status ok), skipping" in second.stderr
    for path, (mtime, content) in done_files.items():
        if path.suffix != ".log":
            assert (path.stat().st_mtime_ns, path.read_bytes()) == (mtime, content), path
    rerun = read_metrics(sweep_dir / "1")
    assert rerun["status"] == "ok" and rerun["precision_mode"] == "fp32"


def test_an_unreadable_result_is_one_line_naming_the_file_and_a_failed_point(sweep_2x2, tmp_path, capsys):
    import shutil

    from fastgpu.sweep.status import main as status_main

    sweep_dir = tmp_path / "copy"
    shutil.copytree(sweep_2x2[0], sweep_dir)
    damaged = sweep_dir / "1" / "metrics.json"
    damaged.write_text(damaged.read_text()[:40])  # truncated mid-write by hand or by a full disk
    assert report_main([str(sweep_dir)]) == 0  # the other points are readable: the report stands
    captured = capsys.readouterr()
    assert f"{damaged} is unreadable" in captured.err and "Traceback" not in captured.err
    assert "unreadable" in (sweep_dir / "report.md").read_text()
    rows = list(csv.DictReader(open(sweep_dir / "results.csv")))
    assert [r["status"] for r in rows].count("unreadable") == 1 and len(rows) == 4
    assert status_main([str(sweep_dir)]) == 0
    status = capsys.readouterr()
    assert f"{damaged} is unreadable" in status.err
    assert status.out.startswith("point  state       elapsed") and " job " not in status.out  # a local sweep: no jobs

    for point in ("0", "2", "3"):
        (sweep_dir / point / "metrics.json").write_text("{")
    assert report_main([str(sweep_dir)]) == 2  # nothing readable: that is an error
    assert "no point of" in capsys.readouterr().err
    assert status_main([str(sweep_dir)]) == 1


def test_in_process_points_reset_the_deterministic_flag_and_are_flagged(tmp_path):
    """hydra/launcher=basic keeps every point in the sweep's process: what one point turned on must not stay on for
    the next, and the report must say the points shared a process."""
    sweep_dir = tmp_path / "s"
    result = run_cli(
        "-m",
        "hydra/launcher=basic",
        "trainer.deterministic=true,false",
        "trainer.max_steps=3",
        *TINY,
        f"hydra.sweep.dir={sweep_dir}",
        env={"WANDB_MODE": "disabled"},
    )
    assert result.returncode == 0, result.stderr
    first, second = read_metrics(sweep_dir / "0"), read_metrics(sweep_dir / "1")
    assert first["deterministic"] is True and second["deterministic"] is False
    assert first["runs_before_in_process"] == 0 and second["runs_before_in_process"] == 1
    assert "trained in a process that had trained other points before" in result.stdout


def test_report_on_demand_rebuilds_from_the_files(sweep_2x2, capsys):
    sweep_dir, _ = sweep_2x2
    (sweep_dir / "results.csv").unlink()
    assert report_main([str(sweep_dir), "--baseline", "precision=bf16", "channels_last=false"]) == 0
    out = capsys.readouterr().out
    assert "bf16 (baseline)" in out and "Recommendation" in out
    assert (sweep_dir / "results.csv").exists()
    assert report_main([str(sweep_dir / "nope")]) == 2


def test_experiment_configs_set_sweeps_seed_and_budget():
    for name, key in [
        ("precision", "precision"),
        ("speedups", "compile"),
        ("batch_size", "data.batch_size"),
        ("parallel", "parallel.nproc_per_node"),
        ("compression", "compression"),
    ]:
        from conftest import CONF
        from hydra import compose, initialize_config_dir

        with initialize_config_dir(CONF, version_base="1.3"):
            cfg = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
        assert key in cfg.hydra.sweeper.params, name
        assert cfg.trainer.seed == 0 and cfg.trainer.epochs == 10, name


def test_autotune_is_halving_over_the_levers_and_max_batch_a_batch_search():
    from conftest import CONF
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(CONF, version_base="1.3"):
        autotune = compose("config", overrides=["+experiment=autotune"], return_hydra_config=True)
        max_batch = compose("config", overrides=["+experiment=max_batch"], return_hydra_config=True)
    sweeper = autotune.hydra.sweeper
    assert sweeper._target_.endswith("halving_sweeper.HalvingSweeper") and sweeper.eta == 3
    assert set(sweeper.params) == {"precision", "channels_last", "compile", "optimizer.impl", "data.batch_size"}
    assert all("," in str(values) for values in sweeper.params.values())
    assert max_batch.hydra.sweeper._target_.endswith("max_batch_sweeper.MaxBatchSweeper")
    assert max_batch.trainer.max_steps == 30 and list(max_batch.export) == []


def test_point_names_are_readable():
    keys = ["precision", "compile", "channels_last", "data.batch_size"]
    assert (
        point_name(["precision=bf16", "compile=true", "channels_last=true", "data.batch_size=128"], keys)
        == "bf16-compile-cl-bs128"
    )
    assert point_name(["precision=fp32", "compile=false", "channels_last=false"], keys[:3]) == "fp32"
    assert point_name([], []) == "baseline"


def test_out_of_memory_becomes_an_oom_record_with_the_batch_size():
    cfg = compose_cfg("data.batch_size=4096")
    record = failure_record(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), cfg)
    assert (
        record["status"] == "oom"
        and "data.batch_size=4096" in record["error"]
        and "lower data.batch_size" in record["error"]
    )


def test_the_short_results_commands_work_and_refuse_a_missing_or_foreign_dir_in_one_line(sweep_2x2, tmp_path):
    sweep_dir, _ = sweep_2x2
    report = run_cli("report", str(sweep_dir))
    assert report.returncode == 0 and "Recommendation: " in report.stdout, report.stderr
    status = run_cli("status", str(sweep_dir))
    assert status.returncode == 0 and status.stdout.strip().endswith("4 ok"), status.stderr
    assert "usage: python -m fastgpu report" in run_cli("report", "--help").stdout
    console = Path(sys.executable).with_name("fastgpu")  # the console script pip installed beside python
    same = subprocess.run([str(console), "status", str(sweep_dir)], capture_output=True, text=True, timeout=120)
    assert same.returncode == 0 and same.stdout == status.stdout
    for verb in ("report", "status"):
        for where, words in ((tmp_path / "missing", "is not a directory"), (tmp_path, "pass a multirun dir")):
            refused = run_cli(verb, str(where))
            assert refused.returncode == 2 and refused.stdout == "", refused.stdout
            (line,) = refused.stderr.strip().splitlines()
            assert line.startswith(f"fastgpu {verb}: error: ") and words in line
