"""FCM v1 credentials: a static bearer token, or access tokens minted from a service account.

Real FCM access tokens are OAuth2 tokens that expire after about an hour. ``ServiceAccount``
mints them with google-auth (the JWT-bearer grant against the credentials file's
``token_uri``) and refreshes them in the background at three quarters of their lifetime, in a
worker thread, so a push only ever reads the current token. A 401 from FCM asks for one
refresh (shared by every push that saw the same stale token). Tokens and keys are never
logged.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

import anyio
import httpx
from google.auth import exceptions as google_exceptions
from google.auth import transport
from google.oauth2 import service_account

from warren import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger("warren.push")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
REFRESH_AT = 0.75  # of a token's lifetime
_RETRY_CAP = 30.0


class FcmAuth(Protocol):
    async def token(self) -> str:
        """The bearer token to send now."""
        ...

    async def refresh(self, stale: str) -> bool:
        """FCM refused ``stale``: get a new token if that one is still current. False if
        these credentials cannot refresh (a static token)."""
        ...

    async def run(self) -> None:
        """Keep the token fresh until cancelled (nothing to do for a static token)."""
        ...


class StaticToken:
    """A token managed outside Warren (or a test's): used as it is, never refreshed."""

    def __init__(self, token: str) -> None:
        self._token = token

    async def token(self) -> str:
        return self._token

    async def refresh(self, stale: str) -> bool:
        return False

    async def run(self) -> None:
        return None


class _Response(transport.Response):
    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status(self) -> int:
        return self._response.status_code

    @property
    def headers(self) -> Mapping[str, str]:
        return self._response.headers

    @property
    def data(self) -> bytes:
        return self._response.content


class _HttpxRequest(transport.Request):
    """google-auth's transport over a blocking httpx client (used from a worker thread;
    google-auth's own transports would add requests or urllib3)."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> _Response:
        try:
            with httpx.Client(timeout=timeout or self._timeout) as client:
                return _Response(client.request(method, url, content=body, headers=headers))
        except httpx.HTTPError as exc:
            raise google_exceptions.TransportError(  # type: ignore[no-untyped-call]
                type(exc).__name__
            ) from exc


class ServiceAccount:
    """Access tokens minted from a service-account credentials file."""

    def __init__(self, path: str, setting: str, *, timeout: float = 10.0) -> None:
        try:
            with open(path, encoding="utf-8") as f:
                info = json.load(f)
            from_info = service_account.Credentials.from_service_account_info
            self._creds = from_info(info, scopes=[SCOPE])  # type: ignore[no-untyped-call]
        except OSError as exc:
            raise ConfigError(setting, f"cannot read {path}: {exc.strerror}") from None
        except (ValueError, KeyError, TypeError) as exc:  # never echo the file's content
            what = type(exc).__name__
            raise ConfigError(setting, f"{path} is not a service-account file ({what})") from None
        self.project_id: str | None = info.get("project_id")
        self._request = _HttpxRequest(timeout)
        self._token: str | None = None
        self._fresh_until = 0.0  # loop clock: refresh from then on
        self._lock = anyio.Lock()
        self.refreshes = 0

    async def token(self) -> str:
        if self._token is None:
            await self._refresh_once(None)
        assert self._token is not None
        return self._token

    async def refresh(self, stale: str) -> bool:
        await self._refresh_once(stale)
        return True

    async def run(self) -> None:
        failures = 0
        while True:
            await anyio.sleep(max(0.0, self._fresh_until - anyio.current_time()))
            try:
                await self._refresh_once(self._token)
                failures = 0
            except google_exceptions.GoogleAuthError as exc:
                failures += 1
                delay = min(_RETRY_CAP, 2.0 ** (failures - 1))
                log.warning("fcm.token_refresh_failed attempt=%d retry_in=%.0fs %s",
                            failures, delay, _safe(exc))  # fmt: skip
                self._fresh_until = anyio.current_time() + delay

    async def _refresh_once(self, stale: str | None) -> None:
        """Refresh unless another task already replaced ``stale``."""
        async with self._lock:
            if self._token is not None and self._token != stale:
                return
            await anyio.to_thread.run_sync(self._creds.refresh, self._request)
            self._token = self._creds.token
            self.refreshes += 1
            expiry = self._creds.expiry  # naive UTC
            now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
            lifetime = (expiry - now).total_seconds() if expiry else 3600.0
            self._fresh_until = anyio.current_time() + max(0.5, lifetime * REFRESH_AT)
            log.info("fcm.token_refreshed expires_in=%.0fs", lifetime)


def _safe(exc: BaseException) -> str:
    """An auth error for the log: its type and the server's short error text (never the
    response body, a token or the key)."""
    first = exc.args[0] if exc.args and isinstance(exc.args[0], str) else ""
    return f"{type(exc).__name__}: {first[:120]}" if first else type(exc).__name__
