"""Serve an ASGI app with Hypercorn on the running anyio backend until ``stopping`` is set."""

from __future__ import annotations

import logging
import socket
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from warren import ConfigError
from warren._config import parse_addr

if TYPE_CHECKING:
    from starlette.types import ASGIApp


def bind_listener(setting: str, addr: str) -> socket.socket:
    """Bind and listen on ``addr`` now, so a port in use or an address this host does not
    have is a configuration error naming ``setting`` before the service starts any work."""
    host, port = parse_addr(setting, addr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family)
    except OSError as exc:
        raise ConfigError(setting, f"cannot listen on {addr}: {exc.strerror or exc}") from None


async def serve_asgi(app: ASGIApp, listener: socket.socket, stopping: anyio.Event) -> None:
    """Serve ``app`` on ``listener`` (see ``bind_listener``; Hypercorn takes it over)."""
    from hypercorn.config import Config

    config = Config()
    config.bind = [f"fd://{listener.detach()}"]
    config.accesslog = None
    config.errorlog = logging.getLogger("warren.http")
    config.graceful_timeout = 5.0
    serve: Any
    if "trio" in sys.modules and _running_trio():
        from hypercorn.trio import serve
    else:
        from hypercorn.asyncio import serve
    # In a task of its own: hypercorn's asyncio server runs a native asyncio.TaskGroup, whose
    # cancel()/uncancel() of its parent task must not land on the task that runs the service
    # (that turned every SIGTERM into a stray CancelledError and exit code 1).
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(serve, app, config, shutdown_trigger=stopping.wait))


def _running_trio() -> bool:
    import trio

    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True
