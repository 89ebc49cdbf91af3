"""FastGPU's default sweeper, registered as Hydra's `hydra/sweeper=basic`: Hydra's grid with trainer.repeats in rounds
(fastgpu/sweep/repeats.py). Hydra only instantiates plugin classes defined under hydra_plugins, hence the subclass."""

from fastgpu.sweep.repeats import GridSweeper as _GridSweeper


class GridSweeper(_GridSweeper):
    pass
