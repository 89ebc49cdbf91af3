"""FastGPU's preset over hydra-optuna-sweeper: `hydra/sweeper=optuna` means a multi-objective search that maximises
throughput and accuracy (maximising accuracy is minimising the accuracy lost against the baseline), sampled by
NSGA-II (seeded, a population of 10 so a 20-30 trial study evolves), one trial at a time (timings apart), and no
failure rate that ends the study: a failed point scores 0 on both objectives (fastgpu.__main__.objectives).

    python -m fastgpu -m hydra/sweeper=optuna hydra.sweeper.n_trials=30 \\
        'precision=choice(fp32,bf16)' 'channels_last=choice(false,true)' 'optimizer.impl=choice(foreach,fused)'

Registered under the plugin's own name, after Hydra's plugin scan, so it replaces the plugin's defaults
(single objective, minimise). Torch- and optuna-free; absent when the plugin is not installed (`.[search]`).
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional


def register_optuna_preset() -> None:
    try:
        from hydra_plugins.hydra_optuna_sweeper.config import NSGAIISamplerConfig, OptunaSweeperConf
    except ImportError:
        return
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins

    Plugins.instance()  # Hydra's one plugin scan re-executes the plugin's config module: let it happen first

    @dataclass
    class FastGPUNSGAIISampler(NSGAIISamplerConfig):
        seed: Optional[int] = 0
        population_size: int = 10

    @dataclass
    class FastGPUOptunaSweeper(OptunaSweeperConf):
        defaults: List[Any] = field(default_factory=lambda: [{"sampler": "fastgpu_nsgaii"}])
        direction: Any = field(default_factory=lambda: ["maximize", "maximize"])  # throughput, accuracy
        study_name: Optional[str] = "fastgpu"
        n_jobs: int = 1
        max_failure_rate: float = 1.0

    store = ConfigStore.instance()
    store.store(group="hydra/sweeper/sampler", name="fastgpu_nsgaii", node=FastGPUNSGAIISampler, provider="fastgpu")
    store.store(group="hydra/sweeper", name="optuna", node=FastGPUOptunaSweeper, provider="fastgpu")
