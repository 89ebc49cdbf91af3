"""Searching a sweep instead of running all of it (issue 15) and the max-batch search (issue 14)."""

import json
import re

import pytest
from conftest import run_cli

from fastgpu.results.store import read_metrics

QUICK = (
    "trainer.progress_bar=false",
    "logger.wandb.mode=disabled",
    "inference.benchmark=false",
    "export=[]",
    "trainer.monitor_interval_s=0",
    "trainer.checkpoint=false",
    "trainer.eval_every_n_epochs=1000",  # evaluate once, at the end: accuracy is compared only there
    "hydra/launcher=basic",  # points in the sweep's process: this file tests the search, not isolation (test_sweep.py)
)
# eight points that train identically (a host sleep changes nothing the model sees); sleep_ms=80 is the planted slow
# one, and every pair is >= 10 ms a step apart (an mlp step is ~1 ms): machine noise cannot reorder them
PLANTED = (
    "model=mlp",
    "trainer.sleep_ms=0,10,20,30,40,50,60,80",
    "trainer.max_steps=120",
    "trainer.warmup_steps=5",
    "trainer.log_every_n_steps=25",
    "report.baseline=['trainer.sleep_ms=40']",
)


def recommended(stdout: str) -> str:
    return re.search(r"Recommendation: '([^']+)'", stdout).group(1)


@pytest.mark.slow
def test_halving_stops_the_slow_point_recommends_the_planted_fastest_and_resumes_per_rung(tmp_path):
    """The points differ only by a planted host sleep per step, so the answer is known: sleep_ms0 (what the full
    grid recommends too; experiments/search_benchmark.py compares the two sweeps on a real space)."""
    search_args = (
        "-m",
        "hydra/sweeper=halving",
        "hydra.sweeper.min_budget_ratio=0",  # a short budget: the mechanics, not the cost
        "hydra.sweeper.eta=8",
        "hydra.sweeper.probe_steps=10",
        *PLANTED,
        *QUICK,
        f"hydra.sweep.dir={tmp_path / 'halving'}",
    )
    search = run_cli(*search_args)
    assert search.returncode == 0, search.stderr[-2000:]
    assert recommended(search.stdout) == "sleep_ms0"

    ledger = json.loads((tmp_path / "halving" / "halving.json").read_text())
    first, last = ledger["rungs"][0], ledger["rungs"][-1]
    assert first["max_steps"] == 15 and len(first["points"]) == 8 and last["max_steps"] is None
    decision = {p["grid_index"]: p["decision"] for p in first["points"]}
    assert decision[7] == "stopped_early"  # the planted slow point (sleep_ms=80) stops at rung 1
    assert decision[0] == "promoted" and decision[4] == "promoted"  # the fastest, and the guarded baseline
    assert sorted(p["grid_index"] for p in last["points"]) == [0, 4]
    # every run is a real point: its steps add up to what the search spent, well under the full grid's
    dirs = sorted((p for p in (tmp_path / "halving").iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert len(dirs) == 8 + 2 and sum(read_metrics(d)["steps"] for d in dirs) == ledger["steps_spent"]
    assert ledger["steps_spent"] == 8 * 15 + 2 * 120 < 0.4 * ledger["steps_full_grid"] == 0.4 * 8 * 120
    assert 0 < ledger["sweep_cost_saved"] < 1
    report = (tmp_path / "halving" / "report.md").read_text()
    assert "## Successive halving: eta=8, probe 10 steps, 8 -> 1 + baseline points" in report
    assert "sweep_cost_saved" in report
    assert "stopped_early" in (tmp_path / "halving" / "results.csv").read_text()

    # the final rung was lost (its points never finished): a resume reruns only them
    rung1 = {d.name: (d / "metrics.json").read_bytes() for d in dirs[:8]}
    for d in dirs[8:]:
        (d / "metrics.json").unlink()
    resumed = run_cli(*search_args, "+resume=true")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stderr.count("is done (status ok), skipping") == 8
    assert {d.name: (d / "metrics.json").read_bytes() for d in dirs[:8]} == rung1
    assert all(read_metrics(d)["status"] == "ok" for d in dirs[8:])
    assert recommended(resumed.stdout) == "sleep_ms0"


@pytest.mark.slow
def test_the_accuracy_guard_trains_the_next_fastest_when_the_fastest_loses_accuracy(tmp_path):
    # three settings as a config group of our own: the fastest learns nothing (a tiny learning rate). The guard
    # compares fast_good's 10-step probe with slow's full run: on a loaded machine late wake-ups add ~10-20 ms to
    # every sleep, so slow sleeps 10x fast_good's 4 ms (at 5x, one loaded CI run read the probe as the slower)
    group = tmp_path / "conf" / "knob"
    group.mkdir(parents=True)
    settings = {"fast_bad": (0, 1e-7), "fast_good": (4, 0.05), "slow": (40, 0.05)}
    for name, (sleep_ms, lr) in settings.items():
        (group / f"{name}.yaml").write_text(
            f"# @package _global_\ntrainer:\n  sleep_ms: {sleep_ms}\noptimizer:\n  lr: {lr}\n"
        )
    common = (
        "model=mlp",
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "+knob=fast_bad,fast_good,slow",
        "trainer.max_steps=100",
        "trainer.warmup_steps=5",
        "report.baseline=['+knob=slow']",
        *QUICK,
    )
    search = run_cli(
        "-m",
        *common,
        "hydra/sweeper=halving",
        "hydra.sweeper.min_budget_ratio=0",  # a short budget: the mechanics, not the cost
        "hydra.sweeper.eta=2",
        "hydra.sweeper.probe_steps=10",
        f"hydra.sweep.dir={tmp_path / 'halving'}",
    )
    assert search.returncode == 0, search.stderr[-2000:]
    ledger = json.loads((tmp_path / "halving" / "halving.json").read_text())
    final = ledger["rungs"][-1]["points"]
    assert [(p["grid_index"], bool(p.get("guard"))) for p in final] == [(0, False), (2, False), (1, True)]
    assert recommended(search.stdout) == "fast_good"  # the planted answer: fast_bad learns nothing, slow is slow
    assert "final (accuracy guard)" in (tmp_path / "halving" / "report.md").read_text()


def test_halving_refuses_a_budget_too_short_to_pay_before_writing_anything(tmp_path, cli_in_process):
    """88 steps a point against a 35-step probe (experiments/search_benchmark.py --short: halving took 1.37x the
    grid's wall time): refused in one line naming the fixed cost, exit 2, no sweep dir."""
    result = cli_in_process(
        "-m", "hydra/sweeper=halving", "model.width=8,16", "trainer.epochs=4", "data.batch_size=64", cwd=tmp_path
    )
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "the full budget (88 steps a point) is only 2.5x the probe (35 steps" in line
    assert "fixed cost" in line and "hydra.sweeper.min_budget_ratio=0" in line
    assert list(tmp_path.iterdir()) == []
