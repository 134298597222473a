"""TLS to the broker: ``TlsConfig``, the trust, client certificate and host name for
``amqps://`` URLs. Every file is read and checked when the config is made, so a bad one stops
the process at start (exit 2) with the setting and the path, never the file's content."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from warren._exceptions import ConfigError

TLS_FIELDS = ("ca_file", "cert_file", "key_file", "key_password_file", "server_name", "verify")
_CERT = b"-----BEGIN CERTIFICATE-----"
_KEY = b"PRIVATE KEY-----"
MAX_FILE_BYTES = 10 * 1024 * 1024  # a CA bundle is kilobytes; a FIFO or a device is no file
MAX_PASSWORD_BYTES = 1024  # OpenSSL's limit


def _read(setting: str, path: str) -> bytes:
    file = Path(path)
    try:
        if not file.is_file():
            reason = "not a regular file" if file.exists() else "No such file or directory"
            raise ConfigError(setting, f"cannot read {path}: {reason}")
        if file.stat().st_size > MAX_FILE_BYTES:
            raise ConfigError(setting, f"{path} is over {MAX_FILE_BYTES // 2**20} MiB")
        return file.read_bytes()
    except OSError as exc:
        raise ConfigError(setting, f"cannot read {path}: {exc.strerror or exc}") from None


def _first_certificate_decodes(data: bytes) -> bool:
    """Whether the first PEM certificate block is valid base64 DER (not just a header)."""
    text = data.decode("ascii", "ignore")
    start = text.find("-----BEGIN CERTIFICATE-----")
    end = text.find("-----END CERTIFICATE-----", start)
    if start < 0 or end < 0:
        return False
    try:
        der = ssl.PEM_cert_to_DER_cert(text[start : end + len("-----END CERTIFICATE-----")])
    except ValueError:
        return False
    return len(der) > 64 and der[0] == 0x30  # an X.509 certificate is a DER SEQUENCE


def _check_server_name(name: str) -> None:
    if any(c in name for c in ":/@ \t\r\n") or name.startswith("."):
        raise ConfigError("server_name", "must be a host name")
    try:
        name.encode("idna")
    except UnicodeError:
        raise ConfigError("server_name", "must be a host name (its IDNA form is invalid)") from None


def parse_switch(value: str) -> bool:
    """``on``/``off`` (also true/false, yes/no, 1/0) -> bool; ValueError otherwise."""
    word = value.strip().lower()
    if word in ("on", "true", "yes", "1"):
        return True
    if word in ("off", "false", "no", "0"):
        return False
    raise ValueError(value)


@dataclass(frozen=True, kw_only=True)
class TlsConfig:
    """How ``amqps://`` connections verify the broker and prove who the client is.

    Unset, the system's trust store verifies the broker's certificate against the URL's host.
    Verification is always on unless ``verify=False`` (logged as a warning at every start).
    """

    ca_file: str | None = None
    """A PEM bundle of the CAs to trust, instead of the system's (a private CA)."""
    cert_file: str | None = None
    """The client certificate (PEM), for brokers that ask for one; with ``key_file``."""
    key_file: str | None = None
    """The client certificate's private key (PEM)."""
    key_password_file: str | None = None
    """A file holding the key's passphrase (one line); never logged."""
    server_name: str | None = None
    """The host name to verify (and send as SNI) when the URL names the broker by address."""
    verify: bool = True

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file", "key_password_file", "server_name"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise ConfigError(name, "must be a non-empty path or name")
        if self.server_name is not None:
            _check_server_name(self.server_name)
        if not isinstance(self.verify, bool):
            raise ConfigError("verify", f"must be True or False, got {type(self.verify).__name__}")
        if self.key_file is not None and self.cert_file is None:
            raise ConfigError("key_file", "needs cert_file (the certificate it belongs to)")
        if self.key_password_file is not None and self.cert_file is None:
            raise ConfigError("key_password_file", "needs cert_file and key_file")
        if self.configured:
            _ = self.context  # every file read and checked now

    @property
    def configured(self) -> bool:
        """Whether any setting differs from the defaults (the system's trust, verified)."""
        files = (self.ca_file, self.cert_file, self.key_file, self.key_password_file)
        return any(f is not None for f in files) or self.server_name is not None or not self.verify

    @cached_property
    def context(self) -> ssl.SSLContext:
        """The SSL context every ``amqps://`` connection of the process uses."""
        if self.ca_file is not None:
            data = _read("ca_file", self.ca_file)
            if _CERT not in data:
                raise ConfigError("ca_file", f"{self.ca_file} holds no PEM certificate")
            try:  # the file itself: bundles carry comments in UTF-8 (CA names)
                context = ssl.create_default_context(cafile=self.ca_file)
            except (ssl.SSLError, ValueError, TypeError):
                raise ConfigError("ca_file", f"{self.ca_file} is not a valid PEM bundle") from None
        else:
            context = ssl.create_default_context()
        if self.cert_file is not None:
            self._load_client_certificate(context)
        if not self.verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def _load_client_certificate(self, context: ssl.SSLContext) -> None:
        assert self.cert_file is not None
        cert = _read("cert_file", self.cert_file)
        if _CERT not in cert:
            raise ConfigError("cert_file", f"{self.cert_file} holds no PEM certificate")
        if not _first_certificate_decodes(cert):
            raise ConfigError("cert_file", f"{self.cert_file} holds no valid PEM certificate")
        key_path = self.key_file or self.cert_file
        key_setting = "key_file" if self.key_file else "cert_file"
        key = _read(key_setting, key_path)
        if _KEY not in key:
            raise ConfigError(key_setting, f"{key_path} holds no PEM private key")
        encrypted = b"ENCRYPTED PRIVATE KEY" in key or b"Proc-Type: 4,ENCRYPTED" in key
        if encrypted and self.key_password_file is None:
            raise ConfigError(key_setting, f"{key_path} is encrypted: set key_password_file")
        password = b""
        if self.key_password_file is not None:
            raw = _read("key_password_file", self.key_password_file).removeprefix(b"\xef\xbb\xbf")
            lines = [line for line in raw.splitlines() if line.strip()]
            password = lines[0] if lines else b""
            if len(password) > MAX_PASSWORD_BYTES:
                raise ConfigError(
                    "key_password_file",
                    f"{self.key_password_file}: over {MAX_PASSWORD_BYTES} bytes, OpenSSL's limit",
                )
        try:
            # a callable, so an encrypted key with no passphrase fails here instead of
            # OpenSSL asking for one on the terminal
            context.load_cert_chain(self.cert_file, self.key_file, password=lambda: password)
        except ssl.SSLError as exc:
            # OpenSSL says only "PEM lib" for a wrong passphrase: the key's own header tells
            if "MISMATCH" in f"{exc.reason or ''} {exc}".upper():
                raise ConfigError(
                    key_setting, f"{key_path} does not match {self.cert_file}"
                ) from None
            if encrypted:
                raise ConfigError(
                    "key_password_file", f"{self.key_password_file} does not open {key_path}"
                ) from None
            raise ConfigError(
                key_setting, f"{key_path} could not be loaded with {self.cert_file}"
            ) from None

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in TLS_FIELDS)
        return f"TlsConfig({shown})"

    def __getstate__(self) -> dict[str, object]:
        """Copies and pickles carry the settings; the SSL context is made again on use."""
        return {k: v for k, v in self.__dict__.items() if k != "context"}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
