"""A consumer's queues, with no broker: from any valid config, the names and arguments it
declares on each connect.

A delay queue's name is its TTL, so delays that share a name share the arguments (a broker
refuses a queue declared again with others: 406); every delay queue dead-letters to the work
queue by the default exchange; all of them take the work queue's type; the caller's extra
topology comes after, unchanged.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warren import ConsumerConfig
from warren._amqp import Binding, Exchange, Queue, Topology
from warren._consume.topology import consumer_topology, retry_queue_name

pytestmark = pytest.mark.timeout(60)

_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789._-", min_size=1, max_size=40)


@st.composite
def _configs(draw: st.DrawFn) -> ConsumerConfig:
    base = draw(st.floats(0.001, 100.0))
    return ConsumerConfig(
        queue=draw(_names),
        max_attempts=draw(st.integers(1, 100)),
        retry_base=base,
        retry_cap=draw(st.floats(base, 10_000.0)),
        queue_type=draw(st.sampled_from(["classic", "quorum"])),
        queue_arguments=draw(
            st.none() | st.dictionaries(st.sampled_from(["x-max-length", "x-overflow"]), _names)
        ),
        queue_passive=draw(st.booleans()),
    )


_extras = st.none() | st.builds(
    Topology,
    exchanges=st.lists(st.builds(Exchange, name=_names)).map(tuple),
    queues=st.lists(st.builds(Queue, name=_names)).map(tuple),
    bindings=st.lists(st.builds(Binding, queue=_names, exchange=_names)).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(_configs(), _extras)
def test_every_queue_is_named_and_declared_as_the_invariant_says(
    config: ConsumerConfig, extra: Topology | None
) -> None:
    q = config.queue
    built = consumer_topology(config, extra)
    extra = extra or Topology()
    typed: dict[str, Any] = {"x-queue-type": "quorum"} if config.queue_type == "quorum" else {}

    assert built.work_queue == q
    assert built.dead_letter_queue == f"{q}.dlq"
    assert built.delays == config.retry_delays()
    assert len(built.retry_queues) == len(built.delays) == max(config.max_attempts - 1, 1)
    # the order declared: work, dead-letter, one delay queue per delay, then the caller's
    queues = built.topology.queues
    assert [x.name for x in queues] == [q, f"{q}.dlq", *built.retry_queues] + [
        x.name for x in extra.queues
    ]
    delay_queues = queues[2 : 2 + len(built.delays)]
    assert queues[2 + len(built.delays) :] == extra.queues
    assert built.topology.exchanges == extra.exchanges
    assert built.topology.bindings == extra.bindings

    work, dlq = queues[0], queues[1]
    if config.queue_passive:
        assert work.passive and work.arguments is None
    else:
        assert not work.passive
        assert work.arguments == ({**(config.queue_arguments or {}), **typed} or None)
    assert dlq.arguments == (typed or None)

    by_name: dict[str, object] = {}
    for delay, name, queue in zip(built.delays, built.retry_queues, delay_queues, strict=True):
        args = dict(queue.arguments or {})
        assert name == queue.name == f"{q}.retry.{args['x-message-ttl']}ms"
        assert args["x-message-ttl"] == int(delay * 1000)
        assert args["x-dead-letter-exchange"] == ""
        assert args["x-dead-letter-routing-key"] == q  # back to the work queue
        assert args.get("x-queue-type") == typed.get("x-queue-type")
        assert by_name.setdefault(name, args) == args  # one name, one set of arguments
        # the re-publisher's routes reach a queue declared here (it declares again if not)
        assert built.topology.routes("", name)
    assert built.topology.routes("", built.dead_letter_queue)
    # a longer retry never waits in a shorter queue: what the level search relies on
    assert list(built.delays) == sorted(built.delays)


def test_the_names_and_arguments_of_an_example() -> None:
    config = ConsumerConfig(queue="jobs", max_attempts=4, retry_base=0.5, retry_cap=1.5)
    built = consumer_topology(config)
    assert built.retry_queues == ("jobs.retry.500ms", "jobs.retry.1000ms", "jobs.retry.1500ms")
    assert built.topology == Topology(
        queues=(
            Queue(name="jobs"),
            Queue(name="jobs.dlq"),
            *(
                Queue(
                    name=f"jobs.retry.{ms}ms",
                    arguments={
                        "x-message-ttl": ms,
                        "x-dead-letter-exchange": "",
                        "x-dead-letter-routing-key": "jobs",
                    },
                )
                for ms in (500, 1000, 1500)
            ),
        )
    )


def test_one_attempt_still_has_a_delay_queue_for_retries_that_are_no_attempt() -> None:
    built = consumer_topology(ConsumerConfig(queue="once", max_attempts=1, retry_base=2.0))
    assert built.delays == (2.0,)
    assert built.retry_queues == ("once.retry.2000ms",)
    assert [x.name for x in built.topology.queues] == ["once", "once.dlq", "once.retry.2000ms"]


def test_the_name_says_the_ttl_in_whole_milliseconds() -> None:
    assert retry_queue_name("q", 0.0015) == "q.retry.1ms"
    assert retry_queue_name("q", 300.0) == "q.retry.300000ms"
