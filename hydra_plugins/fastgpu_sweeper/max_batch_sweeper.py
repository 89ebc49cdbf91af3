"""`hydra/sweeper=max_batch`: the largest batch that fits (fastgpu/max_batch.py). A subclass defined here because
Hydra only instantiates plugin classes under hydra_plugins. Import-light."""

from fastgpu.max_batch import MaxBatchSweeper as _MaxBatchSweeper


class MaxBatchSweeper(_MaxBatchSweeper):
    pass
