"""The fault proxy stays correct under hostile attributes and failed updates (issue #27).

Bytes that go through a non-destructive toxic come out as they went in, in order, for any
attribute values; a connection that loops back into the proxy is cut at once; an API call
that fails leaves the proxy as it was; a half-close is passed on, not turned into a close.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import socket
import subprocess
import time
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.helpers import WARREN, wait_until
from tests.support.toxiproxy_tools import Answer, call
from warren.testing import ToxiproxyClient
from warren.testing._proxy_api import FaultProxyServer
from warren.testing._toxic_pipes import BUFFER_SIZE, PIPES
from warren.testing._toxic_stub import Chan, Chunk, Pulse, Stub
from warren.testing._toxics import Toxic

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from anyio.abc import SocketStream

_CLOSED = (anyio.EndOfStream, anyio.BrokenResourceError)
_PUMP_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


async def _echo(stream: SocketStream) -> None:
    """Echo until the client's EOF, then close (so a half-close comes back as EOF)."""
    async with stream:
        try:
            async for chunk in stream:
                await stream.send(chunk)
        except _PUMP_ERRORS:
            pass


async def _reply_after_eof(stream: SocketStream) -> None:
    """Read the whole request (until EOF), then answer and close: a client that half-closes
    after its request, as ``nc -N`` or an HTTP/1.0 client does."""
    async with stream:
        request = b""
        try:
            async for chunk in stream:
                request += chunk
            await stream.send(b"reply to " + request)
        except _PUMP_ERRORS:
            pass


async def _serve(handler: Any) -> AsyncIterator[int]:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handler)
        yield listener.extra(anyio.abc.SocketAttribute.local_port)
        tg.cancel_scope.cancel()


@pytest.fixture
async def echo_port() -> AsyncIterator[int]:
    async for port in _serve(_echo):
        yield port


@pytest.fixture
async def server() -> AsyncIterator[FaultProxyServer]:
    """Warren's proxy server on the test's own loop (so on both backends)."""
    proxies = FaultProxyServer("127.0.0.1", 0, seed=27)
    async with anyio.create_task_group() as tg:
        await tg.start(proxies.serve)
        yield proxies
        tg.cancel_scope.cancel()


async def _api(server: FaultProxyServer, method: str, path: str, body: object = None) -> Answer:
    client = ToxiproxyClient(server.api_url)
    return await anyio.to_thread.run_sync(call, client, method, path, body)


async def _proxy(server: FaultProxyServer, name: str, upstream: str, **fields: object) -> int:
    body = {"name": name, "upstream": upstream, "listen": "127.0.0.1:0", **fields}
    made = await _api(server, "POST", "/proxies", body)
    assert made.status == 201, made.body
    return int(made.json()["listen"].rpartition(":")[2])


async def _read(conn: SocketStream, size: int, within: float = 10) -> bytes:
    got = b""
    with anyio.fail_after(within):
        while len(got) < size:
            got += await conn.receive()
    return got


async def _read_to_eof(conn: SocketStream, within: float = 10) -> bytes:
    got = b""
    with anyio.fail_after(within):
        try:
            while True:
                got += await conn.receive()
        except anyio.EndOfStream:
            return got


async def _exactly_through(conn: SocketStream, payload: bytes) -> None:
    """``payload`` comes back whole and in order, and nothing after it but what follows."""
    await conn.send(payload)
    got = await _read(conn, len(payload))
    assert len(got) == len(payload), f"{len(got)} bytes came back for {len(payload)}"
    assert got == payload, "the stream was reordered or corrupted"
    await conn.send(b"#end")
    assert await _read(conn, 4) == b"#end", "bytes came out twice"


def _pattern(size: int) -> bytes:
    """Bytes where any duplicated or dropped run changes what follows."""
    return bytes(random.Random(size).randrange(256) for _ in range(size))


# -- finding 7: the slicer, and a proxy that loops back into itself ------------------------


