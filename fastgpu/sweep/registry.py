"""What FastGPU's sweep configs need registered with Hydra and OmegaConf before composition."""


def register_sweep_configs() -> None:
    """The `fastgpu_tasks_per_node` resolver of the Slurm presets and the Optuna sweeper preset."""
    from fastgpu.sweep.optuna_preset import register_optuna_preset
    from fastgpu.sweep.slurm import register_resolvers

    register_resolvers()
    register_optuna_preset()
