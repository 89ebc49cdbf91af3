"""Your model, your data, your task: a package that exists only in the test's temporary folder, imported by
`_target_`, trained in-process, under 2-rank DDP (gloo) and under the local submitit launcher; the language-model
task on FastGPU's GPT and real text; the model zoos by name; the README's own example."""

import json
import re
import shlex
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import IN_CI, NO_DEPLOY, REPO, compose_cfg, run_cli

from fastgpu.errors import FastGPUError
from fastgpu.job.launch import RunFailed, launch
from fastgpu.job.preflight import check_before_writing
from fastgpu.measure.flops import training_flops_per_sample
from fastgpu.measure.quality import ClassificationMetrics, LanguageModelMetrics
from fastgpu.results.store import read_metrics
from fastgpu.zoo.gpt import GPT

QUICK = ("trainer.progress_bar=false", "trainer.checkpoint=false", "logger.wandb.mode=disabled", *NO_DEPLOY)

USER_PACKAGE = {
    "mypkg/__init__.py": "",
    "mypkg/nets.py": '''
        import torch
        from torch import nn
        from torch.utils.data import DataLoader, IterableDataset


        class Net(nn.Module):
            """A classifier over feature vectors: `depth` hidden layers of `width`."""

            def __init__(self, features: int, num_classes: int, depth: int = 2, width: int = 32):
                super().__init__()
                layers, size = [], features
                for _ in range(depth):
                    layers += [nn.Linear(size, width), nn.ReLU()]
                    size = width
                self.body, self.head = nn.Sequential(*layers), nn.Linear(size, num_classes)

            def forward(self, x):
                return self.head(self.body(x))


        class DictNet(Net):
            """Net whose forward returns a dict, as Hugging Face models and many users' do."""

            def __init__(self, features: int, num_classes: int, key: str = "logits"):
                super().__init__(features, num_classes)
                self.key = key

            def forward(self, x):
                return {self.key: super().forward(x), "hidden": x}


        def _blobs(num_classes, features, n, seed):
            g = torch.Generator().manual_seed(seed)
            y = torch.randint(0, num_classes, (n,), generator=g)
            return 3 * torch.randn(num_classes, features, generator=g)[y] + torch.randn(n, features, generator=g), y


        def samples(num_classes: int, features: int = 6, n: int = 768, seed: int = 0):
            """Map-style datasets (plain lists) of dict samples: {'features': ..., 'label': ...}."""
            x, y = _blobs(num_classes, features, n, seed)
            rows = [{"features": x[i], "label": y[i]} for i in range(n)]
            return rows[: n * 3 // 4], rows[n * 3 // 4 :]


        class Stream(IterableDataset):
            def __init__(self, x, y):
                self.x, self.y = x, y

            def __iter__(self):
                return iter(zip(self.x, self.y))


        def stream(num_classes: int, features: int = 6, n: int = 768, seed: int = 0):
            """Iterable datasets without a length: the run needs trainer.max_steps."""
            x, y = _blobs(num_classes, features, n, seed)
            return Stream(x[:576], y[:576]), Stream(x[576:], y[576:])


        def loaders(num_classes: int, features: int = 6, n: int = 768, seed: int = 0):
            """Ready loaders of (input, target) batches, used as they are."""
            train, val = samples(num_classes, features, n, seed)
            pair = lambda rows: [(r["features"], r["label"]) for r in rows]  # noqa: E731
            return DataLoader(pair(train), batch_size=32, shuffle=True), DataLoader(pair(val), batch_size=64)


        def not_a_pair(num_classes: int):
            return samples(num_classes)[0]


        def hf_windows(block_size: int = 64, vocab_size: int = 256, num_classes=None):
            """data=text's windows as Hugging Face datasets have them: dicts whose labels are the input ids (the
            model's job to shift), some of them padded with -100."""
            from fastgpu.zoo.text import text

            def dicts(windows):
                x, y = windows.tensors
                ids = torch.cat([x, y[:, -1:]], dim=1)  # the window and the byte after it
                labels = ids.clone()
                labels[::7, -3:] = -100
                return [{"input_ids": i, "labels": l} for i, l in zip(ids, labels)]

            return tuple(dicts(part) for part in text(block_size=block_size, vocab_size=vocab_size))
    ''',
    "mypkg/conf/__init__.py": "",
    "mypkg/conf/model/my_net.yaml": """
        _target_: mypkg.nets.Net
        name: my_net
        features: 6
        num_classes: ${data.num_classes}
        depth: 2
        width: 32
    """,
    "mypkg/conf/data/my_blobs.yaml": """
        defaults:
          - /fastgpu_data_loader@_here_
        _target_: mypkg.nets.samples
        name: my_blobs
        num_classes: 3
        batch_size: 32
    """,
}
# the user's model and data picked from their own config files, batches as dicts
USER_CONFIGS = ("hydra.searchpath=[pkg://mypkg.conf]", "model=my_net", "data=my_blobs")
DICT_KEYS = ("task.input_key=features", "task.target_key=label")


