"""`hydra/launcher=isolated` (the default): FastGPU's launcher of every point in a process of its own
(fastgpu/sweep/isolation/). Hydra only instantiates plugin classes defined under hydra_plugins, hence the subclass.
Import-light: Hydra scans hydra_plugins on every start."""

from fastgpu.sweep.isolation.launcher import IsolatedLauncher as _IsolatedLauncher


class IsolatedLauncher(_IsolatedLauncher):
    pass
