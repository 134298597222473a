"""pika's connection parameters for one URL, with Warren's TLS settings applied.

For ``amqps://`` URLs the process's ``TlsConfig`` gives the SSL context (its CA bundle, client
certificate, verification) and the host name to verify. A URL without a password, with a
client certificate, logs in with RabbitMQ's ``EXTERNAL`` mechanism: as the certificate's
user (``rabbitmq_auth_mechanism_ssl``). Without Warren's TLS settings, pika's own URL handling
stays as it is (the system's CAs, or ``?ssl_options=``).
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pika
import pika.credentials

from warren._amqp.tls_stream import TlsStream

if TYPE_CHECKING:
    from warren._config.tls import TlsConfig


def url_parameters(url: str, tls: TlsConfig) -> Any:
    """``pika.URLParameters(url)``, TLS and the login mechanism set from ``tls``."""
    params = pika.URLParameters(url)
    parts = urlsplit(url)
    if parts.scheme.lower() != "amqps" or not tls.configured:
        return params
    params.ssl_options = pika.SSLOptions(_StreamContext.over(tls.context),
                                         server_hostname=tls.server_name)  # fmt: skip
    if tls.cert_file is not None and parts.password is None:
        params.credentials = pika.credentials.ExternalCredentials()
    return params


class _StreamContext(ssl.SSLContext):
    """The SSL context pika is given: its ``wrap_socket`` makes a ``TlsStream`` (TLS over
    memory buffers, read in large chunks) under the process's own context, so trust,
    verification and the client certificate are exactly that context's. Only
    ``wrap_socket`` is used; this object's own settings are never read."""

    _inner: ssl.SSLContext

    @classmethod
    def over(cls, inner: ssl.SSLContext) -> _StreamContext:
        context = cls(ssl.PROTOCOL_TLS_CLIENT)
        context._inner = inner
        return context

    def wrap_socket(  # type: ignore[override]
        self,
        sock: Any,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        suppress_ragged_eofs: bool = True,
        server_hostname: str | bytes | None = None,
        session: Any = None,
    ) -> TlsStream:
        del server_side, do_handshake_on_connect, suppress_ragged_eofs, session  # as pika's
        name = server_hostname.decode() if isinstance(server_hostname, bytes) else server_hostname
        return TlsStream(sock, self._inner, name)
