"""Alarm-storm and duplicate merging, decided in memory for a whole batch.

Open cases that a batch could join are read once; each incoming report then joins (in order) the case of the
same category from the same device, or else the nearest case of the same category within the merge distance
whose latest report lies within the time window — including cases opened earlier in the same batch.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from dataclasses import dataclass


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
