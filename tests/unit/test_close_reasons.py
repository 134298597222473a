"""How a pika connection ended, mapped to Warren's events with no broker: every close reason
pika gives, the way it wraps a failed open, and the decision a closed connection is reported
by. Each maps to exactly one event, with credentials redacted."""

from __future__ import annotations

import socket

import pika
import pika.exceptions as pe
import pytest
from pika.adapters.utils.connection_workflow import (
    AMQPConnectionWorkflowFailed,
    AMQPConnectorSocketConnectError,
)

from warren._amqp.close_reasons import (
    close_outcome,
    loss_from,
    open_failure,
    pika_failure,
    raised_inside_pika,
)
from warren._amqp.events import ConnectFailed, ConnectionLost
from warren._amqp.watchdog import WatchdogAbort

pytestmark = pytest.mark.timeout(30)
URL = "amqp://user:s3cret@broker:5672/%2F"


@pytest.mark.parametrize(
    ("reason", "kind", "clean", "reply_code"),
    [
        (WatchdogAbort("dead_link", "no bytes"), "dead_link", False, 0),
        (WatchdogAbort("nacked", "only nacks"), "nacked", False, 0),
        (pe.ConnectionClosedByBroker(320, "CONNECTION_FORCED"), "closed_by_broker", True, 320),
        (pe.AMQPHeartbeatTimeout("no heartbeat"), "heartbeat_timeout", False, 0),
        (pe.StreamLostError("Stream connection lost: reset"), "stream_lost", False, 0),
        (None, "unknown", False, 0),
        (RuntimeError("odd"), "unknown", False, 0),
    ],
)
def test_every_close_reason_is_one_loss(
    reason: BaseException | None, kind: str, clean: bool, reply_code: int
) -> None:
    lost = loss_from(7, reason)
    assert (lost.session, lost.kind, lost.clean, lost.reply_code) == (7, kind, clean, reply_code)


def test_details_are_redacted() -> None:
    lost = loss_from(1, pe.StreamLostError(f"lost {URL}"))
    assert "s3cret" not in lost.detail
    failed = open_failure(1, URL, OSError(f"cannot reach {URL}"))
    assert "s3cret" not in failed.detail and "s3cret" not in failed.url


def test_a_failed_open_names_the_innermost_cause_and_is_retried() -> None:
    refused = ConnectionRefusedError(111, "Connection refused")
    wrapped = pe.AMQPConnectionError(
        AMQPConnectionWorkflowFailed([AMQPConnectorSocketConnectError(refused)])
    )
    failed = open_failure(3, URL, wrapped)
    assert failed == ConnectFailed(3, failed.url, "ConnectionRefusedError: [Errno 111] "
                                   "Connection refused", fatal=False)  # fmt: skip


@pytest.mark.parametrize(
    "err",
    [
        pe.ProbableAuthenticationError("bad credentials"),
        pe.ProbableAccessDeniedError("no vhost"),
        pe.AMQPConnectionError(pe.ConnectionClosedByBroker(403, "ACCESS_REFUSED - Login")),
        "ACCESS_REFUSED - Login was refused",
    ],
)
def test_a_refused_login_is_fatal(err: BaseException | str) -> None:
    assert open_failure(1, URL, err).fatal


def test_the_close_decision() -> None:
    common = {"session": 2, "attempt": 4, "url": URL}
    forced = pe.ConnectionClosedByBroker(320, "CONNECTION_FORCED")

    def decide(**kw: object) -> ConnectionLost | ConnectFailed | None:
        args = {"intentional": False, "consumer_cancelled": False, "channel_loss": None,
                "ready_once": True, **common, **kw}  # fmt: skip
        return close_outcome(forced, **args)  # type: ignore[arg-type]

    assert decide(intentional=True) is None, "closed on purpose"
    cancelled = decide(consumer_cancelled=True)
    assert isinstance(cancelled, ConnectionLost) and cancelled.kind == "consumer_cancelled"
    assert decide() == loss_from(2, forced)
    refused = decide(channel_loss=(406, "PRECONDITION_FAILED"), ready_once=False)
    assert isinstance(refused, ConnectFailed) and refused.fatal and refused.topology
    assert refused.detail == "406 PRECONDITION_FAILED" and "s3cret" not in refused.url
    # the same refusal after the first connect (a re-declare) is a loss, retried
    later = decide(channel_loss=(406, "PRECONDITION_FAILED"), ready_once=True)
    assert later == ConnectionLost(2, "channel_closed", "406 PRECONDITION_FAILED", clean=True,
                                   reply_code=406)  # fmt: skip
    # a channel lost during an intentional close is still reported
    denied = decide(channel_loss=(403, "ACCESS_REFUSED"), intentional=True, ready_once=False)
    assert isinstance(denied, ConnectionLost) and denied.reply_code == 403
    # a missing passive queue is final; a queue whose node or process is not there is not:
    # RabbitMQ says so to a declare racing another connection's of the same new queue (CI:
    # the push-sender's consumer and its re-publisher, starting together, exited 2)
    missing = decide(channel_loss=(404, "NOT_FOUND - no queue 'q' in vhost '/'"), ready_once=False)
    assert isinstance(missing, ConnectFailed) and missing.topology
    text = ("NOT_FOUND - home node 'rabbit@localhost' of durable queue 'q.dlq' in vhost '/' "
            "is down or inaccessible")  # fmt: skip
    racing = decide(channel_loss=(404, text), ready_once=False)
    assert isinstance(racing, ConnectionLost) and racing.reply_code == 404


def test_an_exception_out_of_pikas_ioloop_is_a_loss_or_a_failed_attempt() -> None:
    exc = ValueError("getpeername")
    lost = pika_failure(exc, session=1, attempt=2, url=URL, ready_once=True)
    assert lost == ConnectionLost(1, "stream_lost", "ValueError: getpeername", clean=False)
    failed = pika_failure(exc, session=1, attempt=2, url=URL, ready_once=False)
    assert isinstance(failed, ConnectFailed) and failed.attempt == 2 and not failed.fatal


def test_only_pikas_own_exceptions_count_as_raised_inside_pika() -> None:
    with pytest.raises(ValueError, match="heartbeat") as from_pika:
        pika.URLParameters("amqp://h/?heartbeat=notanumber")
    assert raised_inside_pika(from_pika.value)
    with pytest.raises(socket.gaierror) as ours:
        raise socket.gaierror("ours")
    assert not raised_inside_pika(ours.value)
    assert not raised_inside_pika(ValueError("never raised"))
