"""Push provider adapters over HTTP: ``webhook`` and ``fcm`` (Firebase Cloud Messaging v1).

2xx = delivered. 429 and 5xx = try again later (``RetryLater``, honouring Retry-After; a
429, or a 503 with Retry-After, is ``Throttled``: the whole sender waits); a network error
too. 400/404/410 (FCM ``INVALID_ARGUMENT``, ``NOT_FOUND``, ``UNREGISTERED``) = permanent
(``PermanentFailure``): retrying cannot help. ``dead_token`` says the device token itself is
dead (FCM ``UNREGISTERED``, ``INVALID_ARGUMENT`` on ``message.token``; a webhook's 404/410),
so the application can delete it.

What a provider answers is parsed defensively: a body that is not JSON or has fields of the
wrong type, a Retry-After that is no number or date, never raises anything but the verdict
(an unreadable error falls back to the HTTP status); labels are bounded words, and a
Retry-After is capped at an hour. A 2xx is delivered as soon as its status is in: its body
is not read (one that is huge, never ends or does not decode must not send the push again);
an error's body is read, at most ``MAX_ERROR_BODY`` bytes, only to name the error. No
access token for FCM (the token endpoint fails) is a ``RetryLater`` that costs the push no
attempt: the outage is not the push's.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from warren import RetryLater
from warren_services.fcm_auth import TokenUnavailable
from warren_services.push_throttle import Throttled

if TYPE_CHECKING:
    from collections.abc import Mapping

    from warren_services.fcm_auth import FcmAuth
    from warren_services.push_common import PushJob

PERMANENT = (400, 404, 410)
MAX_RETRY_AFTER = 3600.0  # seconds: a longer Retry-After is not believed
MAX_ERROR_BODY = 64 * 1024  # bytes of an error answer read to name the error
_FCM_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")  # FCM's codes: UNREGISTERED, QUOTA_EXCEEDED


class PermanentFailure(Exception):
    """The provider refused the push for good; ``reason`` is a bounded label value."""

    def __init__(self, reason: str, detail: str = "", *, dead_token: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.dead_token = dead_token


class Provider(Protocol):
    async def send(self, client: httpx.AsyncClient, job: PushJob) -> None: ...


def _retry_after(response: httpx.Response) -> float:
    """Seconds the provider asks to wait (0: none, or nothing readable), at most an hour."""
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return 0.0
    if value.isascii() and value.isdigit():
        return min(MAX_RETRY_AFTER, float(value))
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:  # "-0000": UTC, says RFC 5322
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return 0.0
    return min(MAX_RETRY_AFTER, max(0.0, seconds))


def _list(value: object) -> list[Any]:
    return value if isinstance(value, list) else []


def _fcm_code(value: object) -> str | None:
    """An FCM error code, if ``value`` is one (a bounded label value), else None."""
    return value if isinstance(value, str) and _FCM_CODE.fullmatch(value) else None


def _fcm_error(response: httpx.Response) -> tuple[str | None, bool]:
    """FCM's error code (``errorCode``, else ``status``), and whether a field violation
    names the device token. Anything unreadable counts as absent."""
    try:
        doc = response.json()
    except (ValueError, RecursionError):  # not JSON, not UTF-8, nested too deep
        return None, False
    error = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(error, dict):
        return None, False
    code, on_token = None, False
    for detail in _list(error.get("details")):
        if not isinstance(detail, dict):
            continue
        code = code or _fcm_code(detail.get("errorCode"))
        for violation in _list(detail.get("fieldViolations")):
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                on_token = True
    return code or _fcm_code(error.get("status")), on_token


def classify(response: httpx.Response, *, fcm: bool) -> None:
    """Raise what a response means for the job; return if it was delivered."""
    code = response.status_code
    if 200 <= code < 300:
        return
    label, on_token = _fcm_error(response) if fcm else (None, False)
    label = label or str(code)
    retry_after = _retry_after(response)
    if code == 429 or (code == 503 and retry_after > 0):
        raise Throttled(retry_after, f"provider answered {code} {label}")
    if code >= 500:
        raise RetryLater(retry_after, f"provider answered {code} {label}")
    if code in PERMANENT:
        if fcm:
            dead = label == "UNREGISTERED" or (label == "INVALID_ARGUMENT" and on_token)
        else:
            dead = code in (404, 410)
        raise PermanentFailure(label.lower(), f"HTTP {code}", dead_token=dead)
    raise RetryLater(0.0, f"provider answered unexpected {code}")


async def _post(client: httpx.AsyncClient, url: str, **kwargs: Any) -> httpx.Response:
    """POST; the answer with its status and Retry-After, and for an error (not 2xx) its
    body, at most ``MAX_ERROR_BODY`` bytes, as far as it reads.

    Raises:
        RetryLater: the provider could not be reached, or no answer's status came back.
    """
    body = bytearray()
    try:
        async with client.stream("POST", url, **kwargs) as response:
            if not 200 <= response.status_code < 300:
                try:
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) >= MAX_ERROR_BODY:
                            break
                except httpx.HTTPError:
                    body.clear()  # unreadable: the error is named by its status
    except httpx.TransportError as exc:
        raise RetryLater(0.0, f"provider unreachable: {type(exc).__name__}") from exc
    headers = {"retry-after": response.headers.get("retry-after", "")}
    return httpx.Response(response.status_code, headers=headers, content=bytes(body))


class WebhookProvider:
    """``POST <url>`` with the job as JSON and ``Idempotency-Key: <message_id>``."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def send(self, client: httpx.AsyncClient, job: PushJob) -> None:
        response = await _post(client, self.url, json=job.to_json(),
                               headers={"Idempotency-Key": job.message_id})  # fmt: skip
        classify(response, fcm=False)


class FcmProvider:
    """FCM HTTP v1: ``{"message": {"token", "notification", "data"}}`` with a bearer token.
    A 401 (the token expired or was revoked) refreshes the token once and sends again."""

    def __init__(self, url: str, auth: FcmAuth) -> None:
        self.url = url
        self.auth = auth

    async def send(self, client: httpx.AsyncClient, job: PushJob) -> None:
        message = {
            "token": job.to,
            "notification": {"title": job.title, "body": job.body},
            # FCM carries no id of ours: put it in data, where the app (and the fake) see it
            "data": {**job.data, "warren_message_id": job.message_id},
        }
        try:
            token = await self.auth.token()
            response = await self._post(client, message, token)
            if response.status_code == 401 and await self.auth.refresh(token):
                response = await self._post(client, message, await self.auth.token())
        except TokenUnavailable as exc:  # our outage, not the push's: no attempt spent
            raise RetryLater(
                exc.retry_in, f"no FCM access token: {exc}", consumes_attempt=False
            ) from None
        classify(response, fcm=True)

    async def _post(
        self, client: httpx.AsyncClient, message: Mapping[str, object], token: str
    ) -> httpx.Response:
        return await _post(client, self.url, json={"message": message},
                           headers={"Authorization": f"Bearer {token}"})  # fmt: skip
