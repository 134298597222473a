"""Bad configuration names the setting and the bad value; secrets never show."""

from __future__ import annotations

import dataclasses
import random

import pytest

from warren import (
    Backoff,
    ConfigError,
    ConnectionConfig,
    ConsumerConfig,
    PublisherConfig,
    redact_url,
)
from warren._common.redact import Redactor
from warren._config import CONNECTION_FIELDS, parse_addr
from warren._config.connection import node_address
from warren._worker.link_state import LinkState


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"urls": "http://host"}, r"^urls: .*amqp://"),
        ({"urls": "amqp://"}, r"^urls: .*no host"),
        ({"urls": "amqp://h:99999999/"}, r"^urls: the URL is malformed"),
        ({"urls": ""}, r"^urls: needs at least one"),
        ({"buffer_size": 0}, r"^buffer_size: must be a positive integer, got 0"),
        ({"buffer_size": -5}, r"^buffer_size: .*got -5"),
        (
            {"overflow": "drop-random"},
            r"^overflow: unknown policy 'drop-random'; choose one of block",
        ),
        ({"heartbeat": 0}, r"^heartbeat: "),
        ({"reconnect_max_attempts": -1}, r"^reconnect_max_attempts: .*0 = forever"),
        ({"backoff_base": 2.0, "backoff_cap": 1.0}, r"^backoff_cap: must be >= backoff_base"),
        ({"confirm_timeout": float("nan")}, r"^confirm_timeout: must be a finite number"),
    ],
)
def test_bad_settings_name_the_setting(kwargs: dict[str, object], pattern: str) -> None:
    config = ConnectionConfig if set(kwargs) <= set(CONNECTION_FIELDS) else PublisherConfig
    with pytest.raises(ConfigError, match=pattern):
        config(**kwargs)  # type: ignore[arg-type]


def test_a_consumer_and_a_publisher_share_one_connection_config() -> None:
    link = ConnectionConfig(urls="amqp://u:p@node1/tenant", heartbeat=3, backoff_cap=2.0)
    publisher = PublisherConfig(connection=link, buffer_size=5)
    consumer = ConsumerConfig(queue="q", connection=link)
    assert publisher.connection is link and consumer.connection is link
    assert ConsumerConfig.sharing(publisher, queue="q").connection is link
    assert ConsumerConfig.sharing(link, queue="q").connection is link
    assert consumer.requeue_config().connection is link
    assert (link.vhost, link.dead_after) == ("tenant", 3.6)
    assert "p@" not in repr(publisher) and "***" in repr(publisher)


@pytest.mark.parametrize("config", [PublisherConfig, ConsumerConfig])
def test_the_old_connection_keywords_still_work_for_one_release(config: type) -> None:
    extra = {"queue": "q"} if config is ConsumerConfig else {}
    with pytest.warns(DeprecationWarning, match=r"heartbeat=.*connection=ConnectionConfig"):
        old = config(urls="amqp://u:p@h/v", heartbeat=4, backoff_base=0.5, **extra)
    assert old.connection == ConnectionConfig(urls="amqp://u:p@h/v", heartbeat=4, backoff_base=0.5)
    with pytest.warns(DeprecationWarning, match=r"read .connection.heartbeat") as read:
        assert old.heartbeat == 4
    assert read[0].filename == __file__  # pointed at the caller's line, not Warren's
    # dataclasses.replace knows only the new fields: no warning, no clash
    assert dataclasses.replace(old, **extra).connection == old.connection
    with pytest.raises(AttributeError, match="no attribute 'hearbeat'"):
        old.hearbeat  # noqa: B018 - a typo is still an AttributeError
    deprecated = pytest.warns(DeprecationWarning, match="is deprecated")
    with deprecated, pytest.raises(ConfigError, match=r"^connection: set"):
        config(connection=ConnectionConfig(heartbeat=2), heartbeat=4, **extra)
    deprecated = pytest.warns(DeprecationWarning, match="is deprecated")
    with deprecated, pytest.raises(ConfigError, match=r"^heartbeat: "):
        config(heartbeat=0, **extra)


