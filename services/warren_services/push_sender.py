"""push-sender: consume ``push.notifications`` and deliver each job to the push provider.

Runs a ``warren.Consumer``: poison jobs go to the dead-letter queue with the reason, the
provider's 429/5xx are retried through delay queues (Retry-After honoured), permanent
refusals (400/404/410, UNREGISTERED) are counted and logged, not retried. No FCM access
token (the token endpoint fails) sends the push round again without spending an attempt.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import anyio
import httpx
from prometheus_client import Counter, Gauge

from warren import (
    ConfigError,
    Consumer,
    ConsumerConfig,
    Message,
    Publisher,
    RedisDedupStore,
    Service,
    ServiceContext,
    Setting,
)
from warren_services._settings import (
    env_choice,
    env_float,
    env_http_url,
    env_int,
    env_secret,
)
from warren_services.fcm_auth import FcmAuth, ServiceAccount, StaticToken, usable_token
from warren_services.push_common import (
    QUEUE,
    QUEUE_SETTING,
    QUEUE_TYPE_SETTING,
    check_queue_name,
    invalid_token_event,
    invalid_tokens_queue,
    invalid_tokens_topology,
    named_settings,
    parse_push_job,
    queue_name,
    queue_type,
)
from warren_services.push_providers import FcmProvider, PermanentFailure, Provider, WebhookProvider
from warren_services.push_throttle import Throttle, Throttled

if TYPE_CHECKING:
    from collections.abc import Mapping

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
    Setting(
        env="WARREN_PUSH_FCM_CREDENTIALS",
        default="",
        help="fcm: service-account JSON file (else GOOGLE_APPLICATION_CREDENTIALS); tokens "
        "are minted and refreshed from it",
    ),
    Setting(
        env="WARREN_PUSH_FCM_PROJECT",
        default="",
        help="fcm: project id (default: the credentials' project_id)",
    ),
    Setting(
        env="WARREN_PUSH_FCM_TOKEN_FILE",
        default="",
        help="fcm: a file with a static bearer token managed elsewhere, instead of credentials",
    ),
    Setting(
        env="WARREN_PUSH_INVALID_TOKENS_QUEUE",
        default="push.invalid_tokens",
        help="where an event goes for each dead device token (empty: none)",
    ),
    Setting(
        env="WARREN_DEDUP_URL",
        default="",
        help="redis://host:port/db: a push runs at most once per message_id across "
        "replicas and restarts (empty: at-least-once)",
    ),
    Setting(
        env="WARREN_DEDUP_ON_ERROR",
        default="at-least-once",
        help="while Redis is unreachable: at-least-once (send anyway) | pause",
    ),
    Setting(
        env="WARREN_DEDUP_RETENTION",
        default="86400",
        help="seconds a sent push's id is remembered",
    ),
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


FCM_URL = "https://fcm.googleapis.com/v1/projects/{project}/messages:send"


def build_provider(ctx: ServiceContext) -> Provider:
    env = ctx.env
    kind = env_choice(env, "WARREN_PUSH_PROVIDER", "webhook", ("webhook", "fcm"))
    if kind == "webhook":
        return WebhookProvider(
            env_http_url(env, "WARREN_PUSH_PROVIDER_URL", "http://127.0.0.1:8090/webhook")
        )
    auth, project = _fcm_auth(env)
    url = env_http_url(env, "WARREN_PUSH_PROVIDER_URL", FCM_URL)
    if "{project}" in url:
        if not project:
            raise ConfigError("WARREN_PUSH_FCM_PROJECT", "fcm needs the project id")
        url = url.replace("{project}", project)
    return FcmProvider(url, auth)


def _fcm_auth(env: Mapping[str, str]) -> tuple[FcmAuth, str | None]:
    """A static token if one is given, else the service account's minted tokens."""
    project = env.get("WARREN_PUSH_FCM_PROJECT", "").strip() or None
    token = env_secret(env, "WARREN_PUSH_FCM_TOKEN", "WARREN_PUSH_FCM_TOKEN_FILE")
    if token is not None:
        if not usable_token(token):  # else an HTTP library's error would quote it
            var = (
                "WARREN_PUSH_FCM_TOKEN_FILE"
                if env.get("WARREN_PUSH_FCM_TOKEN_FILE", "").strip()
                else "WARREN_PUSH_FCM_TOKEN"
            )
            raise ConfigError(var, "the token must be printable ASCII without spaces")
        return StaticToken(token), project
    for var in ("WARREN_PUSH_FCM_CREDENTIALS", "GOOGLE_APPLICATION_CREDENTIALS"):
        path = env.get(var, "").strip()
        if path:
            timeout = env_float(env, "WARREN_PUSH_TIMEOUT", 10.0)
            account = ServiceAccount(path, var, timeout=timeout)
            return account, project or account.project_id
    raise ConfigError(
        "WARREN_PUSH_FCM_CREDENTIALS",
        "fcm needs a service-account file (or WARREN_PUSH_FCM_TOKEN_FILE)",
    )


