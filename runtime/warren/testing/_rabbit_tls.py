"""A throwaway RabbitMQ node with a TLS listener, its own CA and certificates: for testing a
worker over ``amqps://`` as production brokers require, private CA and client certificates
included.

The node listens on AMQP (plain) and AMQPS, both on loopback; its server certificate names
``localhost`` and ``127.0.0.1``. With ``verify_clients`` it asks for a client certificate and
refuses one its CA did not sign (but lets clients without one log in with a password); the
``EXTERNAL`` mechanism logs a certificate's holder in as the user its common name names.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Self, final

from warren.testing._certs import CertFiles, TestCA
from warren.testing._rabbit_node import RabbitNode, free_port

if TYPE_CHECKING:
    from collections.abc import Sequence
    from types import TracebackType

CLIENT_USER = "warren-client"  # the common name of the client certificate, and its user


@final
class RabbitTlsNode:
    """Use as a context manager, or ``start()`` / ``close()``.

    Args:
        verify_clients: ask for a client certificate and refuse one the CA did not sign.
        require_client_cert: refuse a client without one (``fail_if_no_peer_cert``).
        external: offer the ``EXTERNAL`` login (the plugin enabled).
        tls_versions: only these (``tlsv1.2``, ``tlsv1.3``); all the node has by default.

    Attributes:
        ca_file: the CA's certificate (PEM): ``TlsConfig(ca_file=...)``.
        client: a client certificate for ``CLIENT_USER``, and its key.
        node: the underlying ``RabbitNode`` (stop, restart, ``ctl``).
    """

    def __init__(
        self,
        *,
        verify_clients: bool = True,
        require_client_cert: bool = False,
        external: bool = True,
        tls_versions: Sequence[str] = (),
    ) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="warren-tls-"))
        try:
            self._setup(verify_clients, require_client_cert, external, tls_versions)
        except BaseException:
            shutil.rmtree(self._dir, ignore_errors=True)
            raise

    def _setup(
        self, verify_clients: bool, require_cert: bool, external: bool, versions: Sequence[str]
    ) -> None:
        self._ca = TestCA(self._dir)
        self.ca_file = self._ca.cert
        server = self._ca.issue("broker", hosts=("localhost", "127.0.0.1"))
        self.client = self._ca.issue(CLIENT_USER, client=True)
        self.tls_port = free_port("127.0.0.1")
        config = [
            f"listeners.ssl.default = 127.0.0.1:{self.tls_port}",
            f"ssl_options.cacertfile = {self.ca_file}",
            f"ssl_options.certfile = {server.cert}",
            f"ssl_options.keyfile = {server.key}",
            f"ssl_options.verify = {'verify_peer' if verify_clients else 'verify_none'}",
            f"ssl_options.fail_if_no_peer_cert = {'true' if require_cert else 'false'}",
            "auth_mechanisms.1 = PLAIN",
            "auth_mechanisms.2 = AMQPLAIN",
            *(f"ssl_options.versions.{i} = {v}" for i, v in enumerate(versions, 1)),
        ]
        if external:
            config += ["auth_mechanisms.3 = EXTERNAL", "ssl_cert_login_from = common_name"]
        plugins = ["rabbitmq_auth_mechanism_ssl"] if external else []
        self.node = RabbitNode(config=config, plugins=plugins)

    def issue_client(self, name: str, *, password: str | None = None) -> CertFiles:
        """Another client certificate from this node's CA (its key encrypted if asked)."""
        return self._ca.issue(name, client=True, password=password)

    def other_ca(self) -> TestCA:
        """A CA the node does not trust (for certificates it must refuse)."""
        folder = self._dir / "other"
        folder.mkdir(exist_ok=True)
        return TestCA(folder, name="Some Other CA")

    @property
    def url(self) -> str:
        """The plain AMQP URL (guest)."""
        return self.node.url

    def tls_url(self, *, host: str = "127.0.0.1", password: bool = True) -> str:
        """``amqps://guest:guest@HOST:PORT/%2F``; without ``password``, no user at all (the
        ``EXTERNAL`` login with a client certificate)."""
        userinfo = "guest:guest@" if password else ""
        return f"amqps://{userinfo}{host}:{self.tls_port}/%2F"

    def start(self) -> None:
        self.node.start()
        # the certificate's holder, as EXTERNAL names it; the password is never used
        self.node.ctl("add_user", CLIENT_USER, "unused-" + CLIENT_USER)
        self.node.ctl("set_permissions", CLIENT_USER, ".*", ".*", ".*")

    def close(self) -> None:
        self.node.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
