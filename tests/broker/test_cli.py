"""The `warren` runner as a process: help, exit codes, /metrics, SIGTERM flushes."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.support.helpers import WARREN, free_port, run_warren


def test_help_lists_services_settings_and_exit_codes() -> None:
    top = run_warren("--help")
    assert top.returncode == 0
    assert "demo-publisher" in top.stdout
    assert "exit codes" in top.stdout
    sub = run_warren("run", "--help")
    names = "AMQP_URL HEARTBEAT BUFFER_SIZE OVERFLOW RECONNECT_MAX_ATTEMPTS METRICS_ADDR DEMO_JOBS"
    names += " LOG_LEVEL LOG_FORMAT"
    for name in names.split():
        assert f"WARREN_{name}" in sub.stdout
    assert "guest:guest" not in sub.stdout, "the default URL's password is shown redacted"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WARREN_BUFFER_SIZE": "0"}, "WARREN_BUFFER_SIZE: must be a positive integer"),
        ({"WARREN_OVERFLOW": "sideways"}, "WARREN_OVERFLOW: unknown policy 'sideways'"),
        ({"WARREN_AMQP_URL": "amqp://u:topsecret@:x/"}, "WARREN_AMQP_URL"),
        ({"WARREN_METRICS_ADDR": "nope"}, "WARREN_METRICS_ADDR: expected host:port"),
        ({"WARREN_DEMO_JOBS": "-3"}, "WARREN_DEMO_JOBS: must be a positive integer"),
    ],
)
def test_bad_config_exits_2_naming_the_setting(env: dict[str, str], needle: str) -> None:
    done = run_warren("run", "demo-publisher", env=env)
    assert done.returncode == 2, done.stderr
    assert needle in done.stderr
    assert "topsecret" not in done.stderr + done.stdout


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("service", "setting", "value"),
    [
        ("api", "WARREN_API_ADDR", "in-use"),
        ("api", "WARREN_API_DB", "{tmp}/no/such/dir/api.sqlite3"),
        ("api", "WARREN_API_DB", "{tmp}"),  # a directory
        ("push-sender", "WARREN_PUSH_PROVIDER_URL", "not a url"),
        ("push-sender", "WARREN_PUSH_PROVIDER_URL", "ftp://example.com/push"),
        ("push-sender", "WARREN_PUSH_PROVIDER_URL", "http:///webhook"),
    ],
)
def test_a_service_setting_it_cannot_use_exits_2_naming_it(
    service: str, setting: str, value: str, tmp_path: Any, broker_url: str
) -> None:
    """Checked before the service starts work: no traceback, no reconnect loop."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        if value == "in-use":
            value = f"127.0.0.1:{busy.getsockname()[1]}"
        env = {"WARREN_AMQP_URL": broker_url, "WARREN_API_ADDR": f"127.0.0.1:{free_port()}",
               "WARREN_API_DB": str(tmp_path / "api.sqlite3"),
               "WARREN_PUSH_QUEUE": "warren.test.settings",
               setting: value.format(tmp=tmp_path)}  # fmt: skip
        done = run_warren("run", service, env=env, timeout=30)
    assert done.returncode == 2, done.stderr
    assert f"config.invalid {setting}: " in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr


def test_gave_up_reconnecting_exits_3_with_jobs_lost() -> None:
    env = {
        "WARREN_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
        "WARREN_RECONNECT_MAX_ATTEMPTS": "2",
        "WARREN_BACKOFF_BASE": "0.05",
        "WARREN_BACKOFF_CAP": "0.1",
        "WARREN_DEMO_JOBS": "50",
    }
    done = run_warren("run", "demo-publisher", env=env)
    assert done.returncode == 3, done.stderr
    assert "gave up reconnecting after 2 attempts; 50 buffered jobs lost" in done.stderr


def test_refused_credentials_exit_4(broker_url: str) -> None:
    env = {"WARREN_AMQP_URL": "amqp://guest:wrong-pass-xyz@127.0.0.1:5672/%2F"}
    done = run_warren("run", "demo-publisher", env=env)
    assert done.returncode == 4, done.stderr
    assert "access refused" in done.stderr
    assert "wrong-pass-xyz" not in done.stderr


def test_demo_publishes_and_reports(broker_url: str) -> None:
    done = run_warren("run", "demo-publisher", env={"WARREN_DEMO_JOBS": "2000"})
    assert done.returncode == 0, done.stderr
    assert "submitted=2000 confirmed=2000" in done.stdout


@pytest.mark.timeout(60)
def test_sigterm_stops_serves_metrics_and_counts_what_it_could_not_flush() -> None:
    metrics_port = free_port()
    env = {
        **os.environ,
        "WARREN_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
        "WARREN_BUFFER_SIZE": "100",
        "WARREN_FLUSH_TIMEOUT": "0.5",
        "WARREN_METRICS_ADDR": f"127.0.0.1:{metrics_port}",
        "WARREN_DEMO_JOBS": "1000",
    }
    proc = subprocess.Popen([*WARREN, "run", "demo-publisher"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        body = ""
        while 'warren_buffer_depth{worker="demo"} 100.0' not in body:
            assert time.monotonic() < deadline, f"buffer never filled; last scrape:\n{body}"
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{metrics_port}/metrics", timeout=2
                ) as r:
                    body = r.read().decode()
            except OSError:
                pass
            time.sleep(0.1)
        assert 'warren_connection_up{worker="demo"} 0.0' in body
        live = json_at(f"http://127.0.0.1:{metrics_port}/healthz")
        ready = json_at(f"http://127.0.0.1:{metrics_port}/readyz")
        assert live == (200, True), "disconnected is not dead"
        assert ready == (503, False), "a full buffer while disconnected is not ready"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 5, err  # stopped, but jobs were dropped: not a clean 0
    assert "submitted=100 confirmed=0 returned=0 dropped=100" in out
    assert "shutdown.unflushed" in err
    assert "shutdown.unflushed_total jobs_dropped=100" in err


def json_at(url: str) -> tuple[int, bool]:
    """(status, live or ready) of a health endpoint; 503 answers carry the body too."""
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            status, body = r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        status, body = exc.code, json.loads(exc.read())
    return status, bool(body["live"] if url.endswith("healthz") else body["ready"])


def test_proxy_command_serves_the_toxiproxy_api_and_stops_on_sigterm(tmp_path: Any) -> None:
    from warren.testing import ToxiproxyClient

    config = tmp_path / "proxies.json"
    spec = {"name": "rabbit", "listen": "127.0.0.1:0", "upstream": "127.0.0.1:5672"}
    config.write_text(json.dumps([spec]))
    port = free_port()
    cmd = [*WARREN, "proxy", "--port", str(port), "--config", str(config)]
    pipe = subprocess.PIPE
    with subprocess.Popen(cmd, stdout=pipe, stderr=pipe, text=True) as proc:
        try:
            assert proc.stdout is not None
            assert "API on" in proc.stdout.readline()
            client = ToxiproxyClient(f"http://127.0.0.1:{port}")
            assert client.version()
            assert client.get_proxy("rabbit").enabled
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=20)
            assert proc.returncode == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_proxy_command_bad_config_exits_2(tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('[{"name": "x"}]')
    done = run_warren("proxy", "--port", str(free_port()), "--config", str(bad))
    assert done.returncode == 2
    assert "missing required field: upstream" in done.stderr
