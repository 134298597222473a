"""The fault proxy's HTTP API answers as Toxiproxy's does (status codes, shapes, errors)."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from warren.testing import ToxiproxyClient, ToxiproxyError


def raw(client: ToxiproxyClient, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """One request, status and decoded body, bypassing the client's error mapping."""
    data = (
        None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    )
    req = urllib.request.Request(client.api_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            text = resp.read()
            return resp.status, json.loads(text) if text.strip() else None
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def api(fault_proxy_server: ToxiproxyClient) -> ToxiproxyClient:
    fault_proxy_server.reset()
    for name in list(fault_proxy_server.proxies()):
        if name.startswith("api-"):
            fault_proxy_server.delete_proxy(name)
    return fault_proxy_server


def test_proxy_lifecycle_status_codes_and_shapes(api: ToxiproxyClient) -> None:
    status, body = raw(api, "POST", "/proxies", {"name": "api-a", "upstream": "127.0.0.1:5672",
                                                 "listen": "127.0.0.1:0"})  # fmt: skip
    assert status == 201
    assert set(body) == {"name", "listen", "upstream", "enabled", "Logger", "toxics"}
    assert body["enabled"] is True and body["toxics"] == []
    assert int(body["listen"].rpartition(":")[2]) > 0, "port 0 is replaced by the real port"
    assert raw(api, "GET", "/proxies")[1]["api-a"]["name"] == "api-a"
    assert raw(api, "GET", "/proxies/api-a")[0] == 200
    status, body = raw(api, "POST", "/proxies/api-a", {"enabled": False})
    assert (status, body["enabled"]) == (200, False)
    assert raw(api, "DELETE", "/proxies/api-a") == (204, None)
    assert raw(api, "GET", "/proxies/api-a") == (404, {"error": "proxy not found", "status": 404})
    assert raw(api, "GET", "/version")[1]["version"]


@pytest.mark.parametrize(
    ("body", "status", "error"),
    [
        ({"upstream": "127.0.0.1:1"}, 400, "missing required field: name"),
        ({"name": "api-x"}, 400, "missing required field: upstream"),
        (b"{not json", 400, "bad request body"),
        ({"name": "api-x", "upstream": "nohost"}, 400, "bad request body"),
    ],
)
def test_bad_proxy_requests(api: ToxiproxyClient, body: Any, status: int, error: str) -> None:
    got_status, got = raw(api, "POST", "/proxies", body)
    assert got_status == status and got["status"] == status
    assert got["error"].startswith(error)


def test_duplicate_proxy_is_409_and_port_in_use_is_500(api: ToxiproxyClient) -> None:
    api.create_proxy("api-dup", "127.0.0.1:5672")
    with pytest.raises(ToxiproxyError) as info:
        api.create_proxy("api-dup", "127.0.0.1:5672")
    assert (info.value.status, info.value.message) == (409, "proxy already exists")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ToxiproxyError) as info:
            api.create_proxy("api-busy", "127.0.0.1:5672", f"127.0.0.1:{port}")
    assert info.value.status == 500 and "listen tcp" in info.value.message
    assert "api-busy" not in api.proxies()
    assert api.get_proxy("api-dup").enabled  # the server keeps serving