def consumer_config(ctx: ServiceContext) -> ConsumerConfig:
    """The push queue's consumer: the process's one connection config, plus push settings."""
    concurrency = env_int(ctx.env, "WARREN_PUSH_CONCURRENCY", 20)
    timeout = env_float(ctx.env, "WARREN_PUSH_TIMEOUT", 10.0)
    try:
        config = ConsumerConfig.sharing(
            ctx.publisher_config,
            queue=queue_name(ctx.env),
            queue_type=queue_type(ctx.env),
            concurrency=concurrency,
            prefetch=min(max(concurrency * 2, 10), 65_535),
            max_attempts=env_int(ctx.env, "WARREN_PUSH_MAX_ATTEMPTS", 5),
            retry_base=env_float(ctx.env, "WARREN_PUSH_RETRY_BASE", 1.0),
            handler_timeout=timeout * 1.5,
            shutdown_timeout=env_float(ctx.env, "WARREN_PUSH_SHUTDOWN_TIMEOUT", 10.0),
            dedup_retention=env_float(ctx.env, "WARREN_DEDUP_RETENTION", 86_400.0),
            dedup_on_error=env_choice(
                ctx.env, "WARREN_DEDUP_ON_ERROR", "at-least-once", ("at-least-once", "pause")
            ),
        )
    except ConfigError as exc:  # name the variable the operator set, not the field
        var = _PUSH_VARS.get(exc.setting)
        if var is None:
            raise
        raise ConfigError(var, str(exc).split(": ", 1)[1]) from None
    # its delay queues are named after it, and longer: each must fit AMQP's 255 bytes too
    longest = max((f".retry.{int(d * 1000)}ms" for d in config.retry_delays()), key=len,
                  default=".dlq")  # fmt: skip
    check_queue_name(QUEUE_SETTING, config.queue, suffix=longest)
    return config


_PUSH_VARS = {
    "queue": QUEUE_SETTING,
    "concurrency": "WARREN_PUSH_CONCURRENCY",
    "max_attempts": "WARREN_PUSH_MAX_ATTEMPTS",
    "retry_base": "WARREN_PUSH_RETRY_BASE",
    "retry_cap": "WARREN_PUSH_RETRY_BASE",
    "handler_timeout": "WARREN_PUSH_TIMEOUT",
    "shutdown_timeout": "WARREN_PUSH_SHUTDOWN_TIMEOUT",
    "dedup_retention": "WARREN_DEDUP_RETENTION",
}


def dedup_store(env: Mapping[str, str]) -> RedisDedupStore | None:
    """The shared store when ``WARREN_DEDUP_URL`` is set (a bad URL exits 2 naming it)."""
    url = env.get("WARREN_DEDUP_URL", "").strip()
    if not url:
        return None
    try:
        return RedisDedupStore(url, prefix="warren:dedup:")
    except ConfigError as exc:
        raise ConfigError("WARREN_DEDUP_URL", str(exc).split(": ", 1)[1]) from None


async def main(ctx: ServiceContext) -> None:
    provider = build_provider(ctx)
    config = consumer_config(ctx)
    invalid_queue = invalid_tokens_queue(ctx.env)
    store = dedup_store(ctx.env)
    concurrency = config.concurrency
    timeout = env_float(ctx.env, "WARREN_PUSH_TIMEOUT", 10.0)
    registry = ctx.metrics.registry
    permanent = Counter("warren_push_permanent_failures", "Pushes the provider refused for good.",
                        ["reason"], registry=registry)  # fmt: skip
    throttle = Throttle(registry, max_wait=timeout / 2)
    kind = env_choice(ctx.env, "WARREN_PUSH_PROVIDER", "webhook", ("webhook", "fcm"))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    if isinstance(provider, FcmProvider) and isinstance(provider.auth, ServiceAccount):
        account = provider.auth
        Gauge("warren_push_fcm_token_failures",
              "Token requests that failed in a row (0: FCM's access token is fresh)",
              registry=registry).set_function(lambda: float(account.failures))  # fmt: skip
    async with contextlib.AsyncExitStack() as stack:
        # first in, last out: the broker's refusal of a queue, wherever it surfaces (a
        # declare, a task group's exit), exits 2 naming the setting behind that queue
        stack.enter_context(named_settings(invalid_queue))
        client = await stack.enter_async_context(httpx.AsyncClient(timeout=timeout, limits=limits))
        background = await stack.enter_async_context(anyio.create_task_group())
        if isinstance(provider, FcmProvider):
            background.start_soon(provider.auth.run)  # tokens refreshed ahead of expiry
        events: Publisher | None = None
        if invalid_queue:
            events = await stack.enter_async_context(
                Publisher(ctx.publisher_config, metrics=ctx.metrics, name="push-events",
                          topology=invalid_tokens_topology(invalid_queue, config.queue_type))
            )  # fmt: skip

        async def deliver(message: Message) -> None:
            job = parse_push_job(message.body)
            await throttle.wait()
            try:
                await provider.send(client, job)
            except Throttled as exc:
                throttle.pause(exc.delay)
                raise
            except PermanentFailure as exc:
                permanent.labels(exc.reason).inc()
                log.warning("push.permanent_failure message_id=%s reason=%s dead_token=%s",
                            job.message_id, exc.reason, exc.dead_token)  # fmt: skip
                if exc.dead_token and events is not None:
                    # confirmed before this delivery is acked: a crash re-sends, never loses it
                    await events.publish(invalid_token_event(job, exc.reason, kind),
                                         routing_key=invalid_queue,
                                         message_id=f"invalid-token-{job.message_id}")  # fmt: skip

        # the consumer declares the queue and its dead-letter queue as TOPOLOGY does
        async with Consumer(config, deliver, metrics=ctx.metrics, name="push-sender",
                            dedup=store):  # fmt: skip
            await ctx.stopping.wait()
        background.cancel_scope.cancel()
        if store is not None:
            await store.aclose()


service = Service(
    name="push-sender",
    help="deliver push jobs from push.notifications to the push provider",
    main=main,
    settings=SETTINGS,
)