async def test_a_slicer_with_average_size_zero_cuts_single_bytes_and_the_proxy_lives(
    server: FaultProxyServer, echo_port: int
) -> None:
    port = await _proxy(server, "slicer-zero", f"127.0.0.1:{echo_port}")
    got = await _api(server, "POST", "/proxies/slicer-zero/toxics",
                     {"type": "slicer", "attributes": {"average_size": 0}})  # fmt: skip
    assert got.status == 200, got.body
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await _exactly_through(conn, _pattern(3_000))
    assert (await _api(server, "GET", "/version")).status == 200


@pytest.mark.parametrize(
    ("average", "variation"), [(10, 100), (1, 5_000), (0, 3), (100, 60_000), (3, 2**31)]
)
async def test_a_slicer_whose_variation_exceeds_its_size_keeps_the_stream(
    server: FaultProxyServer, echo_port: int, average: int, variation: int
) -> None:
    port = await _proxy(server, "slicer-wide", f"127.0.0.1:{echo_port}")
    for stream in ("upstream", "downstream"):
        body = {"type": "slicer", "stream": stream,
                "attributes": {"average_size": average, "size_variation": variation}}  # fmt: skip
        assert (await _api(server, "POST", "/proxies/slicer-wide/toxics", body)).status == 200
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await _exactly_through(conn, _pattern(10_000))


@pytest.mark.parametrize(
    ("kind", "attributes"),
    [
        pytest.param(  # 8 s per backend (a byte per slice): make scenarios
            "slicer",
            {"average_size": 0, "size_variation": 0, "delay": 0},
            marks=pytest.mark.scenario,
        ),
        ("slicer", {"average_size": 2**62, "size_variation": 2**62, "delay": 1}),
        ("latency", {"latency": 0, "jitter": 0}),
        ("latency", {"latency": 1, "jitter": 20}),  # jitter > latency: negative delays
        ("bandwidth", {"rate": 2**62}),
        ("bandwidth", {"rate": 1_000}),
        ("slow_close", {"delay": 0}),
        ("limit_data", {"bytes": 2**62}),
        ("timeout", {"timeout": 2**62}),  # swallows; only checks the proxy lives
        ("noop", {}),
    ],
)
async def test_every_toxic_survives_edge_attributes(
    server: FaultProxyServer, echo_port: int, kind: str, attributes: dict[str, int]
) -> None:
    port = await _proxy(server, "edges", f"127.0.0.1:{echo_port}")
    for stream in ("upstream", "downstream"):
        body = {"type": kind, "name": f"{kind}-{stream}", "stream": stream,
                "attributes": attributes}  # fmt: skip
        assert (await _api(server, "POST", "/proxies/edges/toxics", body)).status == 200
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        if kind == "timeout":
            await conn.send(b"swallowed")
        else:
            await _exactly_through(conn, _pattern(20_000))
    assert (await _api(server, "GET", "/version")).status == 200


def _taken_port() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock


async def test_an_upstream_that_is_the_proxy_itself_is_refused(server: FaultProxyServer) -> None:
    with _taken_port() as probe:
        port = probe.getsockname()[1]
    for listen, upstream in ((f"127.0.0.1:{port}", f"127.0.0.1:{port}"),
                             (f"127.0.0.1:{port}", f"localhost:{port}"),
                             (f"0.0.0.0:{port}", f"127.0.0.1:{port}")):  # fmt: skip
        body = {"name": "itself", "listen": listen, "upstream": upstream}
        got = await _api(server, "POST", "/proxies", body)
        assert got.status == 400, (listen, upstream, got.body)
        assert "itself" in got.json()["error"]
        assert (await _api(server, "GET", "/proxies/itself")).status == 404
    own = await _proxy(server, "later", "127.0.0.1:1")
    got = await _api(server, "POST", "/proxies/later", {"upstream": f"localhost:{own}"})
    assert got.status == 400, got.body
    shown = (await _api(server, "GET", "/proxies/later")).json()
    assert (shown["upstream"], shown["enabled"]) == ("127.0.0.1:1", True)


