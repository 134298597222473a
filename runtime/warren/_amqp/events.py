"""What a connection reports, as frozen values on its event stream.

A pika callback does one thing: build one of these and hand it over. The worker loop
``match``-es on them. ``session`` numbers each connection so stale events can be told apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from warren._job import Job

LossKind = Literal[
    "closed_by_broker",  # Connection.Close from the broker (e.g. 320 CONNECTION_FORCED)
    "stream_lost",  # socket error, EOF, RST
    "heartbeat_timeout",  # pika's own heartbeat checker fired
    "dead_link",  # Warren's watchdog: no bytes from the broker for heartbeat + 0.6 s
    "confirm_timeout",  # a publish stayed unconfirmed too long
    "nacked",  # the channel answered nothing but nacks for a while: a fresh one is tried
    "channel_closed",  # the broker closed our channel; we drop the connection with it
    "consumer_cancelled",  # the broker cancelled our consumer (basic.cancel: queue deleted)
    "unknown",  # closed with no reason given: still a loss
]


@dataclass(frozen=True, slots=True)
class Connected:
    session: int
    url: str  # redacted


@dataclass(frozen=True, slots=True)
class ConnectionLost:
    """The connection is gone, however it died. ``clean``: a close handshake happened."""

    session: int
    kind: LossKind
    detail: str
    clean: bool
    reply_code: int = 0


@dataclass(frozen=True, slots=True)
class ConnectFailed:
    """An attempt to connect failed; ``attempt`` counts consecutive failures."""

    attempt: int
    url: str  # redacted
    detail: str
    fatal: bool = False  # ACCESS_REFUSED: retrying quietly would hide a config error
    topology: bool = False  # fatal because the broker refused the declared topology
    tls: bool = False  # fatal: a certificate refused, the broker's by us or ours by the broker


@dataclass(frozen=True, slots=True)
class GaveUp:
    attempts: int
    last_error: str


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    session: int
    reply_code: int
    reply_text: str


@dataclass(frozen=True, slots=True)
class Blocked:
    session: int
    reason: str


@dataclass(frozen=True, slots=True)
class Unblocked:
    session: int


@dataclass(frozen=True, slots=True)
class Confirmed:
    session: int
    jobs: tuple[Job, ...]


@dataclass(frozen=True, slots=True)
class Nacked:
    session: int
    jobs: tuple[Job, ...]


@dataclass(frozen=True, slots=True)
class Returned:
    """Unroutable (mandatory flag); the broker returned it, then acked it."""

    session: int
    job: Job
    reply_code: int
    reply_text: str


@dataclass(frozen=True, slots=True)
class Declared:
    """The topology was declared again on ``session`` (a ``Link.declare`` request)."""

    session: int


@dataclass(slots=True)  # not frozen: one is built per message, and frozen fields cost 4x
class Delivered:
    """A message the broker delivered to our consumer; ack it on ``session`` or not at all.
    Treat it as read-only."""

    session: int
    delivery_tag: int
    message_id: str | None
    headers: dict[str, object]
    body: bytes
    redelivered: bool
    content_type: str | None


ConnectionEvent = (
    Connected
    | ConnectionLost
    | ConnectFailed
    | GaveUp
    | ChannelClosed
    | Blocked
    | Unblocked
    | Confirmed
    | Nacked
    | Returned
    | Declared
    | Delivered
)
