"""The public surface: __all__ is exactly what is public, and one exception tree."""

from __future__ import annotations

import inspect

import warren
from warren import WarrenError


def test_all_lists_every_public_name_and_each_imports() -> None:
    public = {
        name
        for name, value in vars(warren).items()
        if not name.startswith("_") and not inspect.ismodule(value)  # warren.testing
    } | {"__version__"}
    assert set(warren.__all__) == public
    for name in warren.__all__:
        assert getattr(warren, name) is not None


def test_every_exception_is_a_warren_error() -> None:
    import warren._exceptions as exc_module

    exceptions = [
        obj
        for obj in vars(exc_module).values()
        if inspect.isclass(obj) and issubclass(obj, BaseException)
    ]
    assert len(exceptions) >= 10
    for cls in exceptions:
        assert issubclass(cls, WarrenError), cls
