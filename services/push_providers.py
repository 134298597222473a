"""Push provider adapters over HTTP: ``webhook`` and ``fcm`` (Firebase Cloud Messaging v1).

2xx = delivered. 429 and 5xx = try again later (``RetryLater``, honouring Retry-After; a
429, or a 503 with Retry-After, is ``Throttled``: the whole sender waits); a network error
too. 400/404/410 (FCM ``INVALID_ARGUMENT``, ``NOT_FOUND``, ``UNREGISTERED``) = permanent
(``PermanentFailure``): retrying cannot help. ``dead_token`` says the device token itself is
dead (FCM ``UNREGISTERED``, ``INVALID_ARGUMENT`` on ``message.token``; a webhook's 404/410),
so the application can delete it.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Protocol

import httpx
from google.auth.exceptions import GoogleAuthError

from warren import RetryLater
from warren.services.push_throttle import Throttled

if TYPE_CHECKING:
    from collections.abc import Mapping

    from warren.services.fcm_auth import FcmAuth
    from warren.services.push_common import PushJob

PERMANENT = (400, 404, 410)


class PermanentFailure(Exception):
    """The provider refused the push for good; ``reason`` is a bounded label value."""

    def __init__(self, reason: str, detail: str = "", *, dead_token: bool = False) -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.dead_token = dead_token


class Provider(Protocol):
    async def send(self, client: httpx.AsyncClient, job: PushJob) -> None: ...


def _retry_after(response: httpx.Response) -> float:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return 0.0
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    from datetime import UTC, datetime

    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _fcm_error(response: httpx.Response) -> tuple[str | None, bool]:
    """FCM's error code (``errorCode``, else ``status``), and whether a field violation
    names the device token."""
    try:
        error = response.json().get("error", {})
    except (ValueError, AttributeError):
        return None, False
    if not isinstance(error, dict):
        return None, False
    code, on_token = None, False
    for detail in error.get("details", []) or []:
        if not isinstance(detail, dict):
            continue
        if detail.get("errorCode") and code is None:
            code = str(detail["errorCode"])
        for violation in detail.get("fieldViolations", []) or []:
            if isinstance(violation, dict) and violation.get("field") == "message.token":
                on_token = True
    status = error.get("status")
    return code or (str(status) if status else None), on_token


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


class WebhookProvider:
    """``POST <url>`` with the job as JSON and ``Idempotency-Key: <message_id>``."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def send(self, client: httpx.AsyncClient, job: PushJob) -> None:
        try:
            response = await client.post(
                self.url, json=job.to_json(), headers={"Idempotency-Key": job.message_id}
            )
        except httpx.TransportError as exc:
            raise RetryLater(0.0, f"provider unreachable: {type(exc).__name__}") from exc
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
        except GoogleAuthError as exc:  # the token endpoint: try the push again later
            raise RetryLater(0.0, f"no FCM access token: {type(exc).__name__}") from None
        classify(response, fcm=True)

    async def _post(
        self, client: httpx.AsyncClient, message: Mapping[str, object], token: str
    ) -> httpx.Response:
        try:
            return await client.post(self.url, json={"message": message},
                                     headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        except httpx.TransportError as exc:
            raise RetryLater(0.0, f"provider unreachable: {type(exc).__name__}") from exc
