"""Serve an ASGI app with Hypercorn on the running anyio backend until ``stopping`` is set."""

from __future__ import annotations

import logging
import sys
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio

from warren._config import parse_addr

if TYPE_CHECKING:
    from starlette.types import ASGIApp


async def serve_asgi(app: ASGIApp, addr: str, setting: str, stopping: anyio.Event) -> None:
    """Serve ``app`` on ``addr`` (``host:port``; ``setting`` names it in errors)."""
    from hypercorn.config import Config

    host, port = parse_addr(setting, addr)
    config = Config()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
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