@pytest.fixture(scope="module")
def user_package(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    for name, text in USER_PACKAGE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(textwrap.dedent(text).lstrip())
    sys.path.insert(0, str(root))
    yield root
    sys.path.remove(str(root))
    for name in [m for m in sys.modules if m == "mypkg" or m.startswith("mypkg.")]:
        del sys.modules[name]


def _custom(data_target: str, *more) -> tuple:
    return (
        "model=custom",
        "model._target_=mypkg.nets.Net",
        "+model.features=6",
        "+model.num_classes=${data.num_classes}",
        "data=custom",
        f"data._target_={data_target}",
        "data.num_classes=3",
        *more,
    )


def test_a_user_model_and_dict_samples_train_in_process(user_package, tmp_path):
    cfg = compose_cfg(*_custom("mypkg.nets.samples", *DICT_KEYS), "+model.depth=3", "trainer.epochs=4", *QUICK)
    metrics = launch(cfg, tmp_path)
    assert metrics["status"] == "ok" and metrics["task"] == "classification"
    assert metrics["accuracy"] > 0.95  # well-separated blobs: it learnt
    assert metrics["params"] == (6 * 32 + 32) + 2 * (32 * 32 + 32) + (32 * 3 + 3)  # depth=3 reached the class
    assert metrics["throughput_unit"] == "samples" and metrics["flops_per_sample"] > 0


def test_streams_and_ready_loaders_train_and_a_stream_needs_max_steps(user_package, tmp_path):
    stream = compose_cfg(*_custom("mypkg.nets.stream"), "trainer.max_steps=30", *QUICK)
    assert launch(stream, tmp_path / "stream")["steps"] == 30
    ready = launch(compose_cfg(*_custom("mypkg.nets.loaders"), "trainer.epochs=3", *QUICK), tmp_path / "ready")
    assert ready["steps"] == 3 * 18 and ready["accuracy"] > 0.9  # 576 samples in batches of 32, three times
    with pytest.raises(RunFailed, match="a stream without a length .*; set trainer.max_steps"):
        launch(compose_cfg(*_custom("mypkg.nets.stream"), *QUICK), tmp_path / "unbounded")


def test_what_does_not_fit_is_one_line(user_package, tmp_path):
    with pytest.raises(FastGPUError, match=r"model._target_ is not set; name the class"):
        check_before_writing(compose_cfg("model=custom"))
    with pytest.raises(
        FastGPUError, match=r"Nett cannot be imported \(mypkg.nets has no Nett\); did you mean mypkg.nets.Net\?"
    ):
        check_before_writing(compose_cfg(*_custom("mypkg.nets.samples"), "model._target_=mypkg.nets.Nett"))
    with pytest.raises(FastGPUError, match=r"model=small_cnn reads data.channels, which the chosen data does not"):
        check_before_writing(compose_cfg("data=text"))
    # found when the run builds: the run's failure, one line
    with pytest.raises(RunFailed, match=r"returned a list; return \(train, val\)"):
        launch(compose_cfg(*_custom("mypkg.nets.not_a_pair"), *QUICK), tmp_path / "list")
    with pytest.raises(RunFailed, match=r"a batch is a dict with keys \['features', 'label'\] but has no 'input'"):
        launch(compose_cfg(*_custom("mypkg.nets.samples"), "trainer.max_steps=2", *QUICK), tmp_path / "keys")
    assert read_metrics(tmp_path / "keys")["error"].startswith("a batch is a dict")


MISFITS = {  # overrides on top of the user's model and data -> words the one line must hold
    "shape": (
        ["model.features=20", *DICT_KEYS],
        ["does not fit data._target_=mypkg.nets.samples", "[2, 6]", "model.features=20"],
    ),
    "dict-without-logits": (
        ["model._target_=mypkg.nets.DictNet", "+model.key=out", *DICT_KEYS],
        ["dict with keys ['hidden', 'out'] and no 'logits'"],
    ),
    "class-count": (["model.num_classes=5", *DICT_KEYS], ["returns 5 classes but data.num_classes=3"]),
    "wrong-dict-keys": ([], ["a batch is a dict with keys ['features', 'label'] but has no 'input'", "task.input_key"]),
    "task-and-model": (["task=language_model", *DICT_KEYS], ["task=language_model needs logits of shape (batch, time"]),
}


@pytest.mark.parametrize("case", list(MISFITS))
def test_a_model_that_does_not_fit_is_one_line_before_anything_is_written(case, user_package, tmp_path, cli_in_process):
    overrides, words = MISFITS[case]
    run_dir = tmp_path / "run"
    args = [*_custom("mypkg.nets.samples"), *overrides, f"hydra.run.dir={run_dir}", "trainer.progress_bar=false"]
    result = cli_in_process(*args, cwd=tmp_path, env={"WANDB_MODE": "offline"})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("fastgpu: error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not run_dir.exists() and not list(tmp_path.rglob("offline-run-*"))  # no run dir, no W&B run


TEXT_FILES = {  # data.path's content -> words the one line must hold
    "binary": (bytes(range(256)) * 64, ["is a binary file (it holds NUL bytes)"]),
    "empty": (b"", ["holds 0 bytes", "need at least 1,300"]),
    "short": (b"x" * 100, ["holds 100 bytes", "need at least 1,300", "lower data.block_size"]),
    "latin-1": ("café au lait ".encode("latin-1") * 200, ["is not utf-8 text", "data.encoding=latin-1"]),
}
ZOO_MISFITS = {  # a zoo model that does not fit (on the digits: 1 x 8 x 8) -> words
    "unknown-name": (["model=torchvision", "model.name=not_a_model"], ["is not a torchvision classification model"]),
    "vit-on-one-channel": (
        ["model=torchvision", "model.name=vit_b_16"],
        ["model=timm model.name=vit_tiny_patch16_224 +model.patch_size=4"],
    ),
    "gpt-heads": (
        ["task=language_model", "model=gpt", "data=text", "model.n_head=3"],
        ["model.n_embd=128 is not divisible by model.n_head=3"],
    ),
    "image-size": (
        ["model=timm", "model.name=vit_tiny_patch16_224", "+model.img_size=32", "+model.patch_size=4"],
        ["does not fit data=digits", "[2, 1, 8, 8]", "model.img_size=32"],
    ),
}


def _refused_before_writing(result, tmp_path, words):
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith("fastgpu: error: "), result.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert not (tmp_path / "run").exists() and not list(tmp_path.rglob("offline-run-*"))


@pytest.mark.parametrize("case", list(TEXT_FILES))
def test_a_text_file_that_cannot_train_is_one_line_before_anything_is_written(case, tmp_path, cli_in_process):
    content, words = TEXT_FILES[case]
    (tmp_path / "my.txt").write_bytes(content)
    args = ["task=language_model", "model=gpt", "data=text", f"data.path={tmp_path / 'my.txt'}"]
    result = cli_in_process(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env={"WANDB_MODE": "offline"})
    _refused_before_writing(result, tmp_path, words)
    if case == "latin-1":  # what the line says to do
        check_before_writing(compose_cfg(*args, "data.encoding=latin-1"))


@pytest.mark.parametrize("case", list(ZOO_MISFITS))
def test_a_zoo_model_that_does_not_fit_is_one_line_with_advice_that_works(case, tmp_path, cli_in_process):
    overrides, words = ZOO_MISFITS[case]
    result = cli_in_process(
        *overrides, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path, env={"WANDB_MODE": "offline"}
    )
    _refused_before_writing(result, tmp_path, words)
    if case == "vit-on-one-channel":  # the advice, run as written on the same data
        advice = re.search(r"model=timm model\.name=\S+ \+model\.patch_size=\d+", result.stderr).group(0).split()
        metrics = launch(compose_cfg(*advice, "trainer.max_steps=3", *QUICK), tmp_path / "advice")
        assert metrics["status"] == "ok" and metrics["params"] > 5_000_000 / 2  # a real ViT-Tiny


def test_hugging_face_style_labels_are_shifted_and_reach_the_pre_shifted_perplexity(user_package, tmp_path):
    gpt = ("task=language_model", "model=gpt", "model.n_layer=2", "model.n_embd=64", "model.n_head=4")
    steps = ("trainer.max_steps=120", "trainer.eval_every_n_epochs=1000", *QUICK)
    shifted = launch(compose_cfg(*gpt, "data=text", "data.block_size=64", *steps), tmp_path / "windows")
    hf_data = ("data=custom", "data._target_=mypkg.nets.hf_windows", "+data.block_size=64", "+data.vocab_size=256")
    cfg = compose_cfg(*gpt, *hf_data, "data.batch_size=32", *steps)
    check_before_writing(cfg)  # the dict batches pass the one-batch check as a language model's
    hf = launch(cfg, tmp_path / "hf")
    assert hf["status"] == "ok" and hf["perplexity"] < 40  # it learnt (a byte model that knew nothing: 256)
    assert hf["perplexity"] == pytest.approx(shifted["perplexity"], rel=0.05)
    unshifted = compose_cfg(
        *gpt, *hf_data, "task.shift_labels=false", "model.block_size=65", *steps
    )  # 65 ids, unshifted
    assert launch(unshifted, tmp_path / "unshifted")["perplexity"] < 2  # it learnt to copy its input: the negative


def test_the_check_is_what_caught_it_and_a_dict_with_logits_trains(user_package, tmp_path, cli_in_process):
    misfit = [*_custom("mypkg.nets.samples"), "model.features=20", *DICT_KEYS, *QUICK]
    with pytest.raises(RuntimeError, match="mat1 and mat2 shapes cannot be multiplied"):  # without the check: mid-run
        cli_in_process(*misfit, "trainer.preflight_batch=false", f"hydra.run.dir={tmp_path / 'late'}")
    assert read_metrics(tmp_path / "late")["status"] == "failed"  # after its run dir was written
    cfg = compose_cfg(*_custom("mypkg.nets.samples", *DICT_KEYS), "model._target_=mypkg.nets.DictNet", *QUICK)
    check_before_writing(cfg)
    metrics = launch(cfg, tmp_path / "dict")
    assert metrics["status"] == "ok" and metrics["accuracy"] > 0.9


@pytest.mark.slow
def test_a_user_model_from_its_own_config_trains_under_ddp_and_submitit(user_package, tmp_path):
    env = {"PYTHONPATH": f"{user_package}:{REPO}", "WANDB_MODE": "disabled"}
    ddp = run_cli(
        *USER_CONFIGS, *DICT_KEYS, "parallel=ddp", "parallel.nproc_per_node=2", "trainer.epochs=6", *QUICK[:2],
        *NO_DEPLOY, f"hydra.run.dir={tmp_path / 'ddp'}", env=env,
    )  # fmt: skip
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    metrics = read_metrics(tmp_path / "ddp")
    assert metrics["world_size"] == 2 and metrics["parallel"] == "ddp" and metrics["accuracy"] > 0.9
    assert metrics["rank_param_max_diff"] == 0.0
    sweep = run_cli(
        "-m", "hydra/launcher=local", *USER_CONFIGS, *DICT_KEYS, "model.depth=1", "trainer.epochs=2", *QUICK[:2],
        *NO_DEPLOY, f"hydra.sweep.dir={tmp_path / 'sweep'}", env=env,
    )  # fmt: skip
    assert sweep.returncode == 0, sweep.stderr[-2000:]
    point = read_metrics(tmp_path / "sweep" / "0")
    assert point["status"] == "ok" and point["params"] == (6 * 32 + 32) + (32 * 3 + 3)  # the user's net, depth 1
    assert list((tmp_path / "sweep" / ".submitit").iterdir())  # they ran as submitit jobs
    assert (tmp_path / "sweep" / "report.md").exists()


def test_the_readme_example_runs_as_written(tmp_path):
    readme = (REPO / "README.md").read_text()
    code = re.search(r"<!-- byo:mynet.py -->\n```python\n(.*?)```", readme, re.S).group(1)
    command = re.search(r"<!-- byo:command -->\n```bash\n(.*?)```", readme, re.S).group(1)
    assert len([line for line in code.splitlines() if line.strip()]) <= 12
    (tmp_path / "mynet.py").write_text(code)
    words = shlex.split(command.replace("\\\n", " "))
    assert words[0] == "PYTHONPATH=." and words[1:4] == ["python", "-m", "fastgpu"]
    result = subprocess.run(
        [sys.executable, "-m", "fastgpu", *words[4:], *QUICK[:2], "trainer.epochs=3", "hydra.run.dir=out"],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": f".:{REPO}", "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["accuracy"] > 0.9 and metrics["params"] == 16 * 64 + 64 + 64 * 4 + 4


# --- the language-model task ----------------------------------------------------------------------------------
GPT_SMALL = ("task=language_model", "model=gpt", "data=text", "model.n_layer=2", "model.n_embd=64", "model.n_head=4")


def test_the_gpt_learns_real_text_and_its_throughput_counts_tokens(tmp_path):
    cfg = compose_cfg(
        *GPT_SMALL, "data.block_size=64", "optimizer=adamw", "trainer.max_steps=150", "trainer.log_every_n_steps=25",
        "logger.wandb.mode=offline", *QUICK[:2], *NO_DEPLOY,
    )  # fmt: skip
    metrics = launch(cfg, tmp_path)
    assert metrics["task"] == "language_model" and metrics["throughput_unit"] == "tokens"
    # a byte-level model that learnt nothing scores 256; bytes in proportion to their frequency about 25
    assert metrics["perplexity"] < 14, metrics["perplexity"]
    assert metrics["perplexity"] == pytest.approx(torch.tensor(metrics["val_loss"]).exp().item(), rel=1e-6)
    assert metrics["tokens_per_s"] == metrics["throughput"]
    assert metrics["timed_samples"] == metrics["timed_steps"] * 32 * 64  # every step: batch 32 x 64 tokens
    history = [json.loads(line) for line in (tmp_path / "history.jsonl").read_text().splitlines()]
    assert any("train/tokens_per_s" in h for h in history) and not any("train/samples_per_s" in h for h in history)
    assert metrics["flops_per_token"] == pytest.approx(GPT(256, 64, 2, 4, 64).estimated_flops_per_token(64), rel=0.1)


def test_counted_flops_per_token_match_nanogpts_estimate_within_10_percent():
    for layers, width, heads, time in [(2, 64, 4, 64), (6, 384, 6, 256), (12, 768, 12, 1024)]:
        with torch.device("meta"):  # counted on the meta device anyway: no 124M-parameter init
            model = GPT(50304 if width == 768 else 256, time, layers, heads, width)
        counted = training_flops_per_sample(model, torch.zeros(2, time, dtype=torch.long)) / time
        assert counted == pytest.approx(model.estimated_flops_per_token(time), rel=0.10), (layers, width)


def test_language_model_metrics_known_answer_and_classification_memory_is_linear_in_classes():
    metrics = LanguageModelMetrics(torch.device("cpu"))
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]]))
    metrics.update(logits, torch.tensor([[0, 2, -100]]))  # the last target is padding: left out
    got = metrics.compute()
    loss = -(torch.log(torch.tensor(0.5)) + torch.log(torch.tensor(0.1))).item() / 2
    assert got["loss"] == pytest.approx(loss) and got["perplexity"] == pytest.approx(torch.tensor(loss).exp().item())
    assert got["accuracy"] == 0.5
    big = ClassificationMetrics(50_000, torch.device("cpu"))
    assert big.counts.numel() == 3 * 50_000  # a confusion matrix would be 2.5e9 entries (20 GB)
    logits = torch.zeros(3, 50_000)
    logits[[0, 1, 2], [7, 7, 9]] = 1.0  # predictions 7, 7, 9 for targets 7, 8, 9
    big.update(logits, torch.tensor([7, 8, 9]))
    assert big.compute()["accuracy"] == pytest.approx(2 / 3)


