"""What a handler gets, with no broker: a delivery's content as it came, and its attempt
number from the attempts header (1 + the count, as far as it can be trusted)."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warren import Message, PoisonMessage
from warren._amqp import Delivered
from warren._consume.message import message_of
from warren._consume.outcome import ATTEMPTS_HEADER

pytestmark = pytest.mark.timeout(60)


@given(
    st.one_of(st.none(), st.integers(), st.booleans(), st.text(max_size=3)),
    st.integers(1, 100),
    st.binary(max_size=20),
    st.booleans(),
)
def test_a_message_is_its_delivery_with_an_attempt_in_range(
    header: object, max_attempts: int, body: bytes, redelivered: bool
) -> None:
    headers: dict[str, object] = {"k": 1} if header is None else {"k": 1, ATTEMPTS_HEADER: header}
    delivery = Delivered(3, 7, "m-1", headers, body, redelivered, "text/plain")
    message = message_of(delivery, max_attempts)
    assert type(message) is Message  # the class ``warren`` exports
    assert (message.message_id, message.body, message.headers) == ("m-1", body, headers)
    assert (message.redelivered, message.content_type) == (redelivered, "text/plain")
    assert 1 <= message.attempt <= max_attempts + 1
    if isinstance(header, int) and not isinstance(header, bool) and 0 <= header <= max_attempts:
        assert message.attempt == header + 1


def test_json_or_poison() -> None:
    message = message_of(Delivered(1, 1, None, {}, b'{"a": 1}', False, None), 5)
    assert message.json() == {"a": 1}
    with pytest.raises(PoisonMessage, match="body is not JSON"):
        dataclasses.replace(message, body=b"{nope").json()
    with pytest.raises(dataclasses.FrozenInstanceError):
        message.attempt = 2  # type: ignore[misc]
