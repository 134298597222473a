"""The operations endpoints of a worker process: ``/metrics``, ``/healthz``, ``/readyz``.

Served from the process's own event loop (``_http11``), so a health answer proves the loop
is responsive and every read of worker state happens on the thread that owns it. ``/metrics``
speaks the Prometheus text format, or OpenMetrics when the scraper asks for it (``Accept``).
Health answers are JSON, 200 when healthy (live / ready) and 503 when not; see ``_health``
for the rules.
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from functools import partial
from typing import TYPE_CHECKING, final

import anyio
from anyio.abc import SocketAttribute, SocketStream
from prometheus_client.exposition import choose_encoder

from warren._config import parse_addr
from warren._exceptions import ConfigError
from warren._http.accept import serve_connections
from warren._http.server import HttpRequest, HttpResponse, serve_http
from warren._ops.health import check

if TYPE_CHECKING:
    from anyio.abc import Listener

    from warren._ops.metrics import Metrics


@final
class OpsServer:
    """``/metrics``, ``/healthz`` and ``/readyz`` for the workers registered in ``metrics``.

    ``async with OpsServer(metrics, "127.0.0.1:9100") as server:`` binds (a bad or busy
    address raises ``ConfigError`` naming ``setting``) and serves until the block ends.
    """

    def __init__(self, metrics: Metrics, addr: str, *, setting: str = "WARREN_METRICS_ADDR"):
        self.metrics = metrics
        self._host, self._port = parse_addr(setting, addr)
        self._addr = addr
        self._setting = setting
        self._listener: Listener[SocketStream] | None = None
        self._stack = AsyncExitStack()

    @property
    def port(self) -> int:
        """The bound port (useful with port 0)."""
        assert self._listener is not None, "not serving"
        return int(self._listener.extra(SocketAttribute.local_port))

    async def __aenter__(self) -> OpsServer:
        try:
            self._listener = listener = await anyio.create_tcp_listener(
                local_host=self._host, local_port=self._port
            )
        except OSError as exc:
            raise ConfigError(self._setting, f"cannot listen on {self._addr}: {exc}") from None
        await self._stack.enter_async_context(listener)  # closed last
        tg = await self._stack.enter_async_context(anyio.create_task_group())
        self._stack.callback(tg.cancel_scope.cancel)  # stop serving first
        tg.start_soon(partial(serve_connections, listener, self._connection, tg, server="ops"))
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._stack.aclose()

    async def _connection(self, stream: SocketStream) -> None:
        await serve_http(stream, self.answer)

    async def answer(self, request: HttpRequest) -> HttpResponse:
        path = request.target.split("?", 1)[0]
        if request.method not in ("GET", "HEAD"):
            return _json(405, {"error": f"{request.method} is not allowed; use GET"})
        match path:
            case "/metrics":
                encoder, content_type = choose_encoder(request.headers.get("accept", ""))
                return HttpResponse(200, encoder(self.metrics.registry), content_type)
            case "/healthz":
                health = check(self.metrics)
                return _json(200 if health.live else 503, health.to_json())
            case "/readyz":
                health = check(self.metrics)
                return _json(200 if health.ready else 503, health.to_json())
        return _json(404, {"error": "not found; try /metrics, /healthz or /readyz"})


def _json(status: int, payload: object) -> HttpResponse:
    return HttpResponse(status, json.dumps(payload).encode() + b"\n")