async def test_a_loop_through_proxies_is_cut_but_a_chain_is_not(
    server: FaultProxyServer, echo_port: int
) -> None:
    await _proxy(server, "a", "127.0.0.1:1")
    b = await _proxy(server, "b", "127.0.0.1:1")
    listen = {n: (await _api(server, "GET", f"/proxies/{n}")).json()["listen"] for n in "ab"}
    assert (await _api(server, "POST", "/proxies/b", {"upstream": listen["a"]})).status == 200
    assert (await _api(server, "POST", "/proxies/a", {"upstream": listen["b"]})).status == 200
    async with await anyio.connect_tcp("127.0.0.1", b) as conn:
        with pytest.raises(_CLOSED):
            await _read(conn, 1)
    # every hop of the loop unwinds
    await wait_until(lambda: not server.proxies["a"].links | server.proxies["b"].links, 10)
    # b -> a -> echo: a chain through the same proxies, without a loop, still carries data
    assert (
        await _api(server, "POST", "/proxies/a", {"upstream": f"127.0.0.1:{echo_port}"})
    ).status == 200
    async with await anyio.connect_tcp("127.0.0.1", b) as conn:
        await _exactly_through(conn, _pattern(5_000))


def _api_sync(api_url: str, method: str, path: str, body: object = None) -> Answer:
    return call(ToxiproxyClient(api_url), method, path, body)


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _limit_descriptors() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts descriptors in /proc")
def test_a_loop_through_two_proxies_is_cut_and_the_api_keeps_answering() -> None:
    """A -> B -> A cannot be seen from one request; the first looping connection is closed,
    so one client cannot make the proxy open descriptors until it has none left."""
    cmd = [*WARREN, "proxy", "--port", "0"]
    pipe = subprocess.PIPE
    with subprocess.Popen(
        cmd, stdout=pipe, stderr=pipe, text=True, preexec_fn=_limit_descriptors
    ) as proc:
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().strip().rpartition(" ")[2]
            assert url.startswith("http://"), url
            made = {}
            for name in ("a", "b"):
                body = {"name": name, "listen": "127.0.0.1:0", "upstream": "127.0.0.1:1"}
                made[name] = _api_sync(url, "POST", "/proxies", body).json()["listen"]
            assert _api_sync(url, "POST", "/proxies/b", {"upstream": made["a"]}).status == 200
            assert _api_sync(url, "POST", "/proxies/a", {"upstream": made["b"]}).status == 200
            before = _open_fds(proc.pid)
            port = int(made["a"].rpartition(":")[2])
            conn = socket.create_connection(("127.0.0.1", port), timeout=10)
            with conn, contextlib.suppress(ConnectionResetError):
                assert conn.recv(10) == b"", "the looping connection must be closed"
            deadline = time.monotonic() + 10
            while _open_fds(proc.pid) > before + 4:  # every hop's descriptors come back
                assert time.monotonic() < deadline, f"{_open_fds(proc.pid)} descriptors open"
                time.sleep(0.05)
            assert _api_sync(url, "GET", "/version").status == 200
        finally:
            proc.kill()
            _, errors = proc.communicate(timeout=20)
        assert "accept.paused" not in errors, "the proxy ran out of descriptors"
        assert "proxy.loop proxy=a" in errors


# -- finding 15: failed updates, and a half-close ------------------------------------------


async def test_a_failed_listen_update_leaves_the_proxy_as_it_was(
    server: FaultProxyServer, echo_port: int
) -> None:
    port = await _proxy(server, "moving", f"127.0.0.1:{echo_port}")
    before = (await _api(server, "GET", "/proxies/moving")).json()
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await _exactly_through(conn, b"before")
        with _taken_port() as taken:
            busy = taken.getsockname()[1]
            body = {"listen": f"127.0.0.1:{busy}", "upstream": "127.0.0.1:1"}
            got = await _api(server, "POST", "/proxies/moving", body)
        assert got.status == 500
        assert got.json()["error"] == (f"listen tcp 127.0.0.1:{busy}: bind: address already in use")
        assert (await _api(server, "GET", "/proxies/moving")).json() == before
        await _exactly_through(conn, b"the live connection is untouched")
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await _exactly_through(conn, b"and new ones are served")
    assert (await _api(server, "POST", "/reset")).status == 204


