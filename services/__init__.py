"""Concrete Warren services. Each module declares a ``runtime.Service``; the ``warren``
runner finds them through the ``warren.services`` entry points in pyproject.toml."""
