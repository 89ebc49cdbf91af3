"""The layout holds: the import contracts (pyproject.toml's [tool.importlinter]) pass and catch a planted violation,
and a wheel installed without -e finds its configs and data from outside the checkout."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _tracked_copy(dest: Path) -> Path:
    """The checkout's files as git sees them (tracked and new, not ignored): what `pip install git+...` builds."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for name in files:
        if (REPO / name).is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, dest / name)
    return dest


def _lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=root,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )


def test_import_contracts_hold_and_fail_on_planted_violations(tmp_path):
    kept = _lint_imports(REPO)
    assert kept.returncode == 0, kept.stdout[-3000:]
    assert "3 kept, 0 broken" in kept.stdout

    root = _tracked_copy(tmp_path)
    figures = root / "fastgpu" / "results" / "figures.py"
    figures.write_text(figures.read_text() + "\n\ndef _planted():\n    import torch  # noqa: F401\n")
    clock = root / "fastgpu" / "measure" / "clock.py"
    clock.write_text(clock.read_text() + "\n\ndef _planted():\n    from fastgpu.train import step  # noqa: F401\n")
    broken = _lint_imports(root)
    assert broken.returncode != 0
    assert "fastgpu.results.figures -> torch" in broken.stdout  # sweep and results stay torch-free
    assert "fastgpu.measure.clock -> fastgpu.train.step" in broken.stdout  # measuring never imports training
    assert "0 kept, 3 broken" in broken.stdout  # the same upward import breaks the layers too


@pytest.mark.slow
def test_a_wheel_installed_without_editable_runs_from_outside_the_checkout(tmp_path):
    """pip's non-editable install: configs (pkg://fastgpu.conf), the digits array and the Hydra plugins are package
    data, so a run and a sweep work from any directory."""
    source = _tracked_copy(tmp_path / "source")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), "."],
        cwd=source,
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("fastgpu-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(
        subprocess.check_output(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
        ).strip()
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    # the dependencies from this environment, after the wheel on sys.path; the checkout's editable hook is not read
    # (a .pth file's paths are added without running the .pth files in them)
    deps = subprocess.check_output(
        [sys.executable, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], text=True
    )
    (site / "deps.pth").write_text(deps)
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "WANDB_MODE": "disabled"}

    def installed(*args):
        return subprocess.run([python, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)

    where = installed("-c", "import fastgpu; print(fastgpu.__file__)").stdout
    assert where.startswith(str(site)), where

    run = installed(
        "-m", "fastgpu", "trainer.max_steps=5", "inference.benchmark=false", "export=[]", "hydra.run.dir=run"
    )
    assert run.returncode == 0, run.stderr[-3000:]
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert metrics["status"] == "ok" and metrics["steps"] == 5 and metrics["data"] == "digits"

    sweep = installed(
        "-m",
        "fastgpu",
        "-m",
        "trainer.max_steps=2",
        "trainer.seed=0,1",
        "inference.benchmark=false",
        "export=[]",
        "hydra.sweep.dir=sweep",
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    assert (work / "sweep" / "report.md").exists()
    assert [json.loads((work / "sweep" / p / "metrics.json").read_text())["status"] for p in "01"] == ["ok", "ok"]
