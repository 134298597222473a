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
MAX_QUEUE_BYTES = 255  # an AMQP short string


def check_queue_name(setting: str, name: str, *, suffix: str = "") -> str:
    """``name`` if the broker can take it (and ``name + suffix``, a queue derived from it):
    at most 255 bytes of UTF-8, not in the broker's reserved ``amq.`` namespace. Else a
    ``ConfigError`` naming ``setting``: a name the broker refuses would otherwise be retried
    for ever (a short string AMQP cannot carry) or read as refused credentials (403)."""
    try:
        size = len((name + suffix).encode())
    except UnicodeEncodeError:  # an environment that was not UTF-8 (surrogate escapes)
        raise ConfigError(setting, "is not valid UTF-8") from None
    if size > MAX_QUEUE_BYTES:
        with_suffix = f" with its {suffix!r} suffix" if suffix else ""
        raise ConfigError(
            setting,
            f"{name[:40]!r}... is {size} bytes in UTF-8{with_suffix};"
            f" AMQP allows at most {MAX_QUEUE_BYTES}",
        )
    if name.startswith("amq."):
        raise ConfigError(setting, f"{name[:40]!r}: names starting 'amq.' are the broker's own")
    return name


def queue_name(env: Mapping[str, str]) -> str:
    """The push queue (``WARREN_PUSH_QUEUE``, default ``push.notifications``), with room
    for its ``.dlq``."""
    return check_queue_name(QUEUE_SETTING, env.get(QUEUE_SETTING, "").strip() or QUEUE,
                            suffix=".dlq")  # fmt: skip


def queue_type(env: Mapping[str, str]) -> QueueType:
    """``WARREN_PUSH_QUEUE_TYPE``: ``quorum`` (the default: replicated in a cluster) or
    ``classic``."""
    value = env.get(QUEUE_TYPE_SETTING, "").strip() or "quorum"
    if value not in ("quorum", "classic"):
        raise ConfigError(QUEUE_TYPE_SETTING, f"unknown type {value!r}; choose quorum or classic")
    return cast("QueueType", value)


INVALID_TOKENS_QUEUE = "push.invalid_tokens"
INVALID_TOKENS_SETTING = "WARREN_PUSH_INVALID_TOKENS_QUEUE"


def invalid_tokens_queue(env: Mapping[str, str]) -> str:
    """``WARREN_PUSH_INVALID_TOKENS_QUEUE`` (default ``push.invalid_tokens``; empty: none)."""
    value = env.get(INVALID_TOKENS_SETTING, INVALID_TOKENS_QUEUE).strip()
    return check_queue_name(INVALID_TOKENS_SETTING, value) if value else ""


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
def named_settings(invalid_tokens: str = "") -> Iterator[None]:
    """A topology the broker refuses is a bad setting: exit 2 naming it, with the broker's
    words (the queue, the argument, both values). The dead-token events' queue
    (``invalid_tokens``, when the broker's words name it) is ``WARREN_PUSH_INVALID_TOKENS_QUEUE``;
    anything else is ``WARREN_PUSH_QUEUE(_TYPE)``."""
    try:
        yield
    except TopologyMismatch as exc:
        raise _named(exc, invalid_tokens) from None
    except BaseExceptionGroup as group:  # raised out of a task group
        mismatch, rest = group.split(TopologyMismatch)
        if mismatch is None or rest is not None:
            raise
        first = mismatch.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        assert isinstance(first, TopologyMismatch)
        raise _named(first, invalid_tokens) from None


def _named(exc: TopologyMismatch, invalid_tokens: str) -> ConfigError:
    if invalid_tokens and f"queue '{invalid_tokens}'" in exc.detail:
        return ConfigError(
            INVALID_TOKENS_SETTING,
            f"{exc.detail} (an existing queue of another type? it is declared with the push"
            f" queue's type, {QUEUE_TYPE_SETTING}: name another queue, or move this one)",
        )
    return ConfigError(
        QUEUE_SETTINGS,
        f"{exc.detail} (an existing queue of another type? set {QUEUE_TYPE_SETTING} to match it)",
    )


# FCM reserves every data key beginning with "google" or "gcm", and these words; it does not
# say its comparison is case-sensitive, so they are refused in any case.
_FCM_RESERVED_WORDS = frozenset({"from", "message_type", "collapse_key"})
WARREN_DATA_KEYS = frozenset({"message_id", "warren_message_id"})  # the ids Warren adds


def fcm_reserved(key: str) -> bool:
    """Whether FCM refuses ``key`` in a message's ``data`` (the empty key too)."""
    folded = key.lower()
    return not key or folded in _FCM_RESERVED_WORDS or folded.startswith(("google", "gcm"))


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
    # from a producer other than the api (which answers 422): FCM would refuse it for good
    for key in data:
        if fcm_reserved(key) or key.lower() == "warren_message_id":
            raise PoisonMessage(f"data key {key[:64]!r} is reserved by FCM (or Warren)")
    return PushJob(doc["message_id"], doc["to"], doc["title"], doc["body"], data)
