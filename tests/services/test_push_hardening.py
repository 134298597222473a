"""push-sender against a misbehaving OAuth token endpoint and FCM (issue #27, second round).

The token endpoint is a small local HTTP server of the test's own (``TokenEndpoint``) that
answers as told: a token, no token, HTTP 500, garbage, an echo of the assertion in its error
body, or headers dripped one byte at a time. FCM is the fake push provider. Everything else
is real: sockets, the broker, ``warren run`` processes and their signals.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, ClassVar

import anyio
import httpx
import pytest

from tests.support.helpers import (
    WARREN,
    fcm_service_account,
    free_port,
    metric,
    run_warren,
    running,
    wait_http,
    wait_until,
)
from warren import ConfigError, RetryLater
from warren_services import fake_push_provider, push_common, push_sender
from warren_services.fcm_auth import ServiceAccount
from warren_services.push_common import PushJob
from warren_services.push_providers import FcmProvider, PermanentFailure, classify

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from tests.support.broker import Broker


# --- a token endpoint that misbehaves on request ------------------------------------------


class TokenEndpoint:
    """Google's token endpoint as a test wants it to answer (``mode``), on a real socket."""

    MODES: ClassVar[tuple[str, ...]] = (
        "ok", "no_token", "http500", "garbage", "soon", "list", "echo", "drip", "numbers",
        "gzip",
    )  # fmt: skip

    def __init__(self) -> None:
        self.mode = "ok"
        self.requests = 0
        self.assertions: list[str] = []
        self.tokens: list[str] = []
        self.dripping = threading.Event()
        self._closing = threading.Event()
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                endpoint.answer(self)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/token"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> TokenEndpoint:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def answer(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("content-length", "0"))
        form = h.rfile.read(length).decode()
        assertion = form.partition("assertion=")[2].partition("&")[0]
        self.requests += 1
        self.assertions.append(assertion)
        mode = self.mode
        if mode == "drip":
            self.dripping.set()
            for byte in b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n":
                if self._closing.wait(2.0):
                    return
                try:
                    h.wfile.write(bytes([byte]))
                    h.wfile.flush()
                except OSError:
                    return
            return
        token = f"ya29.secret-access-token-{uuid.uuid4().hex}"
        status, body = 200, b""
        match mode:
            case "ok":
                self.tokens.append(token)
                body = json.dumps({"access_token": token, "expires_in": 3600}).encode()
            case "no_token":
                body = b'{"token_type": "Bearer", "expires_in": 3600}'
            case "http500":
                status, body = 500, b"upstream trouble"
            case "garbage":
                body = b"<html>this is not JSON"
            case "soon":
                body = json.dumps({"access_token": token, "expires_in": "soon"}).encode()
            case "list":
                body = b'["access_token", 3600]'
            case "numbers":
                body = b'{"access_token": 12345, "expires_in": 1e400}'
            case "gzip":  # compressed when the client says it takes gzip, as HTTP allows
                self.tokens.append(token)
                body = json.dumps({"access_token": token, "expires_in": 3600}).encode()
                if "gzip" in h.headers.get("accept-encoding", ""):
                    h.send_response(200)
                    h.send_header("Content-Encoding", "gzip")
                    body = gzip.compress(body)
                    h.send_header("Content-Length", str(len(body)))
                    h.end_headers()
                    h.wfile.write(body)
                    return
            case "echo":
                status = 400
                echoed = {"error": "invalid_grant", "error_description": f"bad {assertion}"}
                body = json.dumps(echoed).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)


@pytest.fixture
def endpoint() -> Iterator[TokenEndpoint]:
    with TokenEndpoint() as e:
        yield e


def service_account(tmp: Path, token_uri: str) -> Path:
    """A service-account credentials file with a fresh RSA key and ``token_uri``."""
    return fcm_service_account(tmp, token_uri)[0]


JOB = PushJob("push-1", "device-1", "hi", "there", {})


# --- item 1: an auth outage never costs a push an attempt -------------------------------


@pytest.mark.scenario  # slow (5-9 s): make scenarios
@pytest.mark.parametrize("mode", ["no_token", "http500", "garbage", "soon", "list", "numbers"])
async def test_a_failing_token_endpoint_asks_for_a_retry_that_costs_no_attempt(
    endpoint: TokenEndpoint, tmp_path: Path, mode: str
) -> None:
    endpoint.mode = mode
    provider = FcmProvider(
        "http://127.0.0.1:9/unused", ServiceAccount(str(service_account(tmp_path, endpoint.url)),
                                                    "WARREN_PUSH_FCM_CREDENTIALS")
    )  # fmt: skip
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(20), pytest.raises(RetryLater) as caught:
            await provider.send(client, JOB)
        assert getattr(caught.value, "consumes_attempt", True) is False
        assert endpoint.requests >= 1
        # within the backoff, pushes are answered at once, without asking the endpoint again
        asked = endpoint.requests
        with anyio.fail_after(1), pytest.raises(RetryLater):
            await provider.send(client, JOB)
        assert endpoint.requests == asked


