"""Hydra finds launchers only under the hydra_plugins namespace: FastGPU's Slurm launcher, registered here.

The implementation is fastgpu.sweep.slurm.SlurmLauncher; this module stays import-light because Hydra scans
hydra_plugins on every start.
"""

from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as _SubmititSlurmLauncher


class FastGPUSlurmLauncher(_SubmititSlurmLauncher):
    def launch(self, job_overrides, initial_job_idx):
        from fastgpu.sweep.slurm import launch_and_report

        return launch_and_report(self, job_overrides, initial_job_idx)
