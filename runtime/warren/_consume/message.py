"""What a handler gets: a delivery's content and its attempt number, read from the attempts
header. Plain code, no I/O; apart from the consumer so the re-publishing side shares it."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, final

from warren._consume.outcome import ATTEMPTS_HEADER, attempts_so_far
from warren._exceptions import PoisonMessage

if TYPE_CHECKING:
    from warren._amqp import Delivered


@final
@dataclass(frozen=True)
class Message:
    """What a handler gets. ``attempt`` is 1 on first delivery, +1 per retry."""

    message_id: str | None
    body: bytes
    headers: Mapping[str, object]
    redelivered: bool
    attempt: int
    content_type: str | None

    def json(self) -> Any:
        """The body as JSON. Raises PoisonMessage if it is not (it will never be)."""
        try:
            return json.loads(self.body)
        except ValueError as exc:
            raise PoisonMessage(f"body is not JSON: {exc}") from exc


Handler = Callable[[Message], Awaitable[None]]


def message_of(delivery: Delivered, max_attempts: int) -> Message:
    """The handler's view of ``delivery``: attempt ``1 + attempts_so_far`` (once per delivery,
    on the hot path: no more than building the Message)."""
    headers = delivery.headers
    return Message(
        delivery.message_id,
        delivery.body,
        headers,
        delivery.redelivered,
        1 + attempts_so_far(headers.get(ATTEMPTS_HEADER), max_attempts),
        delivery.content_type,
    )
