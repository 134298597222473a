"""Making jobs, with no broker: a job carries the ``message_id`` asked for, or a fresh one
no other job of the publisher has; its body is the payload's bytes; what cannot be sent is
refused before it takes any room."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warren import InvalidJob, PublisherClosed, PublisherConfig
from warren._publish.job_maker import JobMaker

IDS = st.one_of(st.none(), st.text(min_size=1, max_size=20))


@given(ids=st.lists(IDS, max_size=20), payload=st.binary(max_size=64))
def test_a_job_has_the_id_asked_for_or_a_fresh_one(ids: list[str | None], payload: bytes) -> None:
    make = JobMaker(PublisherConfig(exchange="ex"), "p", lambda: 1.0).make
    fresh: set[str] = set()
    for asked in ids:
        job = make(payload, "rk", None, None, asked)
        assert job.body == payload
        assert (job.exchange, job.routing_key, job.submitted_at) == ("ex", "rk", 1.0)
        if asked is None:
            assert job.message_id not in fresh
            fresh.add(job.message_id)
        else:
            assert job.message_id == asked


def test_what_cannot_be_sent_is_refused() -> None:
    maker = JobMaker(PublisherConfig(max_job_bytes=16), "p", lambda: 0.0)
    assert json.loads(maker.make({"a": 1}, "rk", "", None, None).body) == {"a": 1}
    with pytest.raises(InvalidJob):
        maker.make(b"x" * 17, "rk", None, None, None)
    with pytest.raises(InvalidJob):
        maker.make(b"x", "rk", None, None, "")
    with pytest.raises(InvalidJob):
        maker.make({1, 2}, "rk", None, None, None)
    maker.closed = True
    with pytest.raises(PublisherClosed, match="closed to new jobs"):
        maker.make(b"x", "rk", None, None, None)
