"""Run one service as a process: settings from the environment, /metrics served, signals
handled, and an exit code an orchestrator can act on.

Exit codes (a public contract, documented in the README):

===  ==================================================================
0    clean shutdown: done, or stopped by SIGTERM/SIGINT with every accepted job settled
1    unexpected error (a bug: the traceback is logged), or a forced stop that had to
     abandon a task cancelling could not reach (``shutdown.abandoned``)
2    bad configuration (the message names the setting), or the broker refused the
     declared topology (an existing queue with other arguments, a missing passive queue)
3    gave up reconnecting (``WARREN_RECONNECT_MAX_ATTEMPTS`` ran out)
4    the broker refused the credentials or a permission (ACCESS_REFUSED)
5    stopped, but accepted jobs could not be flushed in time and were dropped
     (``shutdown.unflushed_total`` in the log says how many)
6    a TLS certificate was refused: the broker's failed verification (unknown CA, wrong
     host name, expired), or the broker refused ours
===  ==================================================================

Exit code 5 is not 0 on purpose: the jobs are gone (counted in
``warren_jobs_dropped_total{reason="shutdown"}``), and a deploy that loses work should not
look like one that did not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from typing import TYPE_CHECKING

import anyio
from prometheus_client import CollectorRegistry

from warren._common.unwrap import raise_single
from warren._config import PublisherConfig, parse_addr
from warren._exceptions import (
    AccessRefused,
    ConfigError,
    ConnectionGaveUp,
    TlsRefused,
    TopologyMismatch,
)
from warren._ops.metrics import Metrics
from warren._ops.server import OpsServer
from warren._run.service import Service, ServiceContext

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger("warren.runner")

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_CONFIG = 2
EXIT_GAVE_UP = 3
EXIT_ACCESS_REFUSED = 4
EXIT_UNFLUSHED = 5
EXIT_TLS_REFUSED = 6
DEFAULT_METRICS_ADDR = "127.0.0.1:9100"
FORCED_EXIT_AFTER = 0.5  # seconds a forced stop gives the cancelled tasks to unwind


async def _watch_signals(
    ctx: ServiceContext, scope: anyio.CancelScope, abandon_after: float | None
) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            if not ctx.stopping.is_set():
                log.info("shutdown.requested signal=%s", signal.Signals(signum).name)
                ctx.stopping.set()
            else:
                log.warning("shutdown.forced signal=%s", signal.Signals(signum).name)
                scope.cancel()
                if abandon_after is not None:
                    _exit_unless_done(ctx, abandon_after)


def _exit_unless_done(ctx: ServiceContext, after: float) -> None:
    """End the process ``after`` seconds from now, whatever it is doing then.

    Cancelling cannot reach a task stuck where no checkpoint is (a worker thread's blocking
    call, a C extension), and the interpreter waits for its non-daemon threads at exit: only
    ``os._exit`` bounds a forced stop for any stuck task. A daemon timer, not joined on
    purpose: when the run ends in time, the process exits first and the timer dies with it.
    The code is what the stop would have returned, but never 0: work was abandoned.
    """

    def expire() -> None:
        code = _stopped(ctx)
        log.error("shutdown.abandoned a task did not stop within %gs of shutdown.forced", after)
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed or broken stream: exit anyway
                stream.flush()
        os._exit(code if code != EXIT_OK else EXIT_ERROR)

    timer = threading.Timer(after, expire)
    timer.daemon = True
    timer.start()


async def _serve(
    service: Service, ctx: ServiceContext, ops_addr: str, abandon_after: float | None
) -> None:
    # bound before the service starts: a busy WARREN_METRICS_ADDR fails fast (exit code 2)
    async with OpsServer(ctx.metrics, ops_addr), anyio.create_task_group() as tg:
        log.info("ops.serving addr=%s endpoints=/metrics,/healthz,/readyz", ops_addr)
        tg.start_soon(_watch_signals, ctx, tg.cancel_scope, abandon_after)
        await service.main(ctx)
        tg.cancel_scope.cancel()


def run_service(
    service: Service,
    env: Mapping[str, str],
    *,
    backend: str = "asyncio",
    abandon_after: float | None = None,
) -> int:
    """Run ``service`` to completion; return the process exit code.

    ``abandon_after`` (the ``warren`` command sets it; leave it None when the process is
    not the service's own): after a second signal, the process ends that many seconds
    later, whatever a task is stuck in (``_exit_unless_done``).
    """
    ctx: ServiceContext | None = None
    try:
        publisher_config = PublisherConfig.from_env(env)
        registry = CollectorRegistry()
        ctx = ServiceContext(env=env, metrics=Metrics(registry), publisher_config=publisher_config)
        ops_addr = env.get("WARREN_METRICS_ADDR", DEFAULT_METRICS_ADDR)
        parse_addr("WARREN_METRICS_ADDR", ops_addr)
        try:
            anyio.run(_serve, service, ctx, ops_addr, abandon_after, backend=backend)
        except BaseExceptionGroup as group:
            raise_single(group)
    except ConfigError as exc:
        log.error("config.invalid %s", exc)
        return EXIT_CONFIG
    except TopologyMismatch as exc:
        log.error("config.invalid %s", exc)
        return EXIT_CONFIG
    except ConnectionGaveUp as exc:
        log.critical("worker.failed %s", exc)
        return EXIT_GAVE_UP
    except TlsRefused as exc:
        log.critical("worker.failed %s", exc)
        return EXIT_TLS_REFUSED
    except AccessRefused as exc:
        log.critical("worker.failed %s", exc)
        return EXIT_ACCESS_REFUSED
    except KeyboardInterrupt:
        return _stopped(ctx)
    except Exception:
        log.exception("worker.crashed service=%s", service.name)
        return EXIT_ERROR
    return _stopped(ctx)


def _stopped(ctx: ServiceContext | None) -> int:
    """The exit code of a stop: 0, or 5 if accepted jobs were dropped unflushed."""
    if ctx is None:
        return EXIT_OK
    dropped = sum(s.dropped.get("shutdown", 0) for s in ctx.metrics.publishers().values())
    if dropped:
        log.error("shutdown.unflushed_total jobs_dropped=%d", dropped)
        return EXIT_UNFLUSHED
    log.info("shutdown.complete jobs_dropped=0")
    return EXIT_OK
