"""Editable installs of the ``warren`` package from the ``runtime/`` and ``services/`` folders.

The repository keeps the library in ``runtime/`` and the services in ``services/``; the wheel
maps them to ``warren`` and ``warren.services`` (``[tool.hatch.build.targets.wheel.sources]``).
An editable install cannot rename folders, and an import hook would hide the package from
mypy, coverage and import-linter, so this hook builds ``build/editable/warren``: a real
folder of symlinks (each entry of ``runtime/``, plus ``services`` pointing at ``services/``),
which the editable install's ``.pth`` file puts on ``sys.path``. Edits show at once; a new
top-level module in ``runtime/`` needs the tree refreshed, which every ``make`` target does
(``python hatch_build.py``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

TREE = Path("build") / "editable"


def sync_tree(root: Path) -> Path:
    """(Re)build ``root/build/editable/warren`` as symlinks into ``runtime/`` and ``services/``."""
    package = root / TREE / "warren"
    package.mkdir(parents=True, exist_ok=True)
    # relative links: the checkout can move
    wanted: dict[str, Path] = {
        entry.name: Path("..", "..", "..", "runtime", entry.name)
        for entry in (root / "runtime").iterdir()
        if entry.name not in ("__pycache__", "services")
    }
    wanted["services"] = Path("..", "..", "..", "services")
    for entry in package.iterdir():
        target = wanted.get(entry.name)
        if not entry.is_symlink() or target is None or Path(os.readlink(entry)) != target:
            if entry.is_dir() and not entry.is_symlink():
                raise RuntimeError(f"{entry} is a real folder; remove {root / TREE} and retry")
            entry.unlink()
    for name, target in wanted.items():
        link = package / name
        if not link.is_symlink():
            link.symlink_to(target)
    return package


try:
    from hatchling.builders.hooks.plugin.interface import BuildHookInterface
except ImportError:  # run as a script (make), not by the build backend
    pass
else:

    class EditableTreeHook(BuildHookInterface):  # type: ignore[misc]  # hatchling is untyped
        """Builds the symlink tree before an editable wheel is made."""

        PLUGIN_NAME = "custom"

        def initialize(self, version: str, build_data: dict[str, Any]) -> None:
            if version == "editable":
                sync_tree(Path(self.root))


if __name__ == "__main__":
    sync_tree(Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve())
