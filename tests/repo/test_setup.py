"""`make test` is the whole set-up: what CI installs, a newcomer's `make test` installs too."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.support.prometheus_tools import prometheus

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(60)


def test_make_test_installs_the_debian_packages_itself() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "apt-get" not in ci, ".ci/run installs something make test does not"
    plan = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=30).stdout  # fmt: skip
    for package in ("nftables", "iproute2", "prometheus"):
        assert package in plan, f"make test does not install {package}"
    assert plan.index("apt-get install") < plan.index("pytest"), "installed after the tests"


def test_a_missing_prometheus_skips_cleanly_without_leaking_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no prometheus on it
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception), prometheus(tmp_path, "127.0.0.1:1"):
        pass  # pragma: no cover
    # nothing was opened before the check: no file handle to leak into a later test
    assert not (tmp_path / "prometheus.log").exists()
