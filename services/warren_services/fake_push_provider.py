"""fake-push-provider: a stand-in push provider for tests and the demo (nothing in the real
path depends on it). Speaks both shapes Warren sends: the webhook (``POST /webhook`` with
``Idempotency-Key``) and FCM v1 (``POST /v1/projects/{project}/messages:send``).

It records what it got, deduplicating by idempotency key / ``warren_message_id`` and counting
duplicates (``GET /received``), and injects failures on request (``POST /faults``): a rate of
5xx, 429 with Retry-After, latency, invalid tokens, or failing the first N attempts per id.
"""

from __future__ import annotations

import random
import secrets
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import anyio
from google.auth import jwt as google_jwt
from google.auth.exceptions import GoogleAuthError
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from warren import ConfigError, Service, ServiceContext, Setting
from warren_services._http import bind_listener, serve_asgi
from warren_services._settings import env_float, env_str
from warren_services.fcm_auth import SCOPE

JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"

if TYPE_CHECKING:
    from starlette.requests import Request


@dataclass
class Faults:
    error_rate: float = 0.0  # fraction answered 503
    retry_after_rate: float = 0.0  # fraction answered 429 with Retry-After
    retry_after: int = 1
    latency_ms: int = 0
    invalid_tokens: list[str] = field(default_factory=list)  # 404 UNREGISTERED / 410
    malformed_tokens: list[str] = field(default_factory=list)  # 400 INVALID_ARGUMENT
    throttle_for: float = 0.0  # every request: 429 + Retry-After for this long from now on
    throttled_until: float = 0.0  # (set from throttle_for)
    fail_first: int = 0  # per id: the first N attempts get 429 + Retry-After


@dataclass
class Recorder:
    delivered: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    data: dict[str, Any] = field(default_factory=dict)  # the last data payload per id
    throttled: int = 0  # requests answered 429 by throttle_for
    faults: Faults = field(default_factory=Faults)
    rng: random.Random = field(default_factory=random.Random)

    def snapshot(self) -> dict[str, Any]:
        total = sum(self.delivered.values())
        return {
            "count": total,
            "distinct": len(self.delivered),
            "duplicates": total - len(self.delivered),
            "attempts": sum(self.attempts.values()),
            "ids": sorted(self.delivered),
            "data": dict(self.data),
            "throttled": self.throttled,
        }


@dataclass
class FakeOAuth:
    """Google's OAuth2 token endpoint, as far as a service account uses it: a JWT-bearer
    assertion signed with the account's key (verified with ``public_key``) buys an access
    token that expires after ``lifetime`` seconds."""

    public_key: str
    lifetime: float = 3600.0
    tokens: dict[str, float] = field(default_factory=dict)  # token -> expires (monotonic)
    issued: int = 0
    refused: int = 0  # FCM requests answered 401

    def issue(self, assertion: str) -> dict[str, Any] | None:
        try:
            claims = google_jwt.decode(  # type: ignore[no-untyped-call]
                assertion, certs=self.public_key, verify=True
            )
        except (ValueError, GoogleAuthError):
            return None
        if SCOPE not in str(claims.get("scope", "")).split():
            return None
        token = secrets.token_urlsafe(24)
        self.tokens[token] = time.monotonic() + self.lifetime
        self.issued += 1
        return {"access_token": token, "expires_in": int(self.lifetime), "token_type": "Bearer"}

    def valid(self, authorization: str) -> bool:
        token = authorization.removeprefix("Bearer ")
        return self.tokens.get(token, 0.0) > time.monotonic()


