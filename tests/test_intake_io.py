"""The intake's database conversation driver (gis/intake_io.py) on a real PostgreSQL: statements sent without
waiting share the next round trip, and an error before the commit is marked as such."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from sqlalchemy.engine import make_url

from gis import intake_io
from gis.intake_io import Plan, Send


@pytest.fixture
def pg(demo_url: str) -> Iterator[psycopg.Connection[Any]]:
    url = make_url(demo_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as conn:
        yield conn


def test_statements_not_waited_for_answer_first_in_the_next_round_trip(pg: psycopg.Connection[Any]) -> None:
    seen: list[Any] = []

    def plan() -> Plan[str]:
        seen.append((yield Send([("SELECT 1", None), None], wait=False)))
        seen.append((yield Send([("SELECT 2", None), ("SELECT %(x)s::text", {"x": "three"})])))
        return "done"

    assert intake_io.run(pg, plan()) == "done"
    assert seen == [None, [[(1,)], [], [(2,)], [("three",)]]]


@pytest.mark.parametrize("dies_in", ["first round trip", "last round trip"])
def test_an_error_before_the_commit_is_marked_uncommitted(demo_url: str, dies_in: str) -> None:
    def plan() -> Plan[None]:
        kill = ("SELECT pg_terminate_backend(pg_backend_pid())", None)
        yield Send([("SELECT 1", None)], wait=False)
        yield Send([kill] if dies_in == "first round trip" else [("SELECT 2", None)])
        yield Send([kill] if dies_in == "last round trip" else [("SELECT 3", None)], last=True)

    url = make_url(demo_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(url) as pg, pytest.raises(psycopg.OperationalError) as caught:
        intake_io.run(pg, plan(), commit=True)
    # Only an error before the COMMIT went out says for sure that nothing was stored.
    assert intake_io.uncommitted(caught.value) is (dies_in == "first round trip")
    assert not intake_io.uncommitted(RuntimeError("something else"))
