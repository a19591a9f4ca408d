"""Single reports decided and written in a process of their own: the intake worker.

The HTTP process parses requests and answers them; deciding a group of reports (locate, route, merge) and holding
the database conversation cost about a millisecond of Python per group. In one process the two took turns on the
one interpreter lock: every database answer waited for the event loop, and the loop for the intake. Measured with
bench/ingest.py (32 clients), the event loop was idle ~30 % of the time while the process used 0.7 of a core, and
single reports stayed at 2,300–2,500 a second; with the intake in a worker of its own the same run gave ~3,300,
and ~3,800 once the worker kept its database connection.

The worker is a child (`python -m gis.intake_worker FD`) joined by a socket pair; the intake queue's thread sends
it a group of reports and receives one outcome per report (the stored event's answer, or the error for that report
alone). It builds its own Intake from the same settings; its caches follow the dataset revision in the database,
as the server's do, so a load or a grid change is seen by both. It is started with the server and again when a
group finds it dead. A group in flight when it died fails with 503: its reports may or may not have been stored,
and a client retrying with the same external_id or Idempotency-Key gets the first event, never a second. The
worker leaves when the server closes the socket (or dies: the socket closes with it).

Batches run in a pool of such workers (WorkerPool, `WANGGE_BATCH_PROCESSES`, default 2): the server passes a
batch's body as it came and gets the answer's bytes back, so parsing, deciding and writing a batch never hold the
server's interpreter lock, and two batches use two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import pickle
import queue
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import psycopg
from sqlalchemy import exc as sa_exc

from gis import intake_io
from gis.errors import DatabaseUnavailable, WanggeError
from gis.intake import Intake, Report
from gis.intake_queue import Outcome, ingest_each

if TYPE_CHECKING:
    from sqlalchemy import Connection as SAConnection
    from sqlalchemy import Engine

log = logging.getLogger("wangge.intake")


class WorkerLost(WanggeError):
    """The intake worker stopped while it had reports (HTTP 503)."""


class IntakeFailed(WanggeError):
    """The intake worker met an error nobody foresaw (HTTP 500; the traceback is in the server's log)."""


class IntakeWorker:
    """The server's side: ingest() from one thread at a time (the intake queue's)."""

    def __init__(self, database_url: str, locate_settings: Any) -> None:
        self.database_url = database_url
        self.locate_settings = locate_settings
        self.process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None

    def ingest(self, reports: list[Report]) -> list[Outcome]:
        """One outcome per report of the group (its answer, or the error for that report alone)."""
        outcomes: list[Outcome] = self._exchange(reports, "storing this report; it may have been stored: send it "
                                                          "again with the same external_id or Idempotency-Key")
        return outcomes

    def call(self, job: Callable[..., Any], *args: Any) -> Any:
        """What job(intake, connection, *args) returns in the worker — or raises: a WanggeError as is, a lost
        database as DatabaseUnavailable, anything else as IntakeFailed. The job must be importable by name (it
        is pickled by reference) and its arguments and result picklable; the connection is the worker's own,
        idle between calls."""
        outcome: Outcome | Any = self._exchange((job, args), "during this batch; it may have been stored: send it "
                                                             "again with the same external_ids or Idempotency-Keys")
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def _exchange(self, message: Any, lost: str) -> Any:
        if self.process is not None and self.process.poll() is not None:
            self.close()  # it died between messages: nothing was in flight
        if self._conn is None:
            self.start()
        assert self._conn is not None
        try:
            self._conn.send(message)
            return self._conn.recv()
        except (EOFError, OSError):
            self.close(timeout=5)
            raise WorkerLost(f"the intake worker stopped {lost}") from None

    def close(self, timeout: float = 30.0) -> None:
        """Let the worker leave (it finishes the group it has), or end it after `timeout` seconds."""
        conn, proc, self._conn, self.process = self._conn, self.process, None, None
        if conn is not None:
            conn.close()
        if proc is not None:
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def start(self) -> None:
        """Start the worker (it imports and connects while the server goes on); ingest() starts it if need be."""
        ours, theirs = socket.socketpair()
        with theirs:
            self.process = subprocess.Popen([sys.executable, "-m", "gis.intake_worker", str(theirs.fileno())],
                                            pass_fds=[theirs.fileno()])
        self._conn = Connection(ours.detach())
        self._conn.send((self.database_url, self.locate_settings))


class WorkerPool:
    """Intake workers for batches (`WANGGE_BATCH_PROCESSES`): call() runs a job in an idle one, waiting while all
    are busy. Deciding a batch of 10,000 takes ~0.3 s of Python; in the server's threads two concurrent batches
    shared one interpreter lock with each other and with the event loop (measured with bench/ingest.py, two
    loaders: the server used 0.82 of a core and PostgreSQL 0.65, the second core half idle).

    A worker starts when first needed (~1 s to import), not with the server: three processes importing at once
    on two cores delayed the server's first answers past a second. The idle worker used last is used next, so
    one client's batches keep to one warm worker."""

    def __init__(self, workers: list[IntakeWorker]) -> None:
        self.workers = workers
        self._idle: queue.LifoQueue[IntakeWorker] = queue.LifoQueue()
        for w in reversed(workers):
            self._idle.put(w)
        self._slots = asyncio.Semaphore(len(workers))

    async def run(self, job: Callable[..., Any], *args: Any) -> Any:
        """call() from an event loop: batches waiting for a worker wait here, not in a thread each (forty
        waiting batches would otherwise hold every thread of the server's pool)."""
        async with self._slots:
            return await asyncio.to_thread(self.call, job, *args)

    def call(self, job: Callable[..., Any], *args: Any) -> Any:
        worker = self._idle.get()
        try:
            return worker.call(job, *args)
        finally:
            self._idle.put(worker)

    def close(self, timeout: float = 30.0) -> None:
        """Let each worker finish the job it has (up to `timeout` seconds in all), then leave."""
        deadline = time.monotonic() + timeout
        for _ in self.workers:
            with contextlib.suppress(queue.Empty):
                self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
        for w in self.workers:
            w.close(timeout=max(1.0, deadline - time.monotonic()))


# -- the worker's side ------------------------------------------------------------------------------------------
def _portable(outcomes: list[Outcome]) -> list[Outcome]:
    """Outcomes the server can unpickle: a database error as 503, anything unforeseen as a one-line error."""
    out: list[Outcome] = []
    for o in outcomes:
        if isinstance(o, BaseException) and not isinstance(o, WanggeError):
            if isinstance(o, (sa_exc.OperationalError, psycopg.OperationalError)):  # the database went away
                o = DatabaseUnavailable(f"the database does not answer ({str(o).splitlines()[0] if str(o) else o}); "
                                        "send the report again with the same external_id or Idempotency-Key")
            else:
                log.error("intake failed", exc_info=o)
                o = IntakeFailed(f"the intake failed: {type(o).__name__}: {o}")
        out.append(o)
    try:
        if any(isinstance(o, BaseException) for o in out):
            pickle.dumps(out)
    except Exception:
        out = [WanggeError(str(o)) if isinstance(o, BaseException) else o for o in out]
    return out


def serve(conn: Connection) -> None:
    from gis import db
    from gis.gazetteer_db import GazetteerCache
    from gis.intake import IntakeSettings
    from gis.locate import Locator
    from gis.taxonomy import load_taxonomy
    from gis.workcalendar import load_calendar

    url, locate_settings = conn.recv()
    engine = db.engine_for(url)
    intake = Intake(engine, Locator(engine, locate_settings), load_taxonomy(), load_calendar(), IntakeSettings(),
                    gazetteer=GazetteerCache(engine).match)
    gc.collect()
    gc.freeze()  # as in the server (api/app.py): the start-up heap stays out of every collection
    gc.set_threshold(20_000, 20, 20)
    db_conn = _KeptConnection(engine)
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return
            if isinstance(message, tuple):  # a job: (function, arguments)
                job, args = message
                conn.send(_portable([_call(intake, job, args, db_conn)])[0])
            else:  # a group of single reports
                conn.send(_portable(_ingest(intake, message, db_conn)))
    finally:
        db_conn.discard()
        engine.dispose()


def _ingest(intake: Intake, reports: list[Report], db_conn: _KeptConnection) -> list[Outcome]:
    """The group's outcomes; once more on a fresh connection if the kept one failed before the commit was sent
    (it had gone while idle, or a deadlock): nothing of the first try was stored."""
    outcomes: list[Outcome] = []
    for _ in range(2):
        try:
            return ingest_each(intake, reports, db_conn.get())
        except Exception as exc:  # the database went away: every waiter hears it
            db_conn.discard()
            outcomes = [exc] * len(reports)
            if not intake_io.uncommitted(exc):
                break
    return outcomes


def _call(intake: Intake, job: Callable[..., Any], args: tuple[Any, ...], db_conn: _KeptConnection
          ) -> Outcome | Any:
    """The job's result or error; once more on a fresh connection as in _ingest."""
    for attempt in range(2):
        try:
            return job(intake, db_conn.get(), *args)
        except WanggeError as exc:  # the caller's fault, said in one line: the connection is fine
            return exc
        except Exception as exc:
            db_conn.discard()
            if attempt or not intake_io.uncommitted(exc):
                return exc
    raise AssertionError("unreachable")


class _KeptConnection:
    """The worker's one database connection, kept from group to group: the pool's checkout and liveness ping
    cost ~7 % of a group of 16 (measured in process; bench/ingest.py single ~+10 %). It is pinged after IDLE_PING
    seconds without use; one that fails is replaced (see _ingest)."""

    IDLE_PING = 10.0

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: SAConnection | None = None
        self._used = 0.0

    def get(self) -> SAConnection:
        if self._conn is not None and time.monotonic() - self._used > self.IDLE_PING:
            try:
                self._conn.exec_driver_sql("SELECT 1")
                self._conn.rollback()
            except Exception:  # gone while idle: a fresh one below
                self.discard()
        if self._conn is None:
            self._conn = self.engine.connect()
        self._used = time.monotonic()
        return self._conn

    def discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.invalidate()
                conn.close()


def main(fd: int) -> None:
    # Ctrl-C in a terminal reaches the whole process group: the server drains its queue through this worker
    # and then closes the socket, which is when the worker leaves.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.WARNING)
    serve(Connection(fd))


if __name__ == "__main__":
    # Through the module's importable name, so that the errors it sends unpickle in the server as
    # gis.intake_worker's (not __main__'s).
    from gis.intake_worker import main as _main

    _main(int(sys.argv[1]))
