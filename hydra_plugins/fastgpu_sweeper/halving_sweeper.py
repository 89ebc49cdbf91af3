"""`hydra/sweeper=halving`: FastGPU's successive halving (fastgpu/sweep/halving.py). Hydra only instantiates plugin
classes defined under hydra_plugins, hence the subclass. Import-light: Hydra scans hydra_plugins on every start."""

from fastgpu.sweep.halving import HalvingSweeper as _HalvingSweeper


class HalvingSweeper(_HalvingSweeper):
    pass