def test_transformer_levers_build_and_an_unavailable_attention_kernel_is_one_line(tmp_path):
    from fastgpu.zoo.models import Checkpointed, build_model

    model = build_model(compose_cfg(*GPT_SMALL, "model.activation_checkpointing=true").model)
    assert all(isinstance(block, Checkpointed) for block in model.blocks)
    cfg = compose_cfg(*GPT_SMALL, "model.attention=cudnn", "trainer.max_steps=2", *QUICK)
    if torch.cuda.is_available():
        pytest.skip("cuDNN attention may exist on this GPU")
    with pytest.raises(RunFailed, match=r"model.attention=cudnn has no kernel for cpu .*use model.attention=auto"):
        launch(cfg, tmp_path)
    with pytest.raises(RunFailed, match="channels_last=true is a layout of 4-D image batches"):
        launch(compose_cfg(*GPT_SMALL, "channels_last=true", *QUICK), tmp_path / "cl")


def _zoo_or_skip(module: str, extra: str):
    try:
        __import__(module)
    except ImportError:
        if IN_CI:
            pytest.fail(f"{module} is missing in CI; install '.[test]' (it includes the {extra} extra)")
        pytest.skip(f"{module} is not installed (pip install 'fastgpu[{extra}]')")


@pytest.mark.parametrize(
    "zoo",
    [
        ("torchvision", "torchvision", ("model=torchvision", "model.name=mobilenet_v3_small")),
        ("timm", "timm", ("model=timm", "model.name=resnet10t")),
        ("transformers", "hf", ("task=language_model", "data=text", "model=hf_causal_lm", "data.block_size=32")),
    ],
    ids=["torchvision", "timm", "hf"],
)
def test_zoo_models_by_name_train_a_few_steps(zoo, tmp_path):
    module, extra, overrides = zoo
    _zoo_or_skip(module, extra)
    images = ("data=synthetic", "data.channels=3", "data.image_size=32", "data.train_samples=64")
    data = () if extra == "hf" else (*images, "data.val_samples=32", "data.batch_size=16")
    cfg = compose_cfg(*overrides, *data, "trainer.max_steps=4", "trainer.warmup_steps=1", *QUICK)
    metrics = launch(cfg, tmp_path)
    assert metrics["status"] == "ok" and metrics["steps"] == 4 and metrics["params"] > 0
    assert metrics["throughput_unit"] == ("tokens" if extra == "hf" else "samples")
    assert metrics["flops_per_token" if extra == "hf" else "flops_per_sample"] > 0  # counted: MFU on a GPU


