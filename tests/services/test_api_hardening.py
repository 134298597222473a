"""The api's HTTP listener under hostile conditions (issue #27, second round).

- Out of file descriptors, it pauses accepting, says so once, and resumes by itself (as
  the ops server does), instead of a traceback per failed ``accept``.
- ``data`` keys FCM reserves ("google*", "gcm*", "from", ..., in any case) are refused.
- Requests a proxy in front could frame differently (Content-Length with
  Transfer-Encoding, bare LF, obs-fold, odd codings, several lengths) are refused with 400
  before any parser guesses. The fake push provider shares the listener, so it is checked
  too.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import resource
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from typing import IO, TYPE_CHECKING

import anyio
import httpx
import pytest

from tests.support.helpers import WARREN, free_port, running, wait_http
from warren_services import api, fake_push_provider

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

NOFILE = 128  # the child's descriptor limit; the flood opens more clients than that
VALID = b'{"from": "a", "to": "b", "text": "hi"}'


def _api_env(broker_url: str, tmp_path: Path, queue_name: str) -> dict[str, str]:
    return {"WARREN_AMQP_URL": broker_url, "WARREN_API_ADDR": f"127.0.0.1:{free_port()}",
            "WARREN_API_DB": f"{tmp_path}/api.sqlite3",
            "WARREN_PUSH_QUEUE": queue_name}  # fmt: skip


@contextlib.asynccontextmanager
async def _api(broker_url: str, tmp_path: Path, queue_name: str) -> AsyncIterator[str]:
    env = _api_env(broker_url, tmp_path, queue_name)
    async with running(api.service, env):
        await wait_http(f"http://{env['WARREN_API_ADDR']}/messages/none")
        yield env["WARREN_API_ADDR"]


# --- 8: out of file descriptors --------------------------------------------------------


class _Lines:
    """A child's stderr, read by a thread, so a test can wait for a line with a deadline."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        self.seen: list[str] = []
        self._new: queue.Queue[str | None] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self._new.put(line)
        self._new.put(None)

    def wait_for(self, needle: str, within: float = 20) -> None:
        if any(needle in line for line in self.seen):
            return
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._new.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                pytest.fail(f"the process ended before {needle!r}:\n{self.tail()}")
            self.seen.append(line)
            if needle in line:
                return
        pytest.fail(f"no {needle!r} within {within} s:\n{self.tail()}")

    def drain(self, within: float = 20) -> None:
        """Every line up to the end of the stream (after the process exited)."""
        self._reader.join(within)
        while not self._new.empty():
            if (line := self._new.get_nowait()) is not None:
                self.seen.append(line)

    def tail(self) -> str:
        return "".join(self.seen[-30:])


def _limited() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, hard))


@contextlib.contextmanager
def _warren_run(service: str, backend: str, env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    full_env = {**os.environ, "WARREN_METRICS_ADDR": f"127.0.0.1:{free_port()}", **env}
    with subprocess.Popen([*WARREN, "run", service, "--backend", backend], env=full_env,
                          text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          preexec_fn=_limited) as proc:  # fmt: skip
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=20)


def _request(url: str, body: bytes | None = None, within: float = 20) -> tuple[int, bytes]:
    deadline = time.monotonic() + within
    while True:
        try:
            req = urllib.request.Request(url, data=body, method="POST" if body else "GET")
            with urllib.request.urlopen(req, timeout=2) as resp:
                return resp.status, bytes(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.05)  # polling with a deadline: nothing to wait on but the socket


def _out_of_descriptors(proc: subprocess.Popen[str], port: int, check: str) -> None:
    """Flood ``port`` with idle clients until accept fails, free them, and expect ``check``
    (a GET url) to answer again, with one pause and one resume logged and no traceback."""
    lines = _Lines(proc)
    _request(check)
    clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(NOFILE)]
    try:
        lines.wait_for("accept.paused")
        assert proc.poll() is None
    finally:
        for client in clients:
            client.close()
    lines.wait_for("accept.resumed")
    assert _request(check)[0] < 500
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    lines.drain()
    text = "".join(lines.seen)
    assert "Traceback" not in text, lines.tail()
    assert text.count("accept.paused") == 1, lines.tail()


