"""How a pika connection ended, as exactly one of Warren's events.

pika reports an end in many shapes: a failed open as an exception wrapped two or three deep
(or a string), a closed connection as a close reason, now and then an exception raised out of
its ioloop. Warren reports each as one ``ConnectFailed`` (the attempt failed; fatal when the
broker refused the credentials or the topology, since retrying would only repeat it) or one
``ConnectionLost`` (it was up and went away), or None for a close on purpose. The most
specific match wins, and every detail is redacted. This is the one place pika's exceptions are
translated; plain code with no I/O (``tests/unit/test_close_reasons.py``).
"""

from __future__ import annotations

import os
import ssl
from typing import Any

import pika.exceptions as pe
from pika.adapters.utils.connection_workflow import AMQPConnectionWorkflowFailed

from warren._amqp.events import ConnectFailed, ConnectionLost
from warren._amqp.watchdog import WatchdogAbort
from warren._common.redact import redact_text, redact_url

TOPOLOGY_REFUSED = (404, 406)  # NOT_FOUND (passive), PRECONDITION_FAILED (other arguments)


def loss_from(session: int, reason: BaseException | None) -> ConnectionLost:
    """Map every way an open pika connection can end to one event; most specific first."""
    if isinstance(reason, WatchdogAbort):
        return ConnectionLost(session, reason.kind, str(reason), clean=False)
    if isinstance(reason, pe.ConnectionClosedByBroker):
        return ConnectionLost(
            session,
            "closed_by_broker",
            f"{reason.reply_code} {reason.reply_text}",
            clean=True,
            reply_code=reason.reply_code,
        )
    if isinstance(reason, pe.AMQPHeartbeatTimeout):
        return ConnectionLost(session, "heartbeat_timeout", str(reason), clean=False)
    if isinstance(reason, pe.StreamLostError):
        return ConnectionLost(session, "stream_lost", redact_text(str(reason)), clean=False)
    if reason is None:
        return ConnectionLost(session, "unknown", "closed with no reason given", clean=False)
    detail = redact_text(f"{type(reason).__name__}: {reason}")
    return ConnectionLost(session, "unknown", detail, clean=False)


def open_failure(attempt: int, url: str, err: BaseException | str) -> ConnectFailed:
    """Map a failed open; ACCESS_REFUSED is fatal, everything else is retried.

    pika wraps the cause two or three times (``AMQPConnectionError`` around a workflow
    failure around a connector error around the ``OSError``); the detail names the innermost
    one, e.g. ``ConnectionRefusedError: [Errno 111] Connection refused``.
    """
    chain: list[Any] = [err]
    while True:
        last = chain[-1]
        if isinstance(last, AMQPConnectionWorkflowFailed) and last.exceptions:
            chain.append(last.exceptions[-1])
        elif isinstance(getattr(last, "exception", None), BaseException):
            chain.append(last.exception)  # pika's AMQPConnectorException family
        elif (
            isinstance(last, pe.AMQPConnectionError)
            and len(last.args) == 1
            and isinstance(last.args[0], BaseException)
        ):
            chain.append(last.args[0])
        else:
            break
    last = chain[-1]
    text = redact_text(f"{type(last).__name__}: {last}".rstrip(": "))
    if any(isinstance(e, pe.AuthenticationError) for e in chain):
        # the broker offers none of the mechanisms pika would use (EXTERNAL, for a
        # password-less URL with a client certificate): a setting, not a network error
        text += (" (the broker does not offer this login mechanism: for EXTERNAL, enable "
                 "rabbitmq_auth_mechanism_ssl, or put a user and password in the URL)")  # fmt: skip
    fatal = (
        any(
            isinstance(
                e,
                pe.ProbableAuthenticationError
                | pe.ProbableAccessDeniedError
                | pe.AuthenticationError,
            )
            or (isinstance(e, pe.ConnectionClosedByBroker) and e.reply_code == 403)
            for e in chain
        )
        or "ACCESS_REFUSED" in text
    )
    # a broker's alert after the handshake (TLS 1.3 verifies the client's certificate then)
    # reaches pika's first read, and arrives here only as the text of a lost stream
    tls = any(_tls_refusal(e) for e in chain) or any(a in text for a in _REFUSED_BY_BROKER)
    return ConnectFailed(attempt, redact_url(url), text, fatal=fatal or tls, tls=tls)


