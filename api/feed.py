"""The live change feed: server-sent events fed by PostgreSQL LISTEN/NOTIFY.

One listener thread per process holds a LISTEN connection and fans notifications out to the subscribers'
queues; each subscriber receives the ids (and status) of changed events in its scope, typically within tens of
milliseconds of the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import psycopg
from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import Engine, text

from api.auth import ActorDep
from gis.cases import scope_sql
from gis.eventlog import CHANNEL
from gis.workflow import Actor

router = APIRouter(prefix="/api/v1", tags=["feed"])
HEARTBEAT_S = 15.0


class Feed:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._subscribers: set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[list[int]]]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Bumped on every notification and on every (re)connect (notifications may have been missed meanwhile):
        # figures computed at an older generation may be stale (dashboard.snapshot).
        self.generation = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._listen, name="wangge-feed", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _listen(self) -> None:
        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        while not self._stop.is_set():
            try:
                with psycopg.connect(url, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    with self._lock:
                        self.generation += 1
                    while not self._stop.is_set():
                        for n in conn.notifies(timeout=1.0):
                            self._publish(json.loads(n.payload).get("ids", []))
            except psycopg.Error:
                self._stop.wait(1.0)

    def _publish(self, ids: list[int]) -> None:
        with self._lock:
            self.generation += 1
            subs = list(self._subscribers)
        for loop, queue in subs:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, ids)

    def sse(self, request: Request, rows_for: Callable[[list[int]], list[dict[str, Any]]], *,
            newest: int | None = None, retry_ms: int | None = None) -> StreamingResponse:
        """A server-sent event stream for one subscriber (the API's feed and the wall's): `event: change` with
        rows_for(the changed ids) — a burst that queued up meanwhile comes as one message, of its `newest` ids at
        most (then a message even without rows: the rest only tells the client to refresh) — and a heartbeat
        comment every HEARTBEAT_S seconds."""

        async def stream() -> AsyncIterator[str]:
            with self.subscribe() as queue:
                yield (f"retry: {retry_ms}\n" if retry_ms else "") + ": connected\n\n"
                while not await request.is_disconnected():
                    try:
                        ids = await asyncio.wait_for(queue.get(), timeout=HEARTBEAT_S)
                    except TimeoutError:
                        yield ": heartbeat\n\n"
                        continue
                    burst = set(ids)
                    while not queue.empty():
                        burst.update(queue.get_nowait())
                    shown = sorted(burst, reverse=True)[:newest] if newest else sorted(burst)
                    rows = await asyncio.to_thread(rows_for, shown)
                    if rows or len(burst) > len(shown):
                        yield f"event: change\ndata: {json.dumps(rows, ensure_ascii=False, default=str)}\n\n"

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @contextlib.contextmanager
    def subscribe(self) -> Any:
        item = (asyncio.get_running_loop(), asyncio.Queue[list[int]](maxsize=1000))
        with self._lock:
            self._subscribers.add(item)
        try:
            yield item[1]
        finally:
            with self._lock:
                self._subscribers.discard(item)


def _visible(engine: Engine, actor: Actor, ids: list[int]) -> list[dict[str, Any]]:
    clause, params = scope_sql(actor)
    with engine.connect() as conn:
        rows = conn.execute(text(f"""SELECT e.id, e.status, e.village_code, e.cell_code, e.category, e.platform,
                                            e.overdue, ST_X(e.geom) AS lon, ST_Y(e.geom) AS lat
                                     FROM events e WHERE e.id = ANY(:ids) AND {clause}"""),
                            {**params, "ids": ids}).all()
    return [dict(r._mapping) for r in rows]


@router.get("/feed")
async def feed(request: Request, actor: ActorDep) -> StreamingResponse:
    """Server-sent events: `event: change` with the changed events in your scope, and a heartbeat every 15 s."""
    engine = request.app.state.engine
    hub: Feed = request.app.state.feed
    return hub.sse(request, lambda ids: _visible(engine, actor, ids))
