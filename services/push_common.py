"""What the API and the push sender agree on: the queue, and the push job's shape."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from warren import PoisonMessage, Queue, Topology

if TYPE_CHECKING:
    from collections.abc import Mapping

QUEUE = "push.notifications"
QUEUE_SETTING = "WARREN_PUSH_QUEUE"


def queue_name(env: Mapping[str, str]) -> str:
    """The push queue (``WARREN_PUSH_QUEUE``, default ``push.notifications``)."""
    return env.get(QUEUE_SETTING, "").strip() or QUEUE


def topology(queue: str) -> Topology:
    """The queue and its dead-letter queue, declared the same way by the API and the
    sender (the sender's consumer adds its delay queues), so either can start first."""
    return Topology(queues=(Queue(name=queue), Queue(name=f"{queue}.dlq")))


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
