"""The fault proxy API's HTTP side, as Toxiproxy's ``api.go`` speaks it.

Which paths and methods exist (its gorilla/mux routes), the browser guard, reading a request's
JSON body, and writing an answer: 404 (plain text) for an unknown path, 405 (empty) for a
method a known path does not take, errors as JSON sent as text/plain with a newline (Go's
``http.Error``), results as compact JSON, each with an ``X-Toxiproxy-Request-Id``. What a route
*does* is ``FaultProxyServer``'s (``_proxy_api.py``), handed in as ``route``.
"""

from __future__ import annotations

import base64
import json
import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from warren._http.server import HttpRequest, HttpResponse
from warren.testing._go_json import GoJsonError, decode

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["ApiError", "Raw", "Response", "answer"]

Response = tuple[int, Any]

_PLAIN_TEXT = "text/plain; charset=utf-8"
_NAME = "*"  # a path segment that is a (non-empty) proxy or toxic name
# path pattern -> the methods it answers (Toxiproxy's gorilla/mux routes in api.go)
_ROUTES: dict[tuple[str, ...], frozenset[str]] = {
    ("version",): frozenset({"GET"}),
    ("reset",): frozenset({"POST"}),
    ("proxies",): frozenset({"GET", "POST"}),
    ("populate",): frozenset({"POST"}),
    ("proxies", _NAME): frozenset({"GET", "POST", "PATCH", "DELETE"}),
    ("proxies", _NAME, "toxics"): frozenset({"GET", "POST"}),
    ("proxies", _NAME, "toxics", _NAME): frozenset({"GET", "POST", "PATCH", "DELETE"}),
}


def _allowed(parts: list[str]) -> frozenset[str] | None:
    """The methods a path answers, or None for a path Toxiproxy does not know."""
    for pattern, methods in _ROUTES.items():
        if len(pattern) == len(parts) and all(
            want == got or (want == _NAME and got) for want, got in zip(pattern, parts, strict=True)
        ):
            return methods
    return None


def _request_id() -> str:
    """A 20-character id per answered request, as Toxiproxy's ``X-Toxiproxy-Request-Id``."""
    return base64.b32hexencode(secrets.token_bytes(12)).decode().rstrip("=").lower()


class ApiError(Exception):
    """An API call failed: Toxiproxy's error message, and the HTTP status it answers with."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Raw(bytes):
    """An answer's exact body bytes, with its content type."""

    content_type: str

    def __new__(cls, body: bytes, content_type: str) -> Raw:
        raw = super().__new__(cls, body)
        raw.content_type = content_type
        return raw


async def answer(
    request: HttpRequest, route: Callable[[str, list[str], object], Awaitable[Response]]
) -> HttpResponse:
    """Answer as Toxiproxy's API does: 404 (plain text) for a path it does not know, 405
    (empty) for a method a known path does not take, then the route; its errors are
    JSON sent as text/plain with a newline (Go's ``http.Error``), its results compact
    JSON, each with an ``X-Toxiproxy-Request-Id``."""
    request_id = (("x-toxiproxy-request-id", _request_id()),)
    if request.headers.get("user-agent", "").startswith("Mozilla/"):
        # Toxiproxy's browser guard: a web page could drive a local proxy API with a
        # cross-site text/plain POST (no preflight), e.g. to open a proxy to anywhere.
        # (Toxiproxy checks matched paths only; here every path: nothing to gain there.)
        return HttpResponse(403, b"User agent not allowed\n", _PLAIN_TEXT, request_id)
    parts = [unquote(p) for p in request.target.split("?", 1)[0].split("/")[1:]]
    allowed = _allowed(parts)
    if allowed is None:
        return HttpResponse(404, b"404 page not found\n", _PLAIN_TEXT)
    if request.method not in allowed:
        return HttpResponse(405, b"", None)
    status, payload = await _answer_json(request.method, parts, request.body, route)
    if isinstance(payload, Raw):
        return HttpResponse(status, bytes(payload), payload.content_type, request_id)
    if parts == ["populate"]:  # its own error shape, sent as JSON
        payload["proxies"] = None
        body = json.dumps(payload, separators=(",", ":")).encode()
        return HttpResponse(status, body, "application/json", request_id)
    if status >= 400:
        body = json.dumps(payload, separators=(",", ":")).encode() + b"\n"
        return HttpResponse(status, body, _PLAIN_TEXT, request_id)
    if payload is None:
        return HttpResponse(status, b"", None, request_id)
    body = json.dumps(payload, separators=(",", ":")).encode()
    return HttpResponse(status, body, "application/json", request_id)


async def _answer_json(
    method: str,
    parts: list[str],
    body: bytes,
    route: Callable[[str, list[str], object], Awaitable[Response]],
) -> Response:
    parsed: object = None
    if method in ("POST", "PATCH") and parts != ["reset"]:  # the routes that read a body
        try:
            parsed = decode(body)
        except GoJsonError as exc:
            return 400, {"error": f"bad request body: {exc}", "status": 400}
    try:
        return await route(method, parts, parsed)
    except ApiError as exc:
        return exc.status, {"error": str(exc), "status": exc.status}
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        # a field of the wrong type deep in a toxic's attributes: the client's mistake
        return 400, {"error": f"bad request body: {type(exc).__name__}: {exc}"[:300],
                     "status": 400}  # fmt: skip
