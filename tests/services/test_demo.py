"""``make demo``, shortened: the incident end to end against a real broker, its numbers, its
exit code, its pictures, and that it leaves no queue and no process behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pytest

from tests.support.helpers import free_port

if TYPE_CHECKING:
    from pathlib import Path

    from tests.support.broker import Broker

pytestmark = [pytest.mark.broker]


def _demo(out: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "warren_services.demo", "--out", str(out), *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=150,
                          check=False)  # fmt: skip


def _summary(stdout: str) -> dict[str, str]:
    """The last line: ``key=value`` pairs."""
    last = stdout.strip().splitlines()[-1]
    return dict(pair.split("=", 1) for pair in last.split())


def _check_reports(out: Path) -> str:
    png, page = out / "warren-demo.png", out / "warren-demo.html"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 20_000  # a real plot, not an empty canvas
    html = page.read_text()
    assert "data:image/png;base64," in html and len(html) > png.stat().st_size
    return html


SHORT = ("--duration", "10", "--partition-at", "2", "--partition-seconds", "5", "--rate", "30",
         "--heartbeat", "1")  # fmt: skip


@pytest.mark.timeout(180)
def test_the_short_demo_loses_nothing_through_a_partition(
    broker_url: str, broker: Broker, tmp_path: Path
) -> None:
    env = {**os.environ, "WARREN_AMQP_URL": broker_url}
    done = _demo(tmp_path, *SHORT, "--backend", "trio", env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    got = _summary(done.stdout)
    accepted = int(got["accepted"])
    assert accepted >= 250  # 30/s for 10 s, every one accepted, partition or not
    assert got["delivered"] == got["accepted"] and got["lost"] == "0"
    assert got["errors"] == "0" and got["dropped"] == "0"
    # at-least-once: a job whose confirm the cut ate is sent again after the heal
    assert int(got["duplicates"]) <= accepted // 10
    assert int(got["max_depth"]) >= 40  # the partition's POSTs waited in the buffer
    assert int(got["reconnects"]) >= 1
    # heartbeat 1 s: the silent link is noticed (heartbeat + 1 s, sampled 4 times a second)
    # inside the 5 s partition
    assert got["detection_s"] != "na" and float(got["detection_s"]) <= 4.5
    assert float(got["heal_to_empty_s"]) < 10
    html = _check_reports(tmp_path)
    assert "nothing lost" in html
    # not a TTY: plain lines, one a second, with the phases
    assert "phase=partition" in done.stdout and "phase=done" in done.stdout
    queue = re.search(r"Queue <code>(warren\.demo\.[0-9a-f]+)</code>", html)
    assert queue is not None
    for suffix in ("", ".dlq", ".invalid_tokens", ".retry.1000ms"):
        assert not broker.exists(queue.group(1) + suffix), f"{queue.group(1)}{suffix} left behind"
    password = urlsplit(broker_url).password
    assert password, "the broker URL has a password to look for"
    shown = done.stdout + done.stderr + (tmp_path / "warren.log").read_text() + html
    assert f":{password}@" not in shown


@pytest.mark.scenario
@pytest.mark.timeout(240)
def test_with_no_broker_answering_it_runs_its_own_node_and_stops_it(tmp_path: Path) -> None:
    from warren_services.demo._broker import rabbitmq_installed

    if not rabbitmq_installed():
        pytest.skip("rabbitmq-server is not installed")
    env = {k: v for k, v in os.environ.items() if k != "WARREN_AMQP_URL"}
    dead = f"127.0.0.1:{free_port()}"
    done = _demo(tmp_path, *SHORT, "--local-broker", dead, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    node = re.search(r"throwaway node \((warren-[0-9a-f]+)@", done.stdout)
    assert node is not None, done.stdout[:2000]
    assert _summary(done.stdout)["lost"] == "0"
    _check_reports(tmp_path)
    left = subprocess.run(["pgrep", "-f", node.group(1)], capture_output=True, text=True,
                          check=False)  # fmt: skip
    assert left.stdout == "", f"the demo's node still runs: {left.stdout}"


@pytest.mark.timeout(30)
def test_no_broker_and_none_installed_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from warren_services import demo
    from warren_services.demo import _broker

    monkeypatch.delenv("WARREN_AMQP_URL", raising=False)
    monkeypatch.setattr(_broker, "rabbitmq_installed", lambda: False)
    code = demo.main(["--out", str(tmp_path), "--local-broker", f"127.0.0.1:{free_port()}"])
    out = capsys.readouterr()
    assert code == 2
    text = " ".join((out.out + out.err).split())
    assert "apt-get install -y rabbitmq-server" in text and "docker run" in text
    assert "Traceback" not in out.out + out.err


@pytest.mark.timeout(10)
def test_a_partition_that_does_not_fit_the_run_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from warren_services import demo

    assert demo.main(["--out", str(tmp_path), "--duration", "10", "--partition-at", "8"]) == 2
    assert "partition" in capsys.readouterr().err


@pytest.mark.timeout(10)
def test_an_amqps_url_is_refused_by_name() -> None:
    from warren_services.demo._broker import DemoError, broker

    with (
        pytest.raises(DemoError, match="WARREN_AMQP_URL: the demo needs an amqp://"),
        broker({"WARREN_AMQP_URL": "amqps://u:secret@example.com/%2F"}),
    ):
        pass
