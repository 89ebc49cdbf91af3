"""FastGPU's local launcher: hydra-submitit-launcher's `submitit_local`, but points that are timed are not run
on the same cores at once unless asked (`max_parallel_points`, default 1): two points sharing a CPU or GPU
measure each other, not themselves. Import-light: Hydra scans hydra_plugins on every start."""

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher as _SubmititLocalLauncher


class FastGPULocalLauncher(_SubmititLocalLauncher):
    def __init__(self, max_parallel_points: int = 1, **params) -> None:
        super().__init__(**params)
        self.max_parallel_points = max_parallel_points

    def launch(self, job_overrides, initial_job_idx):
        at_once = self.max_parallel_points if self.max_parallel_points > 0 else len(job_overrides)
        results = []
        for start in range(0, len(job_overrides), at_once):
            results += super().launch(job_overrides[start : start + at_once], initial_job_idx + start)
        return results
