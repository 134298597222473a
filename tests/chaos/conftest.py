"""Chaos scenarios: a fresh durable queue per test, deleted afterwards."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pika
import pytest


@pytest.fixture
def chaos_queue(warren_amqp_url: str) -> Iterator[str]:
    name = f"warren.chaos.{uuid.uuid4().hex[:10]}"
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(warren_amqp_url))
    conn.channel().queue_delete(name)
    conn.close()
