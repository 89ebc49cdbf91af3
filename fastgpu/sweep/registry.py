"""What FastGPU's sweep configs need registered with Hydra and OmegaConf before composition."""


def register_sweep_configs() -> None:
    """The `fastgpu_tasks_per_node` resolver of the Slurm presets, the Optuna sweeper preset, and FastGPU's grid
    sweeper (trainer.repeats) as Hydra's default `basic` sweeper."""
    from fastgpu.sweep.optuna_preset import register_optuna_preset
    from fastgpu.sweep.repeats import register_grid_sweeper
    from fastgpu.sweep.slurm import register_resolvers

    register_resolvers()
    register_optuna_preset()
    register_grid_sweeper()
