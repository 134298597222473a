"""Exchanges, queues and bindings, declared on every (re)connect before any publish.

Declaring on each connect means a broker that lost its definitions (a restarted node without
durable storage, a new cluster member) is set up again before Warren publishes to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping


@dataclass(frozen=True, kw_only=True)
class Exchange:
    name: str
    type: str = "direct"
    durable: bool = True
    arguments: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Queue:
    name: str
    durable: bool = True
    arguments: Mapping[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class Binding:
    queue: str
    exchange: str
    routing_key: str = ""


@dataclass(frozen=True, kw_only=True)
class Topology:
    """What to declare, in order: exchanges, then queues, then bindings."""

    exchanges: tuple[Exchange, ...] = field(default=())
    queues: tuple[Queue, ...] = field(default=())
    bindings: tuple[Binding, ...] = field(default=())
