"""Toxiproxy's own behaviour, checked against whatever ``fault_proxy_server`` runs: Warren's
proxy, or a real Toxiproxy when ``WARREN_TOXIPROXY_URL`` points at one (the same test must
pass on both). Each case is from Toxiproxy 2's ``api.go``, ``proxy.go``, ``toxics/*.go`` and
their tests; the rows still differing are listed in docs/testing-your-worker.md."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import quote

import anyio
import pytest

from tests.support.toxiproxy_tools import call, echo_server, unique_name

if TYPE_CHECKING:
    from collections.abc import Iterator

    from warren.testing import ToxiproxyClient

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def api(fault_proxy_server: ToxiproxyClient) -> Iterator[ToxiproxyClient]:
    made: list[str] = []
    fault_proxy_server.made = made  # type: ignore[attr-defined]
    yield fault_proxy_server
    for name in made:
        call(fault_proxy_server, "DELETE", f"/proxies/{quote(name)}")


def _name(api: ToxiproxyClient) -> str:
    return unique_name(api.made)  # type: ignore[attr-defined]


@pytest.fixture
def echo_port() -> Iterator[int]:
    with echo_server() as port:
        yield port


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


# -- /populate and /version ----------------------------------------------------------------


def test_populate_checks_every_entry_before_making_any(
    api: ToxiproxyClient, echo_port: int
) -> None:
    first, second = _name(api), _name(api)
    got = call(api, "POST", "/populate", [
        {"name": first, "upstream": f"127.0.0.1:{echo_port}", "listen": "127.0.0.1:0"},
        {"name": second, "listen": "127.0.0.1:0"},
    ])  # fmt: skip
    assert got.status == 400 and got.headers["Content-Type"] == "application/json"
    assert got.json() == {"error": "missing required field: upstream at proxy 2", "status": 400,
                          "proxies": None}  # fmt: skip
    assert call(api, "GET", f"/proxies/{first}").status == 404, "nothing was made"
    nameless = call(api, "POST", "/populate", [{"upstream": f"127.0.0.1:{echo_port}"}])
    assert nameless.json()["error"] == "missing required field: name at proxy 1"


def test_populate_with_nothing_answers_null(api: ToxiproxyClient) -> None:
    got = call(api, "POST", "/populate", [])
    assert (got.status, got.json()) == (201, {"proxies": None})


async def test_populate_keeps_an_identical_proxy_with_its_toxics_and_connections(
    api: ToxiproxyClient, echo_port: int
) -> None:
    name = _name(api)
    spec = {"name": name, "upstream": f"127.0.0.1:{echo_port}", "listen": "127.0.0.1:0"}
    made = call(api, "POST", "/populate", [spec])
    assert made.status == 201 and made.headers["Content-Type"] == "application/json"
    listen = made.json()["proxies"][0]["listen"]
    toxic = {"type": "latency", "attributes": {"latency": 1}}
    assert call(api, "POST", f"/proxies/{name}/toxics", toxic).status == 200
    async with await anyio.connect_tcp("127.0.0.1", int(listen.rpartition(":")[2])) as conn:
        await conn.send(b"before")
        with anyio.fail_after(5):
            assert await conn.receive() == b"before"
        again = call(api, "POST", "/populate", [dict(spec, listen=listen)])
        assert again.status == 201
        assert [t["name"] for t in again.json()["proxies"][0]["toxics"]] == ["latency_downstream"]
        await conn.send(b"still up")
        with anyio.fail_after(5):
            assert await conn.receive() == b"still up"
        moved = call(api, "POST", "/populate", [dict(spec, listen=listen, upstream="127.0.0.1:1")])
        assert moved.status == 201 and moved.json()["proxies"][0]["toxics"] == []
        with anyio.fail_after(5), pytest.raises((anyio.EndOfStream, anyio.BrokenResourceError)):
            await conn.receive()


def test_populate_reports_what_it_made_before_a_listen_failed(
    api: ToxiproxyClient, echo_port: int
) -> None:
    first, second = _name(api), _name(api)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"127.0.0.1:{taken.getsockname()[1]}"
        got = call(api, "POST", "/populate", [
            {"name": first, "upstream": f"127.0.0.1:{echo_port}", "listen": "127.0.0.1:0"},
            {"name": second, "upstream": f"127.0.0.1:{echo_port}", "listen": busy},
        ])  # fmt: skip
    assert got.status == 500 and got.json()["status"] == 500
    assert busy in got.json()["error"]
    assert [p["name"] for p in got.json()["proxies"]] == [first]


def test_version_is_json_with_a_newline(api: ToxiproxyClient) -> None:
    got = call(api, "GET", "/version")
    assert got.status == 200 and got.headers["Content-Type"] == "application/json;charset=utf-8"
    assert got.body.startswith(b'{"version": "') and got.body.endswith(b'"}\n')


def test_populate_stops_at_an_entry_that_cannot_listen(
    api: ToxiproxyClient, echo_port: int
) -> None:
    """Toxiproxy's TestPopulateProxyWithBadDataShouldReturnError: the entries before the bad
    one are made, none after."""
    one, two, three = _name(api), _name(api), _name(api)
    upstream = f"127.0.0.1:{echo_port}"
    got = call(api, "POST", "/populate", [
        {"name": one, "upstream": upstream, "listen": "127.0.0.1:0"},
        {"name": two, "upstream": upstream, "listen": "local373"},
        {"name": three, "upstream": upstream, "listen": "127.0.0.1:0"},
    ])  # fmt: skip
    assert got.status == 500 and "local373" in got.json()["error"]
    assert [p["name"] for p in got.json()["proxies"]] == [one]
    assert [call(api, "GET", f"/proxies/{n}").status for n in (one, two, three)] == [200, 404, 404]


def test_a_port_in_use_is_500_in_gos_words(api: ToxiproxyClient, echo_port: int) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        got = call(api, "POST", "/proxies", {"name": _name(api), "listen": f"localhost:{port}",
                                             "upstream": f"127.0.0.1:{echo_port}"})  # fmt: skip
    assert got.status == 500
    assert got.json()["error"] == f"listen tcp 127.0.0.1:{port}: bind: address already in use"


# -- Go's words for bad bodies (recorded from Toxiproxy 2.12) ------------------------------

_GO = "bad request body: json: cannot unmarshal"
_UPDATE_TYPE = ('struct { Attributes interface {} "json:\\"attributes\\""; Toxicity float32'
                ' "json:\\"toxicity\\"" }')  # fmt: skip


def _field(kind: str, field: str, go: str) -> str:
    return f"{_GO} {kind} into Go struct field {field} of type {go}"


_SYNTAX = "bad request body: invalid character"
_WRAPPER = "ToxicWrapper"
_LATENCY = "LatencyToxic.attributes.latency"


@pytest.mark.parametrize(
    ("path", "body", "error"),
    [
        ("", b"", "bad request body: EOF"),
        ("", b"[]", f"{_GO} array into Go value of type toxiproxy.Proxy"),
        ("", b'{"name":5,"upstream":"x"}', _field("number", "Proxy.name", "string")),
        ("", b'{"name":"r","upstream":"a:1","listen":8}',
         _field("number", "Proxy.listen", "string")),
        ("", b'{"name":null,"upstream":"a:1"}', "missing required field: name"),
        ("", b"{bad", f"{_SYNTAX} 'b' looking for beginning of object key string"),
        ("/P", b"", "bad request body: EOF"),
        ("/P", b'{"upstream":7}', _field("number", "Proxy.upstream", "string")),
        ("/P/toxics", b"", "bad request body: EOF"),
        ("/P/toxics", b"[1,2]", f"{_GO} array into Go value of type toxics.ToxicWrapper"),
        ("/P/toxics", b'{"type":"latency","attributes":5}',
         _field("number", f"{_WRAPPER}.attributes", "toxics.NoopToxic")),
        ("/P/toxics", b'{"type":5}', _field("number", f"{_WRAPPER}.type", "string")),
        ("/P/toxics", b'{"type":"latency","toxicity":"1"}',
         _field("string", f"{_WRAPPER}.toxicity", "float32")),
        ("/P/toxics", b'{"type":"slicer","attributes":{"delay":"x"}}',
         _field("string", "SlicerToxic.attributes.delay", "int")),
        ("/P/toxics", b'{"type":"latency","attributes":{"latency":true}}',
         _field("bool", _LATENCY, "int64")),
        ("/P/toxics", b'{"type":"bandwidth","attributes":{"rate":1.5}}',
         _field("number 1.5", "BandwidthToxic.attributes.rate", "int64")),
        ("/P/toxics", b'{"type":"latency","attributes":{"latency":1e3}}',
         _field("number 1e3", _LATENCY, "int64")),
        ("/P/toxics", b'{"type":"nope"}', "invalid toxic type"),
        ("/P/toxics", b'{"type":"latency","name":"N"', "bad request body: unexpected EOF"),
        ("/P/toxics", b'{"type":"latency" "name":"N"}',
         f"{_SYNTAX} '\"' after object key:value pair"),
        ("/P/toxics", b'{"type" "latency"}', f"{_SYNTAX} '\"' after object key"),
        ("/P/toxics", b"[1 2]", f"{_SYNTAX} '2' after array element"),
        ("/P/toxics", b"nul", "bad request body: unexpected EOF"),
        ("/P/toxics/T", b"", "bad request body: EOF"),
        ("/P/toxics/T", b"[]", f"{_GO} array into Go value of type {_UPDATE_TYPE}"),
        ("/P/toxics/T", b'{"toxicity":"x"}', _field("string", ".toxicity", "float32")),
        ("/P/toxics/T", b'{"attributes":5}',
         _field("number", ".attributes", "toxics.LatencyToxic")),
        ("/P/toxics/T", b'{"attributes":{"latency":"x"}}', _field("string", _LATENCY, "int64")),
    ],
)  # fmt: skip
def test_a_bad_body_gets_gos_words(
    api: ToxiproxyClient, echo_port: int, path: str, body: bytes, error: str
) -> None:
    name = _proxy(api, echo_port)
    made = call(api, "POST", f"/proxies/{name}/toxics", {"type": "latency", "name": "T"})
    assert made.status == 200
    url = "/proxies" + path.replace("/P", f"/{name}", 1)
    req = urllib.request.Request(api.api_url + url, data=body, method="POST",
                                 headers={"User-Agent": "compat-test"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=10)
    assert refused.value.code == 400
    assert json.loads(refused.value.read()) == {"error": error, "status": 400}


def test_fields_are_matched_as_go_matches_them(api: ToxiproxyClient, echo_port: int) -> None:
    """Go's json takes a key that differs only in case, ignores what follows the value."""
    name = _name(api)
    got = call(api, "POST", "/proxies", {"Name": name, "UPSTREAM": f"127.0.0.1:{echo_port}",
                                         "listen": "127.0.0.1:0"})  # fmt: skip
    assert got.status == 201 and got.json()["upstream"] == f"127.0.0.1:{echo_port}"
    req = urllib.request.Request(api.api_url + f"/proxies/{name}/toxics", method="POST",
                                 data=b'{"type":"latency","Name":"M"} trailing',
                                 headers={"User-Agent": "compat-test"})  # fmt: skip
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert json.loads(resp.read()) == {"attributes": {"latency": 0, "jitter": 0}, "name": "M",
                                           "type": "latency", "stream": "downstream",
                                           "toxicity": 1}  # fmt: skip


def test_a_proxy_shows_toxiproxys_fields(api: ToxiproxyClient, echo_port: int) -> None:
    name = _proxy(api, echo_port)
    got = call(api, "GET", f"/proxies/{name}")
    assert list(got.json()) == ["name", "listen", "upstream", "enabled", "Logger", "toxics"]
    assert call(api, "DELETE", f"/proxies/{name}").headers.get("Content-Type") is None
