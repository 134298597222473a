"""api: the producing API. ``POST /messages`` stores a message and submits a push job for its
recipient through a ``warren.Publisher``; its answer never waits for RabbitMQ.

- ``POST /messages`` ``{"from", "to", "text"}`` -> 202 ``{"id", "push": "queued"}`` (or
  ``"dropped"`` when the side-effect buffer refused it); 400 for a body that is not strict
  JSON (NaN, 1e999, lone surrogates, nesting over 32), 413 over 64 KiB, 422 naming the bad
  field ("from"/"to" at most 320 characters, "text" at most 10,000; "data" string values,
  no key FCM reserves), 503 if the message could not be stored (then no push was sent).
  A request a proxy could frame differently is refused with 400 (see ``_http``).
- ``GET /messages/{id}`` -> 200 with the message, or 404.

The publisher lives as long as the app: started before serving, flushed on shutdown.
"""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
from prometheus_client import Counter
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from warren import (
    BadRequest,
    BufferFull,
    ConfigError,
    OutboxError,
    Publisher,
    PublisherClosed,
    Service,
    ServiceContext,
    Setting,
    loads_strict,
)
from warren_services._http import bind_listener, serve_asgi
from warren_services._settings import env_choice, env_float, env_str
from warren_services.push_common import (
    QUEUE,
    QUEUE_SETTING,
    QUEUE_TYPE_SETTING,
    WARREN_DATA_KEYS,
    fcm_reserved,
    named_settings,
    queue_name,
    queue_type,
    topology,
)

if TYPE_CHECKING:
    from starlette.requests import Request

MAX_TEXT = 10_000
MAX_ADDRESS = 320  # an e-mail address's limit; "from" and "to" are addresses or user ids
MAX_BODY = 64 * 1024  # the largest valid message is ~41 KB of JSON (UTF-8, escaped)
MAX_DATA_KEYS = 32
MAX_DATA_BYTES = 3_072  # FCM's payload limit is 4 KB, notification included
_FIELDS = ("from", "to", "text")
_LIMITS = {"from": MAX_ADDRESS, "to": MAX_ADDRESS, "text": MAX_TEXT}
_ADDR = "127.0.0.1:8080"
_DB = "warren-api.sqlite3"
log = logging.getLogger("warren.api")


_INSERT = "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)"
RETENTION = 7 * 24 * 3600.0  # WARREN_API_RETENTION's default
PRUNE_BATCH = 500  # rows per delete: each holds the file's write lock for a few ms
PRUNE_EVERY = 60.0  # seconds between prunes, at most
OUTBOX_MARGIN = 300.0  # seconds a message may precede its push job's row
VACUUM_PAGES = 256  # pages given back per batch


