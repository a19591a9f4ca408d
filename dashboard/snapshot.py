"""The wall's figures, computed once for every screen that shows the same scope, and started early.

A command centre runs several wall screens and leaders open the same page: they all need today's figures for the
same scope, and the wall refreshes them on every burst of changes. `Snapshots` keeps one computation per key
(single flight: callers that arrive while it runs wait for it instead of starting another) and hands it out while
it is current: computed at the live feed's present generation (api.feed.Feed bumps it on every change notification
and on every reconnect) and younger than `ttl` seconds (deadlines pass without a notification).

The page request for the wall starts the computation (`prefetch`), so that the database works while the browser
is still loading scripts; the layout request that follows picks the result up.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Hashable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from dashboard import data
from gis.intake import TZ
from gis.workflow import Actor

TTL_S = 10.0
MAX_ENTRIES = 256


@dataclass
class _Entry:
    generation: int
    started: float
    future: Future[Any]


class Snapshots:
    def __init__(self, ttl: float = TTL_S, workers: int = 2) -> None:
        self.ttl = ttl
        self._lock = threading.Lock()
        self._entries: dict[Hashable, _Entry] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="wangge-snapshot")

    def submit(self, key: Hashable, generation: int | None, fn: Callable[[], Any]) -> Future[Any]:
        """The current computation for `key`, started now if there is none. `generation` None: never shared."""
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if (generation is not None and entry is not None and entry.generation == generation
                    and now - entry.started < self.ttl
                    and not (entry.future.done() and entry.future.exception() is not None)):
                return entry.future
            future = self._pool.submit(fn)
            if generation is not None:
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries = {k: e for k, e in self._entries.items() if now - e.started < self.ttl}
                self._entries[key] = _Entry(generation, now, future)
            return future

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _generation(state: Any) -> int | None:
    feed = getattr(state, "feed", None)
    return None if feed is None else int(feed.generation)


def wall(state: Any, actor: Actor) -> Future[Any]:
    """Today's wall figures (dashboard.data.wall_figures) for the account's scope; `state` is the app's state."""
    snapshots: Snapshots = state.snapshots
    key = ("wall", actor.role, actor.scope_code, actor.unit_code, actor.worker_id, dt.datetime.now(TZ).date())
    engine = state.engine
    return snapshots.submit(key, _generation(state), lambda: data.wall_figures(engine, actor))
