"""TLS settings: every file is read and checked at start; a bad one names the setting (the
variable, from the environment) and the path, never the file's content."""

from __future__ import annotations

import copy
import os
import pickle
import ssl
from typing import TYPE_CHECKING

import pytest

from warren import ConfigError, ConnectionConfig, TlsConfig
from warren.testing import TestCA

if TYPE_CHECKING:
    from pathlib import Path

    from warren.testing import CertFiles

SECRET = "-----BEGIN SECRET MATERIAL----- do-not-print-me"


@pytest.fixture
def ca(tmp_path: Path) -> TestCA:
    return TestCA(tmp_path)


@pytest.fixture
def client(ca: TestCA) -> CertFiles:
    return ca.issue("client", client=True)


def env_error(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        ConnectionConfig.from_env({"WARREN_AMQP_URL": "amqps://h/", **env})
    return str(info.value)


def test_a_good_set_makes_one_verifying_context(ca: TestCA, client: CertFiles) -> None:
    tls = ConnectionConfig.from_env(
        {
            "WARREN_AMQP_URL": "amqps://h/",
            "WARREN_AMQP_CA_FILE": str(ca.cert),
            "WARREN_AMQP_CERT_FILE": str(client.cert),
            "WARREN_AMQP_KEY_FILE": str(client.key),
            "WARREN_AMQP_SERVER_NAME": "broker.internal",
        }
    ).tls
    assert tls.context.verify_mode == ssl.CERT_REQUIRED and tls.context.check_hostname
    assert tls.context is tls.context  # made once
    assert tls.server_name == "broker.internal"


def test_verification_is_turned_off_only_explicitly() -> None:
    assert TlsConfig().verify
    off = ConnectionConfig.from_env(
        {"WARREN_AMQP_URL": "amqps://h/", "WARREN_AMQP_TLS_VERIFY": "off"}
    ).tls
    assert off.context.verify_mode == ssl.CERT_NONE and not off.context.check_hostname
    assert "WARREN_AMQP_TLS_VERIFY: cannot parse 'maybe'" in env_error(
        {"WARREN_AMQP_TLS_VERIFY": "maybe"}
    )


def test_missing_and_unreadable_files_name_the_variable_and_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    assert env_error({"WARREN_AMQP_CA_FILE": str(missing)}) == (
        f"WARREN_AMQP_CA_FILE: cannot read {missing}: No such file or directory"
    )
    assert "WARREN_AMQP_CA_FILE: cannot read" in env_error({"WARREN_AMQP_CA_FILE": str(tmp_path)})


@pytest.mark.parametrize("variable", ["WARREN_AMQP_CA_FILE", "WARREN_AMQP_CERT_FILE"])
def test_a_file_that_is_not_pem_is_named_and_not_shown(
    variable: str, tmp_path: Path, client: CertFiles
) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text(SECRET)
    env = {variable: str(junk)}
    if variable == "WARREN_AMQP_CERT_FILE":
        env["WARREN_AMQP_KEY_FILE"] = str(client.key)
    message = env_error(env)
    assert message.startswith(f"{variable}: {junk} holds no PEM certificate")
    assert "do-not-print-me" not in message


def test_a_key_that_does_not_match_the_certificate(ca: TestCA, client: CertFiles) -> None:
    other = ca.issue("other", client=True)
    message = env_error(
        {"WARREN_AMQP_CERT_FILE": str(client.cert), "WARREN_AMQP_KEY_FILE": str(other.key)}
    )
    assert message == f"WARREN_AMQP_KEY_FILE: {other.key} does not match {client.cert}"


def test_an_encrypted_key_needs_its_passphrase_from_a_file(ca: TestCA, tmp_path: Path) -> None:
    locked = ca.issue("locked", client=True, password="correct horse battery")
    assert locked.key_password_file is not None
    base = {"WARREN_AMQP_CERT_FILE": str(locked.cert), "WARREN_AMQP_KEY_FILE": str(locked.key)}
    assert env_error(base) == (
        f"WARREN_AMQP_KEY_FILE: {locked.key} is encrypted: set key_password_file"
    )
    wrong = tmp_path / "wrong.password"
    wrong.write_text("not the passphrase\n")
    message = env_error({**base, "WARREN_AMQP_KEY_PASSWORD_FILE": str(wrong)})
    assert message == f"WARREN_AMQP_KEY_PASSWORD_FILE: {wrong} does not open {locked.key}"
    assert "not the passphrase" not in message
    good = {**base, "WARREN_AMQP_KEY_PASSWORD_FILE": str(locked.key_password_file)}
    tls = ConnectionConfig.from_env({"WARREN_AMQP_URL": "amqps://h/", **good}).tls
    link = ConnectionConfig(urls="amqps://h/", tls=tls)
    assert "correct horse" not in repr(tls) and "correct horse" not in repr(link)


def test_a_key_without_its_certificate_is_refused(client: CertFiles) -> None:
    assert env_error({"WARREN_AMQP_KEY_FILE": str(client.key)}) == (
        "WARREN_AMQP_KEY_FILE: needs cert_file (the certificate it belongs to)"
    )


def test_tls_settings_without_an_amqps_url_are_a_mistake_said_at_once(ca: TestCA) -> None:
    with pytest.raises(ConfigError) as info:
        ConnectionConfig.from_env(
            {"WARREN_AMQP_URL": "amqp://u:pw@h/", "WARREN_AMQP_CA_FILE": str(ca.cert)}
        )
    assert str(info.value) == (
        "WARREN_AMQP_URL: the TLS settings apply to amqps:// URLs, and none is one"
    )


def test_ssl_options_in_a_url_and_the_tls_settings_together_are_refused(ca: TestCA) -> None:
    """Both ways at once: the TLS settings would replace the URL's ssl_options silently (its
    CA, its key): said at start, the URL (and its passphrase) not shown."""
    url = "amqps://u:pw@h/%2F?ssl_options={'password': 's3cret-pass'}"
    with pytest.raises(ConfigError) as info:
        ConnectionConfig.from_env({"WARREN_AMQP_URL": url, "WARREN_AMQP_CA_FILE": str(ca.cert)})
    text = str(info.value)
    assert text.startswith("WARREN_AMQP_URL: a URL has ?ssl_options= and the TLS settings")
    assert "s3cret" not in text and "pw@" not in text
    ConnectionConfig(urls=url)  # alone, pika's way still works


def test_in_code_the_errors_name_the_keyword(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^ca_file: cannot read"):
        TlsConfig(ca_file=str(tmp_path / "none.pem"))
    with pytest.raises(ConfigError, match=r"^tls: must be a TlsConfig"):
        ConnectionConfig(tls="on")  # type: ignore[arg-type]


def test_a_ca_bundle_with_utf8_comments_loads(ca: TestCA, tmp_path: Path) -> None:
    """Bundles name each CA in comments, in UTF-8: such a file is a good file (it crashed
    the start with a TypeError)."""
    bundle = tmp_path / "bundle.pem"
    bundle.write_bytes("# Issuer: Főtanúsítvány\n".encode() + ca.cert.read_bytes())
    assert TlsConfig(ca_file=str(bundle)).context.verify_mode == ssl.CERT_REQUIRED


def test_a_fifo_or_a_device_is_not_read(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match="not a regular file"):
        TlsConfig(ca_file=str(fifo))  # it hung, reading the FIFO
    with pytest.raises(ConfigError, match="not a regular file"):
        TlsConfig(ca_file="/dev/zero")


def test_odd_passphrase_files(ca: TestCA, tmp_path: Path) -> None:
    """A passphrase after a blank line or a BOM opens the key; one over OpenSSL's 1024
    bytes is a clear error (it was a ValueError, exit 1)."""
    locked = ca.issue("odd", client=True, password="pass word")
    for raw in (b"\n\npass word\r\n", b"\xef\xbb\xbfpass word\n"):
        file = tmp_path / "pw"
        file.write_bytes(raw)
        TlsConfig(cert_file=str(locked.cert), key_file=str(locked.key),
                  key_password_file=str(file))  # fmt: skip
    file = tmp_path / "long"
    file.write_text("x" * 2000)
    with pytest.raises(ConfigError, match="over 1024 bytes"):
        TlsConfig(cert_file=str(locked.cert), key_file=str(locked.key),
                  key_password_file=str(file))  # fmt: skip


def test_a_certificate_with_a_header_and_garbage_blames_the_certificate(
    client: CertFiles, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
    with pytest.raises(ConfigError, match=r"^cert_file: .* holds no valid PEM certificate"):
        TlsConfig(cert_file=str(bad), key_file=str(client.key))


@pytest.mark.parametrize("name", ["a..b", "x" * 70 + ".example", "host:5671", "a b", ".lead"])
def test_a_server_name_that_is_no_host_name_is_refused_at_start(name: str) -> None:
    with pytest.raises(ConfigError, match=r"^server_name: must be a host name"):
        TlsConfig(server_name=name)


def test_a_tls_config_copies_and_pickles(ca: TestCA) -> None:
    link = ConnectionConfig(urls="amqps://h/", tls=TlsConfig(ca_file=str(ca.cert)))
    again = pickle.loads(pickle.dumps(link))
    assert again == link and copy.deepcopy(link) == link
    assert again.tls.context.verify_mode == ssl.CERT_REQUIRED
