"""A throwaway certificate authority for TLS tests: a CA, a server certificate for the host
names and addresses given, and client certificates, written as PEM files in one folder.

Made with ``cryptography`` (``pip install 'warren[testing]'``), imported only when a test
asks for certificates. Keys are EC P-256: quick to make, and what brokers commonly accept.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


@dataclass(frozen=True)
class CertFiles:
    """One certificate and its key, as PEM files (``key_password_file`` if encrypted)."""

    cert: Path
    key: Path
    key_password_file: Path | None = None


def _crypto() -> Any:
    try:
        from cryptography import x509  # optional: only TLS tests need it
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError as exc:  # pragma: no cover - the dev install has it
        raise ImportError(
            "TLS test certificates need the cryptography package: pip install 'warren[testing]'"
        ) from exc
    return x509, hashes, serialization, ec, ExtendedKeyUsageOID, NameOID


class TestCA:
    """A certificate authority in ``folder`` (``ca.pem``), issuing certificates there."""

    __test__ = False  # not a pytest test class

    def __init__(self, folder: Path, name: str = "Warren Test CA") -> None:
        x509, hashes, serialization, ec, _eku, name_oid = _crypto()
        self.folder = folder
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._name = subject
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cert = folder / "ca.pem"
        self.cert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        name: str,
        *,
        hosts: Sequence[str] = (),
        client: bool = False,
        password: str | None = None,
    ) -> CertFiles:
        """A certificate for ``name`` (its common name): a server's for ``hosts`` (names and
        IP addresses), or a client's; its key encrypted with ``password`` if given."""
        x509, hashes, serialization, ec, eku, name_oid = _crypto()
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(name_oid.COMMON_NAME, name)]))
            .issuer_name(self._name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.ExtendedKeyUsage([eku.CLIENT_AUTH if client else eku.SERVER_AUTH]),
                critical=False,
            )
        )
        if hosts:
            names: list[Any] = []
            for host in hosts:
                try:
                    names.append(x509.IPAddress(ipaddress.ip_address(host)))
                except ValueError:
                    names.append(x509.DNSName(host))
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        safe = name.replace("/", "_")
        if safe == "ca":
            raise ValueError("'ca' is the CA's own file name")
        cert_path, key_path = self.folder / f"{safe}.pem", self.folder / f"{safe}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        encryption: Any = serialization.NoEncryption()
        password_file = None
        if password is not None:
            encryption = serialization.BestAvailableEncryption(password.encode())
            password_file = self.folder / f"{safe}.password"
            password_file.write_text(password + "\n")
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
            )
        )
        key_path.chmod(0o600)
        return CertFiles(cert_path, key_path, password_file)
