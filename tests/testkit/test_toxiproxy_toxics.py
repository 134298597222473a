"""How Toxiproxy's toxics act on live connections, checked against whatever
``fault_proxy_server`` runs (Warren's proxy, or a real Toxiproxy when
``WARREN_TOXIPROXY_URL`` points at one). Each case follows Toxiproxy 2's ``toxics/*.go`` and
``link.go`` (a chain of stubs, interrupted and run again on every change). Timings are
bounds with room for a loaded two-core machine, never exact milliseconds."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

import anyio
import pytest

from tests.support.toxiproxy_tools import Answer, call, echo_server, roundtrip, unique_name

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

    from anyio.abc import SocketStream

    from warren.testing import ToxiproxyClient

pytestmark = pytest.mark.timeout(60)

_CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError)


class _Proxy:
    """One proxy in front of an echo server, driven over the raw HTTP API."""

    def __init__(self, api: ToxiproxyClient, name: str) -> None:
        self.api, self.name = api, name
        listen = call(api, "GET", f"/proxies/{name}").json()["listen"]
        self.port = int(listen.rpartition(":")[2])

    async def http(self, method: str, path: str, body: object = None) -> Answer:
        """A call from a worker thread, so the test's own loop keeps timing its sockets."""
        return await anyio.to_thread.run_sync(call, self.api, method, self.path + path, body)

    @property
    def path(self) -> str:
        return f"/proxies/{quote(self.name)}"

    async def add(self, kind: str, stream: str = "downstream", toxicity: float = 1.0,
                  **attributes: int) -> None:  # fmt: skip
        body = {"name": kind, "type": kind, "stream": stream, "toxicity": toxicity,
                "attributes": attributes}  # fmt: skip
        got = await self.http("POST", "/toxics", body)
        assert got.status == 200, got.body

    async def update(self, name: str, body: object) -> None:
        got = await self.http("POST", f"/toxics/{name}", body)
        assert got.status == 200, got.body

    async def remove(self, name: str) -> None:
        assert (await self.http("DELETE", f"/toxics/{name}")).status == 204

    async def connect(self) -> SocketStream:
        return await anyio.connect_tcp("127.0.0.1", self.port)


@pytest.fixture
def echo_port() -> Iterator[int]:
    with echo_server() as port:
        yield port


@pytest.fixture
async def proxy(fault_proxy_server: ToxiproxyClient, echo_port: int) -> AsyncIterator[_Proxy]:
    made: list[str] = []
    name = unique_name(made)
    body = {"name": name, "upstream": f"127.0.0.1:{echo_port}", "listen": "127.0.0.1:0"}
    assert call(fault_proxy_server, "POST", "/proxies", body).status == 201
    yield _Proxy(fault_proxy_server, name)
    call(fault_proxy_server, "DELETE", f"/proxies/{quote(name)}")


async def _silent(conn: SocketStream, seconds: float) -> bool:
    """Nothing arrives and the connection stays open for ``seconds``."""
    with anyio.move_on_after(seconds) as waited:
        await conn.receive()
        return False
    return waited.cancelled_caught


async def _closed_within(conn: SocketStream, seconds: float) -> float:
    """Read until the connection closes; when it did (anyio.current_time())."""
    with anyio.fail_after(seconds):
        try:
            while True:
                await conn.receive()
        except _CLOSED:
            return anyio.current_time()


# -- latency --------------------------------------------------------------------------------


async def test_latency_counts_from_when_each_chunk_arrived(proxy: _Proxy) -> None:
    """Chunks sent 100 ms apart through 500 ms of latency arrive ~500/600/700/800 ms: each
    waits out its own delay while the one before is still waiting (Warren used to read the
    next only after the last had left: the second arrived ~900 ms after it was sent)."""
    await proxy.add("latency", latency=500)
    async with await proxy.connect() as conn:
        sent: dict[int, float] = {}
        got: dict[int, float] = {}

        async def read() -> None:
            buffer = b""
            while len(got) < 4:
                buffer += await conn.receive()
                for i in range(4):
                    if i not in got and f"<{i}>".encode() in buffer:
                        got[i] = anyio.current_time()

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                for i in range(4):
                    sent[i] = anyio.current_time()
                    await conn.send(f"<{i}>".encode())
                    await anyio.sleep(0.1)  # the pace of the workload, not a wait for state
        delays = [got[i] - sent[i] for i in range(4)]
        assert all(0.49 <= d < 0.75 for d in delays), delays


async def test_removing_latency_sends_what_it_held_at_once(proxy: _Proxy) -> None:
    await proxy.add("latency", latency=4000)
    async with await proxy.connect() as conn:
        start = anyio.current_time()
        await conn.send(b"held")
        assert await _silent(conn, 0.3), "latency holds the echo"
        await proxy.remove("latency")
        with anyio.fail_after(10):
            assert await conn.receive() == b"held"
        assert anyio.current_time() - start < 2.5, "sent when the toxic went, not after 4 s"


