"""What the API and the push sender agree on: the queue, and the push job's shape."""

from __future__ import annotations

import json
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from warren import ConfigError, PoisonMessage, Queue, Topology, TopologyMismatch

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping

    from warren import QueueType

QUEUE = "push.notifications"
QUEUE_SETTING = "WARREN_PUSH_QUEUE"
QUEUE_TYPE_SETTING = "WARREN_PUSH_QUEUE_TYPE"
QUEUE_SETTINGS = f"{QUEUE_SETTING} / {QUEUE_TYPE_SETTING}"  # how a refused topology is named


def queue_name(env: Mapping[str, str]) -> str:
    """The push queue (``WARREN_PUSH_QUEUE``, default ``push.notifications``)."""
    return env.get(QUEUE_SETTING, "").strip() or QUEUE


def queue_type(env: Mapping[str, str]) -> QueueType:
    """``WARREN_PUSH_QUEUE_TYPE``: ``quorum`` (the default: replicated in a cluster) or
    ``classic``."""
    value = env.get(QUEUE_TYPE_SETTING, "").strip() or "quorum"
    if value not in ("quorum", "classic"):
        raise ConfigError(QUEUE_TYPE_SETTING, f"unknown type {value!r}; choose quorum or classic")
    return cast("QueueType", value)


INVALID_TOKENS_QUEUE = "push.invalid_tokens"
INVALID_TOKENS_SETTING = "WARREN_PUSH_INVALID_TOKENS_QUEUE"


def invalid_tokens_topology(queue: str, kind: QueueType) -> Topology:
    """The dead-token events' queue, of the push queue's type."""
    arguments = {"x-queue-type": "quorum"} if kind == "quorum" else None
    return Topology(queues=(Queue(name=queue, arguments=arguments),))


def invalid_token_event(job: PushJob, reason: str, provider: str) -> dict[str, str]:
    """What the application gets when the provider says a device token is dead: enough to
    delete the token (the push's own ``message_id`` ties it to the message)."""
    return {
        "event": "push.invalid_token",
        "token": job.to,
        "reason": reason,
        "provider": provider,
        "message_id": job.message_id,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def topology(queue: str, kind: QueueType) -> Topology:
    """The queue and its dead-letter queue, declared the same way by the API and the
    sender (the sender's consumer adds its delay queues), so either can start first."""
    arguments = {"x-queue-type": "quorum"} if kind == "quorum" else None
    return Topology(queues=(Queue(name=queue, arguments=arguments),
                            Queue(name=f"{queue}.dlq", arguments=arguments)))  # fmt: skip


@contextmanager
def named_settings() -> Iterator[None]:
    """A topology the broker refuses is a bad ``WARREN_PUSH_QUEUE(_TYPE)``: exit 2 naming
    both, with the broker's words (the queue, the argument, both values)."""
    try:
        yield
    except TopologyMismatch as exc:
        raise ConfigError(
            QUEUE_SETTINGS,
            f"{exc.detail} (an existing queue of another type?"
            f" set {QUEUE_TYPE_SETTING} to match it)",
        ) from None


@dataclass(frozen=True)
class PushJob:
    message_id: str
    to: str
    title: str
    body: str
    data: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"message_id": self.message_id, "to": self.to, "title": self.title,
                "body": self.body, "data": self.data}  # fmt: skip


def parse_push_job(raw: bytes) -> PushJob:
    """Decode and validate; anything else is poison (dead-lettered with the reason)."""
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise PoisonMessage(f"not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise PoisonMessage("a push job is a JSON object")
    for field in ("message_id", "to", "title", "body"):
        if not isinstance(doc.get(field), str) or (field != "body" and not doc[field]):
            raise PoisonMessage(f"field {field!r} must be a non-empty string")
    data = doc.get("data") or {}
    if not isinstance(data, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise PoisonMessage("field 'data' must be an object of strings")
    return PushJob(doc["message_id"], doc["to"], doc["title"], doc["body"], data)
