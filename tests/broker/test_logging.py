"""Structured logs: stable event names with fields, text or JSON, credentials redacted."""

from __future__ import annotations

import io
import json
import logging
from typing import TYPE_CHECKING

import pytest

from tests.support.helpers import free_port, run_warren
from warren import ConfigError
from warren._run.logging import configure_logging, parse_event

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_event_fields_and_free_text_are_told_apart() -> None:
    assert parse_event("connection.lost worker=api kind=dead_link no bytes for 4.0s") == (
        "connection.lost",
        {"worker": "api", "kind": "dead_link"},
        "no bytes for 4.0s",
    )
    assert parse_event("publish.returned worker=a routing_key='x y' reply=312 NO_ROUTE") == (
        "publish.returned",
        {"worker": "a", "routing_key": "x y", "reply": "312"},
        "NO_ROUTE",
    )
    assert parse_event("Socket EOF; something from a library") == (
        None,
        {},
        "Socket EOF; something from a library",
    )


@pytest.mark.usefixtures("restore_logging")
def test_json_lines_carry_the_event_and_its_fields() -> None:
    out = io.StringIO()
    configure_logging({"WARREN_LOG_FORMAT": "json"}, out)
    log = logging.getLogger("warren.publisher")
    log.warning("connection.lost worker=%s kind=%s in_flight=%d %s", "api", "dead_link", 3, "gone")
    logging.getLogger("other").info("plain words")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["event"] == "connection.lost" and first["level"] == "warning"
    assert first["worker"] == "api" and first["in_flight"] == 3
    assert first["message"] == "gone" and first["logger"] == "warren.publisher"
    assert second["event"] == "log" and second["message"] == "plain words"


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_credentials_never_reach_a_log_line(fmt: str) -> None:
    out = io.StringIO()
    configure_logging({"WARREN_LOG_FORMAT": fmt}, out)
    url = "amqp://warren:hunter2@broker:5672/%2F"
    logging.getLogger("pika").error("connecting to %s failed", url)
    try:
        raise RuntimeError(f"cannot reach {url}")
    except RuntimeError:
        logging.getLogger("warren").exception("worker.crashed service=x")
    text = out.getvalue()
    assert "hunter2" not in text
    assert "warren:***@broker" in text


def test_unknown_format_or_level_names_the_setting() -> None:
    with pytest.raises(ConfigError, match=r"^WARREN_LOG_FORMAT: unknown format 'xml'"):
        configure_logging({"WARREN_LOG_FORMAT": "xml"}, io.StringIO())
    with pytest.raises(ConfigError, match=r"^WARREN_LOG_LEVEL"):
        configure_logging({"WARREN_LOG_LEVEL": "LOUD"}, io.StringIO())


def test_the_runner_logs_json_lines_end_to_end() -> None:
    env = {
        "WARREN_AMQP_URL": f"amqp://guest:s3cret@127.0.0.1:{free_port()}/%2F",
        "WARREN_RECONNECT_MAX_ATTEMPTS": "2",
        "WARREN_LOG_FORMAT": "json",
    }
    done = run_warren("run", "demo-publisher", env=env)
    assert done.returncode == 3, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    events = {line["event"] for line in lines}
    assert {"connection.failed", "connection.gave_up"} <= events
    gave_up = next(line for line in lines if line["event"] == "connection.gave_up")
    assert gave_up["worker"] and gave_up["attempts"] == 2
    assert "s3cret" not in done.stderr
    bad = run_warren("run", "demo-publisher", env={"WARREN_LOG_FORMAT": "xml"})
    assert bad.returncode == 2 and "WARREN_LOG_FORMAT" in bad.stderr


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_broker_that_is_down_is_one_line_per_attempt(fmt: str) -> None:
    """pika logs four ERROR lines (and a traceback) of its own per failed connect; Warren's
    ``connection.failed`` says it once. pika's lines show only at WARREN_LOG_LEVEL=DEBUG."""
    env = {
        "WARREN_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
        "WARREN_RECONNECT_MAX_ATTEMPTS": "3",
        "WARREN_BACKOFF_BASE": "0.05",
        "WARREN_LOG_FORMAT": fmt,
    }
    done = run_warren("run", "demo-publisher", env=env)
    assert done.returncode == 3, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if fmt == "json":
        events = [json.loads(line)["event"] for line in lines]
    else:
        events = [line.split(" ", 5)[4] for line in lines]  # date time LEVEL logger event
    assert events.count("connection.failed") == 3, done.stderr
    assert "pika" not in done.stderr, done.stderr
    assert len(lines) <= 3 + 3, done.stderr  # the attempts, and start / gave up / exit
    debug = run_warren("run", "demo-publisher", env={**env, "WARREN_LOG_LEVEL": "DEBUG"})
    pika_lines = [line for line in debug.stderr.splitlines() if "pika" in line]
    assert pika_lines, debug.stderr
    if fmt == "json":
        levels = {json.loads(line)["level"] for line in pika_lines if line.startswith("{")}
        assert levels == {"debug"}, levels


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_producer_chosen_value_cannot_forge_log_lines_or_fields(fmt: str) -> None:
    """A message id with a newline, or with ``key=value`` inside, stays one value."""
    import io
    import logging

    stream = io.StringIO()
    configure_logging({"WARREN_LOG_FORMAT": fmt}, stream)
    evil = "m1\n2026-01-01 00:00:00,000 CRITICAL warren.fake forged.event worker=x level=debug"
    logging.getLogger("warren.consumer").warning(
        "delivery.dead_letter worker=%s message_id=%s reason=%s attempts=%d %s",
        "push",
        evil,
        "poison",
        1,
        "ValueError: bad\nsecond line",
    )
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1, lines
    if fmt == "json":
        doc = json.loads(lines[0])
        assert doc["message_id"] == evil
        assert doc["level"] == "warning"
        assert doc["worker"] == "push"
        assert doc["event"] == "delivery.dead_letter"
        assert doc["message"] == "ValueError: bad\nsecond line"
    else:
        assert "forged.event" in lines[0]  # still there, but inside the one escaped value
        assert "message_id=" + json.dumps(evil) in lines[0]


@pytest.mark.usefixtures("restore_logging")
def test_literal_words_of_a_template_are_kept() -> None:
    """A template with literal ``key=value`` words and no arguments prints them as written."""
    out = io.StringIO()
    configure_logging({"WARREN_LOG_FORMAT": "text"}, out)
    logging.getLogger("warren.runner").info("shutdown.complete jobs_dropped=0")
    logging.getLogger("warren.runner").info("ops.serving addr=%s endpoints=/metrics", "h:1")
    text = out.getvalue()
    assert "shutdown.complete jobs_dropped=0" in text
    assert "ops.serving addr=h:1 endpoints=/metrics" in text
