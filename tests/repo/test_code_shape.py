"""Parts small enough to hold in one's head: no class in the library over 300 lines, no
function over 60 (docs/design.md; CONTRIBUTING.md says what to do when one grows)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[2] / "runtime" / "warren"
MAX_CLASS_LINES = 300
MAX_FUNCTION_LINES = 60

pytestmark = pytest.mark.timeout(30)


def _too_long(limit_class: int, limit_function: int) -> list[str]:
    found = []
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ClassDef):
                kind, limit = "class", limit_class
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                kind, limit = "function", limit_function
            else:
                continue
            assert node.end_lineno is not None
            lines = node.end_lineno - node.lineno + 1
            if lines > limit:
                where = path.relative_to(LIBRARY.parent)
                found.append(f"{where}:{node.lineno} {kind} {node.name}: {lines} lines")
    return found


def test_no_class_over_300_lines_and_no_function_over_60() -> None:
    assert _too_long(MAX_CLASS_LINES, MAX_FUNCTION_LINES) == []


def test_the_check_finds_what_it_should() -> None:
    # the same walk with tighter limits must flag the library's longest parts
    assert any(" class " in line for line in _too_long(50, 10_000))
    assert any(" function " in line for line in _too_long(10_000, 20))
