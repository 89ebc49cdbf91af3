"""ruff (configured in pyproject.toml: pycodestyle, pyflakes, isort; line length 120) over the whole tree, so
an undefined name or an unused import fails CI instead of a user's run."""

import shutil
import subprocess

import pytest
from conftest import REPO


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff_finds_nothing(command):
    ruff = shutil.which("ruff")
    assert ruff, "ruff is not installed: pip install -e '.[test]'"
    result = subprocess.run([ruff, *command, str(REPO)], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