@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_api_out_of_descriptors_pauses_quietly_and_resumes(
    backend: str, broker_url: str, tmp_path: Path, push_queue: str
) -> None:
    env = _api_env(broker_url, tmp_path, push_queue)
    with _warren_run("api", backend, env) as proc:
        addr = env["WARREN_API_ADDR"]
        _out_of_descriptors(proc, int(addr.rsplit(":", 1)[1]), f"http://{addr}/messages/none")


@pytest.mark.timeout(90)
def test_fake_provider_out_of_descriptors_pauses_quietly_and_resumes() -> None:
    addr = f"127.0.0.1:{free_port()}"
    with _warren_run("fake-push-provider", "trio", {"WARREN_FAKE_PUSH_ADDR": addr}) as proc:
        _out_of_descriptors(proc, int(addr.rsplit(":", 1)[1]), f"http://{addr}/received")


# --- 12: FCM's reserved data keys ------------------------------------------------------

RESERVED_KEYS = ["googlex", "gcm_x", "Google.x", "GCM.x", "google", "GCM", "google.c.a.e",
                 "gcm.notification.title", "from", "From", "MESSAGE_TYPE", "Collapse_Key",
                 "message_id", "Warren_Message_Id", ""]  # fmt: skip
ALLOWED_KEYS = ["goog", "gc", "my_google", "fromage", "message", "x-gcm", "type"]


@pytest.mark.broker
async def test_api_refuses_every_key_fcm_reserves(
    broker_url: str, tmp_path: Path, push_queue: str
) -> None:
    base = {"from": "a", "to": "b", "text": "hi"}
    async with _api(broker_url, tmp_path, push_queue) as addr, httpx.AsyncClient() as client:
        accepted = []
        for key in RESERVED_KEYS:
            r = await client.post(f"http://{addr}/messages", json={**base, "data": {key: "v"}})
            if r.status_code != 422:
                accepted.append((key, r.status_code))
            else:
                assert r.json()["field"] == f"data.{key}", r.text
        assert not accepted, f"accepted reserved keys: {accepted}"
        data = dict.fromkeys(ALLOWED_KEYS, "v")
        r = await client.post(f"http://{addr}/messages", json={**base, "data": data})
        assert r.status_code == 202, r.text


# --- 13: requests a proxy could frame differently --------------------------------------


def _chunked(body: bytes) -> bytes:
    return b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)


POST = b"POST /messages HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
LENGTH = b"Content-Length: %d\r\n" % len(VALID)
CHUNKED = _chunked(VALID)


def _post(fields: bytes, body: bytes = VALID, *, start: bytes = POST) -> bytes:
    """``start`` (request line and common headers), ``fields``, the blank line, ``body``."""
    return start + fields + b"\r\n" + body


