"""Load on the api, and the count of what came of it at the fake provider.

``Load`` posts messages at a steady rate from a thread, as the api's clients would, and
keeps what each answer said: ``accepted`` are the messages answered 202 "queued" (the api
promised their push), ``dropped`` the 202 "dropped", ``refused`` everything else (no answer
while the api was down, a 503 while it was not ready). ``Tally`` compares the accepted ids
with what the fake provider received.
"""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Self

from tests.containers.stack import API, PROVIDER, get_json, post, wait_until

if TYPE_CHECKING:
    from types import TracebackType


@dataclass
class Load:
    rate: float = 40.0
    accepted: set[str] = field(default_factory=set)  # the provider's ids: "push-<id>"
    dropped: int = 0
    refused: int = 0  # every answer but 202, and no answer at all
    unanswered: int = 0  # no answer at all: the api may have stored the message and died
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _post_one(self, i: int) -> None:
        body = {"from": "container-test", "to": f"device-{i}", "text": f"message {i}"}
        answered = True
        try:
            answer = post(f"{API}/messages", body, timeout=5)
        except urllib.error.HTTPError:  # an answer, not 202 (503 while it is not ready)
            answer = None
        except Exception:  # refused, reset, cut short: no answer (counted below)
            answer, answered = None, False
        with self._lock:
            self.unanswered += not answered
            if isinstance(answer, dict) and answer.get("push") == "queued":
                self.accepted.add(f"push-{answer['id']}")
            elif isinstance(answer, dict) and answer.get("push") == "dropped":
                self.dropped += 1
            else:
                self.refused += 1

    def _run(self) -> None:
        i = 0
        next_at = time.monotonic()
        while not self._stop.is_set():
            i += 1
            self._post_one(i)
            next_at += 1 / self.rate
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def sent(self) -> int:
        with self._lock:
            return len(self.accepted) + self.dropped + self.refused

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass(frozen=True)
class Tally:
    accepted: int
    delivered: int  # accepted ids the provider received
    lost: int  # accepted ids it did not
    duplicates: int  # deliveries beyond the first, over every id
    strays: int  # ids it received that no accepted message of this run has

    def line(self) -> str:
        return (
            f"accepted={self.accepted} delivered={self.delivered} lost={self.lost} "
            f"duplicates={self.duplicates}"
        )


def reset_provider() -> None:
    post(f"{PROVIDER}/reset")


def tally(load: Load) -> Tally:
    got = get_json(f"{PROVIDER}/received")
    ids = set(got["ids"])
    return Tally(
        accepted=len(load.accepted),
        delivered=len(load.accepted & ids),
        lost=len(load.accepted - ids),
        duplicates=int(got["duplicates"]),
        strays=len(ids - load.accepted),
    )


def settled(load: Load, within: float = 120) -> Tally:
    """The tally once every accepted message was delivered, or at the deadline."""
    with contextlib.suppress(AssertionError):  # the tally says what is missing
        wait_until("every accepted message delivered", lambda: tally(load).lost == 0, within)
    return tally(load)
