"""The structured schema every composed config is validated against.

Hydra merges fastgpu/conf/ YAML files onto these dataclasses, so a typo'd key or a wrongly typed value
fails at composition with the key's name, before any work starts.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class PrecisionConfig:
    name: str = "fp32"  # fp32 | tf32 | bf16 | fp16 | fp8 (torchao float8 training; sm_89+ GPUs)
    fallback: Optional[str] = None  # precision to use where the device cannot do `name`; None: error


@dataclass
class ParallelConfig:
    strategy: str = "none"  # none | ddp | fsdp | a user's own: what the run is recorded as
    wrap: Any = None  # _target_ of wrap(model, device) once the process group is up (_partial_: true); null: none
    nproc_per_node: int = 1  # processes FastGPU starts itself (ignored under torchrun / srun)
    backend: str = "auto"  # auto: nccl on CUDA, gloo on CPU
    master_port: int = 0  # 0: pick a free port


@dataclass
class CompressionConfig:
    name: str = "none"  # none | prune | prune_structured | quantize_dynamic | quantize_static | qat | sparse24
    method: Any = None  # _target_ of method(cfg, model, io) -> (model, device, facts) (_partial_: true)
    amount: float = 0.5  # prune / prune_structured: fraction of weights (channels) removed
    scope: str = "global"  # prune: global ranking or per layer
    schedule: str = "oneshot"  # prune: oneshot (after training, then finetune_epochs) | gradual (during training)
    start_fraction: float = 0.2  # gradual: when pruning starts / reaches `amount`, as fractions of the run
    end_fraction: float = 0.8
    frequency: int = 10  # gradual: prune every N steps
    finetune_epochs: int = 1
    finetune_lr: float = 0.001
    calibration_batches: int = 8  # quantize_static
    qat_epochs: int = 1  # qat: epochs of quantisation-aware fine-tuning before conversion
    compile_inference: bool = False  # torch.compile before the inference benchmark (x86 int8 kernels need it)


@dataclass
class InferenceConfig:
    benchmark: bool = True  # latency at batch 1 and at data.batch_size, before and after compression
    repeats: int = 20
    warmup: int = 3


@dataclass
class TrainerConfig:
    epochs: int = "${oc.select:data.epochs,20}"  # 20, or the number of epochs the data config suggests (text: 2)
    max_steps: Optional[int] = None  # stop after this many optimizer steps (overrides epochs)
    accumulate_grad_batches: int = 1  # loader batches per optimizer step (DDP syncs gradients on the last only)
    cudnn_benchmark: Optional[bool] = None  # None: on, unless deterministic
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    warmup_steps: int = 5  # optimizer steps excluded from the timed figures (again after a resume in a new process)
    log_every_n_steps: int = 25
    eval_every_n_epochs: int = 1
    target_accuracy: float = 0.95  # for time-to-accuracy
    target_perplexity: Optional[float] = None  # a language model's time-to-target (its accuracy target is not used)
    progress_bar: bool = True
    preflight_batch: bool = True  # before anything is written: the model on the data's first 2 samples, on the CPU
    checkpoint: bool = True  # keep the final checkpoint.pt
    checkpoint_every_n_steps: int = 0  # full training state every N steps (0: only on preemption signals)
    deterministic: bool = False
    monitor_interval_s: float = 1.0  # resource sampler period (CPU/RSS, NVML on CUDA); 0 turns it off
    sleep_ms: float = 0.0  # a planted slowdown per step (host sleep): for testing what a sweep detects
    sync_debug: str = "off"  # off | warn | error: torch.cuda.set_sync_debug_mode over the steady steps (CUDA)
    num_threads: Optional[int] = None  # CPU threads per process; None: SLURM_CPUS_PER_TASK if set, else torch's default
    profile: bool = False  # torch.profiler over `profile_steps` steps right after warm-up (excluded from timings)
    profile_steps: int = 5
    repeats: int = 1  # a sweep runs each point this many times, in rounds of shuffled order (fastgpu/sweep/repeats.py)
    repeat: int = 0  # which round this run is (set by the sweep; runs of one setting are pooled in the report)
    warmup_round: bool = False  # set by the sweep on a warm-up round's runs (hydra.sweeper.warmup_rounds): not compared
    memory_limit_mb: Optional[float] = None  # cap on what the run may allocate (CUDA: per process; CPU: address space)


@dataclass
class WandbConfig:
    mode: str = "offline"  # online | offline | disabled
    project: str = "fastgpu"
    entity: Optional[str] = None
    group: Optional[str] = None
    job_type: str = "train"
    name: Optional[str] = None
    tags: List[str] = field(default_factory=list)
    notes: Optional[str] = None
    # W&B copying the terminal into the run: off by default, since W&B's wrapper forwards every progress-bar redraw
    # (~10 a second) to its service while the loop trains: about 2.5 ms a step on small_cnn (experiments/overhead.py)
    console: str = "off"  # off | wrap | redirect | auto


@dataclass
class LoggerConfig:
    wandb: WandbConfig = field(default_factory=WandbConfig)


@dataclass
class ReportConfig:
    """The sweep report's comparison: against which point, and how much accuracy may be given up."""

    baseline: List[str] = field(default_factory=list)  # overrides naming the baseline point, e.g. [precision=fp32]
    accuracy_tolerance: float = 0.01  # the recommendation keeps accuracy >= baseline - this (0.01 = 1 point)
    min_gain: float = 0.03  # a point is recommended only if its speed-up's 95% interval lies above 1 + this
    # a single run's gain must also clear the run-to-run noise floor (its interval above 1 + this); None: the one
    # measured for the device kind (fastgpu/results/compare.py NOISE_FLOORS; none for GPUs: repeats needed)
    noise_floor: Optional[float] = None