class MessageStore:
    """Messages in a SQLite file. Calls run in a worker thread. Rows with a queued push are
    written by the publisher's outbox, in the push job's transaction (same file).

    Retention: ``prune`` deletes the oldest rows in small batches, never one whose push may
    still wait in the outbox (see ``prune``); a new file frees its pages back to the file
    system as it goes (``auto_vacuum=INCREMENTAL``); an older file reuses them.
    """

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=5.0)
        self._lock = threading.Lock()
        with self._lock:
            # takes effect only on a file with no table yet (a new one); must come first
            self._db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            self._db.execute(f"PRAGMA journal_size_limit={8 * 1024 * 1024}")  # as the outbox
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, sender TEXT,"
                " recipient TEXT, text TEXT, created_at REAL, push TEXT)"
            )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS messages_created_at ON messages (created_at)"
            )
            self._db.commit()

    def prune(self, now: float, retention: float, limit: int = PRUNE_BATCH) -> int:
        """Delete up to ``limit`` of the oldest messages older than ``retention`` seconds;
        return how many went. Blocks (call it from a worker thread).

        A message whose push job may still be in the outbox stays: nothing created later
        than ``OUTBOX_MARGIN`` before the oldest job still there is deleted (the job's row
        commits in the message's transaction, at most a request's time after it).
        """
        cutoff = now - retention
        with self._lock:
            oldest = self._oldest_waiting_push()
            if oldest is not None:
                cutoff = min(cutoff, oldest - OUTBOX_MARGIN)
            deleted = self._db.execute(
                "DELETE FROM messages WHERE rowid IN (SELECT rowid FROM messages"
                " WHERE created_at < ? ORDER BY created_at LIMIT ?)",
                (cutoff, limit),
            ).rowcount
            self._db.commit()
            if deleted:  # (executescript steps it to the end: execute frees one page)
                self._db.executescript(f"PRAGMA incremental_vacuum({VACUUM_PAGES});")
        return int(deleted)

    def _oldest_waiting_push(self) -> float | None:
        try:
            row = self._db.execute(
                "SELECT created_at FROM warren_outbox ORDER BY id LIMIT 1"
            ).fetchone()
        except sqlite3.OperationalError:  # no outbox in this file (WARREN_API_OUTBOX=off)
            return None
        return None if row is None else float(row[0])

    def _insert(self, row: tuple[str, str, str, str, float, str]) -> None:
        with self._lock:
            self._db.execute(_INSERT, row)
            self._db.commit()

    def _get(self, message_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute(
                "SELECT id, sender, recipient, text, created_at, push FROM messages WHERE id = ?",
                (message_id,),
            ).fetchone()
        if row is None:
            return None
        keys = ("id", "from", "to", "text", "created_at", "push")
        return dict(zip(keys, row, strict=True))

    async def insert(self, row: tuple[str, str, str, str, float, str]) -> None:
        await anyio.to_thread.run_sync(self._insert, row)

    async def get(self, message_id: str) -> dict[str, Any] | None:
        return await anyio.to_thread.run_sync(self._get, message_id)

    async def set_push(self, message_id: str, push: str) -> None:
        await anyio.to_thread.run_sync(self._set_push, message_id, push)

    def _set_push(self, message_id: str, push: str) -> None:
        with self._lock:
            self._db.execute("UPDATE messages SET push = ? WHERE id = ?", (push, message_id))
            self._db.commit()

    def ensure_wal(self) -> None:
        """WAL, as the outbox uses it: readers never block its writes."""
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _store_failed(exc: BaseException) -> Response:
    log.error("message.store_failed error=%s: %s", type(exc).__name__, exc)
    return JSONResponse({"error": "the message could not be stored; retry"}, status_code=503)


def _reserved(key: str) -> bool:
    """A key FCM reserves (``fcm_reserved``), or one of the ids Warren adds, in any case."""
    return fcm_reserved(key) or key.lower() in WARREN_DATA_KEYS


def _data_problem(data: object) -> tuple[str, str] | None:
    """Why the optional ``data`` payload cannot go to the provider, or None. FCM v1 takes
    only string values (a number is refused there, after the push was accepted), caps the
    payload at 4 KB, and reserves some keys (``_reserved``); the ids are Warren's."""
    if not isinstance(data, dict):
        return "data", "an object of strings"
    if len(data) > MAX_DATA_KEYS:
        return "data", f"at most {MAX_DATA_KEYS} keys"
    size = 0
    for key, value in data.items():
        if _reserved(key):
            return f"data.{key}", "a reserved key"
        if not isinstance(value, str):
            return f"data.{key}", "must be a string (FCM takes only string values)"
        size += len(key.encode()) + len(value.encode())
    if size > MAX_DATA_BYTES:
        return "data", f"keys and values are at most {MAX_DATA_BYTES:,} bytes in all"
    return None


def _invalid(field: str, problem: str) -> Response:
    return JSONResponse({"error": f"{field}: {problem}", "field": field}, status_code=422)


async def _read_json(request: Request) -> object:
    """The body as strict JSON, read no further than ``MAX_BODY`` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY:
        raise BadRequest(413, f"body is {int(declared):,} bytes, over {MAX_BODY:,}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise BadRequest(413, f"body is over {MAX_BODY:,} bytes")
    return loads_strict(bytes(body), max_bytes=MAX_BODY)


def create_app(
    publisher: Publisher, store: MessageStore, queue: str = QUEUE, *, transactional: bool = True
) -> Starlette:
    async def post_message(request: Request) -> Response:
        try:
            doc = await _read_json(request)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        if not isinstance(doc, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=422)
        for field in _FIELDS:
            value = doc.get(field)
            if not isinstance(value, str) or not value.strip():
                return _invalid(field, "required, a non-empty string")
            if len(value) > _LIMITS[field]:
                return _invalid(field, f"at most {_LIMITS[field]} characters")
        data = doc.get("data", {})
        refused = _data_problem(data)
        if refused is not None:
            return _invalid(*refused)
        message_id = uuid.uuid4().hex
        row = (message_id, doc["from"], doc["to"], doc["text"], time.time())
        job = {
            "message_id": f"push-{message_id}",
            "to": doc["to"],
            "title": f"New message from {doc['from']}",
            "body": doc["text"][:200],
            "data": {**data, "message_id": message_id},
        }

        def store_queued(db: sqlite3.Connection) -> None:
            db.execute(_INSERT, (*row, "queued"))

        if not transactional:  # WARREN_API_OUTBOX=off: stored first, then the push queued
            try:
                await store.insert((*row, "queued"))
            except sqlite3.Error as exc:
                return _store_failed(exc)
            try:
                publisher.submit(job, routing_key=queue, message_id=job["message_id"])
                push = "queued"
            except (BufferFull, PublisherClosed):
                push = "dropped"
                await store.set_push(message_id, push)
            return JSONResponse({"id": message_id, "push": push}, status_code=202)
        # The message row and its push job commit in one SQLite transaction (the publisher's
        # outbox lives in this database): a 202 "queued" is never followed by a lost push,
        # and a message that could not be stored sent no push.
        try:
            await publisher.enqueue(job, routing_key=queue, message_id=job["message_id"],
                                    transaction=store_queued)  # fmt: skip
            push = "queued"
        except (BufferFull, PublisherClosed):
            push = "dropped"  # counted in warren_jobs_dropped_total; the message is stored
            try:
                await store.insert((*row, push))
            except sqlite3.Error as exc:
                return _store_failed(exc)
        except OutboxError as exc:
            return _store_failed(exc)
        return JSONResponse({"id": message_id, "push": push}, status_code=202)

    async def get_message(request: Request) -> Response:
        found = await store.get(request.path_params["id"])
        if found is None:
            return JSONResponse({"error": "no such message"}, status_code=404)
        return JSONResponse(found)

    return Starlette(routes=[
        Route("/messages", post_message, methods=["POST"]),
        Route("/messages/{id}", get_message, methods=["GET"]),
    ])  # fmt: skip


def _open_store(path: str) -> MessageStore:
    if path == ":memory:" or not path:
        raise ConfigError("WARREN_API_DB", "must be a file: the push jobs' outbox lives in it")
    try:
        store = MessageStore(path)
        store.ensure_wal()
    except sqlite3.Error as exc:
        raise ConfigError("WARREN_API_DB", f"cannot open {path!r}: {exc}") from None
    return store


async def _pruning(store: MessageStore, retention: float, pruned: Counter) -> None:
    """Delete messages past ``retention``, a batch at a time, at least once a minute (more
    often for a short retention). Each batch runs in a worker thread and holds the file's
    write lock for a few milliseconds; requests go on between batches."""
    every = min(PRUNE_EVERY, max(0.5, retention / 10))
    failing = False
    while True:
        try:
            while deleted := await anyio.to_thread.run_sync(store.prune, time.time(), retention):
                pruned.inc(deleted)
                log.debug("messages.pruned count=%d", deleted)
                if deleted < PRUNE_BATCH:
                    break
        except sqlite3.Error as exc:  # a busy or full disk: requests matter more; next round
            if not failing:
                log.warning("messages.prune_failed error=%s: %s", type(exc).__name__, exc)
            failing = True
        else:
            failing = False
        await anyio.sleep(every)


async def main(ctx: ServiceContext) -> None:
    queue = queue_name(ctx.env)
    listener = bind_listener("WARREN_API_ADDR", env_str(ctx.env, "WARREN_API_ADDR", _ADDR))
    db = env_str(ctx.env, "WARREN_API_DB", _DB)
    try:
        retention = env_float(ctx.env, "WARREN_API_RETENTION", RETENTION, allow_zero=True)
        store = _open_store(db)
    except BaseException:
        listener.close()
        raise
    pruned = Counter("warren_api_messages_pruned", "Messages deleted past WARREN_API_RETENTION.",
                     registry=ctx.metrics.registry)  # fmt: skip
    # Refusing when full is the api's policy ("push": "dropped"); with "block" the request
    # would wait. drop-oldest stays as configured (the evicted push is counted, not marked).
    transactional = env_choice(ctx.env, "WARREN_API_OUTBOX", "on", ("on", "off")) == "on"
    overflow = ctx.publisher_config.overflow
    overflow = "drop-newest" if overflow == "block" else overflow
    config = dataclasses.replace(ctx.publisher_config, outbox=db if transactional else None,
                                 overflow=overflow)  # fmt: skip
    try:
        push_topology = topology(queue, queue_type(ctx.env))
        publisher = Publisher(config, metrics=ctx.metrics, name="api", topology=push_topology)
        try:
            with named_settings():
                async with publisher:
                    app = create_app(publisher, store, queue, transactional=transactional)
                    async with anyio.create_task_group() as tg:
                        if retention:
                            tg.start_soon(_pruning, store, retention, pruned)
                        await serve_asgi(app, listener, ctx.stopping, name="api",
                                         registry=ctx.metrics.registry)  # fmt: skip
                        tg.cancel_scope.cancel()
        except ConfigError as exc:
            if exc.setting != "outbox":
                raise
            raise ConfigError("WARREN_API_DB", str(exc).split(": ", 1)[1]) from None
    finally:
        store.close()


service = Service(
    name="api",
    help="the producing API: POST /messages stores a message and queues its push",
    main=main,
    settings=(
        Setting(env="WARREN_API_ADDR", default=_ADDR, help="where the API listens"),
        Setting(
            env="WARREN_API_DB",
            default=_DB,
            help="SQLite file: the messages, and the push jobs' outbox",
        ),
        Setting(
            env="WARREN_API_OUTBOX",
            default="on",
            help="on: message and push job in one transaction (no push lost if the process"
            " dies); off: the push waits in memory only",
        ),
        Setting(
            env="WARREN_API_RETENTION",
            default=str(int(RETENTION)),
            help="seconds a message is kept (0: for ever); a message whose push still waits"
            " in the outbox is kept until it is sent",
        ),
        Setting(env=QUEUE_SETTING, default=QUEUE, help="the queue push jobs go to"),
        Setting(env=QUEUE_TYPE_SETTING, default="quorum", help="quorum | classic (as it exists)"),
    ),
)
