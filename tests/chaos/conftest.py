"""Chaos scenarios: a fresh durable queue per test, deleted afterwards."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pika
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture
def chaos_queue(warren_amqp_url: str) -> Iterator[str]:
    name = f"warren.chaos.{uuid.uuid4().hex[:10]}"
    yield name
    conn = pika.BlockingConnection(pika.URLParameters(warren_amqp_url))
    conn.channel().queue_delete(name)
    conn.close()
