"""Two more searches: the largest batch that fits (issue 14's max_batch) and FastGPU's Optuna preset (issue 15)."""

import json

import pytest
from conftest import WIDE_MLP, run_cli
from omegaconf import OmegaConf
from test_search import QUICK

from fastgpu.results import read_metrics


@pytest.mark.slow
def test_max_batch_finds_the_largest_batch_under_a_real_memory_limit(tmp_path):
    result = run_cli(
        "-m",
        "+experiment=max_batch",
        *WIDE_MLP,
        "trainer.max_steps=3",
        "trainer.warmup_steps=1",
        "trainer.memory_limit_mb=400",
        "hydra.sweeper.start=64",
        "hydra.sweeper.multiple=32",
        *QUICK,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]  # out-of-memory probes are the search, not failures
    (search,) = json.loads((tmp_path / "max_batch.json").read_text())["searches"]
    probes = search["probes"]
    fits = [p["batch_size"] for p in probes if p["status"] == "ok"]
    too_big = [p["batch_size"] for p in probes if p["status"] == "oom"]
    assert fits[:3] == [64, 128, 256] and too_big  # doubling until out of memory
    assert search["max_batch_size"] == max(fits) < min(too_big) == search["smallest_oom"]
    assert search["smallest_oom"] - search["max_batch_size"] <= 32 and search["max_batch_size"] % 32 == 0
    for probe in probes:  # each probe is a recorded point of its own
        metrics = read_metrics(tmp_path / str(probe["job"]))
        assert metrics["batch_size"] == probe["batch_size"] and metrics["status"] == probe["status"]
    assert f"Largest batch that fits: {search['max_batch_size']}." in result.stdout
    assert (
        f"**{search['max_batch_size']}** ({search['smallest_oom']} is out of memory)"
        in (tmp_path / "report.md").read_text()
    )


def test_the_optuna_preset_searches_two_objectives_and_a_failing_trial_does_not_stop_it(tmp_path):
    result = run_cli(
        "-m",
        "hydra/sweeper=optuna",
        "hydra.sweeper.n_trials=6",
        "data.batch_size=choice(32,64,4096)",
        "trainer.sleep_ms=choice(0,5)",
        "trainer.max_steps=40",
        *QUICK,
        f"hydra.sweep.dir={tmp_path}",
    )
    trials = [read_metrics(tmp_path / str(n)) for n in range(6)]  # every trial ran, and is a point of the sweep
    failed = [m for m in trials if m["status"] == "failed"]
    assert failed and all("data.batch_size=4096" in m["error"] for m in failed)  # batch 4096: more than the data
    assert len(failed) < 6 and result.returncode == 1  # the study went on; the sweep still says a point failed
    front = OmegaConf.load(tmp_path / "optimization_results.yaml")
    measured = [(m["throughput"], m["accuracy"]) for m in trials if m["status"] == "ok"]
    front_values = [tuple(s["values"]) for s in front.solutions]
    assert front_values and all(values in measured for values in front_values)  # both objectives, as measured
    for speed, accuracy in front_values:  # the front: no trial is better on one objective and as good on the other
        assert not any(s >= speed and a >= accuracy and (s, a) != (speed, accuracy) for s, a in measured)
    assert "## Failed points" in (tmp_path / "report.md").read_text()
