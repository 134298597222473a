"""api: the producing API. ``POST /messages`` stores a message and submits a push job for its
recipient through a ``warren.Publisher``; its answer never waits for RabbitMQ.

- ``POST /messages`` ``{"from", "to", "text"}`` -> 202 ``{"id", "push": "queued"}`` (or
  ``"dropped"`` when the side-effect buffer refused it); 400 for a body that is not JSON,
  422 naming the bad field.
- ``GET /messages/{id}`` -> 200 with the message, or 404.

The publisher lives as long as the app: started before serving, flushed on shutdown.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import anyio
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from warren import BufferFull, Publisher, PublisherClosed, Service, ServiceContext, Setting
from warren.services._http import serve_asgi
from warren.services._settings import env_str
from warren.services.push_common import QUEUE, QUEUE_SETTING, queue_name, topology

if TYPE_CHECKING:
    from starlette.requests import Request

MAX_TEXT = 10_000
_FIELDS = ("from", "to", "text")


class MessageStore:
    """Messages in SQLite (a file, or ``:memory:``). Calls run in a worker thread."""

    def __init__(self, path: str) -> None:
        self._db = sqlite3.connect(path, check_same_thread=False)
        self._lock = threading.Lock()
        with self._lock:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS messages (id TEXT PRIMARY KEY, sender TEXT,"
                " recipient TEXT, text TEXT, created_at REAL, push TEXT)"
            )
            self._db.commit()

    def _insert(self, row: tuple[str, str, str, str, float, str]) -> None:
        with self._lock:
            self._db.execute("INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?)", row)
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

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _invalid(field: str, problem: str) -> Response:
    return JSONResponse({"error": f"{field}: {problem}", "field": field}, status_code=422)


def create_app(publisher: Publisher, store: MessageStore, queue: str = QUEUE) -> Starlette:
    async def post_message(request: Request) -> Response:
        try:
            doc = await request.json()
        except ValueError:
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        if not isinstance(doc, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=422)
        for field in _FIELDS:
            value = doc.get(field)
            if not isinstance(value, str) or not value.strip():
                return _invalid(field, "required, a non-empty string")
        if len(doc["text"]) > MAX_TEXT:
            return _invalid("text", f"at most {MAX_TEXT} characters")
        message_id = uuid.uuid4().hex
        job = {
            "message_id": f"push-{message_id}",
            "to": doc["to"],
            "title": f"New message from {doc['from']}",
            "body": doc["text"][:200],
            "data": {"message_id": message_id},
        }
        try:
            publisher.submit(job, routing_key=queue, message_id=job["message_id"])
            push = "queued"
        except (BufferFull, PublisherClosed):
            push = "dropped"  # counted in warren_jobs_dropped_total; the message is stored
        await store.insert((message_id, doc["from"], doc["to"], doc["text"], time.time(), push))
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


async def main(ctx: ServiceContext) -> None:
    addr = env_str(ctx.env, "WARREN_API_ADDR", "127.0.0.1:8080")
    queue = queue_name(ctx.env)
    store = MessageStore(env_str(ctx.env, "WARREN_API_DB", "warren-api.sqlite3"))
    try:
        async with Publisher(ctx.publisher_config, metrics=ctx.metrics, name="api",
                             topology=topology(queue)) as publisher:  # fmt: skip
            app = create_app(publisher, store, queue)
            await serve_asgi(app, addr, "WARREN_API_ADDR", ctx.stopping)
    finally:
        store.close()


service = Service(
    name="api",
    help="the producing API: POST /messages stores a message and queues its push",
    main=main,
    settings=(
        Setting(env="WARREN_API_ADDR", default="127.0.0.1:8080", help="where the API listens"),
        Setting(env="WARREN_API_DB", default="warren-api.sqlite3", help="SQLite file"),
        Setting(env=QUEUE_SETTING, default=QUEUE, help="the queue push jobs go to"),
    ),
)
