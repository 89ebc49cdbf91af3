"""Two more searches: the largest batch that fits (issue 14's max_batch) and FastGPU's Optuna preset (issue 15)."""

import json

import pytest
from conftest import WIDE_MLP, run_cli
from omegaconf import OmegaConf
from test_search import QUICK

from fastgpu.results.store import read_metrics


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
    assert search["stopped_by"] == "out_of_memory" and search["memory_limit_mb"] == 400
    grown = {p["batch_size"]: p["memory_growth_mb"] for p in probes if p["status"] == "ok"}
    # what training added to the resident memory grows with the batch (batch 64's probe also pays one-time costs).
    # It is not bounded by the cap: RLIMIT_AS caps new address space, and pages already mapped but not resident
    # when a probe starts (a previous probe's freed heap) grow the resident set without new address space.
    assert 0 < grown[128] < grown[search["max_batch_size"]]
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


# -- halving's bookkeeping, on recorded results (no runs) ---------------------------------------------------------


def _result(index, throughput, *, steps=15, wall=10.0, train=1.0, accuracy=0.9, evaluation=0.5):
    return {
        "grid_index": index,
        "status": "ok",
        "throughput": throughput,
        "accuracy": accuracy,
        "steps": steps,
        "launch_wall_s": wall,
        "train_time_s": train,
        "eval_time_s": evaluation,
    }


def test_halving_cost_counts_each_runs_fixed_cost_and_can_say_the_grid_was_cheaper():
    from fastgpu.sweep.halving import cost

    # four points probed for 15 steps (10 s each, 9 of them start-up, data and evaluation), one trained to 30 steps
    rungs = [
        {"rung": 1, "points": [_result(i, 100.0 - i) for i in range(4)]},
        {"rung": 2, "points": [_result(0, 100.0, steps=30, wall=12.0, train=2.0, evaluation=1.0)]},
    ]
    spent = cost(rungs, grid_points=4)
    # each stopped point: its 10 s + 15 more steps at 1/15 s + the final's extra 0.5 s of evaluation
    assert spent["device_hours_full_grid"] * 3600 == pytest.approx(12.0 + 3 * (10.0 + 1.0 + 0.5))
    assert spent["device_hours_spent"] * 3600 == pytest.approx(4 * 10.0 + 12.0)
    assert spent["sweep_cost_saved"] < 0  # a budget of 2 probes: halving cost more than the grid, and says so

    rungs[1]["points"][0].update(steps=1500, train_time_s=100.0, launch_wall_s=110.0)  # a budget of 100 probes
    assert cost(rungs, grid_points=4)["sweep_cost_saved"] > 0.5


def test_the_accuracy_guard_takes_only_points_that_ran_the_rung_before_the_last():
    from fastgpu.sweep.halving import HalvingSweeper

    sweeper = HalvingSweeper(eta=2, guard_points=2)
    sweeper.config = OmegaConf.create({"report": {"accuracy_tolerance": 0.01}})
    launched = []
    sweeper.run = lambda points: launched.append(points) or [_result(None, 0.0, accuracy=0.9)]
    grid = [[f"+knob={i}"] for i in range(6)]
    rungs = [
        # point 5 was the fastest of rung 1's losers, faster than anything rung 2 measured: it must not skip rung 2
        {"rung": 1, "points": [_result(i, s) for i, s in enumerate([90, 80, 50, 40, 30, 85])]},
        {"rung": 2, "points": [_result(0, 70), _result(1, 60), _result(2, 40)]},
        {"rung": 3, "points": [_result(0, 70, accuracy=0.5), _result(2, 40, accuracy=0.9)]},
    ]
    rungs[1]["points"][1]["decision"] = "stopped_early"
    sweeper.guard_accuracy(grid, baseline=2, rungs=rungs)
    assert launched == [[["+knob=1", "logger.wandb.job_type=halving-rung3"]]]  # point 1 (rung 2), not point 5
    assert [p.get("guard") for p in rungs[-1]["points"]] == [None, None, True]


