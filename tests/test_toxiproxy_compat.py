"""Toxiproxy's own behaviour, checked against whatever ``fault_proxy_server`` runs: Warren's
proxy, or a real Toxiproxy when ``WARREN_TOXIPROXY_URL`` points at one (the same test must
pass on both). Each case is from Toxiproxy 2's ``api.go``, ``proxy.go``, ``toxics/*.go`` and
their tests; the rows still differing are listed in docs/testing-your-worker.md."""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import urllib.error
import urllib.request
import uuid
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import anyio
import pytest

if TYPE_CHECKING:
    from collections.abc import Iterator

    from warren.testing import ToxiproxyClient

pytestmark = pytest.mark.timeout(60)


class _Answer:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)


def call(api: ToxiproxyClient, method: str, path: str, body: object = None) -> _Answer:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(api.api_url + path, data=data, method=method,
                                 headers={"User-Agent": "compat-test"})  # fmt: skip
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return _Answer(resp.status, resp.headers, resp.read())
    except urllib.error.HTTPError as exc:
        return _Answer(exc.code, exc.headers, exc.read())


@pytest.fixture
def api(fault_proxy_server: ToxiproxyClient) -> Iterator[ToxiproxyClient]:
    made: list[str] = []
    fault_proxy_server.made = made  # type: ignore[attr-defined]
    yield fault_proxy_server
    for name in made:
        call(fault_proxy_server, "DELETE", f"/proxies/{quote(name)}")


def _name(api: ToxiproxyClient) -> str:
    name = f"compat-{uuid.uuid4().hex[:8]}"
    api.made.append(name)  # type: ignore[attr-defined]
    return name


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except OSError:
            pass


