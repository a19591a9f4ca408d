"""The merge index's pre-pass: a report it calls alone can neither join a case nor be joined."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gis.merge import MergeIndex, OpenCase

T0 = dt.datetime(2024, 3, 1, tzinfo=dt.UTC)
WINDOW = dt.timedelta(minutes=30)
DISTANCE = 50.0


def _partner(k: int, cats: list[str], devs: list[str | None], x: list[float], y: list[float], t: list[float],
             cases: list[OpenCase]) -> bool:
    """Whether report k could merge with anything, by brute force over the exact rule."""
    if devs[k] is not None:
        return True
    for j in range(len(cats)):
        if j != k and cats[j] == cats[k] and math.hypot(x[j] - x[k], y[j] - y[k]) <= DISTANCE \
                and abs(t[j] - t[k]) <= WINDOW.total_seconds():
            return True
    return any(c.category == cats[k] and math.hypot(c.x - x[k], c.y - y[k]) <= DISTANCE
               and abs(c.last_t.timestamp() - t[k]) <= WINDOW.total_seconds() for c in cases)


report = st.tuples(st.sampled_from(["noise", "fire", "litter"]), st.sampled_from([None, None, None, "D1"]),
                   st.floats(0, 400), st.floats(0, 400), st.floats(0, 6 * 3600))


@settings(max_examples=300, deadline=None)
@given(st.lists(report, max_size=40), st.lists(report, max_size=10))
def test_a_report_called_alone_has_no_partner(reports: list[tuple[str, str | None, float, float, float]],
                                              open_cases: list[tuple[str, str | None, float, float, float]]) -> None:
    index = MergeIndex(DISTANCE, WINDOW)
    cases = [OpenCase(n + 1, c, d, x, y, T0 + dt.timedelta(seconds=s), "reported", 1)
             for n, (c, d, x, y, s) in enumerate(open_cases)]
    for case in cases:
        index.add(case)
    cats, devs, x, y, t = ([r[i] for r in reports] for i in range(5))
    t_abs = [T0.timestamp() + s for s in t]
    alone = index.alone(cats, devs, np.array(x, dtype=float), np.array(y, dtype=float), np.array(t_abs))
    assert len(alone) == len(reports)
    for k, lone in enumerate(alone.tolist()):
        if lone:
            assert not _partner(k, cats, devs, x, y, t_abs, cases), reports[k]


def test_scattered_reports_are_alone_and_neighbours_are_not() -> None:
    index = MergeIndex(DISTANCE, WINDOW)
    index.add(OpenCase(7, "fire", None, 1_000.0, 1_000.0, T0, "reported", 1))
    t = T0.timestamp()
    got = index.alone(
        ["noise", "noise", "noise", "fire", "fire", "noise"], [None, None, None, None, None, "D1"],
        np.array([0.0, 30.0, 5_000.0, 1_040.0, 1_000.0, 9_000.0]), np.array([0.0, 30.0, 0.0, 1_000.0, 1_000.0, 0.0]),
        np.array([t, t + 600, t, t + 1200, t + 7200, t]))
    # two noise reports 42 m and 10 minutes apart; one far away; a fire report near the open fire case; a fire
    # report at its place two hours later (outside the window); a device's alarm (its device may have a case)
    assert got.tolist() == [False, False, True, False, True, False]
    # exactly the distance and the window apart is still within them
    edge = index.alone(["litter", "litter"], [None, None], np.array([3_000.0, 3_000.0 + DISTANCE]),
                       np.array([0.0, 0.0]), np.array([t, t + WINDOW.total_seconds()]))
    assert edge.tolist() == [False, False]