async def test_a_failed_enable_at_a_new_address_changes_nothing(
    server: FaultProxyServer, echo_port: int
) -> None:
    await _proxy(server, "off", f"127.0.0.1:{echo_port}", enabled=False)
    before = (await _api(server, "GET", "/proxies/off")).json()
    with _taken_port() as taken:
        busy = taken.getsockname()[1]
        body = {"listen": f"127.0.0.1:{busy}", "enabled": True}
        assert (await _api(server, "POST", "/proxies/off", body)).status == 500
    assert (await _api(server, "GET", "/proxies/off")).json() == before
    assert (await _api(server, "POST", "/reset")).status == 204
    assert (await _api(server, "GET", "/proxies/off")).json()["enabled"] is True


async def test_reset_resets_every_proxy_even_if_one_cannot_listen(
    server: FaultProxyServer, echo_port: int
) -> None:
    first = await _proxy(server, "first", f"127.0.0.1:{echo_port}")
    await _proxy(server, "second", f"127.0.0.1:{echo_port}")
    for name in ("first", "second"):
        toxic = {"type": "latency", "attributes": {"latency": 10}}
        assert (await _api(server, "POST", f"/proxies/{name}/toxics", toxic)).status == 200
        assert (await _api(server, "POST", f"/proxies/{name}", {"enabled": False})).status == 200
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", first))
        squatter.listen()
        got = await _api(server, "POST", "/reset")
    assert got.status == 500
    assert got.json()["error"] == f"listen tcp 127.0.0.1:{first}: bind: address already in use"
    proxies = (await _api(server, "GET", "/proxies")).json()
    assert proxies["second"]["enabled"] is True
    assert proxies["first"]["toxics"] == proxies["second"]["toxics"] == []
    assert (await _api(server, "POST", "/reset")).status == 204


@pytest.mark.parametrize(
    "toxics",
    [
        [],
        [
            {"type": "latency", "attributes": {"latency": 20}},
            {
                "type": "slicer",
                "stream": "upstream",
                "attributes": {"average_size": 3, "delay": 10},
            },
            {"type": "bandwidth", "attributes": {"rate": 10_000}},
            {"type": "slow_close", "attributes": {"delay": 10}},
        ],
    ],
    ids=["plain", "toxic"],
)
async def test_a_client_half_close_still_gets_the_reply(
    server: FaultProxyServer, toxics: list[dict[str, Any]]
) -> None:
    async for upstream in _serve(_reply_after_eof):
        port = await _proxy(server, "half", f"127.0.0.1:{upstream}")
        for toxic in toxics:
            assert (await _api(server, "POST", "/proxies/half/toxics", toxic)).status == 200
        async with await anyio.connect_tcp("127.0.0.1", port) as conn:
            await conn.send(b"GET / HTTP/1.0\r\n\r\n")
            await conn.send_eof()
            assert await _read_to_eof(conn) == b"reply to GET / HTTP/1.0\r\n\r\n"


async def test_an_upstream_half_close_still_takes_the_clients_data(
    server: FaultProxyServer,
) -> None:
    heard = anyio.Event()
    got: list[bytes] = []

    async def greet_then_listen(stream: SocketStream) -> None:
        async with stream:
            await stream.send(b"hello, then EOF")
            await stream.send_eof()
            got.append(b"".join([chunk async for chunk in stream]))
            heard.set()

    async for upstream in _serve(greet_then_listen):
        port = await _proxy(server, "half-back", f"127.0.0.1:{upstream}")
        async with await anyio.connect_tcp("127.0.0.1", port) as conn:
            assert await _read_to_eof(conn) == b"hello, then EOF"
            await conn.send(b"still talking")
            await conn.send_eof()
            with anyio.fail_after(10):
                await heard.wait()
        assert got == [b"still talking"]


# -- the guard: bytes in == bytes out through any chain, in virtual time --------------------

_BIG = (2**31 - 1, 2**62)
_SIZES = st.one_of(st.sampled_from((0, 1, 2, *_BIG)), st.integers(0, 70_000))
_MILLIS = st.one_of(st.sampled_from((0, 1, *_BIG)), st.integers(0, 10_000))
_ATTRIBUTES: dict[str, st.SearchStrategy[dict[str, int]]] = {
    "slicer": st.fixed_dictionaries(
        {"average_size": _SIZES, "size_variation": _SIZES, "delay": _MILLIS}
    ),
    "latency": st.fixed_dictionaries({"latency": _MILLIS, "jitter": _MILLIS}),
    "bandwidth": st.fixed_dictionaries(
        {"rate": st.one_of(st.sampled_from((1, *_BIG)), st.integers(1, 100_000))}
    ),
    "slow_close": st.fixed_dictionaries({"delay": _MILLIS}),
    "noop": st.just({}),
}


