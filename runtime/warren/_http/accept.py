"""Accept connections in a loop that survives running out of file descriptors.

anyio's ``Listener.serve`` ends (and with it the server) on the first failed ``accept``.
When the process is out of descriptors (EMFILE: idle or half-open clients holding them),
that is the wrong answer: the clients already connected still need serving, and their
descriptors come back as they finish. So a capacity error pauses accepting, with a
growing pause, and accepting resumes by itself; the pause is logged once per episode.
"""

from __future__ import annotations

import errno
import logging
from typing import TYPE_CHECKING, Any, Final

import anyio
from anyio.abc import SocketListener
from anyio.streams.stapled import MultiListener

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine

    from anyio.abc import Listener, SocketStream, TaskGroup

log = logging.getLogger("warren.accept")

# what the accept(2) of a process or system out of resources fails with (as trio's own
# serve_listeners treats them)
_CAPACITY_ERRNOS: Final = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_FIRST_PAUSE: Final = 0.05
_LONGEST_PAUSE: Final = 1.0


async def serve_connections(
    listener: Listener[SocketStream],
    handler: Callable[[SocketStream], Coroutine[Any, Any, None]],
    task_group: TaskGroup,
    *,
    server: str,
) -> None:
    """Accept on ``listener`` until it is closed or the caller is cancelled; run each
    connection as ``handler(stream)`` in ``task_group``. ``server`` names it in the log."""
    if isinstance(listener, MultiListener):
        async with anyio.create_task_group() as tg:
            for one in listener.listeners:
                tg.start_soon(_accept_loop, _socket_listener(one), handler, task_group, server)
    else:
        await _accept_loop(_socket_listener(listener), handler, task_group, server)


async def _accept_loop(
    listener: SocketListener,
    handler: Callable[[SocketStream], Coroutine[Any, Any, None]],
    task_group: TaskGroup,
    server: str,
) -> None:
    pause = 0.0
    while True:
        try:
            stream = await listener.accept()
        except (OSError, anyio.BrokenResourceError) as exc:
            code = _capacity_errno(exc)
            if code is None:
                raise
            if not pause:
                log.warning("accept.paused server=%s reason=%s", server,
                            errno.errorcode.get(code, str(code)))  # fmt: skip
            pause = min(_LONGEST_PAUSE, pause * 2 or _FIRST_PAUSE)
            await anyio.sleep(pause)
            continue
        if pause:
            log.info("accept.resumed server=%s", server)
            pause = 0.0
        task_group.start_soon(handler, stream)


def _socket_listener(listener: Listener[SocketStream]) -> SocketListener:
    assert isinstance(listener, SocketListener), f"not a socket listener: {listener!r}"
    return listener


def _capacity_errno(exc: BaseException) -> int | None:
    """The errno if ``exc`` says the process or system is out of resources. (anyio's trio
    backend wraps the OSError in BrokenResourceError.)"""
    cause = exc if isinstance(exc, OSError) else exc.__cause__
    if isinstance(cause, OSError) and cause.errno in _CAPACITY_ERRNOS:
        return cause.errno
    return None
