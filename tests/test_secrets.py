"""Credentials never appear in any output, however the URL is mangled.

A set of nasty URLs (passwords with the characters URL parsing splits on) goes through every
path a user sees: the config error, ``repr`` of the config, the ``warren`` process's stdout,
stderr (text and JSON logs) and exit code, and the health JSON of a worker that cannot
connect.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.helpers import WARREN, free_port
from warren import ConfigError, ConsumerConfig, PublisherConfig

pytestmark = pytest.mark.timeout(60)

SECRET = "hunter2"
NASTY = [
    f"amqp://u:hun/{SECRET}@127.0.0.1:5672/%2F",
    f"amqp://u:{SECRET}#x@127.0.0.1:5672/%2F",
    f"amqp://u:hun,{SECRET}@127.0.0.1:5672/%2F",
    f"amqp://u:{SECRET}@127.0.0.1:notaport/%2F",
    f"amqp://u:{SECRET}?@127.0.0.1/%2F",
    f"amqps://u:{SECRET}@[::1/%2F",
    f"http://u:{SECRET}@127.0.0.1/",
]
VALID = f"amqp://u:{SECRET}@127.0.0.1:{free_port()}/%2F"  # well-formed, nothing listening


def _secret_parts() -> list[str]:
    # the whole password and the pieces a bad split would print
    return [SECRET, f"hun/{SECRET}", f"hun,{SECRET}", f"{SECRET}#x"]


def _assert_clean(text: str) -> None:
    for part in _secret_parts():
        assert part not in text, f"{part!r} leaked in:\n{text}"


@pytest.mark.parametrize("url", NASTY)
def test_config_errors_never_show_the_password(url: str) -> None:
    for build in (lambda: PublisherConfig(urls=url), lambda: ConsumerConfig(queue="q", urls=url)):
        try:
            config = build()
        except ConfigError as exc:
            _assert_clean(str(exc))
            _assert_clean(repr(exc))
        else:  # parsed after all: then its repr must be clean
            _assert_clean(repr(config))


def test_repr_of_a_config_hides_the_password() -> None:
    _assert_clean(repr(PublisherConfig(urls=VALID)))
    _assert_clean(repr(ConsumerConfig(queue="q", urls=[VALID, VALID])))
    assert "u:***@" in repr(PublisherConfig(urls=VALID))


@pytest.mark.parametrize("log_format", ["text", "json"])
@pytest.mark.parametrize("url", [*NASTY, VALID])
def test_the_warren_process_never_prints_the_password(url: str, log_format: str) -> None:
    env = {**os.environ, "WARREN_AMQP_URL": url, "WARREN_LOG_FORMAT": log_format,
           "WARREN_METRICS_ADDR": f"127.0.0.1:{free_port()}",
           "WARREN_RECONNECT_MAX_ATTEMPTS": "2", "WARREN_BACKOFF_BASE": "0.01",
           "WARREN_BACKOFF_CAP": "0.02", "WARREN_LOG_LEVEL": "DEBUG"}  # fmt: skip
    done = subprocess.run([*WARREN, "run", "demo-publisher"], env=env, capture_output=True,
                          text=True, timeout=40, check=False)  # fmt: skip
    _assert_clean(done.stdout)
    _assert_clean(done.stderr)
    assert done.returncode in (2, 3), done.stderr  # bad config, or gave up reconnecting
