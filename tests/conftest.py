"""Shared fixtures: both anyio backends, the real broker, an injected metrics registry."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from prometheus_client import CollectorRegistry

from tests.support.broker import BROKER_URL, Broker
from warren import Metrics

if TYPE_CHECKING:
    from collections.abc import Iterator

# A push-sender started by a test sends no dead-token events unless the test names its own
# queue for them: the default push.invalid_tokens on the shared broker would be declared
# quorum by one test and classic by another (406).
os.environ.setdefault("WARREN_PUSH_INVALID_TOKENS_QUEUE", "")


CHAOS = Path(__file__).resolve().parent / "chaos"
CONTAINERS = Path(__file__).resolve().parent / "containers"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test in tests/chaos/ is a slow scenario (``make scenarios`` runs them); every
    test in tests/containers/ needs a Docker engine (``make container-test``)."""
    for item in items:
        if CHAOS in item.path.parents:
            item.add_marker(pytest.mark.scenario)
        if CONTAINERS in item.path.parents:
            item.add_marker(pytest.mark.container)


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _broker_answers() -> bool:
    try:
        socket.create_connection(("127.0.0.1", 5672), timeout=2).close()
    except OSError:
        return False
    return True


@pytest.fixture(scope="session")
def broker_url() -> str:
    """The shared broker. Missing in CI (CI=true) is a failure, never a skip."""
    if not _broker_answers():
        if os.environ.get("CI") == "true":
            pytest.fail("RabbitMQ is not answering on 127.0.0.1:5672 (CI requires it)")
        pytest.skip("RabbitMQ not answering on 127.0.0.1:5672 (outside CI, so skipping)")
    return BROKER_URL


@pytest.fixture
def broker(broker_url: str) -> Iterator[Broker]:
    with Broker(broker_url) as b:
        yield b


@pytest.fixture
def queue_name(broker: Broker) -> Iterator[str]:
    """A fresh, empty queue on the shared broker, deleted afterwards."""
    name = f"warren.test.{uuid.uuid4().hex[:12]}"
    broker.declare_queue(name)
    yield name
    broker.delete_queue(name)


@pytest.fixture
def push_queue(broker_url: str) -> Iterator[str]:
    """A push queue name for a service under test (``WARREN_PUSH_QUEUE``); it and its
    dead-letter queue are deleted afterwards."""
    name = f"warren.test.push.{uuid.uuid4().hex[:8]}"
    yield name
    with Broker(broker_url) as broker:
        for one in (name, f"{name}.dlq"):
            broker.delete_queue(one)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> Metrics:
    return Metrics(registry)


REDIS_URL = os.environ.get("WARREN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The shared Redis (for the deduplication store). Missing in CI is a failure."""
    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=2).close()
    except OSError:
        if os.environ.get("CI") == "true":
            pytest.fail("Redis is not answering on 127.0.0.1:6379 (CI requires it)")
        pytest.skip("Redis not answering on 127.0.0.1:6379 (outside CI, so skipping)")
    return REDIS_URL
