"""Each connection's I/O thread runs under its own ``CapacityLimiter``, never on a token of
anyio's default thread limiter, on both backends.

The thread lives as long as its connection: on the default limiter (40 tokens), 40
connections would starve every other ``to_thread`` user of the process (the outbox's SQLite),
and a 41st connection would never even start.
"""

from __future__ import annotations

from contextlib import AsyncExitStack

import anyio
import pytest

from tests.support.helpers import config
from warren import Metrics, Publisher

pytestmark = [pytest.mark.broker, pytest.mark.timeout(60)]


async def test_connections_take_no_token_of_the_default_thread_limiter(
    broker_url: str, metrics: Metrics
) -> None:
    default = anyio.to_thread.current_default_thread_limiter()
    tokens = default.total_tokens
    default.total_tokens = 2  # fewer than the connections below
    try:
        async with AsyncExitStack() as stack:
            publishers = [
                await stack.enter_async_context(
                    Publisher(config(broker_url), metrics=metrics, name=f"io-{i}")
                )
                for i in range(3)
            ]
            with anyio.fail_after(20):
                for pub in publishers:
                    await pub.wait_connected()
            assert default.borrowed_tokens == 0, "an I/O thread holds a default token"
            with anyio.fail_after(5):  # the default limiter still serves everyone else
                assert await anyio.to_thread.run_sync(lambda: 42) == 42
    finally:
        default.total_tokens = tokens
