"""The AMQP bridge: the only package that imports pika.

One broker connection with reconnects (``AmqpConnection``), the pika thread that owns each
connection (``_thread``), the publish wire format (``_wire``), the consume side (``_consume``),
the events they report (``_events``) and the topology they declare (``_topology``). The pika
thread's decisions are plain code of their own (``confirms``, ``confirm_hold``, ``watchdog``,
``close_reasons``), and pika's private attributes are touched only in ``pika_internals``. Layers
above see events and jobs, never pika (ruff's banned-api and the import-linter contract in
pyproject.toml keep it so).
"""

from warren._amqp.admin import delete_queues
from warren._amqp.connection import AmqpConnection
from warren._amqp.consume import ConsumeSpec
from warren._amqp.events import (
    Blocked,
    ChannelClosed,
    Confirmed,
    Connected,
    ConnectFailed,
    ConnectionEvent,
    ConnectionLost,
    Declared,
    Delivered,
    GaveUp,
    LossKind,
    Nacked,
    Returned,
    Unblocked,
)
from warren._amqp.link import Link, LinkFactory, amqp_link_factory
from warren._amqp.topology import Binding, Exchange, Queue, Topology
from warren._amqp.wire import PublishEncoder

__all__ = [
    "AmqpConnection",
    "Binding",
    "Blocked",
    "ChannelClosed",
    "Confirmed",
    "ConnectFailed",
    "Connected",
    "ConnectionEvent",
    "ConnectionLost",
    "ConsumeSpec",
    "Declared",
    "Delivered",
    "Exchange",
    "GaveUp",
    "Link",
    "LinkFactory",
    "LossKind",
    "Nacked",
    "PublishEncoder",
    "Queue",
    "Returned",
    "Topology",
    "Unblocked",
    "amqp_link_factory",
    "delete_queues",
]