def test_when_the_next_rung_is_the_full_budget_only_final_points_go_on():
    """6 points, 2 epochs of 44 steps, a 35-step probe and eta 3: the next rung (105 steps) is past the 88-step
    budget, so it is the last: final_points (1) and the baseline train to the end, not ceil(5/3) = 2 of them. (A
    command with this budget is refused before it trains unless hydra.sweeper.min_budget_ratio=0: test_search.py.)"""
    from fastgpu.sweep.halving import HalvingSweeper

    sweeper = HalvingSweeper(eta=3, probe_steps=30, final_points=1)
    sweeper.config = OmegaConf.create(
        {
            "trainer": {"max_steps": None, "epochs": 2, "warmup_steps": 5, "log_every_n_steps": 25},
            "report": {"accuracy_tolerance": 0.01, "baseline": []},
        }
    )
    sweeper.start = sweeper.write_ledger = lambda *args: None
    sweeper.grid = lambda arguments: [[f"+p={i}"] for i in range(6)]
    sweeper._baseline = lambda grid, results: 5

    def run(points):
        out = []
        for overrides in points:
            index = int(next(o for o in overrides if o.startswith("+p="))[3:])
            full = not any(o.startswith("trainer.max_steps=") for o in overrides)
            out.append({**_result(index, 100.0 - index, steps=88 if full else 35), "steps_per_epoch": 44})
        return out

    sweeper.run = run
    (rungs,) = sweeper.sweep([])
    assert [len(r["points"]) for r in rungs] == [6, 2]  # one winner and the baseline
    assert sorted(p["grid_index"] for p in rungs[-1]["points"]) == [0, 5]


def test_halving_with_repeats_runs_every_point_in_shuffled_rounds_and_ranks_by_the_median():
    """trainer.repeats=3 with halving: each rung runs its points three times, every point once a round in a seeded
    shuffled order; a point is ranked by the median of its runs, so one lucky run does not promote it."""
    from fastgpu.sweep.halving import HalvingSweeper, cost

    sweeper = HalvingSweeper(eta=4, probe_steps=10, final_points=1, repeats=3)
    sweeper.config = OmegaConf.create(
        {
            "trainer": {"max_steps": 400, "epochs": 2, "warmup_steps": 5, "log_every_n_steps": 25},
            "report": {"accuracy_tolerance": 0.01, "baseline": []},
        }
    )
    sweeper.start = sweeper.write_ledger = lambda *args: None
    sweeper.grid = lambda arguments: [[f"+p={i}"] for i in range(4)]
    sweeper._baseline = lambda grid, results: 3
    # point 0: one lucky run (mean 195, median 95); point 1: steady 150; point 2: 120; point 3 the baseline
    speeds = {0: [90.0, 95.0, 400.0], 1: [150.0, 150.0, 150.0], 2: [120.0] * 3, 3: [100.0] * 3}
    launched = []

    def run(points):
        launched.append(points)
        out = []
        for overrides in points:
            index = int(next(o for o in overrides if o.startswith("+p="))[3:])
            repeat = int(next(o for o in overrides if o.startswith("trainer.repeat="))[15:])
            steps = 15 if any(o.startswith("trainer.max_steps=") for o in overrides) else 400
            out.append(_result(index, speeds[index][repeat], steps=steps))
        return out

    sweeper.run = run
    (rungs,) = sweeper.sweep([])
    first, last = launched
    assert len(first) == 12 and len(last) == 6  # 4 points x 3 rounds; then the winner and the baseline x 3
    for r in range(3):  # every point once a round, with the round's trainer.repeat
        assert sorted(o[0] for o in first[4 * r : 4 * r + 4]) == [f"+p={i}" for i in range(4)]
        assert all(f"trainer.repeat={r}" in o for o in first[4 * r : 4 * r + 4])
    assert len({tuple(o[0] for o in first[4 * r : 4 * r + 4]) for r in range(3)}) > 1  # shuffled, not one order
    assert sorted({p["grid_index"] for p in rungs[-1]["points"]}) == [1, 3]  # median 150 beats 0's lucky 400
    assert {p["decision"] for p in rungs[0]["points"] if p["grid_index"] == 0} == {"stopped_early"}
    assert [p["repeat"] for p in rungs[-1]["points"]].count(2) == 2
    spent = cost(rungs, grid_points=4, repeats=3)
    assert spent["steps_full_grid"] == 4 * 3 * 400 and spent["steps_spent"] == 12 * 15 + 6 * 400


def test_a_probe_larger_than_the_training_set_bounds_the_search_and_is_no_failure(tmp_path):
    small = ("model=mlp", "model.hidden_dims=[16]", "data=synthetic", "data.image_size=8", "data.train_samples=100")
    result = run_cli(
        "-m",
        "+experiment=max_batch",
        *small,
        "data.val_samples=32",
        "trainer.max_steps=2",
        "trainer.warmup_steps=1",
        "hydra.sweeper.start=32",
        "hydra.sweeper.multiple=8",
        *QUICK,
        f"hydra.sweep.dir={tmp_path}",
    )
    assert result.returncode == 0, result.stderr[-2000:]  # a batch the data cannot fill is the search's answer
    (search,) = json.loads((tmp_path / "max_batch.json").read_text())["searches"]
    assert search["max_batch_size"] == 96 and search["stopped_by"] == "training_set" and search["failure"] is None
    assert [p["status"] for p in search["probes"]].count("beyond_data") >= 1
    assert f"**96** ({search['smallest_oom']} holds more than the training set)" in (tmp_path / "report.md").read_text()
