"""Every example in README.md and docs/*.md runs, as a reader would run it.

Sybil finds the fenced blocks. Each is a complete program or test, run in a fresh process
against the real broker:

- ``python`` blocks that define ``test_*`` functions are saved as a test file and run with
  pytest (Warren's plugin and anyio's are installed, as for a user); other ``python`` blocks
  run as scripts. Either way the example must leave no queue behind on the broker.
- ``sh`` blocks run with bash (``set -euo pipefail``), the venv's ``warren`` on the PATH.
- ``json`` blocks must parse.

A block that cannot run alone, or not here, is preceded in the Markdown by
``<!-- skip: next "why" -->``, so a reader sees which snippets are complete programs. A
program meant to leave a queue behind for the reader (messages to look at) says so with
``<!-- leaves-queues: NAME ... -->``; the queue must exist afterwards, and is then deleted.
An example that uses the ``rabbit_cluster`` fixture is marked ``cluster``: ``make cluster-test``
runs it, not ``make test``; one that uses ``rabbit_node`` is marked ``scenario`` (``make
scenarios``).
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sybil import Region, Sybil
from sybil.parsers.markdown import CodeBlockParser, SkipParser
from sybil.parsers.markdown.lexers import DirectiveInHTMLCommentLexer

from tests.support.broker import Broker, rabbitmqctl

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sybil import Document, Example

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent


def _queues() -> set[str]:
    """The broker's queues, less the suite's own (``warren.test.*``, which a test running
    beside this one may be creating right now)."""
    names = rabbitmqctl("list_queues", "--quiet", "--no-table-headers", "name").split()
    return {name for name in names if not name.startswith("warren.test.")}


def _run(cmd: list[str], cwd: Path, timeout: float) -> None:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)  # fmt: skip
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"


def _is_test_module(source: str) -> bool:
    tree = ast.parse(source)
    return any(
        isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
        for node in tree.body
    )


def run_python(example: Example) -> None:
    source = str(example.parsed)
    meant: set[str] = example.document.namespace.pop("leaves-queues", set())
    before = _queues()
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        if _is_test_module(source):
            (cwd / "test_example.py").write_text(source)
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "-W", "error", "test_example.py"]  # fmt: skip
        else:
            cmd = [sys.executable, "-c", source]
        _run(cmd, cwd, timeout=180)
    left = _queues() - before
    assert meant <= left, f"declared leaves-queues {sorted(meant - left)} but they are gone"
    with Broker() as broker:
        for name in meant:
            broker.delete_queue(name)
    assert not left - meant, f"the example left queues behind: {sorted(left - meant)}"


def leaves_queues(document: Document) -> Iterable[Region]:
    """``<!-- leaves-queues: a b -->``: the next example leaves these queues on purpose."""
    lexer = DirectiveInHTMLCommentLexer(directive="leaves-queues")

    def record(example: Example) -> None:
        names = set(str(example.parsed).split())
        example.document.namespace.setdefault("leaves-queues", set()).update(names)

    for lexed in lexer(document):
        yield Region(lexed.start, lexed.end, lexed.lexemes["arguments"], record)


def run_sh(example: Example) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        _run(["bash", "-euo", "pipefail", "-c", str(example.parsed)], Path(tmp), timeout=120)


def check_json(example: Example) -> None:
    json.loads(str(example.parsed))


SYBIL = Sybil(
    parsers=[
        CodeBlockParser("python", run_python),
        CodeBlockParser("sh", run_sh),
        CodeBlockParser("json", check_json),
        SkipParser(),
        leaves_queues,
    ],
)


def _id(example: Example) -> str:
    return f"{Path(example.path).relative_to(ROOT)}:{example.line}"


def _param(example: Example) -> object:
    """An example that starts a three-node cluster runs in ``make cluster-test`` (marked
    ``cluster``, as the suite's own cluster tests are): ~40 s that ``make test`` need not pay;
    one that restarts a throwaway node runs in ``make scenarios`` (~25 s)."""
    source = str(example.parsed)
    marks = [pytest.mark.cluster] if "rabbit_cluster" in source else []
    marks += [pytest.mark.scenario] if "rabbit_node" in source else []
    return pytest.param(example, id=_id(example), marks=marks)


EXAMPLES = [_param(example) for doc in DOCS for example in SYBIL.parse(doc)]


@pytest.mark.broker
@pytest.mark.timeout(240)
@pytest.mark.parametrize("example", EXAMPLES)
def test_example(example: Example, broker_url: str) -> None:
    example.evaluate()


def test_every_fence_is_run_or_marked() -> None:
    """A fence in a language nobody runs must be plain output (no language) or a known one."""
    runnable = {"python", "sh", "json"}
    for doc in DOCS:
        for line in doc.read_text().splitlines():
            if line.startswith("```") and line.strip("`").strip():
                language = line.strip("`").strip()
                assert language in runnable, f"{doc.name}: a ```{language} fence is not checked"