SMUGGLING = {
    "content-length and chunked": _post(b"Content-Length: %d\r\nTransfer-Encoding: chunked"
                                        b"\r\n" % len(CHUNKED), CHUNKED),
    "chunked and content-length": _post(b"Transfer-Encoding: chunked\r\nContent-Length: 3"
                                        b"\r\n", CHUNKED),
    "bare LF everywhere": _post(LENGTH, start=POST.replace(b"\r\n", b"\n")).replace(
        b"\r\n", b"\n"),
    "bare LF in one line": _post(b"X-A: 1\n" + LENGTH),
    "bare LF ending the head": _post(LENGTH)[: -len(VALID) - 2] + b"\n" + VALID,
    "bare CR": _post(b"X-A: 1\rX-B: 2\r\n" + LENGTH),
    "two different lengths": _post(LENGTH + b"Content-Length: 3\r\n"),
    "two equal lengths": _post(LENGTH + LENGTH),
    "a list of lengths": _post(b"Content-Length: %d, %d\r\n" % (len(VALID), len(VALID))),
    "a signed length": _post(b"Content-Length: +%d\r\n" % len(VALID)),
    "Chunked": _post(b"Transfer-Encoding: Chunked\r\n", CHUNKED),
    "chunked twice": _post(b"Transfer-Encoding: chunked\r\n" * 2, CHUNKED),
    "chunked, chunked": _post(b"Transfer-Encoding: chunked, chunked\r\n", CHUNKED),
    "gzip, chunked": _post(b"Transfer-Encoding: gzip, chunked\r\n", CHUNKED),
    "xchunked": _post(b"Transfer-Encoding: xchunked\r\n", CHUNKED),
    "identity": _post(b"Transfer-Encoding: identity\r\n" + LENGTH),
    "folded transfer-encoding": _post(b"Transfer-Encoding:\r\n chunked\r\n", CHUNKED),
    "folded header": _post(b"X-A: 1\r\n\t2\r\n" + LENGTH),
    "space before the colon": _post(b"Transfer-Encoding : chunked\r\n", CHUNKED),
    "chunked over HTTP/1.0": _post(b"Transfer-Encoding: chunked\r\n", CHUNKED,
                                   start=POST.replace(b"HTTP/1.1", b"HTTP/1.0")),
}  # fmt: skip


async def _exchange(addr: str, raw: bytes) -> bytes:
    """Send ``raw`` on a fresh connection; what came back until the server closed it (or
    went quiet for a second after answering)."""
    host, port = addr.rsplit(":", 1)
    answer = b""
    with anyio.fail_after(10):
        async with await anyio.connect_tcp(host, int(port)) as stream:
            await stream.send(raw)
            while True:
                with anyio.move_on_after(1 if answer else 9):
                    try:
                        answer += await stream.receive()
                        continue
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return answer
                return answer


def _status(answer: bytes) -> int:
    line = answer.split(b"\r\n", 1)[0]
    assert line.startswith(b"HTTP/1.1 "), answer[:200]
    return int(line.split()[1])


async def _check_refused(addr: str) -> None:
    wrong = {}
    for name, raw in SMUGGLING.items():
        answer = await _exchange(addr, raw)
        status = _status(answer) if answer else 0
        if status != 400 or answer.count(b"HTTP/1.1 ") != 1:
            wrong[name] = (status, answer.count(b"HTTP/1.1 "))
    assert not wrong, f"not refused with one 400 (status, answers): {wrong}"


@pytest.mark.broker
async def test_api_refuses_requests_a_proxy_could_frame_differently(
    broker_url: str, tmp_path: Path, push_queue: str
) -> None:
    async with _api(broker_url, tmp_path, push_queue) as addr:
        await _check_refused(addr)
        # what is well formed still works: a length, chunked, and both kept alive in turn
        length = _post(LENGTH)
        chunked = _post(b"Transfer-Encoding: chunked\r\n", CHUNKED)
        answer = await _exchange(addr, length + chunked + length)
        assert answer.count(b"HTTP/1.1 202 ") == 3, answer


async def test_fake_provider_refuses_requests_a_proxy_could_frame_differently() -> None:
    addr = f"127.0.0.1:{free_port()}"
    async with running(fake_push_provider.service, {"WARREN_FAKE_PUSH_ADDR": addr}):
        await wait_http(f"http://{addr}/received")
        await _check_refused(addr)
        webhook = json.dumps({"message_id": "m1", "to": "t"}).encode()
        ok = (b"POST /webhook HTTP/1.1\r\nHost: p\r\nContent-Length: %d\r\n\r\n%s"
              % (len(webhook), webhook))  # fmt: skip
        assert _status(await _exchange(addr, ok)) == 200
        huge_head = _post(b"X-A: %s\r\n" % (b"a" * 20_000) + LENGTH)
        assert _status(await _exchange(addr, huge_head)) == 431