@pytest.mark.parametrize("config", [PublisherConfig, ConsumerConfig])
def test_a_connection_that_is_not_a_connection_config_is_refused_unshown(config: type) -> None:
    extra = {"queue": "q"} if config is ConsumerConfig else {}
    with pytest.raises(ConfigError, match=r"^connection: must be a ConnectionConfig") as info:
        config(connection="amqp://user:hunter2@h/", **extra)
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize("urls", [5, [5], b"amqp://h/", None, {"amqp://h/": 1}])
def test_urls_of_the_wrong_type_name_the_setting(urls: object) -> None:
    with pytest.raises(ConfigError, match=r"^urls: expected a URL string or a list"):
        ConnectionConfig(urls=urls)  # type: ignore[arg-type]


def test_from_env_overrides_win_and_an_explicit_connection_replaces_the_variables() -> None:
    env = {"WARREN_AMQP_URL": "amqp://envhost/", "WARREN_HEARTBEAT": "4"}
    with pytest.warns(DeprecationWarning, match=r"from_env\(urls=") as old:
        cfg = PublisherConfig.from_env(env, urls="amqp://code/")
    assert old[0].filename == __file__
    assert (cfg.connection.urls, cfg.connection.heartbeat) == (("amqp://code/",), 4)
    link = ConnectionConfig(urls="amqp://code/")
    assert (
        PublisherConfig.from_env({**env, "WARREN_HEARTBEAT": "x"}, connection=link).connection
        is link
    )
    with pytest.raises(ConfigError, match=r"^WARREN_BUFFER_SIZE: must be a positive"):
        PublisherConfig.from_env({"WARREN_BUFFER_SIZE": "0"}, connection=link)
    with pytest.raises(ConfigError, match=r"^buffer_size: "):
        PublisherConfig.from_env({"WARREN_BUFFER_SIZE": "5"}, buffer_size=0)


def test_the_connection_reads_its_own_variables() -> None:
    link = ConnectionConfig.from_env({"WARREN_AMQP_URL": "amqp://h/", "WARREN_HEARTBEAT": "4",
                                      "WARREN_BUFFER_SIZE": "lots"})  # fmt: skip
    assert (link.urls, link.heartbeat) == (("amqp://h/",), 4)
    with pytest.raises(ConfigError, match=r"^WARREN_HEARTBEAT: must be a positive integer"):
        ConnectionConfig.from_env({"WARREN_HEARTBEAT": "0"})


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^WARREN_BUFFER_SIZE: cannot parse 'lots'"):
        PublisherConfig.from_env({"WARREN_BUFFER_SIZE": "lots"})
    with pytest.raises(ConfigError, match=r"^WARREN_OVERFLOW: unknown policy"):
        PublisherConfig.from_env({"WARREN_OVERFLOW": "nope"})
    with pytest.raises(ConfigError, match=r"^WARREN_BUFFER_SIZE: must be a positive integer"):
        PublisherConfig.from_env({"WARREN_BUFFER_SIZE": "0"})


def test_env_url_list_and_values() -> None:
    cfg = PublisherConfig.from_env(
        {
            "WARREN_AMQP_URL": "amqp://a:p@n1:5672/%2F, amqp://a:p@n2:5673/%2F",
            "WARREN_HEARTBEAT": "3",
            "WARREN_OVERFLOW": "drop-oldest",
            "WARREN_RECONNECT_MAX_ATTEMPTS": "7",
        }
    )
    link = cfg.connection
    assert link.urls == ("amqp://a:p@n1:5672/%2F", "amqp://a:p@n2:5673/%2F")
    assert (link.heartbeat, cfg.overflow, link.reconnect_max_attempts) == (3, "drop-oldest", 7)
    assert link.dead_after == 3.6  # heartbeat + 0.6 s


