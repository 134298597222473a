"""Push provider adapters over HTTP: ``webhook`` and ``fcm`` (Firebase Cloud Messaging v1).

2xx = delivered. 429 and 5xx = try again later (``RetryLater``, honouring Retry-After);
a network error too. 400/404/410 (FCM ``INVALID_ARGUMENT``, ``NOT_FOUND``, ``UNREGISTERED``)
= permanent (``PermanentFailure``): retrying cannot help.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Protocol

import httpx
from google.auth.exceptions import GoogleAuthError

from warren import RetryLater

if TYPE_CHECKING:
    from collections.abc import Mapping

    from warren.services.fcm_auth import FcmAuth
    from warren.services.push_common import PushJob

PERMANENT = (400, 404, 410)


class PermanentFailure(Exception):
    """The provider refused the push for good; ``reason`` is a bounded label value."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


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


def _fcm_status(response: httpx.Response) -> str | None:
    try:
        error = response.json().get("error", {})
    except ValueError:
        return None
    status = error.get("status") if isinstance(error, dict) else None
    for detail in error.get("details", []) if isinstance(error, dict) else []:
        if isinstance(detail, dict) and detail.get("errorCode"):
            return str(detail["errorCode"])
    return str(status) if status else None


def classify(response: httpx.Response, *, fcm: bool) -> None:
    """Raise what a response means for the job; return if it was delivered."""
    code = response.status_code
    if 200 <= code < 300:
        return
    label = (_fcm_status(response) if fcm else None) or str(code)
    if code == 429 or code >= 500:
        raise RetryLater(_retry_after(response), f"provider answered {code} {label}")
    if code in PERMANENT:
        raise PermanentFailure(label.lower(), f"HTTP {code}")
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
