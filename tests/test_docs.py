"""Every ```python block of the README and the documentation pages runs, in order, as written.

The blocks of one page share a namespace (a page reads top to bottom) and run in a fresh temporary
folder, offline. A block that cannot run here is marked on the line above its fence with
``<!-- docs-test: skip REASON -->`` and reported as skipped with that reason. Other languages
(``bash``, ``text``) are not run; but every ``mst-clipiqa`` command line in a ``bash`` block must
parse with the command line's own parser, so a renamed or mistyped flag in the docs fails here.
"""
from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^(?P<indent> *)```(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
SKIP = re.compile(r"<!--[ \t]*docs-test:[ \t]*skip[ \t]*(?P<reason>[^\n]*?)[ \t]*-->\s*\Z")


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    code: str
    skip: str | None

    @property
    def id(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_blocks(page: Path) -> list[Block]:
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match["info"].strip().split(" ")[0] not in ("python", "py"):
            continue
        before = SKIP.search(text[max(0, match.start() - 500): match.start()])
        indent = len(match["indent"])
        code = "\n".join(line[indent:] for line in match["body"].splitlines())
        line = text.count("\n", 0, match.start()) + 1
        blocks.append(Block(page, line, code, before["reason"] if before else None))
    return blocks


BLOCKS = [block for page in PAGES for block in python_blocks(page)]


def command_lines(page: Path) -> list[tuple[str, list[str]]]:
    """``(where, argv)`` of every ``mst-clipiqa`` line of the page's shell blocks; lines with placeholders
    (``...``, ``[--flag]``) are left out."""
    text, found = page.read_text(encoding="utf-8"), []
    for match in FENCE.finditer(text):
        if match["info"].strip() not in ("bash", "sh", "shell", "console"):
            continue
        line_number = text.count("\n", 0, match.start()) + 2
        for line in re.split(r"(?<!\\)\n", match["body"]):  # a line ending in a backslash continues
            argv = shlex.split(line.replace("\\\n", " "), comments=True)
            if argv[:1] == ["mst-clipiqa"] and not any("..." in a or a.startswith("[") for a in argv):
                found.append((f"{page.relative_to(ROOT)}:{line_number}", argv[1:]))
            line_number += line.count("\n") + 1
    return found


COMMANDS = [item for page in PAGES for item in command_lines(page)]


class PageRun:
    """The namespace and folder one page's blocks share; a block first runs the ones above it."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.namespace, self.done = folder, {"__name__": "__docs__"}, 0
        self.failed: str | None = None

    def run_through(self, blocks: list[Block], index: int) -> None:
        cwd = os.getcwd()
        os.chdir(self.folder)
        try:
            while self.done <= index:
                if self.failed:
                    pytest.fail(f"{self.failed}, a block above this one on the page, failed")
                block = blocks[self.done]
                if block.skip is None:
                    self.failed = block.id
                    exec(compile(block.code, block.id, "exec"), self.namespace)
                self.done, self.failed = self.done + 1, None
        finally:
            os.chdir(cwd)


@pytest.fixture(scope="module")
def page_run(tmp_path_factory):
    runs: dict[Path, PageRun] = {}

    def get(page: Path) -> PageRun:
        if page not in runs:
            runs[page] = PageRun(tmp_path_factory.mktemp(page.stem))
        return runs[page]

    return get


PEERS = ("imscore", "pyiqa", "trl")  # the `peers` extra, which `make test-min` (the floors) leaves out


def missing_peers(blocks: list[Block]) -> list[str]:
    code = "\n".join(b.code for b in blocks)
    return [m for m in PEERS if re.search(rf"^\s*(from|import) {m}\b", code, re.M) and not importlib.util.find_spec(m)]


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_code_block_runs(block: Block, page_run, monkeypatch) -> None:
    if block.skip is not None:
        pytest.skip(f"{block.id}: {block.skip or 'marked docs-test: skip'}")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    page_blocks = [b for b in BLOCKS if b.page == block.page]
    if missing := missing_peers(page_blocks[:page_blocks.index(block) + 1]):
        pytest.skip(f"{block.id}: needs {', '.join(missing)} (pip install -e '.[peers]')")
    page_run(block.page).run_through(page_blocks, page_blocks.index(block))


@pytest.mark.parametrize("argv", [argv for _, argv in COMMANDS], ids=[where for where, _ in COMMANDS])
def test_documented_command_line_parses(argv: list[str], monkeypatch) -> None:
    from mst_clipiqa.cli import CONFIG_COMMANDS, build_parser
    from mst_clipiqa.cli.config_file import with_config

    monkeypatch.chdir(ROOT)  # a recipe the line reads (--config recipes/...) is the repository's
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            parser = build_parser()
            if argv[0] in CONFIG_COMMANDS:
                argv = with_config(argv, argv[0], parser.command_parsers[argv[0]])
            args = parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"mst-clipiqa {shlex.join(argv)}: {stderr.getvalue().strip()}")
    assert args.command == argv[0]


def test_collector_finds_the_blocks_and_their_marks(tmp_path) -> None:
    page = tmp_path / "page.md"
    page.write_text("text\n\n```python\nx = 1\n```\n\n<!-- docs-test: skip needs a GPU -->\n```python\ny = 2\n```\n"
                    "\n```bash\nrm -rf /\n```\n\n- item\n\n  ```python\n  z = 3\n  ```\n")
    blocks = python_blocks(page)
    assert [(b.line, b.code, b.skip) for b in blocks] == [(3, "x = 1", None), (8, "y = 2", "needs a GPU"),
                                                         (18, "z = 3", None)]


def test_the_readme_has_a_runnable_quick_start() -> None:
    readme = [b for b in BLOCKS if b.page.name == "README.md"]
    assert readme and readme[0].skip is None, "the README's first Python block must run offline as written"
    assert "tiny" in readme[0].code
