"""Successive halving over sweep points (`hydra/sweeper=halving`): measure every point's speed briefly, train
only the fastest to the end.

Rung 1 runs every grid point for `trainer.warmup_steps + probe_steps` steps: enough for a steady throughput,
far from enough for accuracy. The fastest 1/eta (at least `final_points`) go on to a rung eta times longer, and
so on until `final_points` remain; they train to the run's own full budget (its epochs or max_steps). The
baseline point (`report.baseline`, else the fp32/eager/no-channels_last point) is guarded: it is promoted every
time, so the last rung has the accuracy the recommendation is checked against. The accuracy guard: when none of the
last rung keeps accuracy, the next fastest train to the end too (up to `guard_points`), so a fast point that
loses accuracy cannot hide the point the full grid would recommend.

With `trainer.repeats=N` every rung runs each of its points N times in rounds (fastgpu/sweep/repeats.py's order,
seeded per rung) and ranks a point by the median of its runs; the report pools the final runs of a setting.

Every run is a real point dir. `halving.json` records the rungs and decisions (`promoted`, `stopped_early`,
`final`) and what the search cost against the full grid; the report reads it. Torch-free.
"""

import math
import statistics
from datetime import datetime

from fastgpu.sweep.adaptive import AdaptiveSweeper, speed
from fastgpu.sweep.repeats import round_order, rounds

LEDGER = "halving.json"