def test_secrets_do_not_show_in_config_errors() -> None:
    with pytest.raises(ConfigError) as info:
        PublisherConfig(connection=ConnectionConfig(urls="amqp://user:hunter2@:notaport/"))
    assert "hunter2" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        PublisherConfig.from_env({"WARREN_AMQP_URL": "http://user:hunter2@host/"})
    assert "hunter2" not in str(info.value)


def test_redact_url() -> None:
    assert redact_url("amqp://u:secret@h:5672/v") == "amqp://u:***@h:5672/v"
    assert redact_url("amqp://h/v") == "amqp://h/v"
    assert redact_url("amqps://u:p%40ss@[::1]:5671/") == "amqps://u:***@[::1]:5671/"


SSL_OPTIONS = (
    "amqps://u:pw@broker.example/%2F?ssl_options="
    "%7B%27ca_certs%27%3A%20%27%2Fca.pem%27%2C%20%27password%27%3A%20%27s3cret-pass%27%7D"
)


def test_a_comma_separates_urls_only_where_a_new_url_starts() -> None:
    """pika's ?ssl_options={...} with two keys holds a comma (raw, or encoded as %2C): it
    is one URL, not two broken ones."""
    raw = "amqps://u:pw@h/%2F?ssl_options={'ca_certs': '/ca.pem', 'server_hostname': 'h'}"
    assert ConnectionConfig(urls=raw).urls == (raw,)
    assert ConnectionConfig(urls=f"{raw},amqps://u:pw@h2/").urls == (raw, "amqps://u:pw@h2/")
    assert ConnectionConfig(urls="amqp://a/, AMQPS://b/").urls == ("amqp://a/", "AMQPS://b/")


def test_trailing_and_doubled_commas_do_not_change_a_url() -> None:
    """A trailing comma was dropped before URLs could hold commas; it must not end up in the
    vhost now (it became vhost "/,")."""
    assert ConnectionConfig(urls="amqp://g:g@h:5672/%2F, ").urls == ("amqp://g:g@h:5672/%2F",)
    both = ConnectionConfig(urls="amqp://a/%2F,,amqp://b/")
    assert both.urls == ("amqp://a/%2F", "amqp://b/") and both.vhost == "/"


def test_ssl_options_that_pika_cannot_read_are_refused_unshown() -> None:
    """pika would print the value in a SyntaxError traceback (exit 1), passphrase and all."""
    bad = "amqps://u:pw@h/?ssl_options={'certfile': '/c.pem', 'password': 'hunter22'"
    with pytest.raises(ConfigError, match="not a dict literal") as info:
        ConnectionConfig(urls=bad)
    assert "hunter22" not in str(info.value)
    good = "amqps://h/?ssl_options={'certfile': '/c.pem', 'password': 'hunter22 x'}"
    text = Redactor.from_settings([good])(f"pika: {{'password': 'hunter22 x'}} from {good}")
    assert "hunter22" not in text


def test_a_comma_in_a_host_is_a_clear_error_that_does_not_echo_the_url() -> None:
    with pytest.raises(ConfigError, match="',' in its host") as info:
        ConnectionConfig(urls="amqp://u:hunter2@n1,n2/")
    assert "hunter2" not in str(info.value) and "n1" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "node"),
    [
        ("amqps://h/", "h:5671"),
        ("AMQPS://u:p@h/%2F", "h:5671"),
        ("amqp://h/", "h:5672"),
        ("amqps://h:6000/", "h:6000"),
        ("amqp://u:p@[::1]/", "::1:5672"),
    ],
)
def test_the_node_of_a_url_defaults_its_port_by_scheme(url: str, node: str) -> None:
    """``amqps://host/`` is on 5671 (what pika dials), so statistics, /readyz and
    ``warren_connected_node`` say so."""
    assert node_address(url) == node
    state = LinkState(clock=lambda: 0.0)
    state.up(url)
    assert state.node == node