@pytest.fixture
def echo_port() -> Iterator[int]:
    """An echo server in a thread (the proxy's upstream), for sync and async tests alike."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield int(server.server_address[1])
        server.shutdown()


# -- the HTTP layer ------------------------------------------------------------------------


def test_an_unknown_path_is_a_plain_text_404(api: ToxiproxyClient) -> None:
    for path in ("/no/such/route", "/proxies/", "/proxies/a/toxics/b/c"):
        got = call(api, "GET", path)
        assert (got.status, got.body) == (404, b"404 page not found\n"), path
        assert got.headers["Content-Type"] == "text/plain; charset=utf-8"


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/proxies"), ("GET", "/reset"), ("PUT", "/proxies/x"), ("GET", "/populate"),
     ("DELETE", "/proxies/x/toxics"), ("POST", "/version")],
)  # fmt: skip
def test_a_wrong_method_on_a_known_path_is_405(
    api: ToxiproxyClient, method: str, path: str
) -> None:
    got = call(api, method, path)
    assert (got.status, got.body) == (405, b"")


def test_answers_carry_a_request_id_and_errors_are_json_as_plain_text(
    api: ToxiproxyClient,
) -> None:
    ok = call(api, "GET", "/proxies")
    assert ok.status == 200 and ok.headers["Content-Type"] == "application/json"
    error = call(api, "GET", "/proxies/compat-missing")
    assert error.status == 404
    assert error.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert error.body == b'{"error":"proxy not found","status":404}\n'
    ids = {ok.headers["X-Toxiproxy-Request-Id"], error.headers["X-Toxiproxy-Request-Id"]}
    assert len(ids) == 2 and all(len(i) == 20 for i in ids), ids


def test_a_path_segment_is_url_decoded(api: ToxiproxyClient, echo_port: int) -> None:
    name = _name(api) + " x"
    api.made.append(name)  # type: ignore[attr-defined]
    made = call(api, "POST", "/proxies", {"name": name, "upstream": f"127.0.0.1:{echo_port}",
                                          "listen": "127.0.0.1:0"})  # fmt: skip
    assert made.status == 201
    assert call(api, "GET", "/proxies/" + quote(name)).json()["name"] == name


# -- proxies -------------------------------------------------------------------------------


def test_the_listen_address_is_reported_as_bound(api: ToxiproxyClient, echo_port: int) -> None:
    got = call(api, "POST", "/proxies", {"name": _name(api), "listen": "localhost:0",
                                         "upstream": f"127.0.0.1:{echo_port}"}).json()  # fmt: skip
    host, _, port = got["listen"].rpartition(":")
    assert host == "127.0.0.1" and int(port) > 0, got["listen"]


def test_an_ipv6_listen_address_is_reported_in_brackets(
    api: ToxiproxyClient, echo_port: int
) -> None:
    try:
        socket.socket(socket.AF_INET6).close()
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    got = call(api, "POST", "/proxies", {"name": _name(api), "listen": "[::1]:0",
                                         "upstream": f"127.0.0.1:{echo_port}"}).json()  # fmt: skip
    assert got["listen"].startswith("[::1]:") and int(got["listen"].rpartition(":")[2]) > 0


@pytest.mark.parametrize(("enabled", "kind"), [("false", "string"), (0, "number")])
def test_enabled_must_be_a_json_bool(
    api: ToxiproxyClient, echo_port: int, enabled: object, kind: str
) -> None:
    name = _name(api)
    got = call(api, "POST", "/proxies", {"name": name, "upstream": f"127.0.0.1:{echo_port}",
                                         "listen": "127.0.0.1:0", "enabled": enabled})  # fmt: skip
    assert got.status == 400
    assert got.json() == {"error": "bad request body: json: cannot unmarshal"
                                   f" {kind} into Go struct field Proxy.enabled of type bool",
                          "status": 400}  # fmt: skip
    assert call(api, "GET", f"/proxies/{name}").status == 404, "nothing was created"


def test_enabled_null_means_enabled(api: ToxiproxyClient, echo_port: int) -> None:
    got = call(api, "POST", "/proxies", {"name": _name(api), "upstream": f"127.0.0.1:{echo_port}",
                                         "listen": "127.0.0.1:0", "enabled": None})  # fmt: skip
    assert got.status == 201 and got.json()["enabled"] is True


async def test_a_new_upstream_closes_live_connections(api: ToxiproxyClient, echo_port: int) -> None:
    name = _name(api)
    made = call(api, "POST", "/proxies", {"name": name, "upstream": f"127.0.0.1:{echo_port}",
                                          "listen": "127.0.0.1:0"}).json()  # fmt: skip
    port = int(made["listen"].rpartition(":")[2])
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await conn.send(b"ping")
        with anyio.fail_after(5):
            assert await conn.receive() == b"ping"
        moved = call(api, "PATCH", f"/proxies/{name}", {"upstream": "127.0.0.1:1"})
        assert moved.status == 200 and moved.json()["upstream"] == "127.0.0.1:1"
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await conn.receive()
    assert call(api, "GET", f"/proxies/{name}").json()["listen"] == made["listen"]


# -- toxics --------------------------------------------------------------------------------


def _proxy(api: ToxiproxyClient, echo_port: int) -> str:
    name = _name(api)
    assert call(api, "POST", "/proxies", {"name": name, "upstream": f"127.0.0.1:{echo_port}",
                                          "listen": "127.0.0.1:0"}).status == 201  # fmt: skip
    return name


def test_the_stream_is_read_case_insensitively_and_shown_as_sent(
    api: ToxiproxyClient, echo_port: int
) -> None:
    name = _proxy(api, echo_port)
    got = call(api, "POST", f"/proxies/{name}/toxics", {"type": "latency", "stream": "UPSTREAM"})
    assert got.status == 200
    assert (got.json()["stream"], got.json()["name"]) == ("UPSTREAM", "latency_UPSTREAM")


def test_an_empty_stream_is_refused(api: ToxiproxyClient, echo_port: int) -> None:
    name = _proxy(api, echo_port)
    got = call(api, "POST", f"/proxies/{name}/toxics", {"type": "latency", "stream": ""})
    assert got.status == 400
    assert got.json()["error"] == "stream was invalid, can be either upstream or downstream"


async def test_noop_is_a_toxic_that_does_nothing(api: ToxiproxyClient, echo_port: int) -> None:
    name = _proxy(api, echo_port)
    got = call(api, "POST", f"/proxies/{name}/toxics", {"type": "noop"})
    assert got.status == 200
    assert (got.json()["name"], got.json()["attributes"]) == ("noop_downstream", {})
    port = int(call(api, "GET", f"/proxies/{name}").json()["listen"].rpartition(":")[2])
    async with await anyio.connect_tcp("127.0.0.1", port) as conn:
        await conn.send(b"through")
        with anyio.fail_after(5):
            assert await conn.receive() == b"through"


def test_toxics_are_listed_upstream_first(api: ToxiproxyClient, echo_port: int) -> None:
    name = _proxy(api, echo_port)
    for body in ({"type": "latency", "name": "d1"}, {"type": "latency", "name": "u1",
                 "stream": "upstream"}, {"type": "timeout", "name": "d2"},
                 {"type": "slicer", "name": "u2", "stream": "upstream"}):  # fmt: skip
        assert call(api, "POST", f"/proxies/{name}/toxics", body).status == 200
    listed = [t["name"] for t in call(api, "GET", f"/proxies/{name}/toxics").json()]
    assert listed == ["u1", "u2", "d1", "d2"]
    shown = [t["name"] for t in call(api, "GET", f"/proxies/{name}").json()["toxics"]]
    assert shown == listed
