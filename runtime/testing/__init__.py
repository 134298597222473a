"""Warren's test kit (public API): tools for testing workers against real failures.

Today: ``RabbitNode``, a throwaway RabbitMQ node for destructive tests (broker restarts,
resource alarms) that must never touch the shared broker.
"""

from ._rabbit_node import RabbitNode, RabbitNodeError

__all__ = ["RabbitNode", "RabbitNodeError"]
