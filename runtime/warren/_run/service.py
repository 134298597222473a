"""What a service is: a small module that declares its workers' main function.

A service is found by name through the ``warren.services`` entry-point group, so users'
own packages can add services to the ``warren`` runner without touching Warren.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, final

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Mapping

    from warren._config import PublisherConfig
    from warren._ops.metrics import Metrics


@final
@dataclass(frozen=True, kw_only=True)
class Setting:
    """An environment setting a service reads, shown by ``warren run --help``."""

    env: str
    default: str
    help: str


@final
@dataclass(kw_only=True)
class ServiceContext:
    """What the runner hands a service's main function."""

    env: Mapping[str, str]
    metrics: Metrics
    publisher_config: PublisherConfig
    stopping: anyio.Event = field(default_factory=anyio.Event)
    """Set on the first SIGTERM/SIGINT: stop taking work, flush, return."""


@final
@dataclass(frozen=True, kw_only=True)
class Service:
    """A runnable service: ``main`` runs its workers until done or ``ctx.stopping`` is set."""

    name: str
    help: str
    main: Callable[[ServiceContext], Coroutine[Any, Any, None]]
    settings: tuple[Setting, ...] = ()
