"""``warren proxy``: the fault proxy server as a process."""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path

import anyio

from warren._common.unwrap import raise_single
from warren.testing._proxy_api import FaultProxyServer
from warren.testing._proxy_http import ApiError

log = logging.getLogger("warren.proxy")


async def _main(server: FaultProxyServer, config: object) -> None:
    async with anyio.create_task_group() as tg:
        await tg.start(server.serve)
        if config is not None:
            made = await server.populate(config)
            log.info("proxy.populated proxies=%s", ",".join(p.name for p in made))
        print(f"warren proxy: API on {server.api_url}", flush=True)
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                tg.cancel_scope.cancel()
                return


def run_proxy(host: str, port: int, config_path: str | None) -> int:
    """Serve until SIGINT/SIGTERM. Exit 2 on a bad config file or a port in use."""
    config = None
    if config_path:
        try:
            config = json.loads(Path(config_path).read_text())
        except (OSError, ValueError) as exc:
            print(f"warren proxy: --config {config_path}: {exc}", file=sys.stderr)
            return 2
    try:
        anyio.run(_main, FaultProxyServer(host, port), config)
    except BaseExceptionGroup as group:
        try:
            raise_single(group)
        except OSError as exc:
            print(f"warren proxy: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        except ApiError as exc:
            print(f"warren proxy: --config: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"warren proxy: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
        return 2
    return 0
