"""Finding Debian's prometheus/promtool (installed by .ci/run); missing in CI is a failure."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DASHBOARD = DEPLOY / "grafana" / "warren.json"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found (apt-get install prometheus; make test installs it as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the dashboard, with Grafana's variables filled in."""
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for panel in doc["panels"] for t in panel["targets"]]
    return [re.sub(r"\$__rate_interval", "1m", expr).replace("$worker", ".*") for expr in exprs]
