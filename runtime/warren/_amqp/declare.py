"""Declaring a ``Topology`` on an open pika channel, in the I/O thread.

Exchanges first, then queues, then bindings (a binding needs both ends), one at a time: each
declaration is sent when the broker answered the one before. A refusal (a queue that exists
with other arguments, a passive queue that is missing) closes the channel, and the steps stop
there: the channel's close is reported on its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    from warren._amqp.topology import Topology


def declare(channel: Any, topology: Topology, done: Callable[[], object]) -> None:
    """Declare ``topology`` on ``channel``, then call ``done()`` (not if the channel closes)."""
    ch = channel
    steps: list[Callable[[Callable[[Any], None]], None]] = [
        *(
            lambda cb, ex=ex: ch.exchange_declare(
                ex.name,
                exchange_type=ex.type,
                durable=ex.durable,
                arguments=dict(ex.arguments or {}),
                callback=cb,
            )
            for ex in topology.exchanges
        ),
        *(
            lambda cb, q=q: ch.queue_declare(
                q.name,
                passive=q.passive,
                durable=q.durable,
                arguments=dict(q.arguments or {}),
                callback=cb,
            )
            for q in topology.queues
        ),
        *(
            lambda cb, b=b: ch.queue_bind(
                b.queue, b.exchange, routing_key=b.routing_key, callback=cb
            )
            for b in topology.bindings
        ),
    ]

    def step(_frame: Any = None) -> None:
        if not ch.is_open:
            return  # closing (we are stopping, or the broker refused): its close follows
        if steps:
            steps.pop(0)(step)
        else:
            done()

    step()