def test_ssl_options_in_a_url_are_redacted_whole() -> None:
    """A client key's passphrase can be given in pika's ssl_options: the whole value goes,
    in a URL setting and in free text (an exception's message, a log line)."""
    shown = redact_url(SSL_OPTIONS)
    assert shown == "amqps://u:***@broker.example/%2F?ssl_options=***"
    raw = "amqps://h/?ssl_options={'password': 'two words'}&heartbeat=5"
    assert redact_url(raw) == "amqps://h/?ssl_options=***&heartbeat=5"
    text = f"connection.failed url={SSL_OPTIONS} reason=x"
    assert "s3cret" not in Redactor()(text) and "pw@" not in Redactor()(text)


def test_parse_addr() -> None:
    assert parse_addr("X", "127.0.0.1:9100") == ("127.0.0.1", 9100)
    assert parse_addr("X", "[::1]:80") == ("::1", 80)
    with pytest.raises(ConfigError, match=r"^WARREN_METRICS_ADDR: expected host:port"):
        parse_addr("WARREN_METRICS_ADDR", "9100")


def test_backoff_is_capped_full_jitter() -> None:
    backoff = Backoff(base=0.1, cap=2.0, rng=random.Random(7))
    assert [backoff.ceiling(n) for n in (1, 2, 3, 6, 50)] == [0.1, 0.2, 0.4, 2.0, 2.0]
    for attempt in range(1, 40):
        for _ in range(50):
            assert 0.0 <= backoff.delay(attempt) <= backoff.ceiling(attempt)
    # jitter: delays spread over the whole range, not a fixed interval
    delays = [backoff.delay(10) for _ in range(1000)]
    assert min(delays) < 0.2
    assert max(delays) > 1.8


def test_one_connection_config_flows_to_the_push_senders_consumer() -> None:
    """Every connection setting of the process reaches the push sender's consumer (the
    backoff settings used to be dropped on the way)."""
    from prometheus_client import CollectorRegistry

    from warren import Metrics, ServiceContext
    from warren_services.push_sender import consumer_config

    env = {"WARREN_AMQP_URL": "amqp://u:p@h1:5672/%2F,amqp://u:p@h2:5672/%2F",
           "WARREN_HEARTBEAT": "7", "WARREN_CONNECT_TIMEOUT": "2.5",
           "WARREN_RECONNECT_MAX_ATTEMPTS": "4", "WARREN_BACKOFF_BASE": "0.7",
           "WARREN_BACKOFF_CAP": "3"}  # fmt: skip
    base = PublisherConfig.from_env(env)
    ctx = ServiceContext(env=env, metrics=Metrics(CollectorRegistry()), publisher_config=base)
    consumer = consumer_config(ctx)
    assert consumer.connection == base.connection  # the one connection config, not a copy
    connection = consumer.requeue_config().connection
    assert (connection.backoff_base, connection.backoff_cap) == (0.7, 3.0)


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"WARREN_HEARTBEAT": "70000"}, r"^WARREN_HEARTBEAT: must be at most 65,535"),
        ({"WARREN_PUSH_MAX_ATTEMPTS": "1000000"}, r"^WARREN_PUSH_MAX_ATTEMPTS: must be at most"),
        ({"WARREN_PUSH_CONCURRENCY": "10000000"}, r"^WARREN_PUSH_CONCURRENCY: must be at most"),
        ({"WARREN_PUSH_RETRY_BASE": "0"}, r"^WARREN_PUSH_RETRY_BASE: "),
        ({"WARREN_PUSH_QUEUE": "q" * 256}, r"^WARREN_PUSH_QUEUE: .* AMQP allows at most 255"),
    ],
)
def test_out_of_range_push_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    from prometheus_client import CollectorRegistry

    from warren import Metrics, ServiceContext
    from warren_services.push_sender import consumer_config

    def build() -> None:
        base = PublisherConfig.from_env(env)
        ctx = ServiceContext(env=env, metrics=Metrics(CollectorRegistry()), publisher_config=base)
        consumer_config(ctx)

    with pytest.raises(ConfigError, match=needle):
        build()
