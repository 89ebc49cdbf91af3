"""Composition: every option of every group composes, bad input fails with one clear line."""

import json

import pytest
import torch
from conftest import REPO, compose_cfg

GROUPS = ["model", "data", "precision", "parallel", "compression", "optimizer", "scheduler", "trainer", "logger"]


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_composes(group):
    options = sorted(p.stem for p in (REPO / "fastgpu" / "conf" / group).glob("*.yaml"))
    assert options, group
    for option in options:
        cfg = compose_cfg(f"{group}={option}")
        assert cfg[group] is not None


def test_defaults_are_the_documented_job():
    cfg = compose_cfg()
    assert (cfg.model.name, cfg.data.name, cfg.precision.name, cfg.parallel.strategy) == (
        "small_cnn",
        "digits",
        "fp32",
        "none",
    )
    assert cfg.optimizer.lr == 0.01 and cfg.optimizer.momentum == 0.9 and cfg.optimizer.weight_decay == 1e-4
    assert cfg.logger.wandb.mode == "offline"


def test_help_is_fastgpus_own(cli_in_process):
    result = cli_in_process("--help")
    assert result.returncode == 0, result.stderr
    for words in (
        "-m precision=fp32,bf16",
        "+resume=RUN_DIR",
        "+overwrite=true",
        "python -m fastgpu report SWEEP_DIR",
        "python -m fastgpu status SWEEP_DIR",
        "hydra/sweeper=halving",
        "outputs/multirun/DATE/TIME",
        "model: custom, gpt, hf_causal_lm, mlp, resnet18, resnet50, small_cnn, timm, torchvision",
        "experiment: ab, autotune",
    ):
        assert words in result.stdout, words
    assert "powered by Hydra" not in result.stdout and "trainer:\n  epochs" not in result.stdout  # no config dump


def test_cfg_job_prints_composed_config(cli_in_process):
    result = cli_in_process("--cfg", "job", "precision=bf16", "trainer.epochs=3")
    assert result.returncode == 0, result.stderr
    assert "precision:\n  name: bf16" in result.stdout
    assert "epochs: 3" in result.stdout


@pytest.mark.parametrize(
    "override, expected",
    [
        (
            "model=resnet19",
            "Could not find 'model/resnet19'; available options in 'model': custom, gpt, hf_causal_lm, mlp, resnet18, "
            "resnet50, small_cnn, timm, torchvision",
        ),
        ("trainer.epoch=3", "Key 'epoch' not in 'TrainerConfig' (did you mean 'epochs'?)"),
        ("trainer.epochs=many", "Value 'many' of type 'str' could not be converted to Integer"),
        ("optimizer.lrr=0.1", "Could not override 'optimizer.lrr'"),
        ("model.widht=64", "Key 'widht' is not in struct (did you mean 'width'?)"),
        ("data.batch_size=abc", "data.batch_size='abc' is out of range; use a number >= 1"),
        ("paralel=ddp", "Key 'paralel' not in 'FastGPUConfig' (did you mean 'parallel'?)"),
    ],
)
def test_bad_override_is_one_clear_line(override, expected, cli_in_process):
    result = cli_in_process(override)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fastgpu: error: ") and expected in lines[0]
    if "did you mean" in expected:  # a typo wants its fix, not the advice to add the misspelt key
        assert "to add a new key" not in lines[0], lines[0]


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without a GPU")
@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["data=cifar10", "data.root=/no/such/dir"], "expected /no/such/dir/cifar-10-batches-py"),
        (["data=cifar10"], "data=cifar10 needs data.root=/path/to/dataset"),
        (["data=imagefolder", "data.root=/no/such/dir"], "expected /no/such/dir/train"),
        (["model._target_=mypkg.nets.Net"], "model._target_=mypkg.nets.Net cannot be imported (ModuleNotFoundError: "),
        (["precision=fp16"], "precision=fp16 needs a CUDA GPU"),
        (["precision=tf32"], "precision=tf32 is a CUDA tensor-core mode"),
        (["trainer.device=cuda"], "no CUDA GPU is visible"),
    ],
)
def test_impossible_setting_is_one_clear_line(tmp_path, overrides, expected, cli_in_process):
    """What the device cannot do fails the run (exit 1) with a record; a dataset that is not where data.root says is
    refused before anything is written (exit 2, no run dir)."""
    run_dir = tmp_path / "run"
    result = cli_in_process(*overrides, "logger=none", f"hydra.run.dir={run_dir}")
    refused_up_front = overrides[0].startswith(("data=", "model._target_"))
    assert result.returncode == (2 if refused_up_front else 1)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith("fastgpu: error: ") and expected in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    if refused_up_front:
        assert not run_dir.exists()
        return
    record = json.loads((run_dir / "metrics.json").read_text())
    assert record["status"] == "failed" and expected in record["error"]


def test_components_are_built_from_their_target_and_a_failure_names_it():
    """model/data/parallel/compression are Hydra `_target_` nodes: their own keys are the target's arguments, data
    facts arrive by interpolation, and a target that fails to build is one line naming it and the cause."""
    from fastgpu.components import build, check_targets
    from fastgpu.errors import FastGPUError
    from fastgpu.zoo.data import LOADER_KEYS
    from fastgpu.zoo.models import build_model

    cfg = compose_cfg("model=mlp", "model.hidden_dims=[32]", "data=synthetic", "data.channels=2", "data.num_classes=7")
    model = build_model(cfg.model)
    assert model[1].in_features == 2 * 32 * 32 and model[-1].out_features == 7  # ${data.*} resolved
    with pytest.raises(
        FastGPUError,
        match=r"^model._target_=fastgpu.zoo.models.SmallCNN failed to build "
        r"\(TypeError: .*'depth'\); check the model keys",
    ):
        build_model(compose_cfg("+model.depth=12").model)
    with pytest.raises(FastGPUError, match=r"^parallel.wrap._target_=fastgpu.train.parallel.nope cannot be imported"):
        check_targets(compose_cfg("parallel=ddp", "parallel.wrap._target_=fastgpu.train.parallel.nope"))
    train, val = build(compose_cfg().data, "data", own_keys=LOADER_KEYS)
    assert (len(train), len(val)) == (1797 - 360, 360)  # digits, ceil(0.2 * 1797) in val
    counts = torch.bincount(val.tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: every class in proportion
