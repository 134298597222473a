"""The README's example runs as printed (docs stay true to the code)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.broker import Broker

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_example_runs(broker: Broker) -> None:
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert code is not None
    try:
        done = subprocess.run([sys.executable, "-c", code.group(1)], capture_output=True,
                              text=True, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "submitted=2, confirmed=2" in done.stdout
    finally:
        broker.delete_queue("emails")


def test_readme_first_screen_gives_the_two_commands() -> None:
    first_screen = README.read_text()[:1500]
    assert "make demo" in first_screen
    assert "make test" in first_screen
