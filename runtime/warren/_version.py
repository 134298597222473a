"""The runtime's version (also exported as ``warren.__version__`` and ``warren_info``)."""

VERSION = "0.1.0"
