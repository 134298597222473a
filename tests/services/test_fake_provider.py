"""The fake push provider, in process: the oracle the services' tests count with must answer
as FCM v1, Google's token endpoint and a webhook do, and inject exactly the faults asked."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from google.auth import crypt, jwt

from tests.support.helpers import fcm_service_account
from warren_services.fake_push_provider import JWT_BEARER, FakeOAuth, Recorder, create_app
from warren_services.fcm_auth import SCOPE

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

pytestmark = pytest.mark.timeout(30)

SEND = "/v1/projects/warren-test/messages:send"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Recorder, str]]:
    """A client on the fake provider's app, its recorder, and a signed token request body."""
    _, public, pem = fcm_service_account(tmp_path, "http://fake/token")
    recorder = Recorder()
    oauth = FakeOAuth(public_key=public.read_text(), lifetime=60)
    signer = crypt.RSASigner.from_string(pem, "k1")  # type: ignore[no-untyped-call]
    now = int(time.time())
    claims = {"iss": "push@warren-test.iam.gserviceaccount.com", "aud": "http://fake/token",
              "scope": SCOPE, "iat": now, "exp": now + 600}  # fmt: skip
    assertion = jwt.encode(signer, claims).decode()  # type: ignore[no-untyped-call]
    form = f"grant_type={JWT_BEARER}&assertion={assertion}"
    transport = httpx.ASGITransport(app=create_app(recorder, oauth))
    async with httpx.AsyncClient(transport=transport, base_url="http://fake") as client:
        yield client, recorder, form


async def _token(client: httpx.AsyncClient, form: str) -> str:
    answer = await client.post("/token", content=form, headers=FORM)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 60
    return str(body["access_token"])


def _push(token: str, message_id: str, **data: object) -> dict[str, Any]:
    return {"message": {"token": token, "data": {"warren_message_id": message_id, **data}}}


async def test_fcm_wants_a_token_it_issued_and_counts_each_id_once(
    provider: tuple[httpx.AsyncClient, Recorder, str],
) -> None:
    client, recorder, form = provider
    refused = await client.post(SEND, json=_push("device", "m1"))
    assert refused.status_code == 401
    forged = await client.post(SEND, json=_push("device", "m1"),
                               headers={"Authorization": "Bearer made-up"})  # fmt: skip
    assert forged.status_code == 401
    bearer = {"Authorization": f"Bearer {await _token(client, form)}"}
    for _ in range(2):  # a retry of the same id is a duplicate, not a second push
        sent = await client.post(SEND, json=_push("device", "m1", title="hi"), headers=bearer)
        assert sent.status_code == 200 and sent.json()["name"].endswith("/m1")
    seen = (await client.get("/received")).json()
    assert (seen["count"], seen["distinct"], seen["duplicates"]) == (2, 1, 1)
    assert seen["data"]["m1"]["title"] == "hi" and seen["oauth"] == {"issued": 1, "refused": 2}
    counts = (await client.get("/received", params={"ids": "0"})).json()
    assert "ids" not in counts and "data" not in counts and counts["count"] == 2
    assert (await client.post("/revoke")).status_code == 204
    assert (await client.post(SEND, json=_push("d", "m2"), headers=bearer)).status_code == 401
    assert recorder.delivered == {"m1": 2}


async def test_bad_grants_and_bad_messages_are_refused_as_google_does(
    provider: tuple[httpx.AsyncClient, Recorder, str],
) -> None:
    client, _, form = provider
    headers = FORM
    wrong_grant = form.replace(JWT_BEARER, "client_credentials")
    for body in (wrong_grant, f"grant_type={JWT_BEARER}&assertion=garbage", ""):
        answer = await client.post("/token", content=body, headers=headers)
        assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant"
    bearer = {"Authorization": f"Bearer {await _token(client, form)}"}
    for bad in (b"not json", b'{"message": {}}', b'{"message": "x"}'):
        answer = await client.post(SEND, content=bad, headers=bearer)
        assert answer.status_code == 400
    numbers = await client.post(SEND, json=_push("d", "m", count=3), headers=bearer)
    assert numbers.status_code == 400  # FCM v1 data values are strings


async def test_faults_are_injected_as_asked(
    provider: tuple[httpx.AsyncClient, Recorder, str],
) -> None:
    client, recorder, form = provider
    bearer = {"Authorization": f"Bearer {await _token(client, form)}"}
    faults = {"invalid_tokens": ["gone"], "malformed_tokens": ["bad"], "fail_first": 1,
              "retry_after": 7}  # fmt: skip
    assert (await client.post("/faults", json=faults)).status_code == 200
    gone = await client.post(SEND, json=_push("gone", "a"), headers=bearer)
    assert gone.status_code == 404 and gone.json()["error"]["details"][0]["errorCode"] == (
        "UNREGISTERED"
    )
    webhook_gone = await client.post("/webhook", json={"to": "gone", "message_id": "b"})
    assert webhook_gone.status_code == 410
    bad = await client.post(SEND, json=_push("bad", "c"), headers=bearer)
    assert bad.status_code == 400 and bad.json()["error"]["status"] == "INVALID_ARGUMENT"
    first = await client.post("/webhook", json={"to": "ok"}, headers={"Idempotency-Key": "d"})
    assert first.status_code == 429 and first.headers["Retry-After"] == "7"
    second = await client.post("/webhook", json={"to": "ok"}, headers={"Idempotency-Key": "d"})
    assert second.status_code == 200
    assert (await client.post("/faults", json={"error_rate": 1.0})).status_code == 200
    assert (await client.post("/webhook", json={"message_id": "e"})).status_code == 503
    throttle = await client.post("/faults", json={"throttle_for": 30})
    assert throttle.status_code == 200
    held = await client.post("/webhook", json={"message_id": "f"})
    assert held.status_code == 429 and 1 <= int(held.headers["Retry-After"]) <= 30
    assert (await client.post("/faults", json={"no_such_fault": 1})).status_code == 400
    assert (await client.post("/webhook", content=b"{")).status_code == 400
    assert (await client.post("/reset")).status_code == 204
    assert recorder.snapshot()["count"] == 0 and recorder.faults.throttle_for == 0
    assert (await client.post("/webhook", json={"message_id": "g"})).status_code == 200
