"""Finding Debian's prometheus/promtool (installed by .ci/run); missing in CI is a failure."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.support.helpers import free_port

if TYPE_CHECKING:
    from collections.abc import Iterator

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
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


@contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """A real Prometheus on a free loopback port scraping ``target`` every second, with
    Warren's alert rules loaded; stopped (and its data removed with tmp_path) after."""
    port = free_port()
    (tmp_path / "alerts.yml").write_text((DEPLOY / "prometheus" / "alerts.yml").read_text())
    (tmp_path / "prometheus.yml").write_text(json.dumps({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "warren", "static_configs": [{"targets": [target]}]}],
    }))  # fmt: skip
    binary = tool("prometheus")  # skips or fails before anything is opened
    log = (tmp_path / "prometheus.log").open("wb")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