# TLS alerts a broker sends when it refuses the client's certificate (or its absence)
# (TLS 1.2 brokers refuse a missing client certificate with a bare HANDSHAKE_FAILURE, which
# a protocol or cipher mismatch also gives: a setting to fix either way, never a retry)
_REFUSED_BY_BROKER = ("ALERT_UNKNOWN_CA", "ALERT_BAD_CERTIFICATE", "ALERT_CERTIFICATE_REQUIRED",
                      "ALERT_CERTIFICATE_UNKNOWN", "ALERT_CERTIFICATE_EXPIRED",
                      "ALERT_CERTIFICATE_REVOKED", "ALERT_ACCESS_DENIED",
                      "ALERT_HANDSHAKE_FAILURE", "ALERT_PROTOCOL_VERSION",
                      "ALERT_INSUFFICIENT_SECURITY")  # fmt: skip


def _tls_refusal(exc: object) -> bool:
    """A certificate refused, which no retry changes: the broker's, by our verification, or
    ours, by the broker (a TLS alert). A handshake that times out or is cut is not this."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return True
    reason = getattr(exc, "reason", None)
    return (
        isinstance(exc, ssl.SSLError)
        and isinstance(reason, str)
        and reason.endswith(_REFUSED_BY_BROKER)
    )


def close_outcome(
    reason: BaseException | None,
    *,
    session: int,
    attempt: int,
    url: str,
    intentional: bool,
    consumer_cancelled: bool,
    channel_loss: tuple[int, str] | None,
    ready_once: bool,
) -> ConnectionLost | ConnectFailed | None:
    """How a connection that pika closed ended (None: on purpose). ``channel_loss``: the
    broker closed our channel first (reply code and text); ``ready_once``: it was announced."""
    if intentional and channel_loss is None:
        return None
    if consumer_cancelled:
        return ConnectionLost(
            session, "consumer_cancelled", "the broker cancelled the consumer", clean=True
        )
    if channel_loss is None:
        return loss_from(session, reason)
    code, text = channel_loss
    if not ready_once and code in TOPOLOGY_REFUSED and not _queue_unavailable(text):
        # declaring the topology on connect: an existing queue with other arguments, or a
        # passive queue that is missing. Final: reconnecting would repeat it.
        return ConnectFailed(attempt, redact_url(url), f"{code} {text}", fatal=True, topology=True)
    return ConnectionLost(session, "channel_closed", f"{code} {text}", clean=True, reply_code=code)


def _queue_unavailable(text: str) -> bool:
    """A 404 that says the queue's node is down or its process not (yet) there, not that the
    queue is missing: RabbitMQ answers that to a declare that races another connection's
    declare of the same new durable queue (two workers of one process start together; CI
    saw it), or while the queue's node is away. It passes: retried, never final."""
    return "is down or inaccessible" in text


def pika_failure(
    exc: Exception, *, session: int, attempt: int, url: str, ready_once: bool
) -> ConnectionLost | ConnectFailed:
    """pika raised ``exc`` out of its ioloop instead of reporting a failure (seen: a
    ``ValueError`` from getpeername() on a socket reset right after connect). The connection
    is gone either way: lost if it was ever announced, else a failed attempt."""
    if ready_once:
        detail = redact_text(f"{type(exc).__name__}: {exc}")
        return ConnectionLost(session, "stream_lost", detail, clean=False)
    return open_failure(attempt, url, exc)


def raised_inside_pika(exc: BaseException) -> bool:
    """True if the innermost frame of ``exc``'s traceback is pika's own code (else it is a
    bug of Warren's: it must fail loudly, never be retried as a connection failure)."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"{os.sep}pika{os.sep}" in tb.tb_frame.f_code.co_filename
