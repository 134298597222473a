"""deploy/: the Prometheus config and alert rules check out with promtool, the alert unit
tests pass, and the Grafana dashboard is well-formed with PromQL that parses."""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

import pytest

from tests.support.prometheus_tools import DASHBOARD, DEPLOY, dashboard_exprs, tool

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.timeout(60)
PROMETHEUS = DEPLOY / "prometheus"


def promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    done = subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=50, check=False)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_prometheus_config_and_rules_are_valid() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    assert "SUCCESS: 9 rules found" in promtool("check", "rules", "alerts.yml")


def test_alert_unit_tests_pass() -> None:
    assert "SUCCESS" in promtool("test", "rules", "alerts_test.yml")


def test_every_alert_has_a_runbook_section_and_a_unit_test() -> None:
    alerts_text = (PROMETHEUS / "alerts.yml").read_text()
    names = [line.split(":", 1)[1].strip() for line in alerts_text.splitlines()
             if line.strip().startswith("- alert:")]  # fmt: skip
    tested = (PROMETHEUS / "alerts_test.yml").read_text()
    operations = (DEPLOY.parent / "docs" / "operations.md").read_text()
    for name in names:
        assert f"alertname: {name}" in tested, f"{name} has no promtool test"
        assert f"#{name.lower()}" in alerts_text, f"{name} has no runbook link"
        assert f"### {name}" in operations, f"{name} has no runbook in docs/operations.md"


def test_dashboard_is_well_formed() -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] and doc["schemaVersion"] >= 30
    variables = {v["name"]: v for v in doc["templating"]["list"]}
    assert variables["worker"]["multi"] and variables["worker"]["includeAll"]
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    titles = " ".join(p["title"].lower() for p in doc["panels"])
    for needed in ("buffer depth", "reconnects", "connection", "confirm latency", "dropped",
                   "consumer outcomes", "handler latency", "dead letters"):  # fmt: skip
        assert needed in titles, needed
    for panel in doc["panels"]:
        assert {"x", "y", "w", "h"} <= panel["gridPos"].keys()
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["refId"] and "$worker" in target["expr"], target


def test_every_dashboard_expression_parses(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr{i}", "expr": expr} for i, expr in enumerate(dashboard_exprs())
    ]}]}  # fmt: skip
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    out = promtool("check", "rules", str(path), cwd=tmp_path)
    assert f"SUCCESS: {len(dashboard_exprs())} rules found" in out