@pytest.mark.scenario
@pytest.mark.broker
@pytest.mark.timeout(120)
@pytest.mark.parametrize("mode", ["no_token", "http500"])
async def test_pushes_outlive_a_token_endpoint_outage_and_none_is_dead_lettered(
    broker_url: str, broker: Broker, endpoint: TokenEndpoint, tmp_path: Path, mode: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    """5 pushes, max 5 attempts: while the endpoint fails they go round far more than 5
    times, none reaches the dead-letter queue; when it recovers every push is delivered."""
    caplog.set_level(logging.INFO)
    endpoint.mode = mode
    queue = f"push.test.{uuid.uuid4().hex[:8]}"
    fake = f"http://127.0.0.1:{free_port()}"
    env = {
        "WARREN_AMQP_URL": broker_url,
        "WARREN_HEARTBEAT": "2",
        "WARREN_PUSH_QUEUE": queue,
        "WARREN_PUSH_QUEUE_TYPE": "classic",
        "WARREN_FAKE_PUSH_ADDR": fake.removeprefix("http://"),
        "WARREN_PUSH_PROVIDER": "fcm",
        "WARREN_PUSH_FCM_CREDENTIALS": str(service_account(tmp_path, endpoint.url)),
        "WARREN_PUSH_PROVIDER_URL": f"{fake}/v1/projects/{{project}}/messages:send",
        "WARREN_PUSH_RETRY_BASE": "0.2",
        "WARREN_PUSH_INVALID_TOKENS_QUEUE": "",
    }
    try:
        async with (
            running(fake_push_provider.service, env),
            running(push_sender.service, env) as sender,
        ):
            await wait_http(f"{fake}/received")
            await wait_until(lambda: broker.exists(queue))
            for i in range(5):
                job = {"message_id": f"m{i}", "to": f"d{i}", "title": "t", "body": "b"}
                broker.publish(queue, json.dumps(job).encode(), message_id=f"m{i}")

            def retries() -> float:
                return metric(sender.metrics, "warren_deliveries_total",
                              worker="push-sender", outcome="retry")  # fmt: skip

            # 30 retries of 5 pushes: each went round more often than its 5 attempts allow
            await wait_until(lambda: retries() >= 30 or broker.depth(f"{queue}.dlq") > 0,
                             within=60)  # fmt: skip
            assert broker.depth(f"{queue}.dlq") == 0
            endpoint.mode = "ok"
            async with httpx.AsyncClient() as client:
                with anyio.fail_after(30):
                    while (await client.get(f"{fake}/received")).json()["distinct"] < 5:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
            assert broker.depth(f"{queue}.dlq") == 0
        assert "fcm.token_refresh_failed" in caplog.text
        assert not any(t in caplog.text for t in endpoint.tokens)
    finally:
        for suffix in ("", ".dlq", ".retry.200ms", ".retry.400ms", ".retry.800ms",
                       ".retry.1600ms"):  # fmt: skip
            broker.delete_queue(queue + suffix)


# --- item 5: garbage from the endpoint, and credentials that are not an RSA account -----


@pytest.mark.scenario  # slow (5-9 s): make scenarios
@pytest.mark.broker
@pytest.mark.parametrize("mode", ["garbage", "soon"])
async def test_garbage_from_the_token_endpoint_does_not_crash_the_sender(
    broker_url: str, broker: Broker, endpoint: TokenEndpoint, tmp_path: Path, mode: str
) -> None:
    endpoint.mode = mode
    queue = f"push.test.{uuid.uuid4().hex[:8]}"
    env = {
        "WARREN_AMQP_URL": broker_url,
        "WARREN_PUSH_QUEUE": queue,
        "WARREN_PUSH_QUEUE_TYPE": "classic",
        "WARREN_PUSH_PROVIDER": "fcm",
        "WARREN_PUSH_FCM_CREDENTIALS": str(service_account(tmp_path, endpoint.url)),
        "WARREN_PUSH_PROVIDER_URL": "http://127.0.0.1:9/v1/projects/{project}/messages:send",
        "WARREN_PUSH_INVALID_TOKENS_QUEUE": "",
    }
    try:
        with anyio.fail_after(30):
            async with running(push_sender.service, env):
                # the background refresh failed, backed off and asked again: still running
                await wait_until(lambda: endpoint.requests >= 2, within=25)
    finally:
        for suffix in ("", ".dlq", ".retry.1000ms", ".retry.2000ms", ".retry.4000ms",
                       ".retry.8000ms"):  # fmt: skip
            broker.delete_queue(queue + suffix)


def _ec_key_file(tmp: Path) -> Path:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()  # fmt: skip
    path = tmp / "ec.json"
    path.write_text(json.dumps({
        "type": "service_account", "project_id": "p", "private_key_id": "k1",
        "private_key": pem, "client_email": "a@p.iam.gserviceaccount.com",
        "token_uri": "http://127.0.0.1:9/token",
    }))  # fmt: skip
    return path


@pytest.mark.scenario  # slow (5-9 s): make scenarios
@pytest.mark.parametrize("content", ["ec", "list", "string", "bad_token_uri", "no_email"])
def test_credentials_that_cannot_mint_tokens_exit_2_naming_the_setting(
    tmp_path: Path, content: str
) -> None:
    path = tmp_path / "sa.json"
    if content == "ec":
        path = _ec_key_file(tmp_path)
    elif content == "list":
        path.write_text('[{"type": "service_account"}]')
    elif content == "string":
        path.write_text('"SECRET-MATERIAL"')
    else:
        good = json.loads(service_account(tmp_path, "http://127.0.0.1:9/token").read_text())
        if content == "bad_token_uri":
            good["token_uri"] = "file:///etc/passwd"
        else:
            good["client_email"] = 42
        path.write_text(json.dumps(good))
    done = run_warren("run", "push-sender", env={
        "WARREN_PUSH_PROVIDER": "fcm", "WARREN_PUSH_FCM_CREDENTIALS": str(path),
        "WARREN_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F",
    }, timeout=30)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "WARREN_PUSH_FCM_CREDENTIALS" in done.stderr
    assert "Traceback" not in done.stderr
    assert "SECRET-MATERIAL" not in done.stderr and "PRIVATE KEY" not in done.stderr


# --- item 10: never log the assertion or a token ---------------------------------------


async def test_an_endpoint_echoing_the_assertion_never_gets_it_into_a_log(
    endpoint: TokenEndpoint, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint.mode = "echo"
    account = ServiceAccount(str(service_account(tmp_path, endpoint.url)), "X")
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(account.run)
            await wait_until(lambda: endpoint.requests >= 1 and "token_refresh" in caplog.text)
            endpoint.mode = "ok"
            token = await _token_when_ready(account)
            tg.cancel_scope.cancel()
    assertion = endpoint.assertions[0]
    assert len(assertion) > 100
    text = caplog.text
    for i in range(0, len(assertion) - 16, 8):  # no 16 characters of it, anywhere
        assert assertion[i : i + 16] not in text
    assert token not in text
    assert "invalid_grant" in text  # the endpoint's error code is still there to read


async def _token_when_ready(account: ServiceAccount) -> str:
    while True:
        try:
            return await account.token()
        except RetryLater:  # backing off after the echo: poll until the next refresh
            await anyio.sleep(0.05)
        except Exception:  # the old code's error types
            await anyio.sleep(0.05)


# --- FCM's own answers: garbage and wrong types never escape as anything but a verdict --


@pytest.mark.parametrize(
    ("status", "headers", "body"),
    [
        (404, {}, b'{"error": {"details": 5}}'),
        (404, {}, b'{"error": {"details": [{"fieldViolations": "x"}]}}'),
        (400, {}, b'{"error": {"status": {"nested": 1}, "details": [{"errorCode": ["A"]}]}}'),
        (404, {}, b'{"error": {"status": "' + b"X" * 5000 + b'"}}'),
        (503, {"retry-after": "\u00b2".encode()}, b""),
        (429, {"retry-after": "Wed, 21 Oct 2015 07:28:00 -0000"}, b""),
        (429, {"retry-after": "9" * 400}, b""),
        (503, {"retry-after": "-5"}, b"[]"),
        (404, {}, b"\xff\xfe not utf-8"),
    ],
)
def test_garbage_from_fcm_is_a_verdict_with_a_bounded_label(
    status: int, headers: dict[str, str | bytes], body: bytes
) -> None:
    raw = [(k.encode(), v if isinstance(v, bytes) else v.encode()) for k, v in headers.items()]
    response = httpx.Response(status, headers=raw, content=body)
    with pytest.raises((RetryLater, PermanentFailure)) as verdict:
        classify(response, fcm=True)
    exc = verdict.value
    if status >= 429:
        assert isinstance(exc, RetryLater)
        assert 0 <= exc.delay <= 3600
    else:
        assert isinstance(exc, PermanentFailure)
        assert 0 < len(exc.reason) <= 64 and exc.reason.isascii(), exc.reason


# --- item 6: a second signal ends the process within a second, whatever is stuck -------


def _wait_line(proc: subprocess.Popen[str], needle: str) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        if needle in line:
            return
    raise AssertionError(f"{needle!r} never logged")


def _forced(proc: subprocess.Popen[str], second: signal.Signals) -> float:
    proc.send_signal(signal.SIGTERM)
    _wait_line(proc, "shutdown.requested")
    started = time.monotonic()
    if proc.poll() is None:
        proc.send_signal(second)
    try:
        proc.communicate(timeout=10)  # and closes its pipe
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return time.monotonic() - started


STUCK = """
import sys, threading, anyio
from warren import Service
from warren._run.runner import run_service
async def main(ctx):
    await anyio.wait_all_tasks_blocked()  # the runner's signal receiver is open
    print("stuck.started", file=sys.stderr, flush=True)
    await anyio.to_thread.run_sync(threading.Event().wait)  # cannot be cancelled
import logging; logging.basicConfig(level=logging.INFO)
sys.exit(run_service(Service(name="stuck", help="", main=main),
                     {"WARREN_METRICS_ADDR": sys.argv[2]}, backend=sys.argv[1],
                     abandon_after=0.5))
"""


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT])
def test_a_second_signal_ends_a_process_stuck_in_a_thread(
    backend: str, second: signal.Signals
) -> None:
    addr = f"127.0.0.1:{free_port()}"
    proc = subprocess.Popen([sys.executable, "-c", STUCK, backend, addr], text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _wait_line(proc, "stuck.started")
    took = _forced(proc, second)
    assert took < 1.5, f"the second signal took {took:.1f}s"
    assert proc.returncode is not None and proc.returncode != 0


@pytest.mark.broker
@pytest.mark.timeout(90)
def test_a_second_signal_ends_push_sender_while_the_token_endpoint_drips(
    broker: Broker, endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    endpoint.mode = "drip"
    queue = f"push.test.{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "WARREN_METRICS_ADDR": f"127.0.0.1:{free_port()}",
        "WARREN_PUSH_QUEUE": queue,
        "WARREN_PUSH_QUEUE_TYPE": "classic",
        "WARREN_PUSH_PROVIDER": "fcm",
        "WARREN_PUSH_FCM_CREDENTIALS": str(service_account(tmp_path, endpoint.url)),
        "WARREN_PUSH_PROVIDER_URL": "http://127.0.0.1:9/v1/projects/{project}/messages:send",
        "WARREN_PUSH_INVALID_TOKENS_QUEUE": "",
    }
    proc = subprocess.Popen([*WARREN, "run", "push-sender"], env=env, text=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        assert endpoint.dripping.wait(30), "the sender never asked for a token"
        took = _forced(proc, signal.SIGINT)
        assert took < 1.5, f"the second signal took {took:.1f}s"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        for suffix in ("", ".dlq", ".retry.1000ms", ".retry.2000ms", ".retry.4000ms",
                       ".retry.8000ms"):  # fmt: skip
            broker.delete_queue(queue + suffix)


async def test_a_token_request_is_bounded_by_a_total_timeout(
    endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    """Headers dripped one byte every 2 s never trip a per-read timeout: a total one does."""
    endpoint.mode = "drip"
    account = ServiceAccount(str(service_account(tmp_path, endpoint.url)), "X", timeout=1.0)
    provider = FcmProvider("http://127.0.0.1:9/unused", account)
    started = anyio.current_time()
    async with httpx.AsyncClient() as client:
        with anyio.fail_after(10), pytest.raises(RetryLater):
            await provider.send(client, JOB)
    assert anyio.current_time() - started < 5


# --- items 11 and 14: queue settings ---------------------------------------------------


def _run(service: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    try:
        return run_warren("run", service, env=env, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{service} never exited (it retries a bad setting forever)")


@pytest.mark.broker
@pytest.mark.parametrize(
    ("service", "setting", "value"),
    [
        ("api", "WARREN_PUSH_QUEUE", "q" * 256),
        ("api", "WARREN_PUSH_QUEUE", "é" * 128),
        ("push-sender", "WARREN_PUSH_QUEUE", "q" * 245),  # its .retry.1000ms queue is over
        ("push-sender", "WARREN_PUSH_INVALID_TOKENS_QUEUE", "q" * 256),
        ("push-sender", "WARREN_PUSH_INVALID_TOKENS_QUEUE", "amq.reserved"),
        ("api", "WARREN_PUSH_QUEUE", "amq.reserved"),
    ],
)
@pytest.mark.scenario  # slow (5-9 s): make scenarios
def test_a_queue_name_amqp_cannot_carry_exits_2_naming_the_setting(
    broker_url: str, tmp_path: Path, service: str, setting: str, value: str
) -> None:
    env = {
        "WARREN_AMQP_URL": broker_url,
        "WARREN_API_ADDR": f"127.0.0.1:{free_port()}",
        "WARREN_API_DB": str(tmp_path / "api.sqlite3"),
        "WARREN_PUSH_QUEUE_TYPE": "classic",
        setting: value,
    }
    done = _run(service, env)
    assert done.returncode == 2, done.stderr
    assert setting in done.stderr


def test_queue_settings_are_checked_at_config_time() -> None:
    with pytest.raises(ConfigError, match="WARREN_PUSH_QUEUE"):
        push_common.queue_name({"WARREN_PUSH_QUEUE": "x" * 256})
    assert push_common.queue_name({"WARREN_PUSH_QUEUE": "x" * 200}) == "x" * 200


@pytest.mark.broker
def test_an_invalid_tokens_queue_of_another_type_exits_2_naming_its_setting(
    broker_url: str, broker: Broker
) -> None:
    queue = f"push.test.{uuid.uuid4().hex[:8]}"
    events = f"{queue}.invalid_tokens"
    broker.declare_queue(events)  # classic; the sender declares it quorum
    try:
        done = _run("push-sender", {"WARREN_AMQP_URL": broker_url, "WARREN_PUSH_QUEUE": queue,
                                    "WARREN_PUSH_INVALID_TOKENS_QUEUE": events})  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "WARREN_PUSH_INVALID_TOKENS_QUEUE" in done.stderr
    finally:
        for suffix in ("", ".dlq", ".retry.1000ms", ".retry.2000ms", ".retry.4000ms",
                       ".retry.8000ms", ".invalid_tokens"):  # fmt: skip
            broker.delete_queue(queue + suffix)


# --- the rest of item 1's kind: a push held back by the sender's own gate ---------------


async def test_a_push_the_throttle_sends_back_spends_no_attempt() -> None:
    from prometheus_client import CollectorRegistry

    from warren_services.push_throttle import Throttle

    throttle = Throttle(CollectorRegistry(), max_wait=1.0)
    throttle.pause(60)
    with pytest.raises(RetryLater) as caught:
        await throttle.wait()
    assert getattr(caught.value, "consumes_attempt", True) is False


@pytest.mark.parametrize("token", ["two words", "line\nbreak", "caf\u00e9"])
def test_a_static_token_a_header_cannot_carry_exits_2_naming_the_setting(token: str) -> None:
    with pytest.raises(ConfigError, match="WARREN_PUSH_FCM_TOKEN"):
        push_sender._fcm_auth({"WARREN_PUSH_FCM_TOKEN": token})


@pytest.mark.parametrize("key", ["google.x", "Googlex", "GCM_x", "from", "Message_Type", ""])
def test_a_job_from_another_producer_with_a_key_fcm_reserves_is_poison(key: str) -> None:
    """The api refuses such keys with 422; a job another producer put on the queue is
    dead-lettered with the reason, not sent to FCM to be refused for good."""
    from warren import PoisonMessage
    from warren_services.push_common import parse_push_job

    job = {"message_id": "m1", "to": "device", "title": "t", "body": "b", "data": {key: "v"}}
    with pytest.raises(PoisonMessage, match="reserved by FCM"):
        parse_push_job(json.dumps(job).encode())
    job["data"] = {"message_id": "api-id", "my_google": "v"}  # what the api itself sends
    assert parse_push_job(json.dumps(job).encode()).data == job["data"]


async def test_a_token_endpoint_that_would_compress_its_answer_is_asked_not_to(
    endpoint: TokenEndpoint, tmp_path: Path
) -> None:
    """Its answer is read raw (bounded, never decompressed: no bomb), so the request asks
    for it uncompressed; a token endpoint behind a compressing proxy still mints tokens."""
    endpoint.mode = "gzip"
    account = ServiceAccount(str(service_account(tmp_path, endpoint.url)), "X")
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(account.run)
            token = await _token_when_ready(account)
            tg.cancel_scope.cancel()
    assert token == endpoint.tokens[0]
