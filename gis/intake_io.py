"""The database conversation of an intake as steps, and their driver.

Intake.plan is a generator that says what it needs from the database — statements sent together, or a COPY — and
receives the answers; `run` carries the steps out on a psycopg connection inside the caller's transaction. Keeping
the conversation in steps keeps its round trips few and visible: a statement that needs no answer waits for the
next trip instead of costing one of its own, which matters most when the database is on another host.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg

T = TypeVar("T")
Statement = tuple[str, dict[str, Any] | None]


class Unprepared(tuple[str, dict[str, Any] | None]):
    """A statement planned for its own arguments at every execution: psycopg never prepares it, so PostgreSQL
    cannot settle on a generic plan for it (see Intake.plan)."""

    __slots__ = ()

    def __new__(cls, statement: Statement) -> Unprepared:
        return super().__new__(cls, statement)


@dataclass
class Send:
    """Statements sent together (one round trip, psycopg's pipeline mode); answered with each one's rows, [] for
    a None in the list or a statement that returns none."""

    statements: Sequence[Statement | None]
    last: bool = False  # the plan's last statements: run(commit=True) commits with them
    # False: sent at once and not waited for (answered None); the server works on them while the plan goes on,
    # and their rows come first in the next Send's answer (the two share one round trip).
    wait: bool = True


@dataclass
class Copy:
    """COPY … FROM STDIN of these rows (COPY cannot wait in a pipeline: it is a round trip of its own). The rows
    may be a generator: each is sent as it comes, and the server works on them meanwhile."""

    sql: str
    rows: Iterable[Sequence[Any]] | Iterable[str]
    raw: bool = False  # the rows are chunks of COPY data (text or binary, as the statement says), written as they are


Plan = Generator[Send | Copy, Any, T]


def run(pg: psycopg.Connection[Any], plan: Plan[T], commit: bool = False) -> T:
    """Carry out a plan on a connection inside the caller's transaction; its return value. With `commit`, the
    transaction is committed with the plan's last statements, which saves a round trip (psycopg then knows the
    connection is idle: the caller's own commit does nothing; a failure raises and the caller rolls back).
    A database error raised before the commit was sent is marked so: see uncommitted()."""
    answer: Any = None
    committing = False
    held: list[Any] = []  # the cursors of statements sent without waiting
    pipe: Any = None  # the open pipeline they went into
    try:
        while True:
            try:
                step = plan.send(answer)
            except StopIteration as stop:
                return stop.value
            if isinstance(step, Send):
                committing = step.last and commit
                statements = [*step.statements, ("COMMIT", None)] if committing else step.statements
                if pipe is None:
                    pipe = pg.pipeline()
                    pipe.__enter__()
                cursors = [None if s is None else pg.execute(s[0], s[1], prepare=False if isinstance(
                    s, Unprepared) else None) for s in statements]
                if not step.wait:
                    held += cursors
                    answer = None
                    continue
                open_pipe, pipe = pipe, None
                open_pipe.__exit__(None, None, None)  # sync, and wait for every answer
                every, held = [*held, *cursors[:len(step.statements)]], []
                answer = [[] if c is None or c.description is None else c.fetchall() for c in every]
            else:
                assert pipe is None, "a COPY cannot follow statements not waited for"
                with pg.cursor() as cur, cur.copy(step.sql) as cp:
                    if step.raw:
                        for chunk in step.rows:
                            cp.write(chunk)  # type: ignore[arg-type]
                    else:
                        for row in step.rows:
                            cp.write_row(row)
                answer = None
    except psycopg.OperationalError as exc:
        if not committing:
            exc.add_note(_UNCOMMITTED)
        raise
    finally:
        if pipe is not None:
            with contextlib.suppress(Exception):  # the error being raised matters, not the pipeline's
                pipe.__exit__(None, None, None)


_UNCOMMITTED = "wangge: raised before the transaction's commit was sent (nothing was stored)"


def uncommitted(exc: BaseException) -> bool:
    """Whether a database error (or one raised while rolling back after it) came before the commit was sent: the
    plan may then be carried out again on another connection, e.g. when a kept connection had gone."""
    seen: BaseException | None = exc
    while seen is not None:
        if _UNCOMMITTED in getattr(seen, "__notes__", ()):
            return True
        seen = seen.__cause__ or seen.__context__
    return False
