"""Test-side view of the broker: an independent, direct pika connection (never through
Warren) to declare queues, count what arrived, and find or kill Warren's connections."""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pika
import pika.exceptions

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import TracebackType

BROKER_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@dataclass
class Arrivals:
    """What an independent consumer found on a queue."""

    ids: Counter[str] = field(default_factory=Counter)
    bodies: list[bytes] = field(default_factory=list)

    @property
    def distinct(self) -> int:
        return len(self.ids)

    @property
    def duplicates(self) -> int:
        return sum(self.ids.values()) - len(self.ids)


class Broker:
    def __init__(self, url: str = BROKER_URL) -> None:
        self._conn = pika.BlockingConnection(pika.URLParameters(url))
        self._ch = self._conn.channel()

    def __enter__(self) -> Broker:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._conn.is_open:
            self._conn.close()

    def declare_queue(
        self, name: str, *, durable: bool = False, arguments: dict[str, Any] | None = None
    ) -> None:
        self._ch.queue_declare(name, durable=durable, arguments=arguments)

    def delete_queue(self, name: str) -> None:
        if self._ch.is_open:
            self._ch.queue_delete(name)

    def publish(self, queue: str, body: bytes, *, message_id: str | None = None) -> None:
        props = pika.BasicProperties(message_id=message_id, delivery_mode=2)
        self._ch.basic_publish("", queue, body, props)

    def get(self, queue: str) -> tuple[Any, bytes] | None:
        """One message off ``queue`` (auto-acked): (properties, body), or None if empty."""
        method, props, body = self._ch.basic_get(queue, auto_ack=True)
        return None if method is None else (props, body)

    def queue_type(self, name: str) -> str:
        """``classic`` or ``quorum`` (what the broker says; rabbitmqctl, about a second)."""
        for line in rabbitmqctl("list_queues", "name", "type", "--no-table-headers").splitlines():
            queue, _, kind = line.partition("\t")
            if queue == name:
                return kind.strip()
        raise AssertionError(f"no queue {name!r}")

    def exists(self, name: str) -> bool:
        """Whether the queue exists (asked on a channel of its own: a miss closes it)."""
        channel = self._conn.channel()
        try:
            channel.queue_declare(name, passive=True)
        except pika.exceptions.ChannelClosedByBroker:
            return False
        channel.close()
        return True

    def depth(self, name: str) -> int:
        return int(self._ch.queue_declare(name, passive=True).method.message_count)

    def drain(self, name: str, *, expect: int, timeout: float = 30.0) -> Arrivals:
        """Take messages off ``name`` until ``expect`` distinct ids arrived or time is up."""
        return self._take(name, lambda got: got.distinct >= expect, timeout)

    def drain_all(self, name: str, *, timeout: float = 60.0) -> Arrivals:
        """Take every message that is on ``name`` now (nobody else publishes to it)."""
        total = self.depth(name)
        return self._take(name, lambda got: len(got.bodies) >= total, timeout)

    def _take(self, name: str, enough: Callable[[Arrivals], bool], timeout: float) -> Arrivals:
        arrivals = Arrivals()
        deadline = time.monotonic() + timeout
        # manual acks: what the broker pushed ahead but we did not take goes back on cancel
        self._ch.basic_qos(prefetch_count=200)
        for method, props, body in self._ch.consume(name, inactivity_timeout=0.2):
            if method is not None:
                arrivals.ids[str(props.message_id)] += 1
                arrivals.bodies.append(body)
                self._ch.basic_ack(method.delivery_tag)
            if enough(arrivals) or time.monotonic() > deadline:
                break
        self._ch.cancel()
        return arrivals


def rabbitmqctl(*args: str, node: str | None = None, timeout: float = 60) -> str:
    cmd = ["rabbitmqctl", *(["-n", node] if node else []), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=True)
    return done.stdout


def warren_connection_pids(worker: str, node: str | None = None) -> list[str]:
    """Broker-side pids of the connections Warren opened for ``worker`` (by connection_name)."""
    out = rabbitmqctl(
        "list_connections", "pid", "client_properties", "--no-table-headers", "--quiet", node=node
    )
    want = f'{{"connection_name","warren:{worker}"}}'
    return [line.split("\t", 1)[0] for line in out.splitlines() if want in line]
