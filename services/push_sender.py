"""push-sender: consume ``push.notifications`` and deliver each job to the push provider.

Runs a ``warren.Consumer``: poison jobs go to the dead-letter queue with the reason, the
provider's 429/5xx are retried through delay queues (Retry-After honoured), permanent
refusals (400/404/410, UNREGISTERED) are counted and logged, not retried.
"""

from __future__ import annotations

import logging

import httpx
from prometheus_client import Counter

from warren import (
    ConfigError,
    Consumer,
    ConsumerConfig,
    Message,
    Service,
    ServiceContext,
    Setting,
)
from warren.services._settings import (
    env_choice,
    env_float,
    env_http_url,
    env_int,
    env_secret,
)
from warren.services.push_common import (
    QUEUE,
    QUEUE_SETTING,
    QUEUE_TYPE_SETTING,
    named_settings,
    parse_push_job,
    queue_name,
    queue_type,
)
from warren.services.push_providers import FcmProvider, PermanentFailure, Provider, WebhookProvider

log = logging.getLogger("warren.push")

SETTINGS = (
    Setting(env="WARREN_PUSH_PROVIDER", default="webhook", help="webhook | fcm"),
    Setting(env=QUEUE_SETTING, default=QUEUE, help="the queue to consume"),
    Setting(env=QUEUE_TYPE_SETTING, default="quorum", help="quorum | classic (as it exists)"),
    Setting(
        env="WARREN_PUSH_PROVIDER_URL",
        default="http://127.0.0.1:8090/webhook",
        help="where pushes are POSTed",
    ),
    Setting(env="WARREN_PUSH_FCM_TOKEN_FILE", default="", help="fcm: file with the bearer token"),
    Setting(env="WARREN_PUSH_CONCURRENCY", default="20", help="pushes in flight at once"),
    Setting(env="WARREN_PUSH_TIMEOUT", default="10", help="seconds per provider request"),
    Setting(env="WARREN_PUSH_MAX_ATTEMPTS", default="5", help="attempts before dead-lettering"),
    Setting(env="WARREN_PUSH_RETRY_BASE", default="1", help="first retry delay, seconds"),
    Setting(
        env="WARREN_PUSH_SHUTDOWN_TIMEOUT",
        default="10",
        help="on SIGTERM: seconds for pushes in flight to finish; the rest are redelivered",
    ),
)


def build_provider(ctx: ServiceContext) -> Provider:
    kind = env_choice(ctx.env, "WARREN_PUSH_PROVIDER", "webhook", ("webhook", "fcm"))
    url = env_http_url(ctx.env, "WARREN_PUSH_PROVIDER_URL", "http://127.0.0.1:8090/webhook")
    if kind == "webhook":
        return WebhookProvider(url)
    token = env_secret(ctx.env, "WARREN_PUSH_FCM_TOKEN", "WARREN_PUSH_FCM_TOKEN_FILE")
    if token is None:
        raise ConfigError("WARREN_PUSH_FCM_TOKEN_FILE", "fcm needs a bearer token")
    return FcmProvider(url, token)


def consumer_config(ctx: ServiceContext) -> ConsumerConfig:
    """The push queue's consumer: the process's one connection config, plus push settings."""
    concurrency = env_int(ctx.env, "WARREN_PUSH_CONCURRENCY", 20)
    timeout = env_float(ctx.env, "WARREN_PUSH_TIMEOUT", 10.0)
    try:
        return ConsumerConfig.sharing(
            ctx.publisher_config,
            queue=queue_name(ctx.env),
            queue_type=queue_type(ctx.env),
            concurrency=concurrency,
            prefetch=min(max(concurrency * 2, 10), 65_535),
            max_attempts=env_int(ctx.env, "WARREN_PUSH_MAX_ATTEMPTS", 5),
            retry_base=env_float(ctx.env, "WARREN_PUSH_RETRY_BASE", 1.0),
            handler_timeout=timeout * 1.5,
            shutdown_timeout=env_float(ctx.env, "WARREN_PUSH_SHUTDOWN_TIMEOUT", 10.0),
        )
    except ConfigError as exc:  # name the variable the operator set, not the field
        var = _PUSH_VARS.get(exc.setting)
        if var is None:
            raise
        raise ConfigError(var, str(exc).split(": ", 1)[1]) from None


_PUSH_VARS = {
    "queue": QUEUE_SETTING,
    "concurrency": "WARREN_PUSH_CONCURRENCY",
    "max_attempts": "WARREN_PUSH_MAX_ATTEMPTS",
    "retry_base": "WARREN_PUSH_RETRY_BASE",
    "retry_cap": "WARREN_PUSH_RETRY_BASE",
    "handler_timeout": "WARREN_PUSH_TIMEOUT",
    "shutdown_timeout": "WARREN_PUSH_SHUTDOWN_TIMEOUT",
}


async def main(ctx: ServiceContext) -> None:
    provider = build_provider(ctx)
    config = consumer_config(ctx)
    concurrency = config.concurrency
    timeout = env_float(ctx.env, "WARREN_PUSH_TIMEOUT", 10.0)
    permanent = Counter("warren_push_permanent_failures", "Pushes the provider refused for good.",
                        ["reason"], registry=ctx.metrics.registry)  # fmt: skip
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:

        async def deliver(message: Message) -> None:
            job = parse_push_job(message.body)
            try:
                await provider.send(client, job)
            except PermanentFailure as exc:
                permanent.labels(exc.reason).inc()
                log.warning("push.permanent_failure message_id=%s reason=%s", job.message_id,
                            exc.reason)  # fmt: skip

        # the consumer declares the queue and its dead-letter queue as TOPOLOGY does
        with named_settings():
            async with Consumer(config, deliver, metrics=ctx.metrics, name="push-sender"):
                await ctx.stopping.wait()


service = Service(
    name="push-sender",
    help="deliver push jobs from push.notifications to the push provider",
    main=main,
    settings=SETTINGS,
)
