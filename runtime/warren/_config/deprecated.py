"""The connection settings as keywords of the worker configs, as before ``ConnectionConfig``:
accepted for one release with a ``DeprecationWarning``, then this module goes.

``PublisherConfig(urls=..., heartbeat=...)`` becomes ``PublisherConfig(connection=
ConnectionConfig(urls=..., heartbeat=...))``; reading ``config.heartbeat`` answers
``config.connection.heartbeat``. Only ``__init__`` takes the old keywords, so
``dataclasses.replace`` and the fields are the new ones alone.
"""

from __future__ import annotations

import functools
import inspect
import warnings
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from warren._config.connection import ConnectionConfig
from warren._exceptions import ConfigError

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

T = TypeVar("T")


def accept_old_keywords(names: Collection[str]) -> Callable[[type[T]], type[T]]:
    """Let the config class take ``names`` as keywords (into its ``connection``) and answer
    them as attributes, each time with a ``DeprecationWarning``."""

    def wrap(cls: type[T]) -> type[T]:
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: T, *args: Any, **kwargs: Any) -> None:
            old = {name: kwargs.pop(name) for name in names if name in kwargs}
            if old:
                warn_old_keywords(cls.__name__, old)
                if "connection" in kwargs:
                    conflict(old)
                kwargs["connection"] = ConnectionConfig(**old)
            init(self, *args, **kwargs)

        def __getattr__(self: T, name: str) -> Any:
            if name in names:
                _warn(f"{cls.__name__}.{name} is deprecated and goes in the next release:"
                      f" read .connection.{name}")  # fmt: skip
                return getattr(self.connection, name)  # type: ignore[attr-defined]
            raise AttributeError(f"{cls.__name__!r} object has no attribute {name!r}")

        cls.__init__ = __init__  # type: ignore[method-assign,assignment]
        cls.__getattr__ = __getattr__  # type: ignore[attr-defined]
        return cls

    return wrap


def warn_old_keywords(owner: str, old: Mapping[str, object]) -> None:
    names = ", ".join(f"{name}=" for name in old)
    _warn(f"{owner}({names}...) is deprecated and goes in the next release: pass"
          f" connection=ConnectionConfig({names}...)")  # fmt: skip


def conflict(old: Mapping[str, object]) -> NoReturn:
    names = ", ".join(f"{name}=" for name in old)
    raise ConfigError("connection", f"set {names} in connection=, not beside it")


def _warn(message: str) -> None:
    """Warn at the caller's line: the first frame outside warren's config code."""
    level, frame = 1, inspect.currentframe()
    while frame is not None and frame.f_globals.get("__name__", "").startswith("warren._config"):
        level, frame = level + 1, frame.f_back
    warnings.warn(message, DeprecationWarning, stacklevel=level)
