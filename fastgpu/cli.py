"""`fastgpu ...` (the console script) and `python -m fastgpu ...`: the short verbs `report DIR` and `status DIR`
(before Hydra and torch are imported), else a Hydra run or sweep (fastgpu/__main__.py)."""

import sys

VERBS = {"report": "fastgpu.results.report", "status": "fastgpu.sweep.status"}


def run_verb(verb: str, argv: list) -> int:
    import importlib

    return importlib.import_module(VERBS[verb]).main(argv, prog=f"python -m fastgpu {verb}")


def run_verb_if_asked() -> None:
    """`report DIR` or `status DIR` as the command's first word: run that verb and exit."""
    if sys.argv[1:2] and sys.argv[1] in VERBS:
        sys.exit(run_verb(sys.argv[1], sys.argv[2:]))


def main() -> None:
    run_verb_if_asked()
    from fastgpu.__main__ import cli, exit_without_teardown

    exit_without_teardown(cli)
