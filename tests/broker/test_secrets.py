"""Credentials never appear in any output, however the URL is mangled.

A set of nasty URLs (passwords with the characters URL parsing splits on) goes through every
path a user sees: the config error, ``repr`` of the config, the ``warren`` process's stdout,
stderr (text and JSON logs) and exit code, and the health JSON of a worker that cannot
connect.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
from urllib.parse import quote

import pytest

from tests.support.helpers import WARREN, free_port
from warren import (
    ConfigError,
    ConnectionConfig,
    ConsumerConfig,
    PublisherConfig,
    configure_logging,
    redact_url,
)
from warren._common.redact import Redactor

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
    # a space, or an unencoded "@", in the password: the broker answers, refuses the
    # credentials, and the process exits 4 naming the URL (#27: printed in full / its tail)
    f"amqp://u:hun {SECRET} x@127.0.0.1:5672/%2F",
    f"amqp://u:hun@{SECRET}@127.0.0.1:5672/%2F",
    f"amqp://u:hun@{SECRET} x@y@127.0.0.1:5672/%2F",
]
VALID = f"amqp://u:{SECRET}@127.0.0.1:{free_port()}/%2F"  # well-formed, nothing listening


def _secret_parts() -> list[str]:
    # the whole password and the pieces a bad split would print
    return [SECRET, f"hun/{SECRET}", f"hun,{SECRET}", f"{SECRET}#x", "hun ", "hun@"]


def _assert_clean(text: str) -> None:
    for part in _secret_parts():
        assert part not in text, f"{part!r} leaked in:\n{text}"


@pytest.mark.parametrize("url", NASTY)
def test_config_errors_never_show_the_password(url: str) -> None:
    for build in (
        lambda: PublisherConfig(connection=ConnectionConfig(urls=url)),
        lambda: ConsumerConfig(connection=ConnectionConfig(urls=url), queue="q"),
    ):
        try:
            config = build()
        except ConfigError as exc:
            _assert_clean(str(exc))
            _assert_clean(repr(exc))
        else:  # parsed after all: then its repr must be clean
            _assert_clean(repr(config))


def test_repr_of_a_config_hides_the_password() -> None:
    _assert_clean(repr(PublisherConfig(connection=ConnectionConfig(urls=VALID))))
    _assert_clean(repr(ConsumerConfig(connection=ConnectionConfig(urls=[VALID, VALID]), queue="q")))
    assert "u:***@" in repr(PublisherConfig(connection=ConnectionConfig(urls=VALID)))


@pytest.mark.parametrize(
    "log_format",
    ["text", pytest.param("json", marks=pytest.mark.scenario)],  # 9 s: scenarios
)
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
    # bad config, gave up reconnecting, or credentials refused
    assert done.returncode in (2, 3, 4), done.stderr


PASSWORDS = ["hun ter2", "hun@ter2", "hu:n@t er/2#x", 'hun"ter\\2', "hun%40ter2", "h,u?n=t&r2"]


@pytest.mark.parametrize("password", PASSWORDS)
def test_redaction_does_not_depend_on_parsing_the_url(password: str) -> None:
    url = f"amqp://user:{password}@broker.example:5672/%2F"
    assert redact_url(url) == "amqp://user:***@broker.example:5672/%2F"
    redact = Redactor.from_settings(["not a url", url])
    # however a library prints it: inside the URL, alone, percent-encoded, in a repr
    for text in (f"connecting to {url} failed", f"password={password}",
                 f"creds {quote(password, safe='')!r}", repr(url)):  # fmt: skip
        assert password not in redact(text), text
        assert quote(password, safe="") not in redact(text), text


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_log_lines_never_carry_a_configured_password(log_format: str) -> None:
    password = 'hu n"t\\er2@x'
    url = f"amqp://user:{password}@127.0.0.1/%2F"
    out = io.StringIO()
    configure_logging({"WARREN_AMQP_URL": url, "WARREN_LOG_FORMAT": log_format}, out)
    try:
        log = logging.getLogger("some.library")
        log.warning("login as user with %s failed", password)
        log.warning("event.name url=%s detail=%r", url, password)
        try:
            raise RuntimeError(f"bad credentials {password}")
        except RuntimeError:
            log.exception("event.failed")
    finally:
        logging.getLogger().handlers.clear()
    text = out.getvalue()
    lines = text.splitlines()
    if log_format == "json":
        docs = [json.loads(line) for line in lines]  # still valid JSON
        text = json.dumps(docs, ensure_ascii=False) + repr(docs)
    for spelling in (password, 'n"t\\er2', quote(password, safe="")):
        assert spelling not in text, text
    assert text.count("***") >= 4, text


def test_a_short_password_is_still_redacted_inside_urls() -> None:
    redact = Redactor.from_settings(["amqp://u:ab@h/"])
    assert redact("at amqp://u:ab@h/ tab") == "at amqp://u:***@h/ tab"  # "tab" left whole
