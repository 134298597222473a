"""No secret of a TLS setup in any output: the URL's password and a client key's passphrase
(from ``WARREN_AMQP_KEY_PASSWORD_FILE``, or in pika's ``?ssl_options=``) never appear in what
a ``warren run`` process prints (text and JSON logs at DEBUG), in ``/healthz``, ``/readyz``,
``/metrics``, in ``--help``, nor in the exceptions and reprs a program sees. The same tests as
tests/broker/test_secrets.py, over a real TLS connection with a client certificate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING
from urllib.parse import quote

import pytest

from tests.support.helpers import WARREN, free_port, run_warren, wait_serving
from warren import ConfigError, ConnectionConfig, PublisherConfig, TlsConfig
from warren.testing import TestCA

if TYPE_CHECKING:
    from pathlib import Path

    from warren.testing import RabbitTlsNode

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

USER = "tls-secrets"
PASSWORD = "Pw,tls/s3cret x"  # a comma, a slash and a space: percent-encoded in the URL
PASSPHRASE = "key-passphrase-q8Zr"


def spellings() -> list[str]:
    """Every way the two secrets could be printed."""
    return [PASSWORD, quote(PASSWORD, safe=""), "s3cret", PASSPHRASE, quote(PASSPHRASE)]


def assert_clean(text: str, where: str) -> None:
    for secret in spellings():
        assert secret not in text, f"{secret!r} leaked in {where}:\n{text[-3000:]}"


@pytest.fixture(scope="module")
def secured(
    rabbit_tls_node: RabbitTlsNode, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A user with a nasty password on the TLS node, and a client certificate whose key is
    encrypted: the env of each way to configure them."""
    node = rabbit_tls_node
    node.node.ctl("add_user", USER, PASSWORD)
    node.node.ctl("set_permissions", USER, ".*", ".*", ".*")
    cert = node.issue_client(USER, password=PASSPHRASE)
    assert cert.key_password_file is not None
    url = f"amqps://{USER}:{quote(PASSWORD, safe='')}@127.0.0.1:{node.tls_port}/%2F"
    options = {"ca_certs": str(node.ca_file), "certfile": str(cert.cert),
               "keyfile": str(cert.key), "password": PASSPHRASE}  # fmt: skip
    db = tmp_path_factory.mktemp("tls-secrets")
    return {
        "settings": json.dumps(
            {
                "WARREN_AMQP_URL": url,
                "WARREN_AMQP_CA_FILE": str(node.ca_file),
                "WARREN_AMQP_CERT_FILE": str(cert.cert),
                "WARREN_AMQP_KEY_FILE": str(cert.key),
                "WARREN_AMQP_KEY_PASSWORD_FILE": str(cert.key_password_file),
                "WARREN_API_DB": str(db / "settings.sqlite3"),
            }
        ),
        "ssl_options": json.dumps(
            {
                "WARREN_AMQP_URL": f"{url}?ssl_options={quote(repr(options), safe='')}",
                "WARREN_API_DB": str(db / "ssl_options.sqlite3"),
            }
        ),
    }


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.parametrize(("way", "log_format"), [("settings", "text"), ("ssl_options", "json")])
def test_a_tls_worker_never_prints_a_secret(
    secured: dict[str, str], way: str, log_format: str
) -> None:
    """``warren run api`` over TLS with a client certificate, logging at DEBUG (pika's lines
    too): connected, one message accepted and published, every ops endpoint read, then
    stopped; nothing it served or printed holds the password or the passphrase."""
    metrics, api = free_port(), free_port()
    env = {
        **os.environ,
        **json.loads(secured[way]),
        "WARREN_LOG_FORMAT": log_format,
        "WARREN_LOG_LEVEL": "DEBUG",
        "WARREN_METRICS_ADDR": f"127.0.0.1:{metrics}",
        "WARREN_API_ADDR": f"127.0.0.1:{api}",
        "WARREN_PUSH_QUEUE": f"push.tls-secrets.{way}.{log_format}",
    }
    proc = subprocess.Popen([*WARREN, "run", "api"], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        wait_serving(proc, metrics, within=30)
        body = json.dumps({"from": "ada", "to": "device-1", "text": "hi"}).encode()
        posted = urllib.request.Request(f"http://127.0.0.1:{api}/messages", data=body,
                                        headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(posted, timeout=10) as r:
            assert r.status == 202
        deadline = time.monotonic() + 30
        while not json.loads(get(f"http://127.0.0.1:{metrics}/readyz")[1])["workers"]["api"][
            "connected"
        ]:  # polled with a deadline: the endpoint is the event
            assert time.monotonic() < deadline, "never connected over TLS"
            time.sleep(0.05)
        served = {path: get(f"http://127.0.0.1:{metrics}{path}")
                  for path in ("/healthz", "/readyz", "/metrics")}  # fmt: skip
        assert served["/readyz"][0] == 200, served["/readyz"]
        assert f"127.0.0.1:{secured_port(env)}" in served["/readyz"][1]  # the node, shown
        for path, (_status, text) in served.items():
            assert_clean(text, path)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0, err[-3000:]
    assert "connection.up" in err, err[-3000:]
    assert_clean(out, "stdout")
    assert_clean(err, "stderr")
    if log_format == "json":
        assert all(json.loads(line) for line in err.splitlines() if line.strip())


def secured_port(env: dict[str, str]) -> str:
    return env["WARREN_AMQP_URL"].split("@", 1)[1].split(":", 1)[1].split("/", 1)[0]


@pytest.mark.parametrize("way", ["settings", "ssl_options"])
def test_help_and_a_refused_start_never_print_a_secret(
    secured: dict[str, str], way: str, tmp_path: Path
) -> None:
    """``--help`` with the secrets in the environment, and a start the broker's certificate
    check refuses (another CA trusted: exit 6, the reason named)."""
    env = json.loads(secured[way])
    for args in (("--help",), ("run", "--help"), ("run", "api", "--help")):
        done = run_warren(*args, env=env)
        assert done.returncode == 0, done.stderr
        assert_clean(done.stdout + done.stderr, " ".join(args))
    stranger = TestCA(tmp_path).cert  # a CA that did not sign the broker's certificate
    if way == "settings":
        env["WARREN_AMQP_CA_FILE"] = str(stranger)
    else:
        env["WARREN_AMQP_URL"] = env["WARREN_AMQP_URL"].replace(
            quote(str(json.loads(secured["settings"])["WARREN_AMQP_CA_FILE"]), safe=""),
            quote(str(stranger), safe=""),
        )
        assert quote(str(stranger), safe="") in env["WARREN_AMQP_URL"]
    done = run_warren("run", "api", env={**env, "WARREN_API_ADDR": f"127.0.0.1:{free_port()}"})
    assert done.returncode == 6, done.stderr[-3000:]
    assert "CERTIFICATE_VERIFY_FAILED" in done.stderr
    assert_clean(done.stdout + done.stderr, "a refused start")


@pytest.mark.parametrize("way", ["settings", "ssl_options"])
def test_configs_and_their_errors_never_show_a_secret(secured: dict[str, str], way: str) -> None:
    """What a program holds: the connection and publisher configs' reprs, the TLS settings'
    repr, and a config error about the URL."""
    env = json.loads(secured[way])
    link = ConnectionConfig.from_env(env)
    for shown in (repr(link), repr(link.tls), repr(PublisherConfig(connection=link)), str(link)):
        assert_clean(shown, "a repr")
    assert f"{USER}:***@" in repr(link)
    url = env["WARREN_AMQP_URL"]
    broken = {**env, "WARREN_AMQP_URL": url.replace(f":{secured_port(env)}/", ":notaport/")}
    with pytest.raises(ConfigError, match="malformed") as info:
        ConnectionConfig.from_env(broken)
    assert_clean(str(info.value) + repr(info.value), "a config error")
    if way == "settings":
        assert isinstance(link.tls, TlsConfig) and link.tls.configured
        assert PASSPHRASE not in repr(link.tls.__getstate__())
