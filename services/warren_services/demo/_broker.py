"""Where the demo's broker comes from: ``WARREN_AMQP_URL``, the local one, or a throwaway node.

A throwaway node (the test kit's ``RabbitNode``, on free ports) is stopped at the end, and
the Erlang port mapper it started with it too, so the demo leaves no process behind.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from warren import WarrenError
from warren.testing import RabbitNode, RabbitNodeError

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

LOCAL = "127.0.0.1:5672"
_SERVER_DIRS = ("/usr/lib/rabbitmq/bin", "/usr/local/lib/rabbitmq/bin", "/opt/rabbitmq/sbin",
                "/usr/sbin")  # fmt: skip
NO_BROKER = (
    "No RabbitMQ answers (WARREN_AMQP_URL unset or not answering, nothing on {local}) and "
    "rabbitmq-server is not installed. Install it (sudo apt-get install -y rabbitmq-server; "
    "the demo then starts a throwaway node of its own), or run one in a container: "
    "docker run -d -p 127.0.0.1:5672:5672 -e RABBITMQ_DEFAULT_USER=demo "
    "-e RABBITMQ_DEFAULT_PASS=demo rabbitmq:3.13 and then "
    "WARREN_AMQP_URL=amqp://demo:demo@127.0.0.1:5672/%2F make demo"
)


class DemoError(WarrenError):
    """The demo cannot run here (no broker to be had); the message says what to do."""


@dataclass(frozen=True)
class Broker:
    url: str
    origin: str  # where it came from, for the screen


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the URL's host and port."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 5672
    except ValueError:
        return False
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def rabbitmq_installed() -> bool:
    return shutil.which("rabbitmq-server") is not None or any(
        (Path(d) / "rabbitmq-server").exists() for d in _SERVER_DIRS
    )


@contextmanager
def broker(
    env: Mapping[str, str],
    *,
    local: str = LOCAL,
    installed: Callable[[], bool] | None = None,
    say: Callable[[str], None] = print,
) -> Iterator[Broker]:
    """The first broker that answers, or a throwaway node while inside.

    Raises:
        DemoError: none answers and none can be started.
    """
    for url in [u.strip() for u in env.get("WARREN_AMQP_URL", "").split(",") if u.strip()]:
        if urlsplit(url).scheme != "amqp":
            # the API reaches the broker through a plain TCP fault proxy on 127.0.0.1
            raise DemoError("WARREN_AMQP_URL: the demo needs an amqp:// URL (not amqps://)")
        if answers(url):
            yield Broker(url, "WARREN_AMQP_URL")
            return
        say(f"WARREN_AMQP_URL: {urlsplit(url).hostname}:{urlsplit(url).port} does not answer")
    local_url = f"amqp://guest:guest@{local}/%2F"
    if answers(local_url):
        yield Broker(local_url, f"the local broker on {local}")
        return
    if not (installed or rabbitmq_installed)():
        raise DemoError(NO_BROKER.format(local=local))
    say(f"nothing answers on {local}: starting a throwaway RabbitMQ node (about 10 s)")
    had_epmd = _epmd_running()
    node = RabbitNode()
    try:
        try:
            node.start()
        except RabbitNodeError as exc:
            raise DemoError(f"the throwaway RabbitMQ node did not start: {exc}") from None
        yield Broker(node.url, f"a throwaway node ({node.name}, port {node.amqp_port})")
    finally:
        node.close()
        if not had_epmd:
            _stop_epmd()


def _epmd(*args: str) -> subprocess.CompletedProcess[str] | None:
    path = shutil.which("epmd") or next(
        (str(p) for p in Path("/usr/lib/erlang").glob("erts-*/bin/epmd")), None
    )
    if path is None:
        return None
    try:
        return subprocess.run([path, *args], capture_output=True, text=True, timeout=10,
                              check=False)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None


def _epmd_running() -> bool:
    done = _epmd("-names")
    return done is not None and done.returncode == 0


def _stop_epmd() -> None:
    """The node started the port mapper; stop it unless another node still uses it."""
    done = _epmd("-names")
    if done is not None and done.returncode == 0 and "name " not in done.stdout:
        _epmd("-kill")
