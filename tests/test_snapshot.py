"""The wall's shared figures: one computation per scope while nothing changed, a new one after a change."""

from __future__ import annotations

import threading
import time

import pytest

from dashboard.snapshot import Snapshots


def test_one_computation_serves_every_caller_until_a_change() -> None:
    snaps = Snapshots(ttl=60)
    calls: list[int] = []
    gate = threading.Event()

    def compute() -> int:
        gate.wait(5)
        calls.append(1)
        return len(calls)

    first = snaps.submit("wall", 7, compute)
    second = snaps.submit("wall", 7, compute)  # arrives while the first still runs: waits for it
    gate.set()
    assert first is second and first.result(5) == 1 and second.result(5) == 1
    assert snaps.submit("wall", 7, compute).result(5) == 1 and calls == [1]
    assert snaps.submit("wall", 8, compute).result(5) == 2  # a change notification since: computed afresh
    assert snaps.submit("other scope", 8, compute).result(5) == 3  # another scope has its own
    assert snaps.submit("wall", None, compute).result(5) == 4  # no live feed: never shared
    assert snaps.submit("wall", None, compute).result(5) == 5
    snaps.shutdown()


def test_old_and_failed_computations_are_not_handed_out() -> None:
    snaps = Snapshots(ttl=0.2)
    n = iter(range(100))
    assert snaps.submit("wall", 1, lambda: next(n)).result(5) == 0
    assert snaps.submit("wall", 1, lambda: next(n)).result(5) == 0
    time.sleep(0.3)  # deadlines pass without notifications: figures older than the ttl are recomputed
    assert snaps.submit("wall", 1, lambda: next(n)).result(5) == 1

    def boom() -> int:
        raise RuntimeError("database went away")

    with pytest.raises(RuntimeError, match="went away"):
        snaps.submit("wall", 2, boom).result(5)
    assert snaps.submit("wall", 2, lambda: next(n)).result(5) == 2  # the failure is not cached
    snaps.shutdown()