@dataclass
class FastGPUConfig:
    # built with hydra.utils.instantiate from their `_target_` (fastgpu/components.py): any keys the target takes,
    # beside FastGPU's own (zoo/models.py MODEL_KEYS, zoo/data.py LOADER_KEYS); ranges below where a key is present
    model: Any = None
    data: Any = None
    task: Any = None  # what is learnt: the loss, the metrics, the unit counted (fastgpu/train/task.py)
    precision: PrecisionConfig = field(default_factory=PrecisionConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
    optimizer: Any = None  # instantiated with hydra.utils.instantiate (_partial_: true)
    scheduler: Any = None  # likewise; called with (optimizer, total_steps=N)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    export: List[str] = field(default_factory=lambda: ["torch_export"])  # torch_export, onnx; [] for none
    # export and the inference benchmark: auto = where the run compresses (what they answer), true, false
    deploy: Any = "auto"
    compile: Any = False  # false (eager) | true (torch.compile in compile_mode) | a mode name, e.g. max-autotune
    compile_mode: str = "default"  # default | reduce-overhead | max-autotune | max-autotune-no-cudagraphs
    channels_last: bool = False


@dataclass(frozen=True)
class Range:
    """The valid values of one key: a number in [low, high] (either end open or absent), or one of `choices`
    (or a string matching `pattern`); None is valid where `optional`."""

    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple = ()
    pattern: Optional[str] = None  # a regular expression of further valid strings, shown to users as `shown`
    shown: str = ""
    optional: bool = False

    def ok(self, value) -> bool:
        import math
        import re

        if value is None:
            return self.optional
        if isinstance(value, (list, tuple)) or type(value).__name__ == "ListConfig":  # every element
            return all(self.ok(item) for item in value)
        if isinstance(value, float) and not math.isfinite(value):  # nan and inf are never a setting
            return False
        if self.choices:
            if isinstance(value, bool) or isinstance(value, int) and any(isinstance(c, bool) for c in self.choices):
                return any(value is c for c in self.choices)
            return value in self.choices or (self.pattern is not None and re.fullmatch(self.pattern, str(value)))
        if isinstance(value, bool) or not isinstance(value, (int, float)):  # "abc" where a number belongs
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below

    @property
    def expected(self) -> str:
        if self.choices:
            shown = [str(c).lower() if isinstance(c, bool) else str(c) for c in self.choices]
            return "one of " + ", ".join(shown) + (f" or {self.shown}" if self.pattern else "")
        if self.high is None:
            text = f"a number > {self.low}" if self.low_open else f"a number >= {self.low}"
        else:
            text = f"a number in {'(' if self.low_open else '['}{self.low}, {self.high}{')' if self.high_open else ']'}"
        return text + (" (or null)" if self.optional else "")


COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def deploys(cfg) -> bool:
    """Whether the run exports its model and times inference: `deploy`; auto means where it compresses, or where its
    command chose a compression (`compression=none` in a sweep over compression: the reference the others are
    compared with)."""
    deploy = cfg.get("deploy", "auto")  # absent from configs saved before the key existed
    if deploy != "auto":
        return bool(deploy)
    return cfg.compression.name != "none" or _compression_chosen()


def _compression_chosen() -> bool:
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return False
    return any(o.lstrip("+").startswith("compression") for o in HydraConfig.get().overrides.task)


def compile_mode(cfg):
    """The torch.compile mode the run uses, or None for eager: `compile` may name the mode itself."""
    if isinstance(cfg.compile, str):
        return cfg.compile
    return cfg.compile_mode if cfg.compile else None


def _at_least(low, optional=False):
    return Range(low=low, optional=optional)


def _between(low, high, low_open=False, high_open=False):
    return Range(low=low, high=high, low_open=low_open, high_open=high_open)


def _one_of(*choices, pattern=None, shown=""):
    return Range(choices=choices, pattern=pattern, shown=shown)


# The valid range of every value the schema's types do not already pin down: checked when a run or sweep
# point is composed, before anything is built (names of models, data, precisions... are checked by the
# table that builds them).
RANGES = {
    "model.width": _at_least(1),
    "model.hidden_dims": _at_least(1),
    "model.dropout": _between(0, 1, high_open=True),
    "model.stem": _one_of("auto", "imagenet", "cifar"),
    "model.n_layer": _at_least(1),
    "model.n_head": _at_least(1),
    "model.n_embd": _at_least(1),
    "model.attention": _one_of("auto", "flash", "efficient", "cudnn", "math"),
    "data.block_size": _at_least(1),
    "data.vocab_size": _at_least(2),
    "data.num_classes": _at_least(2),
    "data.channels": _at_least(1),
    "data.image_size": _at_least(1),
    "data.train_samples": _at_least(0),
    "data.val_samples": _at_least(0),
    "data.val_fraction": _between(0, 1, low_open=True, high_open=True),
    "data.batch_size": _at_least(1),
    "data.eval_batch_size": _at_least(1),
    "data.num_workers": _at_least(0),
    "data.prefetch_factor": _at_least(1, optional=True),
    "data.on_corrupt": _one_of("fail", "skip"),
    "data.loader": _one_of("torch", "dali"),
    **{
        f"data.{key}": _one_of(False, True)
        for key in ("pin_memory", "persistent_workers", "drop_last", "device_resident")
    },
    "model.activation_checkpointing": _one_of(False, True),
    "parallel.nproc_per_node": _at_least(1),
    "parallel.backend": _one_of("auto", "gloo", "nccl"),
    "parallel.master_port": _between(0, 65535),
    "compression.amount": _between(0, 1, low_open=True, high_open=True),
    "compression.scope": _one_of("global", "layer"),
    "compression.schedule": _one_of("oneshot", "gradual"),
    "compression.start_fraction": _between(0, 1),
    "compression.end_fraction": _between(0, 1),
    "compression.frequency": _at_least(1),
    "compression.finetune_epochs": _at_least(0),
    "compression.finetune_lr": _between(0, 10, low_open=True),
    "compression.calibration_batches": _at_least(1),
    "compression.qat_epochs": _at_least(0),
    "inference.repeats": _at_least(1),
    "inference.warmup": _at_least(0),
    "trainer.epochs": _at_least(1),
    "trainer.max_steps": _at_least(1, optional=True),
    "trainer.accumulate_grad_batches": _at_least(1),
    "trainer.seed": _at_least(0),
    "trainer.device": _one_of("auto", "cpu", "cuda", pattern=r"cuda:\d+", shown="cuda:N"),
    "trainer.warmup_steps": _at_least(0),
    "trainer.log_every_n_steps": _at_least(1),
    "trainer.eval_every_n_epochs": _at_least(1),
    "trainer.target_accuracy": _between(0, 1),
    "trainer.target_perplexity": _at_least(1, optional=True),
    "trainer.checkpoint_every_n_steps": _at_least(0),
    "trainer.monitor_interval_s": _at_least(0),
    "trainer.sleep_ms": _at_least(0),
    "trainer.sync_debug": _one_of("off", "warn", "error"),
    "trainer.num_threads": _at_least(1, optional=True),
    "trainer.profile_steps": _at_least(1),
    "trainer.repeats": _at_least(1),
    "trainer.repeat": _at_least(0),
    "trainer.memory_limit_mb": _at_least(1, optional=True),
    "optimizer.impl": _one_of("auto", "fused", "foreach", "loop"),
    # the optimizer's and scheduler's own keys: checked where the chosen one has them
    "optimizer.lr": Range(low=0, low_open=True),
    "optimizer.momentum": _between(0, 1, high_open=True),
    "optimizer.dampening": _between(0, 1),
    "optimizer.weight_decay": _at_least(0),
    "optimizer.betas": _between(0, 1, high_open=True),
    "optimizer.eps": Range(low=0, low_open=True),
    "scheduler.warmup_steps": _at_least(0),
    "scheduler.min_lr_ratio": _between(0, 1),
    "scheduler.max_lr_factor": Range(low=0, low_open=True),
    "scheduler.pct_start": _between(0, 1, low_open=True, high_open=True),
    "logger.wandb.mode": _one_of("online", "offline", "disabled"),
    "logger.wandb.console": _one_of("off", "wrap", "redirect", "auto"),
    "report.accuracy_tolerance": _between(0, 1),
    "report.min_gain": _at_least(0),
    "report.noise_floor": _at_least(0, optional=True),
    "compile_mode": _one_of(*COMPILE_MODES),
    "compile": _one_of(False, True, *COMPILE_MODES),
    "deploy": _one_of("auto", True, False),
}


def check_ranges(cfg) -> None:
    """One line naming the first key whose value is outside its range, the value and the range."""
    from omegaconf import OmegaConf

    from fastgpu.errors import FastGPUError

    absent = object()
    for key, valid in RANGES.items():
        value = OmegaConf.select(cfg, key, default=absent)
        if value is absent:  # not a key of the chosen model, dataset, optimizer or scheduler
            continue
        if not valid.ok(value):
            raise FastGPUError(f"{key}={value!r} is out of range; use {valid.expected}")
    gradual = cfg.compression.schedule == "gradual"
    if gradual and cfg.compression.start_fraction >= cfg.compression.end_fraction:
        raise FastGPUError(
            f"compression.start_fraction={cfg.compression.start_fraction} must be below "
            f"compression.end_fraction={cfg.compression.end_fraction}; lower the start or raise the end"
        )


# FastGPU's own keys of every data config: how its loaders batch, shard and feed the datasets the data config's
# `_target_` builds. A data config lists `/fastgpu_data_loader@_here_` in its defaults and sets what differs.
DATA_LOADER_DEFAULTS = {
    "loader": "torch",  # torch (DataLoader) | dali (NVIDIA DALI decoding pipeline; imagefolder only)
    "batch_size": 64,  # per process
    "eval_batch_size": 256,
    "num_workers": 0,
    "pin_memory": False,
    "persistent_workers": False,
    "prefetch_factor": None,
    "drop_last": True,
    "device_resident": False,  # in-memory datasets (digits, synthetic): kept on the training device, no host copies
}


def register_schema() -> None:
    store = ConfigStore.instance()
    store.store(name="fastgpu_schema", node=FastGPUConfig)
    store.store(name="fastgpu_data_loader", node=DATA_LOADER_DEFAULTS)  # a plain node: datasets add their own keys
