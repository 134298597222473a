"""pika's connection parameters for one URL, with Warren's TLS settings applied.

For ``amqps://`` URLs the process's ``TlsConfig`` gives the SSL context (its CA bundle, client
certificate, verification) and the host name to verify. A URL without a password, with a
client certificate, logs in with RabbitMQ's ``EXTERNAL`` mechanism: as the certificate's
user (``rabbitmq_auth_mechanism_ssl``). Without Warren's TLS settings, pika's own URL handling
stays as it is (the system's CAs, or ``?ssl_options=``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pika
import pika.credentials

if TYPE_CHECKING:
    from warren._config.tls import TlsConfig


def url_parameters(url: str, tls: TlsConfig) -> Any:
    """``pika.URLParameters(url)``, TLS and the login mechanism set from ``tls``."""
    params = pika.URLParameters(url)
    parts = urlsplit(url)
    if parts.scheme.lower() != "amqps" or not tls.configured:
        return params
    params.ssl_options = pika.SSLOptions(tls.context, server_hostname=tls.server_name)
    if tls.cert_file is not None and parts.password is None:
        params.credentials = pika.credentials.ExternalCredentials()
    return params
