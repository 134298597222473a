"""FCM v1 credentials: a static bearer token, or access tokens minted from a service account.

Real FCM access tokens are OAuth2 tokens that expire after about an hour. ``ServiceAccount``
mints them itself: a JWT assertion signed with the credentials file's key (google-auth's
signer), exchanged at the file's ``token_uri`` (the JWT-bearer grant) over httpx, in the
event loop, so a stop cancels it. The token is refreshed in the background at three quarters
of its lifetime, so a push only ever reads the current token; a 401 from FCM asks for one
refresh (shared by every push that saw the same stale token).

A failing token endpoint is an outage of ours or Google's, never a push's: every failure
(unreachable, slow past the total timeout, an error status, an answer that is not what the
grant promises) backs off, capped, and while there is no usable token ``token()`` raises
``TokenUnavailable`` at once, saying how long until the next try, without asking the
endpoint again. Tokens, the assertion, the key and the endpoint's free text are never
logged: a failure is logged by its kind, the HTTP status and the endpoint's short ``error``
code only.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

import anyio
import httpx
from google.auth import crypt, jwt

from warren import Backoff, ConfigError

log = logging.getLogger("warren.push")

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
REFRESH_AT = 0.75  # of a token's lifetime
ASSERTION_LIFETIME = 3600  # seconds, Google's maximum
MAX_LIFETIME = 86_400.0  # a longer expires_in is not believed
MAX_ANSWER_BYTES = 64 * 1024
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,4096}")  # printable ASCII: it goes into a header


class TokenUnavailable(Exception):
    """No access token to send with now; the next try is in ``retry_in`` seconds."""

    def __init__(self, retry_in: float, reason: str) -> None:
        super().__init__(reason)
        self.retry_in = retry_in


class FcmAuth(Protocol):
    async def token(self) -> str:
        """The bearer token to send now.

        Raises:
            TokenUnavailable: there is none (the token endpoint fails, or is backed off).
        """
        ...

    async def refresh(self, stale: str) -> bool:
        """FCM refused ``stale``: get a new token if that one is still current. False if
        these credentials cannot refresh (a static token).

        Raises:
            TokenUnavailable: as ``token()``.
        """
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


class _Failed(Exception):
    """One token request failed; the message is safe to log (no server text)."""


class ServiceAccount:
    """Access tokens minted from a service-account credentials file.

    Args:
        path: the credentials file (Google's service-account JSON).
        setting: the variable that named it, for a ``ConfigError``.
        timeout: seconds for a whole token request, headers and body included.
        backoff: the delays between failed token requests.

    Raises:
        ConfigError: the file cannot be read, or cannot mint tokens (not a JSON object,
            a field missing or of the wrong type, a key that is not an RSA private key).
    """

    def __init__(
        self,
        path: str,
        setting: str,
        *,
        timeout: float = 10.0,
        backoff: Backoff | None = None,
    ) -> None:
        info = _load(path, setting)
        self.project_id: str | None = info.get("project_id") or None
        self._email: str = info["client_email"]
        self._token_uri: str = info["token_uri"]
        self._signer = _signer(info, path, setting)
        self._timeout = timeout
        self._backoff = backoff or Backoff(base=1.0, cap=30.0)
        self._token: str | None = None
        self._expires_at = 0.0  # loop clock: the token is not sent from then on
        self._fresh_until = 0.0  # loop clock: refresh from then on
        self._retry_at = -math.inf  # loop clock: no token request before then
        self._lock = anyio.Lock()
        self.refreshes = 0
        self.failures = 0  # consecutive failed token requests (0: the token is fresh)

    async def token(self) -> str:
        token = self._token
        if token is not None and anyio.current_time() < self._expires_at:
            return token
        return await self._refresh_once(token)

    async def refresh(self, stale: str) -> bool:
        await self._refresh_once(stale)
        return True

    async def run(self) -> None:
        while True:
            wake = max(self._fresh_until, self._retry_at)
            if anyio.current_time() < wake:
                await anyio.sleep(wake - anyio.current_time())
                continue  # a push may have refreshed it meanwhile
            with contextlib.suppress(TokenUnavailable):  # logged; _retry_at says when next
                await self._refresh_once(self._token)

    async def _refresh_once(self, stale: str | None) -> str:
        """A new token unless another task already replaced ``stale``."""
        async with self._lock:
            now = anyio.current_time()
            current = self._token
            if current is not None and current != stale and now < self._expires_at:
                return current
            if now < self._retry_at:
                raise TokenUnavailable(self._retry_at - now, "token endpoint backed off")
            try:
                token, lifetime = await self._mint()
            except _Failed as exc:
                self.failures += 1
                delay = self._backoff.ceiling(self.failures) / 2
                delay += self._backoff.delay(self.failures) / 2
                self._retry_at = anyio.current_time() + delay
                log.warning("fcm.token_refresh_failed attempt=%d retry_in=%.1fs reason=%s",
                            self.failures, delay, exc)  # fmt: skip
                raise TokenUnavailable(delay, f"token endpoint: {exc}") from None
            now = anyio.current_time()
            self._token, self.failures, self._retry_at = token, 0, -math.inf
            self.refreshes += 1
            self._expires_at = now + lifetime
            self._fresh_until = now + max(0.5, lifetime * REFRESH_AT)
            log.info("fcm.token_refreshed expires_in=%.0fs", lifetime)
            return token

    async def _mint(self) -> tuple[str, float]:
        """One JWT-bearer grant: (token, lifetime in seconds), or ``_Failed``."""
        now = int(time.time())
        claims = {"iss": self._email, "aud": self._token_uri, "scope": SCOPE,
                  "iat": now, "exp": now + ASSERTION_LIFETIME}  # fmt: skip
        assertion = jwt.encode(self._signer, claims).decode()  # type: ignore[no-untyped-call]
        form = {"grant_type": JWT_BEARER, "assertion": assertion}
        try:
            # in total: a server that drips its answer trips no per-read timeout
            with anyio.fail_after(self._timeout):
                async with (
                    httpx.AsyncClient(timeout=self._timeout) as client,
                    # read raw below (bounded, never inflated): so ask for it uncompressed
                    client.stream(
                        "POST", self._token_uri, data=form, headers={"Accept-Encoding": "identity"}
                    ) as response,
                ):
                    raw = bytearray()
                    async for chunk in response.aiter_raw():
                        raw += chunk
                        if len(raw) > MAX_ANSWER_BYTES:
                            raise _Failed(f"answer over {MAX_ANSWER_BYTES} bytes")
        except TimeoutError:
            raise _Failed(f"no answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:  # its text may hold the URL only; the type is enough
            raise _Failed(type(exc).__name__) from None
        return parse_token_answer(response.status_code, bytes(raw))


def parse_token_answer(status: int, raw: bytes) -> tuple[str, float]:
    """A token endpoint's answer: (access token, lifetime in seconds).

    Raises:
        _Failed: an error status (named with the answer's ``error`` code, if it is a short
            word: never its description, which may echo the assertion), or a 200 that is not
            a JSON object with a usable ``access_token`` and ``expires_in``.
    """
    try:
        doc: Any = json.loads(raw)
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        doc = None
    if status != 200:
        code = doc.get("error") if isinstance(doc, dict) else None
        named = f" {code}" if isinstance(code, str) and _ERROR_CODE.fullmatch(code) else ""
        raise _Failed(f"HTTP {status}{named}")
    if not isinstance(doc, dict):
        raise _Failed("answer is not a JSON object")
    token = doc.get("access_token")
    if not isinstance(token, str) or not usable_token(token):
        raise _Failed("answer has no usable access_token")
    lifetime = doc.get("expires_in", 3600)
    if (
        isinstance(lifetime, bool)
        or not isinstance(lifetime, int | float)
        or not math.isfinite(lifetime)
        or lifetime <= 0
    ):
        raise _Failed("answer has no usable expires_in")
    return token, min(float(lifetime), MAX_LIFETIME)


def usable_token(token: str) -> bool:
    """Whether ``token`` can go into an ``Authorization`` header as it is."""
    return _TOKEN.fullmatch(token) is not None


def _load(path: str, setting: str) -> dict[str, Any]:
    """The credentials file's fields, checked (errors name the file, never its content)."""
    try:
        with open(path, encoding="utf-8") as f:
            info = json.load(f)
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, RecursionError):
        raise ConfigError(setting, f"{path} is not a service-account file (not JSON)") from None
    if not isinstance(info, dict):
        raise ConfigError(setting, f"{path} is not a service-account file (not an object)")
    for field in ("client_email", "token_uri", "private_key"):
        if not isinstance(info.get(field), str) or not info[field]:
            raise ConfigError(setting, f"{path} is not a service-account file ({field})")
    for field in ("project_id", "private_key_id"):
        if info.get(field) is not None and not isinstance(info[field], str):
            raise ConfigError(setting, f"{path}: {field} is not a string")
    try:
        uri = urlsplit(info["token_uri"])
        ok = uri.scheme in ("http", "https") and bool(uri.hostname)
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(setting, f"{path}: token_uri is not an http(s) URL")
    return info


def _signer(info: dict[str, Any], path: str, setting: str) -> crypt.Signer:
    """The key's signer, tried once: a key that cannot sign fails here, not at every push."""
    try:
        signer = crypt.RSASigner.from_service_account_info(info)  # type: ignore[no-untyped-call]
        signer.sign(b"warren")
    except Exception as exc:  # any failure of a third party's key parser: an unusable key
        what = type(exc).__name__
        raise ConfigError(
            setting, f"{path}: private_key is not a usable RSA private key ({what})"
        ) from None
    return signer  # type: ignore[no-any-return]
