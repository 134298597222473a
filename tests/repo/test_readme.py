"""The README's first screen gives the two commands that set everything up.

(Every example in the README and docs/ is run by tests/repo/test_docs.py.)
"""

from __future__ import annotations

from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_first_screen_gives_the_two_commands() -> None:
    first_screen = README.read_text()[:1500]
    assert "make demo" in first_screen
    assert "make test" in first_screen