def create_app(recorder: Recorder | None = None, oauth: FakeOAuth | None = None) -> Starlette:
    rec = recorder or Recorder()

    async def answer(key: str, token: str, fcm: bool) -> Response:
        f = rec.faults
        rec.attempts[key] += 1
        if f.latency_ms:
            await anyio.sleep(f.latency_ms / 1000)
        wait = f.throttled_until - time.monotonic()
        if wait > 0:
            rec.throttled += 1
            return JSONResponse({"error": {"status": "QUOTA_EXCEEDED"}}, status_code=429,
                                headers={"Retry-After": str(max(1, round(wait)))})  # fmt: skip
        if token in f.malformed_tokens:
            body = {"error": {"code": 400, "status": "INVALID_ARGUMENT", "details": [
                {"errorCode": "INVALID_ARGUMENT"},
                {"fieldViolations": [{"field": "message.token"}]}]}}  # fmt: skip
            return JSONResponse(body, status_code=400)
        if token in f.invalid_tokens:
            if fcm:
                body = {"error": {"code": 404, "status": "NOT_FOUND", "details": [
                    {"errorCode": "UNREGISTERED"}]}}  # fmt: skip
                return JSONResponse(body, status_code=404)
            return JSONResponse({"error": "gone"}, status_code=410)
        if rec.attempts[key] <= f.fail_first or rec.rng.random() < f.retry_after_rate:
            return JSONResponse({"error": {"status": "QUOTA_EXCEEDED"}}, status_code=429,
                                headers={"Retry-After": str(f.retry_after)})  # fmt: skip
        if rec.rng.random() < f.error_rate:
            return JSONResponse({"error": {"status": "UNAVAILABLE"}}, status_code=503)
        rec.delivered[key] += 1
        return JSONResponse({"name": f"projects/fake/messages/{key}"})

    async def webhook(request: Request) -> Response:
        try:
            job = await request.json()
        except ValueError:
            return JSONResponse({"error": "bad json"}, status_code=400)
        key = request.headers.get("idempotency-key") or str(job.get("message_id", ""))
        return await answer(key, str(job.get("to", "")), fcm=False)

    async def fcm_send(request: Request) -> Response:
        authorization = request.headers.get("authorization", "")
        if not authorization.startswith("Bearer ") or (oauth and not oauth.valid(authorization)):
            if oauth:
                oauth.refused += 1
            body = {"error": {"code": 401, "status": "UNAUTHENTICATED"}}
            return JSONResponse(body, status_code=401)
        try:
            message = (await request.json())["message"]
            token = str(message["token"])
            data = message.get("data", {})
            key = str(data.get("warren_message_id", ""))
        except (ValueError, KeyError, TypeError, AttributeError):
            return JSONResponse({"error": {"status": "INVALID_ARGUMENT"}}, status_code=400)
        if not all(isinstance(v, str) for v in data.values()):  # as FCM v1 does
            return JSONResponse({"error": {"status": "INVALID_ARGUMENT"}}, status_code=400)
        rec.data[key] = data
        return await answer(key, token, fcm=True)

    async def received(request: Request) -> Response:
        """What arrived; ``?ids=0`` leaves out the ids and payloads (counts only: cheap to
        poll after hundreds of thousands of pushes)."""
        snapshot = rec.snapshot()
        if request.query_params.get("ids") == "0":
            del snapshot["ids"], snapshot["data"]
        if oauth:
            snapshot["oauth"] = {"issued": oauth.issued, "refused": oauth.refused}
        return JSONResponse(snapshot)

    async def token(request: Request) -> Response:
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        grant = form.get("grant_type", [""])[0]
        issued = oauth.issue(form.get("assertion", [""])[0]) if oauth else None
        if grant != JWT_BEARER or issued is None:
            body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            return JSONResponse(body, status_code=400)
        return JSONResponse(issued)

    async def revoke(_request: Request) -> Response:
        """Every token issued so far stops working (as a key rotation does)."""
        if oauth:
            oauth.tokens.clear()
        return Response(status_code=204)

    async def set_faults(request: Request) -> Response:
        try:
            rec.faults = Faults(**(await request.json()))
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        rec.faults.throttled_until = time.monotonic() + rec.faults.throttle_for
        return JSONResponse(vars(rec.faults))

    async def reset(_request: Request) -> Response:
        rec.delivered.clear()
        rec.attempts.clear()
        rec.data.clear()
        rec.throttled = 0
        rec.faults = Faults()
        return Response(status_code=204)

    return Starlette(routes=[
        Route("/webhook", webhook, methods=["POST"]),
        Route("/v1/projects/{project}/messages:send", fcm_send, methods=["POST"]),
        Route("/received", received, methods=["GET"]),
        Route("/faults", set_faults, methods=["POST"]),
        Route("/reset", reset, methods=["POST"]),
        Route("/token", token, methods=["POST"]),
        Route("/revoke", revoke, methods=["POST"]),
    ])  # fmt: skip


async def main(ctx: ServiceContext) -> None:
    addr = env_str(ctx.env, "WARREN_FAKE_PUSH_ADDR", "127.0.0.1:8090")
    oauth = None
    key_file = env_str(ctx.env, "WARREN_FAKE_PUSH_OAUTH_KEY_FILE", "")
    if key_file:
        try:
            key = await anyio.Path(key_file).read_text()
        except OSError as exc:
            raise ConfigError("WARREN_FAKE_PUSH_OAUTH_KEY_FILE", exc.strerror or "") from None
        lifetime = env_float(ctx.env, "WARREN_FAKE_PUSH_TOKEN_SECONDS", 3600.0)
        oauth = FakeOAuth(key, lifetime)
    app = create_app(oauth=oauth)
    await serve_asgi(app, bind_listener("WARREN_FAKE_PUSH_ADDR", addr), ctx.stopping)


service = Service(
    name="fake-push-provider",
    help="a fake push provider (webhook and FCM shapes) that records what it got",
    main=main,
    settings=(
        Setting(
            env="WARREN_FAKE_PUSH_ADDR",
            default="127.0.0.1:8090",
            help="where the fake provider listens",
        ),
        Setting(
            env="WARREN_FAKE_PUSH_OAUTH_KEY_FILE",
            default="",
            help="a service account's public key (PEM): FCM requests then need an access "
            "token from POST /token",
        ),
        Setting(
            env="WARREN_FAKE_PUSH_TOKEN_SECONDS",
            default="3600",
            help="lifetime of the access tokens it issues",
        ),
    ),
)
