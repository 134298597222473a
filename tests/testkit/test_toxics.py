"""Each toxic acts on real connections as Toxiproxy's does, through an echo upstream."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.support.toxiproxy_tools import roundtrip
from warren.testing import ProxyHandle, ToxiproxyClient, partition

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from anyio.abc import SocketStream


async def _echo(stream: SocketStream) -> None:
    async with stream:
        try:
            async for chunk in stream:
                await stream.send(chunk)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            pass


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, _echo)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


@pytest.fixture
def proxy(fault_proxy_server: ToxiproxyClient, echo_port: int) -> Iterator[ProxyHandle]:
    name = f"echo-{echo_port}"
    info = fault_proxy_server.create_proxy(name, f"127.0.0.1:{echo_port}")
    yield ProxyHandle(fault_proxy_server, name, "127.0.0.1", info.port)
    fault_proxy_server.delete_proxy(name)


async def test_clean_passthrough(proxy: ProxyHandle) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        assert await roundtrip(conn, b"hello" * 1000) == b"hello" * 1000


async def test_latency_delays_each_direction(proxy: ProxyHandle) -> None:
    proxy.client.add_toxic(proxy.name, "latency", stream="downstream", latency=150)
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        start = time.monotonic()
        await roundtrip(conn, b"x")
        assert time.monotonic() - start >= 0.15


async def test_bandwidth_limits_throughput(proxy: ProxyHandle) -> None:
    proxy.client.add_toxic(proxy.name, "bandwidth", stream="downstream", rate=64)  # KB/s
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        start = time.monotonic()
        await roundtrip(conn, b"z" * 32 * 1024, within=10)
        assert time.monotonic() - start >= 0.4  # 32 KB at 64 KB/s is 0.5 s


async def test_timeout_zero_is_a_silent_blackhole_and_removal_closes(proxy: ProxyHandle) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        await roundtrip(conn, b"before")
        async with partition(proxy):
            await conn.send(b"lost")
            with anyio.move_on_after(0.5) as waited:
                await conn.receive()
            assert waited.cancelled_caught, "bytes must vanish, and the socket stay open"
        # healed: as in Toxiproxy, the connection the toxic held is closed
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await conn.receive()
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        assert await roundtrip(conn, b"after") == b"after"


async def test_timeout_with_a_delay_closes_the_connection(proxy: ProxyHandle) -> None:
    proxy.client.add_toxic(proxy.name, "timeout", timeout=200)
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        start = time.monotonic()
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await conn.receive()
        assert time.monotonic() - start >= 0.15


async def test_reset_peer_sends_rst(proxy: ProxyHandle) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        await roundtrip(conn, b"ok")
        proxy.client.add_toxic(proxy.name, "reset_peer", timeout=0)
        await conn.send(b"echoed: the toxic's first chunk")  # as Toxiproxy: it waits for one
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError) as info:
            await conn.receive()
        assert isinstance(info.value.__cause__, ConnectionResetError)


async def test_disabled_proxy_closes_links_and_refuses_new_ones(proxy: ProxyHandle) -> None:
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        await roundtrip(conn, b"up")
        proxy.client.set_enabled(proxy.name, False)
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await conn.receive()
    with pytest.raises(OSError, match=r"refused|connect"):
        await anyio.connect_tcp("127.0.0.1", proxy.port)
    proxy.client.set_enabled(proxy.name, True)
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        assert await roundtrip(conn, b"back") == b"back"


async def test_limit_data_closes_after_the_limit(proxy: ProxyHandle) -> None:
    proxy.client.add_toxic(proxy.name, "limit_data", stream="downstream", bytes=10)
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        await conn.send(b"0123456789abcdef")
        got = b""
        with anyio.fail_after(5):
            try:
                while True:
                    got += await conn.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                pass
        assert got == b"0123456789"


async def test_slicer_delivers_everything_in_pieces(proxy: ProxyHandle) -> None:
    proxy.client.add_toxic(proxy.name, "slicer", average_size=10, size_variation=5, delay=100)
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        data = bytes(range(256)) * 8
        assert await roundtrip(conn, data) == data


async def test_slow_close_delays_the_close(proxy: ProxyHandle) -> None:
    proxy.client.add_toxic(proxy.name, "slow_close", stream="upstream", delay=300)
    conn = await anyio.connect_tcp("127.0.0.1", proxy.port)
    await roundtrip(conn, b"hi")
    await conn.send_eof()
    start = time.monotonic()
    with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
        await conn.receive()
    assert time.monotonic() - start >= 0.25
    await conn.aclose()


async def test_toxicity_zero_never_bites(proxy: ProxyHandle) -> None:
    proxy.client.add_toxic(proxy.name, "timeout", timeout=0, toxicity=0.0)
    async with await anyio.connect_tcp("127.0.0.1", proxy.port) as conn:
        assert await roundtrip(conn, b"fine") == b"fine"
