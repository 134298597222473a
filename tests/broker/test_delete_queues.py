"""``warren.testing.delete_queues``: the clean-up demos and tests rely on."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest

from warren import BrokerError
from warren.testing import delete_queues

if TYPE_CHECKING:
    from tests.support.broker import Broker

pytestmark = [pytest.mark.broker, pytest.mark.timeout(30)]


def test_it_deletes_queues_messages_and_all_and_a_missing_one_is_no_error(
    broker_url: str, broker: Broker
) -> None:
    names = [f"warren.test.delete.{uuid.uuid4().hex[:8]}" for _ in range(2)]
    for name in names:
        broker.declare_queue(name)
    broker.publish(names[0], b"left behind", message_id="m")
    delete_queues(broker_url, [*names, f"warren.test.never.{uuid.uuid4().hex[:8]}"])
    assert not any(broker.exists(name) for name in names)


def test_an_unreachable_broker_is_a_broker_error_without_the_password() -> None:
    with pytest.raises(BrokerError, match=r"deleting queues at amqp://guest:\*\*\*@") as info:
        delete_queues("amqp://guest:s3cret@127.0.0.1:1/%2F", ["q"], timeout=2)
    assert "s3cret" not in str(info.value)
