"""The Chinese working-day calendar (data/taxonomy/calendar.yaml) and case deadlines.

Working days
- A day is a working day when it is an adjusted working day (调休上班), or a Monday–Friday that is no public holiday.
- Years the file does not hold are plain: Monday–Friday work, weekends off. `covers(year)` tells which years are
  known; a `provisional` year holds only the fixed-date statutory holidays until the State Council publishes it.

Deadlines (all in Asia/Shanghai; any timezone-aware datetime is accepted, a naive one is refused)
- `hours`: wall-clock time, start + n hours, nights, weekends and holidays included.
- `working_days`: the start is first moved into working time: on a non-working day to the next working day at
  09:00 (`workday_start`), on a working day before 09:00 to 09:00 that day. The deadline is the same clock time on
  the n-th working day after that day. A case received on Friday 17:00 with 2 working days is due Tuesday 17:00;
  one received on Saturday is due Wednesday 09:00. Moving early starts to 09:00 keeps deadlines monotonic in the
  start (Sunday 23:00 and Monday 01:00 are both due Wednesday 09:00), and the deadline always falls on a working day.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gis.errors import ConfigurationError
from gis.taxonomy import TimeLimit, parse_entry, read_yaml, taxonomy_dir

SHANGHAI = ZoneInfo("Asia/Shanghai")


class Holiday(BaseModel):
    """Consecutive days off (start..end inclusive) and the weekend days worked instead."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name_zh: str = Field(min_length=1)
    name_en: str = Field(min_length=1)
    start: dt.date
    end: dt.date
    adjusted_working_days: tuple[dt.date, ...] = ()

    @model_validator(mode="after")
    def _check(self) -> Holiday:
        if self.end < self.start:
            raise ValueError(f"{self.name_zh}: end {self.end} is before start {self.start}")
        for day in self.adjusted_working_days:
            if day.weekday() < 5:
                raise ValueError(f"{self.name_zh}: adjusted working day {day} is a weekday, not a weekend day")
            if self.start <= day <= self.end:
                raise ValueError(f"{self.name_zh}: adjusted working day {day} lies inside the holiday")
        return self

    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)]


class Year(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = ""
    provisional: bool = False
    holidays: tuple[Holiday, ...] = Field(min_length=1)


class WorkCalendar:
    """Working days and deadlines; see the module docstring for the rules."""

    def __init__(self, years: dict[int, Year], tz: dt.tzinfo = SHANGHAI,
                 workday_start: dt.time = dt.time(9, 0)) -> None:
        self.years = years
        self.tz = tz
        self.workday_start = workday_start
        self.holidays: dict[dt.date, Holiday] = {d: h for y in years.values() for h in y.holidays for d in h.days()}
        self.adjusted: frozenset[dt.date] = frozenset(
            d for y in years.values() for h in y.holidays for d in h.adjusted_working_days)

    def covers(self, year: int, *, provisional: bool = False) -> bool:
        """True for a year with the official schedule; with provisional=True also for a provisional year."""
        y = self.years.get(year)
        return y is not None and (provisional or not y.provisional)

    def is_working_day(self, day: dt.date) -> bool:
        if isinstance(day, dt.datetime):
            day = self._local(day).date()
        if day in self.adjusted:
            return True
        return day.weekday() < 5 and day not in self.holidays

    def next_working_day(self, day: dt.date) -> dt.date:
        """The first working day strictly after `day`."""
        day += dt.timedelta(days=1)
        while not self.is_working_day(day):
            day += dt.timedelta(days=1)
        return day

    def _local(self, moment: dt.datetime) -> dt.datetime:
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"naive datetime {moment.isoformat()}: give a timezone-aware datetime")
        return moment.astimezone(self.tz)

    def working_start(self, moment: dt.datetime) -> dt.datetime:
        """`moment` moved into working time: non-working day → next working day 09:00; before 09:00 → 09:00."""
        local = self._local(moment)
        day = local.date()
        if not self.is_working_day(day):
            day = self.next_working_day(day)
        elif local.time() >= self.workday_start:
            return local
        return dt.datetime.combine(day, self.workday_start, tzinfo=self.tz)

    def add_working_days(self, start: dt.datetime, n: int) -> dt.datetime:
        """The same clock time as working_start(start) on the n-th working day after it (n = 0: working_start)."""
        if n < 0:
            raise ValueError(f"number of working days must be ≥ 0, got {n}")
        begin = self.working_start(start)
        day = begin.date()
        for _ in range(n):
            day = self.next_working_day(day)
        return dt.datetime.combine(day, begin.time(), tzinfo=self.tz)

    def deadline(self, start: dt.datetime, limit: TimeLimit) -> dt.datetime:
        if limit.unit == "hours":
            return (self._local(start).astimezone(dt.UTC) + dt.timedelta(hours=limit.amount)).astimezone(self.tz)
        return self.add_working_days(start, limit.amount)


def _parse_years(path: Path, raw: Any) -> dict[int, Year]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigurationError(f"{path}: 'years' must map each year to its holidays")
    years: dict[int, Year] = {}
    seen: dict[dt.date, str] = {}
    for key, value in raw.items():
        if not isinstance(key, int) or not 1949 < key < 2200:
            raise ConfigurationError(f"{path}: year {key!r}: not a year")
        year = parse_entry(Year, value, path, f"year {key}")
        for h in year.holidays:
            if h.start.year != key and h.end.year != key:
                raise ConfigurationError(f"{path}: year {key}: holiday {h.name_zh} ({h.start}) is in another year")
            if year.provisional and h.adjusted_working_days:
                raise ConfigurationError(f"{path}: year {key}: provisional year with adjusted working days")
            for day in [*h.days(), *h.adjusted_working_days]:
                if day in seen:
                    raise ConfigurationError(f"{path}: year {key}: {day} appears twice ({seen[day]}, {h.name_zh})")
                seen[day] = h.name_zh
        years[key] = year
    return years


def load_calendar(path: Path | None = None) -> WorkCalendar:
    """Load calendar.yaml (default: calendar.yaml in the taxonomy folder, see gis.taxonomy.taxonomy_dir)."""
    path = Path(path) if path is not None else taxonomy_dir() / "calendar.yaml"
    data = read_yaml(path, "years")
    try:
        tz = ZoneInfo(str(data.get("timezone", "Asia/Shanghai")))
        start = dt.time.fromisoformat(str(data.get("workday_start", "09:00")))
    except (ZoneInfoNotFoundError, ValueError) as e:
        raise ConfigurationError(f"{path}: timezone / workday_start: {e}") from None
    return WorkCalendar(_parse_years(path, data["years"]), tz=tz, workday_start=start)
