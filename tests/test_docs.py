"""The README and docs/ stay true: short enough, every relative link and #anchor resolves, every `python -m fastgpu`
command they show composes (a renamed key or group fails here, not for a reader), and no docstring carries a dated
measurement (those live in docs/ and CHANGELOG.md)."""

import ast
import re
import shlex

import pytest
from conftest import CONF, REPO
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
VERBS = ("report", "status")


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(page) -> set:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a shell comment in a code block is no heading
    return {_slug(line.lstrip("#")) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_the_readme_is_short_and_the_index_lists_every_page():
    assert len((REPO / "README.md").read_text().splitlines()) <= 200
    index = (REPO / "docs" / "index.md").read_text()
    listed = set(re.findall(r"\]\(([^)#]+)\)", index))
    pages = {str(p.relative_to(REPO / "docs")) for p in (REPO / "docs").rglob("*.md") if p.name != "index.md"}
    assert pages <= listed, pages - listed


def test_every_relative_link_and_anchor_resolves():
    broken = []
    for page in PAGES:
        for target in LINK.findall(page.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def _commands() -> list:
    """(page, words after `python -m fastgpu`) of every command in the pages: code blocks and inline code."""
    found = []
    for page in PAGES:
        text = page.read_text()
        blocks = re.findall(r"```(?:bash|sh)?\n(.*?)```", text, re.S)
        lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
        lines += re.findall(r"(?<!`)`(python -m fastgpu[^`]*)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in lines:
            line = line.split(" #", 1)[0].strip()
            if "python -m fastgpu " not in line + " " or "python -m fastgpu." in line:
                continue
            try:
                words = shlex.split(line[line.index("python -m fastgpu") :])[3:]
            except ValueError:  # an unclosed quote: a fragment of prose, not a command
                continue
            found.append((page.relative_to(REPO), words))
    return found


def _points(words: list) -> list:
    """Override lists covering every value of every swept key (Hydra's own parser): all first values, then each
    other value of each key in turn."""
    overrides, skip = [], False
    for word in words:  # Hydra's flags (-m, --cfg job, --info ...) and their values are not overrides
        if skip or word.startswith("-"):
            skip = word in ("--cfg", "-c", "--package", "-p", "--info", "-i")
            continue
        overrides.append(word)
    parsed = OverridesParser.create().parse_overrides(overrides)
    values = [
        [f"{o.input_line.split('=')[0]}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
        else [o.input_line]
        for o in parsed
    ]  # fmt: skip
    points = [[v[0] for v in values]]
    for i, options in enumerate(values):
        points += [[*points[0][:i], option, *points[0][i + 1 :]] for option in options[1:]]
    return points


def test_every_fastgpu_command_in_the_readme_and_docs_composes():
    commands = _commands()
    assert len(commands) >= 25  # the pages show this many: a parser that found none would pass vacuously
    failed = []
    with initialize_config_dir(CONF, version_base="1.3"):
        for page, words in commands:
            if words and words[0] in VERBS:
                continue  # the results commands: tested in tests/test_sweep.py
            if any(marker in " ".join(words) for marker in ("...", "<", "mypkg", "RUN_DIR", "DIR ")):
                continue  # a sketch with placeholders, not a command to run as written
            for point in _points(words):
                try:
                    compose("config", overrides=point, return_hydra_config=True)
                except Exception as exc:  # noqa: BLE001 - every failure is listed with its page
                    failed.append(f"{page}: python -m fastgpu {' '.join(words)}: {str(exc).splitlines()[0]}")
    assert not failed, "\n".join(failed)


@pytest.mark.parametrize("package", ["fastgpu", "hydra_plugins"])
def test_no_docstring_holds_a_date(package):
    dated = []
    for path in sorted((REPO / package).rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                doc = ast.get_docstring(node) or ""
                if re.search(r"\b20\d\d-[01]\d\b", doc):  # 2026-11, 2026-11-30
                    dated.append(f"{path.relative_to(REPO)}:{getattr(node, 'lineno', 1)}")
    assert not dated, dated
