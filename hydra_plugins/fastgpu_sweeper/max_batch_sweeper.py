"""`hydra/sweeper=max_batch`: the largest batch that fits (fastgpu/sweep/max_batch.py). A subclass defined here because
Hydra only instantiates plugin classes under hydra_plugins. Import-light."""

from fastgpu.sweep.max_batch import MaxBatchSweeper as _MaxBatchSweeper


class MaxBatchSweeper(_MaxBatchSweeper):
    pass