class HalvingSweeper(AdaptiveSweeper):
    ledger_file = LEDGER

    def __init__(
        self,
        params=None,
        eta: int = 3,
        probe_steps: int = 30,
        final_points: int = 1,
        guard_points: int = 2,
        repeats: int = 1,
        order: str = "shuffle",
        seed: int = 0,
        min_budget_ratio: float = 10,
    ):
        super().__init__(params)
        if eta < 2 or probe_steps < 1 or final_points < 1:
            from fastgpu.errors import FastGPUError

            raise FastGPUError(
                f"hydra.sweeper: eta={eta}, probe_steps={probe_steps}, final_points={final_points}; use eta >= 2, "
                "probe_steps >= 1 and final_points >= 1"
            )
        self.eta, self.probe_steps, self.final_points, self.guard_points = eta, probe_steps, final_points, guard_points
        self.repeats, self.order, self.seed = max(int(repeats), 1), order, int(seed)

    def sweep(self, arguments):
        self.start()
        grid = self.grid(arguments)
        trainer = self.config.trainer
        full = trainer.max_steps  # None: the run's epochs decide; known after the last rung
        budget = trainer.warmup_steps + self.probe_steps
        alive, baseline, rungs = list(range(len(grid))), None, []
        final = len(grid) <= self.final_points or (full is not None and budget >= full)
        while True:
            rung = len(rungs) + 1
            results = self.run_rung(grid, alive, rung, None if final else budget)
            if baseline is None:
                baseline = self._baseline(grid, results)
            rungs.append({"rung": rung, "max_steps": None if final else budget, "points": results})
            if final:
                for result in results:
                    result["decision"] = "final"
                self.guard_accuracy(grid, baseline, rungs)
                break
            points = by_point(results)
            contenders = [p for p in points if p["grid_index"] != baseline]
            full = full or self.full_steps(results)  # an epochs budget is known once a point has run
            if full is not None and budget * self.eta >= full:  # the next rung trains to the end: final_points go
                keep = self.final_points
            else:
                keep = max(self.final_points, math.ceil(len(contenders) / self.eta))
            ranked = sorted((p for p in contenders if speed(p) > -math.inf), key=speed, reverse=True)
            winners = {p["grid_index"] for p in ranked[:keep]}
            alive = sorted(
                p["grid_index"] for p in points if p["status"] == "ok" and p["grid_index"] in winners | {baseline}
            )
            for point in points:
                decision = "promoted" if point["grid_index"] in alive else "stopped_early"
                for result in point["runs"]:
                    result["decision"] = decision
            self.write_ledger(self.ledger(grid, baseline, rungs))  # a sweep stopped here resumes from its points
            if not alive:  # nothing finished this rung: nothing to train further
                break
            budget *= self.eta
            final = len(winners) <= self.final_points or (full is not None and budget >= full)
        self.write_ledger(self.ledger(grid, baseline, rungs, done=True))
        return [rungs]

    def run_rung(self, grid: list, indices: list, rung: int, budget) -> list:
        """The points `indices` of `grid` for a rung, each `repeats` times in rounds (every point once a round, the
        order shuffled per round with a seed of its own, the same on a resumed sweep): every run's result, with its
        `grid_index` (and `repeat`)."""
        seed = self.seed + 1000 * rung
        points = [self.rung_point(grid[i], rung, budget) for i in indices]
        results = self.run(rounds(points, self.repeats, self.order, seed))
        for (i, r), result in zip(round_order(len(points), self.repeats, self.order, seed), results):
            result["grid_index"] = indices[i]
            if self.repeats > 1:
                result["repeat"] = r
        return results

    def guard_accuracy(self, grid: list, baseline, rungs: list) -> None:
        """The accuracy guard: when no point of the last rung is both faster than the baseline and within
        `report.accuracy_tolerance` of its accuracy, train the next fastest point (by its last measured speed)
        to the end too, up to `guard_points` more, stopping at one that keeps accuracy or is not faster than the
        baseline: the point the full grid would recommend is then trained, even if a faster one loses accuracy."""
        last = rungs[-1]["points"]
        base = next((p for p in by_point(last) if p["grid_index"] == baseline), None)
        if base is None or base["status"] != "ok" or base["accuracy"] is None or len(rungs) < 2:
            return
        floor = base["accuracy"] - self.config.report.accuracy_tolerance
        # only points that ran the rung before the last: no point skips a rung
        trained = {r["grid_index"] for r in last}
        reserve = [p for p in by_point(rungs[-2]["points"]) if p["grid_index"] not in trained]
        reserve.sort(key=speed, reverse=True)
        for _ in range(self.guard_points):
            kept = [
                p
                for p in by_point(last)
                if p["grid_index"] != baseline and speed(p) > speed(base) and (p["accuracy"] or 0) >= floor
            ]
            if kept or not reserve or speed(reserve[0]) <= speed(base):
                return
            candidate = reserve.pop(0)
            for result in candidate["runs"]:
                result["decision"] = "promoted"
            for result in self.run_rung(grid, [candidate["grid_index"]], rungs[-1]["rung"], None):
                result.update(decision="final", guard=True)
                last.append(result)

    def full_steps(self, results: list):
        """The full budget in steps: trainer.max_steps, else epochs x the steps per epoch a point recorded."""
        trainer = self.config.trainer
        per_epoch = max((r.get("steps_per_epoch") or 0 for r in results), default=0)
        return trainer.max_steps or (trainer.epochs * per_epoch) or None

    def rung_point(self, point: list, rung: int, budget) -> list:
        """A grid point's overrides for a rung: its budget (none in the last rung: the run's own), log steps
        frequent enough for several throughput intervals, and the rung as the W&B job type."""
        extra = [f"logger.wandb.job_type=halving-rung{rung}"]
        if budget is not None:
            steady = budget - self.config.trainer.warmup_steps
            log_every = max(1, min(self.config.trainer.log_every_n_steps, steady // 4))
            extra += [f"trainer.max_steps={budget}", f"trainer.log_every_n_steps={log_every}"]
        replaced = {o.split("=", 1)[0] for o in extra}
        return [o for o in point if o.split("=", 1)[0].lstrip("+") not in replaced] + extra

    def ledger(self, grid: list, baseline, rungs: list, done: bool = False) -> dict:
        return {
            "sweeper": "halving",
            "done": done,
            "eta": self.eta,
            "probe_steps": self.probe_steps,
            "final_points": self.final_points,
            "repeats": self.repeats,
            "grid_points": len(grid),
            "baseline": grid[baseline] if baseline is not None else None,
            "baseline_index": baseline,
            "rungs": [{**r, "points": [_brief(p) for p in r["points"]]} for r in rungs],
            **(cost(rungs, len(grid), self.repeats) if done else {}),
        }

    def _baseline(self, grid: list, results: list):
        """The grid index of the baseline point among rung 1's results."""
        from fastgpu.results.report import find_baseline

        points = [{"metrics": r, "overrides": r["overrides"], "index": r["grid_index"]} for r in results]
        chosen = find_baseline(points, list(self.config.report.baseline))
        return chosen["index"] if chosen else None


def by_point(results: list) -> list:
    """A rung's runs, one entry per grid point (in the order first run): `status` ok where any of its runs finished,
    the median `throughput` and mean `accuracy` of those that did, and the `runs` themselves. With one run a point,
    that run's own figures."""
    runs_of = {}
    for result in results:
        runs_of.setdefault(result["grid_index"], []).append(result)
    points = []
    for index, runs in runs_of.items():
        finished = [r for r in runs if speed(r) > -math.inf]
        accuracies = [r["accuracy"] for r in finished if r.get("accuracy") is not None]
        points.append(
            {
                "grid_index": index,
                "status": "ok" if finished else runs[0].get("status"),
                "throughput": statistics.median(speed(r) for r in finished) if finished else None,
                "accuracy": statistics.fmean(accuracies) if accuracies else None,
                "runs": runs,
            }
        )
    return points


def _brief(result: dict) -> dict:
    keys = (
        "job",
        "grid_index",
        "repeat",
        "status",
        "decision",
        "guard",
        "throughput",
        "accuracy",
        "steps",
        "world_size",
        "error",
        "launch_wall_s",
    )
    return {**{k: result.get(k) for k in keys}, "wall_s": wall_seconds(result)}


def _wall(result: dict) -> float:
    """A run's share of its launch's wall time, else (a ledger written before it was recorded) its training span."""
    return result.get("launch_wall_s") or wall_seconds(result) or 0.0


def wall_seconds(result: dict):
    """Seconds from the run's start to its end as it recorded them, or None."""
    try:
        start, end = (datetime.fromisoformat(result[k]) for k in ("started_at", "ended_at"))
    except (KeyError, TypeError, ValueError):
        return None
    return (end - start).total_seconds()


def cost(rungs: list, grid_points: int, repeats: int = 1) -> dict:
    """Device time and steps the search spent, against an estimate of the full grid's.

    Spent: every run's share of its launch's wall time on the sweep's clock (start-up, data, evaluation and export
    included), times its devices. The grid: a point trained to the end costs what it cost; a point stopped early
    costs its last run plus the training steps it did not take (at its own measured time per step) and the
    evaluations the final points made beyond its own; with repeats, the grid runs every point that many times too.
    Fixed costs are paid once per run, so many short rungs can
    cost more than the grid; `experiments/search_benchmark.py` measures both on one machine."""
    final = [p for p in rungs[-1]["points"] if p.get("status") == "ok" and p.get("steps")]
    if not final:
        return {"sweep_cost_saved": None}
    full_steps = max(p["steps"] for p in final)
    full_eval_s = sum(p.get("eval_time_s") or 0.0 for p in final) / len(final)
    last_run = {}
    spent_s = spent_steps = 0.0
    for rung in rungs:
        for p in rung["points"]:
            spent_s += _wall(p) * (p.get("world_size") or 1)
            spent_steps += p.get("steps") or 0
            last_run[p["grid_index"], p.get("repeat")] = p
    grid_s, measured = 0.0, 0
    for p in last_run.values():
        steps, train_s = p.get("steps"), p.get("train_time_s")
        if not (_wall(p) and steps and train_s):
            continue
        missing_steps = max(full_steps - steps, 0)
        missing_eval = max(full_eval_s - (p.get("eval_time_s") or 0.0), 0.0) if missing_steps else 0.0
        grid_s += (_wall(p) + train_s / steps * missing_steps + missing_eval) * (p.get("world_size") or 1)
        measured += 1
    grid_s += (grid_points * repeats - measured) * (grid_s / max(measured, 1))  # failed runs: the mean estimate
    return {
        "device_hours_spent": spent_s / 3600,
        "device_hours_full_grid": grid_s / 3600,
        "steps_spent": int(spent_steps),
        "steps_full_grid": grid_points * repeats * full_steps,
        "sweep_cost_saved": 1 - spent_s / grid_s if grid_s > 0 else None,
    }