@st.composite
def _chains(
    draw: st.DrawFn,
) -> tuple[list[Toxic], list[bytes], list[tuple[int, int, dict[str, int]]]]:
    kinds = draw(st.lists(st.sampled_from(sorted(_ATTRIBUTES)), min_size=1, max_size=4))
    chain = [Toxic(f"t{i}", kind, "downstream", 1.0, draw(_ATTRIBUTES[kind]))
             for i, kind in enumerate(kinds)]  # fmt: skip
    chunks = draw(st.lists(st.binary(min_size=1, max_size=3_000), min_size=1, max_size=5))
    updates = [
        (draw(st.integers(0, len(chunks) - 1)), which, draw(_ATTRIBUTES[chain[which].type]))
        for which in draw(st.lists(st.integers(0, len(chain) - 1), max_size=3))
    ]
    return chain, chunks, updates


async def _through(
    chain: list[Toxic], chunks: list[bytes], updates: list[tuple[int, int, dict[str, int]]]
) -> bytes:
    """Run ``chunks`` through the toxics' pipes, chained as a link chains them, updating
    toxics (interrupt, run again) mid-stream; what comes out of the end."""
    rng = random.Random(7)
    pulse = Pulse()
    chans = [Chan(pulse, BUFFER_SIZE.get(t.type, 0)) for t in chain] + [Chan(pulse, 0)]
    stubs = [Stub(pulse, chans[i], chans[i + 1]) for i in range(len(chain))]
    out = bytearray()

    async def run(stub: Stub, toxic: Toxic) -> None:
        stub.running(True)
        try:
            await PIPES[toxic.type](stub, toxic, rng)
        finally:
            stub.running(False)

    async def feed() -> None:
        for i, data in enumerate(chunks):
            await chans[0].send(Chunk(data, anyio.current_time()))
            for at, which, attributes in updates:
                if at == i:
                    chain[which].attributes = attributes
                    if await stubs[which].interrupt():
                        tg.start_soon(run, stubs[which], chain[which])
        chans[0].close()

    with anyio.fail_after(1e18):  # virtual seconds: only a chain that hangs reaches it
        async with anyio.create_task_group() as tg:
            for stub, toxic in zip(stubs, chain, strict=True):
                tg.start_soon(run, stub, toxic)
            tg.start_soon(feed)
            while (chunk := await chans[-1].take()) is not None:
                out += chunk.data
    return bytes(out)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_chains())
def test_bytes_in_equal_bytes_out_for_any_attributes(
    case: tuple[list[Toxic], list[bytes], list[tuple[int, int, dict[str, int]]]],
) -> None:
    chain, chunks, updates = case
    clock = trio.testing.MockClock(autojump_threshold=0)
    got = trio.run(_through, chain, chunks, updates, clock=clock)
    assert got == b"".join(chunks)


async def test_populate_that_cannot_replace_a_proxy_keeps_the_old_one(
    server: FaultProxyServer, echo_port: int
) -> None:
    port = await _proxy(server, "kept", f"127.0.0.1:{echo_port}")
    toxic = {"type": "latency", "attributes": {"latency": 1}}
    assert (await _api(server, "POST", "/proxies/kept/toxics", toxic)).status == 200
    before = (await _api(server, "GET", "/proxies/kept")).json()
    with _taken_port() as taken:
        busy = taken.getsockname()[1]
        entry = {"name": "kept", "listen": f"127.0.0.1:{busy}", "upstream": "127.0.0.1:1"}
        got = await _api(server, "POST", "/populate", [entry])
    assert got.status == 500, got.body
    assert got.json()["proxies"] is None
    assert (await _api(server, "GET", "/proxies/kept")).json() == before
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await _exactly_through(conn, b"still proxied")