def test_toxic_crud_and_errors(api: ToxiproxyClient) -> None:
    api.create_proxy("api-t", "127.0.0.1:5672")
    status, toxic = raw(api, "POST", "/proxies/api-t/toxics",
                        {"type": "latency", "attributes": {"latency": 100}})  # fmt: skip
    assert status == 200
    assert toxic == {"name": "latency_downstream", "type": "latency", "stream": "downstream",
                     "toxicity": 1.0, "attributes": {"latency": 100, "jitter": 0}}  # fmt: skip
    assert raw(api, "POST", "/proxies/api-t/toxics", {"type": "latency"})[0] == 409
    assert raw(api, "POST", "/proxies/api-t/toxics", {"type": "nope"}) == (
        400, {"error": "invalid toxic type", "status": 400})  # fmt: skip
    status, err = raw(
        api, "POST", "/proxies/api-t/toxics", {"type": "timeout", "stream": "sideways"}
    )
    assert status == 400 and err["error"].startswith("stream was invalid")
    status, err = raw(api, "POST", "/proxies/api-t/toxics",
                      {"type": "bandwidth", "attributes": {"rate": "fast"}})  # fmt: skip
    assert status == 400 and err["error"].startswith("bad request body")
    assert raw(api, "POST", "/proxies/nope/toxics", {"type": "latency"})[0] == 404
    status, updated = raw(api, "POST", "/proxies/api-t/toxics/latency_downstream",
                          {"attributes": {"jitter": 5}})  # fmt: skip
    assert status == 200 and updated["attributes"] == {"latency": 100, "jitter": 5}
    assert [t["name"] for t in api.toxics("api-t")] == ["latency_downstream"]
    assert raw(api, "DELETE", "/proxies/api-t/toxics/latency_downstream") == (204, None)
    assert raw(api, "DELETE", "/proxies/api-t/toxics/latency_downstream")[0] == 404
    api.add_toxic("api-t", "timeout", timeout=0)
    api.set_enabled("api-t", False)
    assert raw(api, "POST", "/reset") == (204, None)
    after = api.get_proxy("api-t")
    assert after.enabled and after.toxics == ()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ({"type": "latency", "attributes": {"latency": -1}}, "bad request body: latency must not"),
        ({"type": "bandwidth", "attributes": {"rate": -5}}, "bad request body: rate must not"),
        ({"type": "latency", "toxicity": 2}, "bad request body: toxicity must be between"),
        ({"type": "latency", "toxicity": -0.1}, "bad request body: toxicity must be between"),
    ],
)
def test_bad_toxics_are_400(api: ToxiproxyClient, body: Any, error: str) -> None:
    """Warren's own checks, stricter than Toxiproxy's (docs/testing-your-worker.md); the
    errors both give are in test_toxiproxy_compat.py."""
    api.create_proxy("api-bad", "127.0.0.1:5672")
    status, got = raw(api, "POST", "/proxies/api-bad/toxics", body)
    assert status == 400
    assert got["error"].startswith(error)


def test_bad_toxic_updates_are_400_and_change_nothing(api: ToxiproxyClient) -> None:
    api.create_proxy("api-upd", "127.0.0.1:5672")
    api.add_toxic("api-upd", "latency", latency=10)
    path = "/proxies/api-upd/toxics/latency_downstream"
    assert raw(api, "POST", path, {"toxicity": 5})[0] == 400
    assert raw(api, "POST", path, {"attributes": {"latency": "slow"}})[0] == 400
    assert raw(api, "POST", path, [])[0] == 400
    assert raw(api, "POST", "/proxies/api-upd/toxics/nope", {})[0] == 404
    assert api.toxics("api-upd")[0]["attributes"] == {"latency": 10, "jitter": 0}
    assert raw(api, "GET", path)[1]["toxicity"] == 1.0
    assert raw(api, "GET", "/proxies/api-upd/toxics/nope")[0] == 404


def test_populate_and_proxy_updates(api: ToxiproxyClient) -> None:
    status, body = raw(api, "POST", "/populate", [
        {"name": "api-p1", "upstream": "127.0.0.1:5672"},
        {"name": "api-p2", "upstream": "127.0.0.1:5672", "enabled": False},
    ])  # fmt: skip
    assert status == 201
    assert [p["name"] for p in body["proxies"]] == ["api-p1", "api-p2"]
    assert not api.get_proxy("api-p2").enabled
    assert raw(api, "POST", "/populate", {"not": "a list"})[0] == 400
    moved = api.update_proxy("api-p1", listen="127.0.0.1:0", upstream="127.0.0.1:5673")
    assert moved.upstream == "127.0.0.1:5673" and moved.enabled
    assert raw(api, "POST", "/proxies/api-p1", {"upstream": "bad"})[0] == 400
    assert raw(api, "PATCH", "/proxies/api-p1", {"enabled": False})[1]["enabled"] is False


def test_a_browser_is_refused_so_a_web_page_cannot_drive_the_proxy(api: ToxiproxyClient) -> None:
    """Toxiproxy answers 403 to any request whose User-Agent starts with ``Mozilla/``: a web
    page's cross-site ``text/plain`` POST (no preflight) could otherwise create a proxy to
    anywhere from the developer's machine. Warren accepted it."""
    body = json.dumps({"name": "api-browser", "upstream": "127.0.0.1:5672",
                       "listen": "127.0.0.1:0"}).encode()  # fmt: skip
    browser = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)"
    for method, path, data in (("POST", "/proxies", body), ("GET", "/proxies", None),
                               ("POST", "/reset", None)):  # fmt: skip
        req = urllib.request.Request(api.api_url + path, data=data, method=method,
                                     headers={"User-Agent": browser,
                                              "Content-Type": "text/plain"})  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=10)
        assert refused.value.code == 403
        assert refused.value.read() == b"User agent not allowed\n"
        assert refused.value.headers["Content-Type"] == "text/plain; charset=utf-8"
    assert "api-browser" not in api.proxies(), "nothing was created"
    req = urllib.request.Request(api.api_url + "/proxies", headers={"User-Agent": "Wget/2.1"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