def test_a_language_model_sweep_never_says_samples_or_plain_accuracy(tmp_path, monkeypatch, capsys):
    from fastgpu.results import plots
    from fastgpu.results.report import main as report_main
    from fastgpu.results.summary import format_summary

    sweep_dir = tmp_path / "lm"
    tiny_gpt = ("task=language_model", "model=gpt", "data=text", "data.block_size=32", "model.n_layer=1")
    result = run_cli(
        "-m",
        "hydra/sweeper=halving",
        "hydra.sweeper.min_budget_ratio=0",  # a short budget: the mechanics, not the cost
        "hydra.sweeper.probe_steps=4",
        *tiny_gpt,
        "model.n_embd=32",
        "model.n_head=2",
        "optimizer.lr=0.01,0.02,0.03",
        "trainer.max_steps=16",
        "trainer.warmup_steps=2",
        "trainer.log_every_n_steps=4",
        *QUICK,
        f"hydra.sweep.dir={sweep_dir}",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    labels = []

    def spy(fig, path):  # every axis label and title of the plots the report draws
        labels.extend(text for ax in fig.axes for text in (ax.get_xlabel(), ax.get_ylabel(), ax.get_title()))
        return real_save(fig, path)

    real_save = plots._save
    monkeypatch.setattr(plots, "_save", spy)
    assert report_main([str(sweep_dir)]) == 0
    report, printed = (sweep_dir / "report.md").read_text(), capsys.readouterr().out
    assert "## Successive halving" in report and "tokens/s" in report and "tokens/s" in "\n".join(labels)
    summary = format_summary(read_metrics(sweep_dir / "0"))
    assert "time to target perplexity (s)" in summary and "not timed: set trainer.target_perplexity" in summary
    for name, text in {"report": report, "table": printed, "plots": "\n".join(labels), "summary": summary}.items():
        assert "samples" not in text, (name, text)
        assert not re.search(r"(?<!next-token )\baccuracy\b", text), (name, text)
