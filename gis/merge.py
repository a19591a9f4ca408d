"""Alarm-storm and duplicate merging, decided in memory for a whole batch.

Open cases that a batch could join are read once; each incoming report then joins (in order) the case of the
same category from the same device, or else the nearest case of the same category within the merge distance
whose latest report lies within the time window — including cases opened earlier in the same batch.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class OpenCase:
    key: int  # event id, or a negative placeholder for a case this batch creates
    category: str
    device_id: str | None
    x: float  # metres (Gauss–Krüger)
    y: float
    last_t: dt.datetime
    status: str
    reports: int


class MergeIndex:
    def __init__(self, distance_m: float, window: dt.timedelta) -> None:
        self.distance = distance_m
        self.window = window
        self._bins: dict[tuple[str, int, int], list[OpenCase]] = defaultdict(list)
        self._devices: dict[tuple[str, str], OpenCase] = {}

    def _bin(self, x: float, y: float) -> tuple[int, int]:
        size = max(self.distance, 1.0)
        return math.floor(x / size), math.floor(y / size)

    def add(self, case: OpenCase) -> None:
        bx, by = self._bin(case.x, case.y)
        self._bins[(case.category, bx, by)].append(case)
        if case.device_id:
            key = (case.category, case.device_id)
            old = self._devices.get(key)
            if old is None or (old.key > 0 and case.key > 0 and case.key < old.key):
                self._devices[key] = case

    def find(self, category: str, device_id: str | None, x: float, y: float, t: dt.datetime) -> OpenCase | None:
        if device_id and (category, device_id) in self._devices:
            return self._devices[(category, device_id)]
        bx, by = self._bin(x, y)
        best: tuple[float, int, OpenCase] | None = None
        for i in (bx - 1, bx, bx + 1):
            for j in (by - 1, by, by + 1):
                for case in self._bins.get((category, i, j), ()):
                    d = math.hypot(case.x - x, case.y - y)
                    if d <= self.distance and abs(case.last_t - t) <= self.window:
                        rank = (d, case.key if case.key > 0 else 1 << 62)
                        if best is None or rank < best[:2]:
                            best = (*rank, case)
        return best[2] if best else None

    def alone(self, categories: Sequence[str], devices: Sequence[str | None], x: np.ndarray, y: np.ndarray,
              t: np.ndarray) -> np.ndarray:
        """For reports about to be decided (metric x, y; t in epoch seconds): whether each surely neither joins a
        case nor is joined by another of them — no case in the index and no other report of its category lies in
        a neighbouring square (of the merge distance) and stretch of time (of the window), and it comes from no
        device. Such a report opens a case of its own without find() and need not be add()ed: in an import of
        scattered reports nearly all are, and the two cost ~4 µs a report in Python against ~0.5 µs here.

        A superset test on packed keys (category, square, stretch): a hash collision can only call a report
        not alone, which find() then decides exactly."""
        n = len(categories)
        out = np.zeros(n, dtype=bool)
        if n == 0:
            return out
        size, span = max(self.distance, 1.0), max(self.window.total_seconds(), 1.0)
        codes: dict[str, int] = {}
        cat = np.fromiter((codes.setdefault(c, len(codes)) for c in categories), dtype=np.int64, count=n)
        cases = [c for bin_ in self._bins.values() for c in bin_ if c.category in codes]
        c_cat = np.fromiter((codes[c.category] for c in cases), dtype=np.int64, count=len(cases))
        c_x = np.fromiter((c.x for c in cases), dtype=float, count=len(cases))
        c_y = np.fromiter((c.y for c in cases), dtype=float, count=len(cases))
        c_t = np.fromiter((c.last_t.timestamp() for c in cases), dtype=float, count=len(cases))

        def cells(cat: np.ndarray, x: np.ndarray, y: np.ndarray, t: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
            return (cat, np.floor(x / size).astype(np.int64), np.floor(y / size).astype(np.int64),
                    np.floor(t / span).astype(np.int64))

        def pack(cat: np.ndarray, i: np.ndarray, j: np.ndarray, k: np.ndarray) -> np.ndarray:
            with np.errstate(over="ignore"):  # wrapping only makes collisions
                return ((cat * 1_000_003 + i) * 998_244_353 + j) * 1_000_000_007 + k

        cat_, i, j, k = cells(cat, np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(t, dtype=float))
        own = pack(cat_, i, j, k)
        keys, counts = np.unique(own, return_counts=True)
        case_keys = np.unique(pack(*cells(c_cat, c_x, c_y, c_t)))

        def member(sorted_keys: np.ndarray, probe: np.ndarray) -> np.ndarray:
            if len(sorted_keys) == 0:
                return np.zeros(len(probe), dtype=bool)
            at = np.minimum(np.searchsorted(sorted_keys, probe), len(sorted_keys) - 1)
            return sorted_keys[at] == probe

        # Reports sharing their own square and stretch with another report, then every neighbour of each.
        out |= counts[np.searchsorted(keys, own)] > 1
        for di in (-1, 0, 1):
            for dj in (-1, 0, 1):
                for dk in (-1, 0, 1):
                    probe = pack(cat_, i + di, j + dj, k + dk)
                    out |= member(case_keys, probe)
                    if di or dj or dk:
                        out |= member(keys, probe)
        out |= np.fromiter((d is not None for d in devices), dtype=bool, count=n)
        return ~out
