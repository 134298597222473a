"""Every private attribute Warren touches in pika and anyio still exists.

Warren uses a few internals on purpose (pyproject.toml pins the minor versions tested):
anyio's memory-stream state for ``select`` and the buffer's age gauge, and pika's connection
output path and stream termination in the AMQP bridge, and its input path (the delivery reader
sits in front of it). A new release that moves one fails
here, naming it, instead of somewhere deep in a worker.
"""

from __future__ import annotations

import inspect
import math
from collections import OrderedDict, deque

import anyio
import pika
import pika.channel
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pika.adapters.base_connection import BaseConnection
from pika.adapters.utils import io_services_utils
from pika.connection import Connection

pytestmark = pytest.mark.timeout(30)


def test_anyio_memory_stream_internals() -> None:
    tx, rx = anyio.create_memory_object_stream[int](math.inf)
    with tx, rx:
        for end in (tx, rx):
            state = getattr(end, "_state", None)
            assert state is not None, f"{type(end).__name__}._state is gone (used by _select)"
        state = rx._state
        assert isinstance(state.waiting_receivers, OrderedDict), "_state.waiting_receivers"
        assert isinstance(state.waiting_senders, OrderedDict), "_state.waiting_senders"
        assert isinstance(state.buffer, deque), "_state.buffer (the buffer's oldest-job age)"
    # _select parks a watcher that answers this question; anyio must still ask it
    source = inspect.getsource(MemoryObjectSendStream.send_nowait)
    assert "has_pending_cancellation" in source, "send_nowait no longer skips cancelled receivers"
    assert "waiting_receivers" in inspect.getsource(MemoryObjectReceiveStream.receive)


# Every anyio private Warren touches, and the one module allowed to touch them.
ANYIO_PRIVATES_MODULE = "warren/_select/streams.py"
ANYIO_PRIVATES = {
    "_state": r"\._state\b",
    "waiting_receivers": r"\bwaiting_receivers\b",
    "waiting_senders": r"\bwaiting_senders\b",
    "_state.buffer": r"\b_state\.buffer\b",
    "task_info": r"\btask_info\b",
    "has_pending_cancellation": r"\bhas_pending_cancellation\b",
}


def test_anyio_internals_in_one_module() -> None:
    import re
    from pathlib import Path

    import warren

    root = Path(warren.__file__).parent
    for name, pattern in ANYIO_PRIVATES.items():
        users = sorted(
            path.relative_to(root.parent).as_posix()
            for path in root.rglob("*.py")
            if re.search(pattern, path.read_text(encoding="utf-8"))
        )
        assert users == [ANYIO_PRIVATES_MODULE], f"anyio's {name} used in {users}"


def test_pika_connection_internals() -> None:
    for name in ("_output_marshaled_frames", "_terminate_stream"):
        assert callable(getattr(Connection, name, None)), f"pika Connection.{name} is gone"
    connection = inspect.getsource(Connection)
    assert "self._body_max_length =" in connection, "pika Connection._body_max_length is gone"
    base = inspect.getsource(BaseConnection.__init__)
    assert "self._transport" in base, "pika BaseConnection._transport is gone"
    transport = inspect.getsource(io_services_utils._AsyncTransportBase.__init__)
    assert "self._tx_buffers" in transport, "pika's transport _tx_buffers is gone"
    assert "self._sock" in transport, "pika's transport _sock is gone (the watchdog reads it)"
    # the delivery reader (_amqp/_receive.py) sits in front of these
    assert callable(getattr(Connection, "_on_data_available", None))
    assert "self._frame_buffer" in connection and "self.bytes_received" in connection
    base_module = inspect.getsource(inspect.getmodule(BaseConnection))  # type: ignore[arg-type]
    assert "self._on_data_available(data)" in base_module, "pika's transport feeds it no more"
    assert "self.connection = connection" in inspect.getsource(pika.channel.Channel.__init__)
    # ... and makes the transport read more per recv() and per readable event
    consume = inspect.getsource(io_services_utils._AsyncTransportBase._consume)
    for name in ("_MAX_RECV_BYTES", "_MAX_CONSUME_BYTES"):
        assert isinstance(getattr(io_services_utils._AsyncTransportBase, name, None), int), name
        assert f"self.{name}" in consume, f"pika's transport no longer reads {name}"
    assert isinstance(pika.__version__, str)


# Every pika private Warren touches, and the one module allowed to touch them.
PIKA_PRIVATES_MODULE = "warren/_amqp/pika_internals.py"
PIKA_PRIVATES = (
    "_terminate_stream",
    "_output_marshaled_frames",
    "_body_max_length",
    "_transport",
    "_sock",
    "_tx_buffers",
    "_on_data_available",
    "_frame_buffer",
    "_MAX_RECV_BYTES",
    "_MAX_CONSUME_BYTES",
)


def test_pika_internals_in_one_module() -> None:
    """Each name above is used (as ``._name`` or a ``getattr``/``hasattr`` string) in
    ``_amqp/pika_internals.py`` and nowhere else in the library; the checks above say each
    still exists in pika."""
    import re
    from pathlib import Path

    import warren

    root = Path(warren.__file__).parent
    sources = {
        path.relative_to(root.parent).as_posix(): path.read_text(encoding="utf-8")
        for path in root.rglob("*.py")
    }
    for name in PIKA_PRIVATES:
        pattern = re.compile(rf"\.{name}\b|[\"']{name}[\"']")
        users = sorted(where for where, text in sources.items() if pattern.search(text))
        assert users == [PIKA_PRIVATES_MODULE], f"pika's {name} used in {users}"
