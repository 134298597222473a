"""Every private attribute Warren touches in pika and anyio still exists.

Warren uses a few internals on purpose (pyproject.toml pins the minor versions tested):
anyio's memory-stream state for ``select`` and the buffer's age gauge, and pika's connection
output path and stream termination in the AMQP bridge, and its input path (the delivery reader
sits in front of it). A new release that moves one fails
here, naming it, instead of somewhere deep in a worker.
"""

from __future__ import annotations

import ast
import inspect
import math
from collections import OrderedDict, deque
from pathlib import Path

import anyio
import pika
import pika.channel
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pika.adapters.base_connection import BaseConnection
from pika.adapters.utils import io_services_utils
from pika.connection import Connection

ROOT = Path(__file__).resolve().parents[2]

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
    # the delivery reader (_amqp/receive.py) sits in front of these
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


# Any private attribute Warren reads or writes that Warren itself does not define is another
# library's: each is allowed in one module only. os._exit is the documented forced exit of
# a second signal (runner.py), not an internal.
FOREIGN_PRIVATES_ALLOWED = {
    PIKA_PRIVATES_MODULE: set(PIKA_PRIVATES),
    ANYIO_PRIVATES_MODULE: {"_state"},
    "warren/_run/runner.py": {"_exit"},
}


def _defined_names(trees: list[ast.AST]) -> set[str]:
    """Every name Warren's own code defines: functions, classes, arguments, imports, module
    and local names, and attributes it sets on ``self``/``cls``."""
    defined: set[str] = set()
    for tree in trees:
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.arg):
                defined.add(node.arg)
            elif isinstance(node, ast.alias):
                defined.add((node.asname or node.name).split(".")[0])
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif (
                isinstance(node, ast.Attribute)
                and isinstance(node.ctx, ast.Store)
                and isinstance(node.value, ast.Name)
                and node.value.id in ("self", "cls")
            ):
                defined.add(node.attr)
    return defined


def _private_uses(tree: ast.AST) -> set[str]:
    """``x._name`` and ``getattr(x, "_name")`` (and has/setattr) in one module."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "hasattr", "setattr", "delattr")
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            names.add(node.args[1].value)
    return {name for name in names if name.startswith("_") and not name.startswith("__")}


def test_other_libraries_internals_only_in_their_one_module() -> None:
    """Generic: not a list of names to look for, but every private attribute Warren's code
    (library and services) uses without defining it."""
    files = [
        (path, path.relative_to(root).as_posix())
        for root in (ROOT / "runtime", ROOT / "services")
        for path in sorted(root.rglob("*.py"))
    ]
    trees = {where: ast.parse(path.read_text(), filename=str(path)) for path, where in files}
    defined = _defined_names(list(trees.values()))
    found = {where: _private_uses(tree) - defined for where, tree in trees.items()}
    found = {where: names for where, names in found.items() if names}
    unexpected = {
        where: sorted(names - FOREIGN_PRIVATES_ALLOWED.get(where, set()))
        for where, names in found.items()
        if names - FOREIGN_PRIVATES_ALLOWED.get(where, set())
    }
    assert unexpected == {}, "another library's private attribute outside its one module"
    # and the check sees them: the modules that hold them are found
    assert set(found) == set(FOREIGN_PRIVATES_ALLOWED)