# -- timeout --------------------------------------------------------------------------------


async def test_a_timeout_restarts_with_every_chunk(proxy: _Proxy) -> None:
    """``timeout`` closes a connection that has been *idle* that long (each chunk it
    swallows starts the timer again), not that long after the toxic met it."""
    await proxy.add("timeout", stream="upstream", timeout=500)
    async with await proxy.connect() as conn:
        start = last = anyio.current_time()
        closed: list[float] = []

        async def watch() -> None:
            closed.append(await _closed_within(conn, 10))

        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            for _ in range(8):  # 1.2 s of chunks every 150 ms: never idle for 500 ms
                assert not closed, "closed while data kept coming"
                await conn.send(b".")
                last = anyio.current_time()
                await anyio.sleep(0.15)  # the pace of the workload
        assert closed[0] - start > 1.0
        assert 0.4 <= closed[0] - last < 3, closed[0] - last


async def test_updating_a_timeout_restarts_its_timer(proxy: _Proxy) -> None:
    await proxy.add("timeout", timeout=800)
    async with await proxy.connect() as conn:
        start = anyio.current_time()
        assert await _silent(conn, 0.4)
        updated = anyio.current_time()
        await proxy.update("timeout", {"attributes": {"timeout": 800}})
        closed = await _closed_within(conn, 10)
        assert closed - updated >= 0.7, (closed - start, closed - updated)


async def test_removing_a_timeout_closes_even_the_connections_it_spared(proxy: _Proxy) -> None:
    await proxy.add("timeout", toxicity=0.0, timeout=0)
    async with await proxy.connect() as conn:
        assert await roundtrip(conn, b"spared") == b"spared"
        await proxy.remove("timeout")
        await _closed_within(conn, 5)


# -- toxicity -------------------------------------------------------------------------------


async def test_an_update_rolls_toxicity_again_on_live_connections(proxy: _Proxy) -> None:
    await proxy.add("timeout", toxicity=0.0, timeout=0)
    async with await proxy.connect() as conn:
        assert await roundtrip(conn, b"spared") == b"spared"
        await proxy.update("timeout", {"toxicity": 1.0})
        await conn.send(b"now swallowed")
        assert await _silent(conn, 0.5)


# -- reset_peer -----------------------------------------------------------------------------


async def test_reset_peer_waits_for_a_chunk_and_drops_it(proxy: _Proxy) -> None:
    await proxy.add("reset_peer", timeout=0)
    async with await proxy.connect() as conn:
        assert await _silent(conn, 0.5), "an idle connection is left alone"
        await conn.send(b"echoed, then dropped")
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError) as caught:
            await conn.receive()  # raises: not one byte of the echo comes through
        assert isinstance(caught.value.__cause__, ConnectionResetError)


async def test_reset_peer_resets_its_timeout_after_the_chunk(proxy: _Proxy) -> None:
    await proxy.add("reset_peer", timeout=400)
    async with await proxy.connect() as conn:
        await conn.send(b"ping")
        sent = anyio.current_time()
        with anyio.fail_after(5), pytest.raises(anyio.BrokenResourceError):
            await conn.receive()
        assert anyio.current_time() - sent >= 0.35


# -- bandwidth, slicer, limit_data ----------------------------------------------------------


async def test_bandwidth_rate_zero_holds_data_until_removed(proxy: _Proxy) -> None:
    await proxy.add("bandwidth", rate=0)
    async with await proxy.connect() as conn:
        await conn.send(b"x" * 100)
        assert await _silent(conn, 0.5)
        await proxy.remove("bandwidth")
        got = b""
        with anyio.fail_after(5):
            while len(got) < 100:
                got += await conn.receive()
        assert got == b"x" * 100


async def test_the_slicer_halves_each_chunk(proxy: _Proxy) -> None:
    """64 bytes at ``average_size`` 10: halved to 32, 16, then 8 (8 - 10 <= variation 0), so
    eight 8-byte pieces; Warren used to cut 10, 10, ... 4."""
    await proxy.add("slicer", stream="upstream", average_size=10, size_variation=0,
                    delay=30_000)  # fmt: skip
    async with await proxy.connect() as conn:
        await conn.send(bytes(range(64)))
        sizes: list[int] = []
        got = b""
        with anyio.fail_after(10):
            while len(got) < 64:
                piece = await conn.receive()
                sizes.append(len(piece))
                got += piece
        assert got == bytes(range(64))
        assert all(size % 8 == 0 for size in sizes), sizes  # pieces 30 ms apart may merge


async def test_limit_data_counts_afresh_when_added_again(proxy: _Proxy) -> None:
    await proxy.add("limit_data", bytes=10)
    async with await proxy.connect() as conn:
        assert await roundtrip(conn, b"first!") == b"first!"
        await proxy.remove("limit_data")
        await proxy.add("limit_data", bytes=10)
        assert await roundtrip(conn, b"again!") == b"again!", "6 of a new 10, not of the old 4"
