"""Deleting queues from outside a worker: clean-up for demos and tests, one short connection."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pika
import pika.exceptions

from warren._amqp.tls import url_parameters
from warren._common.redact import redact_url
from warren._config.tls import TlsConfig
from warren._exceptions import BrokerError

if TYPE_CHECKING:
    from collections.abc import Iterable


def delete_queues(
    url: str, names: Iterable[str], *, timeout: float = 10.0, tls: TlsConfig | None = None
) -> None:
    """Delete each queue (one that does not exist is no error), messages and all. ``tls``:
    the worker's TLS settings, for an ``amqps://`` URL that needs them.

    Blocks (call it from a worker thread in async code).

    Raises:
        BrokerError: the broker could not be reached or refused (the URL is redacted).
    """
    params = url_parameters(url, tls or TlsConfig())
    params.socket_timeout = timeout
    params.blocked_connection_timeout = timeout
    params.connection_attempts = 1
    try:
        conn = pika.BlockingConnection(params)
        try:
            channel = conn.channel()
            for name in names:
                channel.queue_delete(name)
        finally:
            if conn.is_open:
                conn.close()
    except (pika.exceptions.AMQPError, OSError) as exc:  # OSError: TLS, refused, reset
        raise BrokerError(f"deleting queues at {redact_url(url)}: {exc!r}") from exc
