"""Concrete Warren services. Each module declares a ``warren.Service``; the ``warren``
runner finds them through the ``warren.services`` entry points in pyproject.toml. They need
the ``services`` extra: ``pip install 'warren[services]'``."""
