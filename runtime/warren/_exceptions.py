"""Warren's one exception tree.

What a caller catches, by branch::

    WarrenError
    ├── ConfigError              a setting is invalid (names the setting); exit code 2
    ├── BrokerError              the broker or the link to it failed
    │   ├── AccessRefused        credentials or vhost permissions rejected; never retried quietly
    │   └── ConnectionGaveUp     reconnect attempts ran out; carries the jobs that die with it
    ├── PublishError             a single job did not make it
    │   ├── InvalidJob           refused at submit: not serializable, too large, bad field
    │   ├── BufferFull           refused at submit: the buffer is full and the policy refuses
    │   ├── JobReturned          the broker returned it as unroutable (mandatory flag)
    │   └── JobDropped           accepted, then dropped (evicted, or unflushed at shutdown)
    ├── PublisherClosed          closed by us: submit after shutdown began
    ├── PoisonMessage            raised by a consumer's handler: never retry, dead-letter now
    └── RetryLater               raised by a consumer's handler: retry, not before ``delay`` s

The line between *closed by us* (``PublisherClosed``) and *broken by the world*
(``BrokerError``) follows trio's ``ClosedResourceError`` / ``BrokenResourceError`` split.
"""

from __future__ import annotations


class WarrenError(Exception):
    """Base of every error Warren raises."""


class ConfigError(WarrenError, ValueError):
    """A setting is invalid. ``setting`` names it (the env var name when it came from one)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting


class BrokerError(WarrenError):
    """The broker, or the network path to it, failed."""


class AccessRefused(BrokerError):
    """The broker refused the credentials or the vhost (AMQP 403 ACCESS_REFUSED)."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"access refused by {url}: {detail}")
        self.url = url
        self.detail = detail


class TlsRefused(AccessRefused):
    """A certificate was refused: the broker's failed verification (unknown CA, wrong host
    name, expired), or the broker refused ours. Final, as a refused login is: reconnecting
    would only repeat it."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(url, detail)
        self.args = (f"certificate refused at {url}: {detail}",)

    def __str__(self) -> str:
        return str(self.args[0])


class ConnectionGaveUp(BrokerError):
    """Reconnecting failed ``attempts`` times in a row; ``jobs_lost`` buffered jobs die with it."""

    def __init__(self, attempts: int, jobs_lost: int, last_error: str) -> None:
        super().__init__(
            f"gave up reconnecting after {attempts} attempts; {jobs_lost} buffered jobs lost;"
            f" last error: {last_error}"
        )
        self.attempts = attempts
        self.jobs_lost = jobs_lost
        self.last_error = last_error


class TopologyMismatch(BrokerError):
    """The broker refused the topology as declared, for good: an existing queue or exchange
    with other arguments (406 PRECONDITION_FAILED: the message names the queue, the argument
    and both values), or a queue declared passive that does not exist (404 NOT_FOUND).
    Retrying cannot help, so the worker stops (``warren run`` exits 2)."""

    def __init__(self, url: str, detail: str) -> None:
        super().__init__(f"the broker at {url} refused the topology: {detail}")
        self.url = url
        self.detail = detail


class PublishError(WarrenError):
    """A single job was not (or will not be) confirmed by the broker."""


class InvalidJob(PublishError, ValueError):
    """The job was refused at submit: it cannot be serialized, is too large, or a field is bad."""


class BufferFull(PublishError):
    """The buffer holds ``capacity`` jobs and the overflow policy refuses the new one."""

    def __init__(self, capacity: int, hint: str = "") -> None:
        super().__init__(f"buffer full ({capacity} jobs){hint}")
        self.capacity = capacity


class OutboxError(PublishError):
    """The durable buffer could not take the job (disk full, the file over its size limit,
    an I/O error, locked by another process, or the caller's own transaction failed): the
    job was not accepted, and nothing of it was stored."""


class JobReturned(PublishError):
    """The broker returned the job as unroutable (no queue bound for its routing key)."""

    def __init__(self, message_id: str, reply_code: int, reply_text: str) -> None:
        super().__init__(f"job {message_id} returned: {reply_code} {reply_text}")
        self.message_id = message_id
        self.reply_code = reply_code
        self.reply_text = reply_text


class JobDropped(PublishError):
    """The job was accepted but dropped before the broker confirmed it; ``reason`` says why."""

    def __init__(self, message_id: str, reason: str) -> None:
        super().__init__(f"job {message_id} dropped: {reason}")
        self.message_id = message_id
        self.reason = reason


class PublisherClosed(WarrenError):
    """The publisher is shutting down or closed; it accepts no more jobs."""


class PoisonMessage(WarrenError):
    """A delivery that can never succeed (undecodable, invalid): dead-letter it at once.

    Raise it from a consumer's handler; ``reason`` goes into the dead letter's headers.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryLater(WarrenError):
    """Retry this delivery, and not before ``delay`` seconds (e.g. a provider's Retry-After).

    The consumer picks the first delay queue at least that long (at most its longest).
    ``consumes_attempt=False`` says the failure was not the message's (an outage of a
    credential the handler depends on): the retry does not count towards ``max_attempts``,
    so the message is retried, with that delay, for as long as the outage lasts and is never
    dead-lettered for it.
    """

    def __init__(self, delay: float, reason: str = "", *, consumes_attempt: bool = True) -> None:
        super().__init__(reason or f"retry in {delay:g}s")
        self.delay = delay
        self.consumes_attempt = consumes_attempt
