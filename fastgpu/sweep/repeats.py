"""FastGPU's grid sweeper: Hydra's grid, every point `trainer.repeats` times, in rounds.

Points of a sweep run one after another, so anything that drifts over minutes (thermal state, other tenants, the
page cache) favours whichever point ran at the better time. With repeats, round r runs every point once, in an
order shuffled with seed `seed + r` (or, with `order: alternate`, forward in even rounds and reversed in odd ones:
ABBA), so drift spreads over all settings; each run gets `trainer.repeat=r`, and the report pools the runs of a
setting (fastgpu/results/compare.py pool_repeats) into one row whose interval covers run-to-run noise.

    python -m fastgpu -m precision=fp32,bf16 trainer.repeats=3
"""

import random
from dataclasses import dataclass
from typing import Any, Optional

from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from fastgpu.results.compare import WARMUP_ROUND

ORDERS = ("shuffle", "alternate")


def round_order(points: int, repeats: int, order: str = "shuffle", seed: int = 0) -> list:
    """(point index, round) for `repeats` rounds over `points` points: every point once a round, in an order
    shuffled with seed `seed + round` (or forward, then reversed); one round: the points in order."""
    if order not in ORDERS:
        from fastgpu.errors import FastGPUError

        raise FastGPUError(f"hydra.sweeper.order={order!r} is not known; use one of {', '.join(ORDERS)}")
    jobs = []
    for r in range(max(repeats, 1)):
        index = list(range(points))
        if order == "alternate":
            index = index if r % 2 == 0 else index[::-1]
        elif repeats > 1:
            random.Random(seed + r).shuffle(index)
        jobs += [(i, r) for i in index]
    return jobs


def rounds(grid: list, repeats: int, order: str = "shuffle", seed: int = 0, warmup_rounds: int = 0) -> list:
    """The jobs of `repeats` rounds over `grid` (each job a list of overrides), each with its round's
    `trainer.repeat=r`; one round: the grid as Hydra gives it. `warmup_rounds` rounds come first, in the grid's
    order, marked WARMUP_ROUND: in one process (+experiment=ab) the first runs pay its one-time costs (imports,
    allocator growth, caches), which the report must not book on the setting that happened to run first."""
    tag = (lambda r: [f"trainer.repeat={r}"]) if repeats > 1 else (lambda r: [])
    warmup = [[*point, WARMUP_ROUND] for _ in range(warmup_rounds) for point in grid]
    return warmup + [[*grid[i], *tag(r)] for i, r in round_order(len(grid), repeats, order, seed)]


class GridSweeper(BasicSweeper):
    def __init__(
        self,
        max_batch_size=None,
        params=None,
        repeats: int = 1,
        order: str = "shuffle",
        seed: int = 0,
        warmup_rounds: int = 0,
    ):
        # BasicSweeper.__init__'s attributes, set here: it calls super(BasicSweeper, self), and Hydra's plugin scan
        # re-executes its module, after which that name is another class than the one this one derives from
        self.overrides, self.batch_index, self.max_batch_size, self.params = None, 0, max_batch_size, params or {}
        self.hydra_context = self.config = self.launcher = None
        self.repeats, self.order, self.seed, self.warmup_rounds = int(repeats), order, int(seed), int(warmup_rounds)

    def split_arguments(self, overrides, max_batch_size):
        (grid,) = BasicSweeper.split_arguments(overrides, None)
        jobs = rounds(grid, self.repeats, self.order, self.seed, self.warmup_rounds)
        if max_batch_size is None:
            return [jobs]
        return list(BasicSweeper.split_overrides_to_chunks(jobs, max_batch_size))


@dataclass
class GridSweeperConf:
    """Registered as Hydra's `hydra/sweeper=basic`, so that it is every sweep's default while an experiment can still
    pick another sweeper (a primary config's `override hydra/sweeper` would win over the experiment's)."""

    _target_: str = "hydra_plugins.fastgpu_sweeper.grid_sweeper.GridSweeper"
    max_batch_size: Optional[int] = None
    params: Optional[Any] = None
    repeats: Any = "${oc.select:trainer.repeats,1}"
    order: str = "shuffle"  # shuffle (each round's order seeded by seed + round) | alternate (forward, then reversed)
    seed: int = 0
    warmup_rounds: int = 0  # rounds run first and not compared (+experiment=ab: 1, its runs share one process)


def register_grid_sweeper() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="hydra/sweeper", name="basic", node=GridSweeperConf, provider="fastgpu")
