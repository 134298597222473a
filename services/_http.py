"""Serve an ASGI app with Hypercorn on the running anyio backend until ``stopping`` is set."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from warren._config import parse_addr

if TYPE_CHECKING:
    import anyio
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
    await serve(app, config, shutdown_trigger=stopping.wait)


def _running_trio() -> bool:
    import trio

    try:
        trio.lowlevel.current_trio_token()
    except RuntimeError:
        return False
    return True
