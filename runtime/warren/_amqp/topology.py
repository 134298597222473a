"""Exchanges, queues and bindings, declared on every (re)connect before any publish.

Declaring on each connect means a broker that lost its definitions (a restarted node without
durable storage, a new cluster member) is set up again before Warren publishes to it. A
publisher also declares again when a job for a route this topology declares comes back
unroutable (a queue deleted under it): ``Topology.routes`` says which routes those are.
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
    """A queue to declare. ``passive``: use the existing queue exactly as it is (a missing
    one is an error, ``TopologyMismatch``); its other settings are then ignored."""

    name: str
    durable: bool = True
    arguments: Mapping[str, Any] | None = None
    passive: bool = False


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

    def routes(self, exchange: str, routing_key: str) -> bool:
        """Whether a message to ``exchange`` with ``routing_key`` reaches a queue this
        topology declares, once it is all declared. (Headers exchanges match on arguments
        Warren does not evaluate: never.)"""
        queues = {q.name for q in self.queues}
        if not exchange:
            return routing_key in queues
        kinds = {e.name: e.type for e in self.exchanges}
        kind = kinds.get(exchange) or _BUILTIN_KINDS.get(exchange, "")
        return any(
            b.exchange == exchange
            and b.queue in queues
            and _binds(kind, b.routing_key, routing_key)
            for b in self.bindings
        )


_BUILTIN_KINDS = {"amq.direct": "direct", "amq.fanout": "fanout", "amq.topic": "topic"}


def _binds(kind: str, pattern: str, routing_key: str) -> bool:
    if kind == "direct":
        return pattern == routing_key
    if kind == "fanout":
        return True
    if kind == "topic":
        return _topic_match(pattern.split("."), routing_key.split("."))
    return False


def _topic_match(pattern: list[str], words: list[str]) -> bool:
    """AMQP topic matching: ``*`` is exactly one word, ``#`` zero or more."""
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_topic_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _topic_match(rest, words[1:])
