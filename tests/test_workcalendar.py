"""The Chinese working-day calendar: shipped data, working days and deadlines."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gis.errors import ConfigurationError
from gis.taxonomy import DEFAULT_DIR, TimeLimit
from gis.workcalendar import WorkCalendar, load_calendar

SH = ZoneInfo("Asia/Shanghai")
CAL = load_calendar()
D = dt.date


def at(y: int, m: int, d: int, hh: int = 0, mm: int = 0, tz: dt.tzinfo = SH) -> dt.datetime:
    return dt.datetime(y, m, d, hh, mm, tzinfo=tz)


def days(start: D, end: D) -> list[D]:
    return [start + dt.timedelta(days=i) for i in range((end - start).days + 1)]


def test_covers_published_years_only() -> None:
    assert all(CAL.covers(y) for y in (2024, 2025, 2026))
    assert not CAL.covers(2027)
    assert CAL.covers(2027, provisional=True)
    assert not CAL.covers(2023) and not CAL.covers(2028, provisional=True)


def test_spring_festival_and_national_day_2025_are_off() -> None:
    for day in days(D(2025, 1, 28), D(2025, 2, 4)) + days(D(2025, 10, 1), D(2025, 10, 8)):
        assert not CAL.is_working_day(day), day
    assert CAL.is_working_day(D(2025, 1, 27)) and CAL.is_working_day(D(2025, 2, 5))
    assert CAL.is_working_day(D(2025, 9, 30)) and CAL.is_working_day(D(2025, 10, 9))
    assert not CAL.is_working_day(D(2025, 5, 1)) and not CAL.is_working_day(D(2025, 5, 5))  # Labour Day, 5 days


@pytest.mark.parametrize("day", [D(2025, 1, 26), D(2025, 2, 8), D(2025, 4, 27), D(2025, 9, 28), D(2025, 10, 11)])
def test_adjusted_weekend_days_of_2025_are_worked(day: D) -> None:
    assert day.weekday() >= 5
    assert CAL.is_working_day(day)


def test_plain_weeks_and_uncovered_years() -> None:
    assert CAL.is_working_day(D(2025, 3, 12)) and not CAL.is_working_day(D(2025, 3, 15))
    assert CAL.is_working_day(D(2030, 1, 1))  # a holiday, but 2030 is not in the file: plain weekday
    assert not CAL.is_working_day(D(2030, 1, 5))
    assert not CAL.is_working_day(D(2027, 1, 1)) and not CAL.is_working_day(D(2027, 10, 1))  # provisional 2027
    # A datetime is judged by its date in Shanghai: 30 Sep 15:00 UTC is 23:00 there, 17:00 UTC is already 1 Oct.
    assert CAL.is_working_day(at(2025, 9, 30, 15, tz=dt.UTC))
    assert not CAL.is_working_day(at(2025, 9, 30, 17, tz=dt.UTC))


@pytest.mark.parametrize(("year", "statutory"), [(2024, 11), (2025, 13), (2026, 13)])
def test_published_years_add_up_to_the_statutory_days(year: int, statutory: int) -> None:
    """Weekdays off minus adjusted working days = statutory holidays (11 until 2024, 13 from 2025)."""
    off = [d for d in days(D(year, 1, 1), D(year, 12, 31)) if d.weekday() < 5 and not CAL.is_working_day(d)]
    worked = [d for d in days(D(year, 1, 1), D(year, 12, 31)) if d.weekday() >= 5 and CAL.is_working_day(d)]
    assert len(off) - len(worked) == statutory


def test_working_day_deadlines_around_national_day_2025() -> None:
    two = TimeLimit(amount=2, unit="working_days")
    # Friday 26 Sep: Sunday 28 Sep is an adjusted working day, so two working days end on Monday 29 Sep.
    assert CAL.deadline(at(2025, 9, 26, 17), two) == at(2025, 9, 29, 17)
    # From the last working day before the holiday (Tuesday 30 Sep) the deadline lands after it.
    assert CAL.deadline(at(2025, 9, 30, 17), two) == at(2025, 10, 10, 17)
    assert CAL.deadline(at(2025, 9, 26, 17), TimeLimit(amount=3, unit="working_days")) == at(2025, 9, 30, 17)
    assert CAL.deadline(at(2025, 9, 26, 17), TimeLimit(amount=4, unit="working_days")) == at(2025, 10, 9, 17)
    # Received on a holiday: counted from the next working day at 09:00.
    assert CAL.deadline(at(2025, 10, 3, 15), two) == at(2025, 10, 11, 9)  # 9 Oct, then Saturday 11 Oct (worked)


def test_start_outside_working_time() -> None:
    one = TimeLimit(amount=1, unit="working_days")
    assert CAL.deadline(at(2025, 3, 15, 14), one) == at(2025, 3, 18, 9)  # Saturday → Monday 09:00 → Tuesday
    assert CAL.deadline(at(2025, 3, 17, 7), one) == at(2025, 3, 18, 9)  # Monday 07:00 → 09:00
    assert CAL.deadline(at(2025, 3, 17, 22), one) == at(2025, 3, 18, 22)  # evening: same clock time
    assert CAL.add_working_days(at(2025, 3, 15, 14), 0) == at(2025, 3, 17, 9)
    with pytest.raises(ValueError):
        CAL.add_working_days(at(2025, 3, 17, 10), -1)


def test_hours_are_wall_clock_and_results_are_in_shanghai() -> None:
    day = TimeLimit(amount=24, unit="hours")
    assert CAL.deadline(at(2025, 9, 30, 10), day) == at(2025, 10, 1, 10)  # into the holiday
    assert CAL.deadline(at(2025, 3, 15, 14), day) == at(2025, 3, 16, 14)  # over the weekend
    result = CAL.deadline(at(2025, 9, 30, 2, tz=dt.UTC), TimeLimit(amount=1, unit="hours"))
    assert result.utcoffset() == dt.timedelta(hours=8)
    assert result == at(2025, 9, 30, 11)
    working = CAL.deadline(at(2025, 9, 26, 9, tz=dt.UTC), TimeLimit(amount=2, unit="working_days"))
    assert working.tzinfo is not None and working.utcoffset() == dt.timedelta(hours=8)
    assert working == at(2025, 9, 29, 17)


def test_naive_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        CAL.deadline(dt.datetime(2025, 3, 17, 10), TimeLimit(amount=1, unit="working_days"))


moments = st.datetimes(min_value=dt.datetime(2023, 12, 1), max_value=dt.datetime(2028, 1, 31),
                       timezones=st.sampled_from([SH, dt.UTC, ZoneInfo("Europe/Berlin")]))
limits = st.builds(TimeLimit, amount=st.integers(1, 30), unit=st.sampled_from(["hours", "working_days"]))


@given(moments, moments, limits)
def test_deadline_is_monotonic_in_the_start(a: dt.datetime, b: dt.datetime, limit: TimeLimit) -> None:
    a, b = min(a, b), max(a, b)
    assert CAL.deadline(a, limit) <= CAL.deadline(b, limit)
    assert CAL.deadline(a, limit) > a


@given(moments, st.integers(0, 40))
def test_nth_working_day_is_a_working_day(start: dt.datetime, n: int) -> None:
    end = CAL.add_working_days(start, n)
    assert CAL.is_working_day(end.date())
    assert end.tzinfo == SH
    assert end >= start
    begin = CAL.working_start(start)
    assert CAL.is_working_day(begin.date()) and begin >= start
    assert end.time() == begin.time()
    between = [d for d in days(begin.date(), end.date())[1:] if CAL.is_working_day(d)]
    assert len(between) == n


# --- broken calendar files ---------------------------------------------------------------------------------------

def _broken(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "calendar.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(("text", "needle"), [
    ("years:\n  2025:\n    holidays:\n      - {name_zh: 春节, name_en: SF, start: 2025-02-04, end: 2025-01-28}\n",
     "end 2025-01-28 is before start"),
    ("years:\n  2025:\n    holidays:\n      - {name_zh: 春节, name_en: SF, start: 2025-01-28, end: 2025-02-04,"
     " adjusted_working_days: [2025-01-27]}\n", "2025-01-27 is a weekday"),
    ("years:\n  2025:\n    holidays:\n      - {name_zh: 元旦, name_en: NY, start: 2025-01-01, end: 2025-01-01}\n"
     "      - {name_zh: 又, name_en: X, start: 2025-01-01, end: 2025-01-02}\n", "2025-01-01 appears twice"),
    ("years:\n  2025:\n    holidays:\n      - {name_zh: 元旦, name_en: NY, start: 2026-01-01, end: 2026-01-01}\n",
     "in another year"),
    ("years:\n  2025:\n    holidays:\n      - {name_zh: 元旦, name_en: NY, start: 2025-13-01, end: 2025-01-01}\n",
     "not valid YAML: month must be in 1..12"),
    ("years:\n  twenty:\n    holidays: []\n", "not a year"),
    ("years:\n  2027:\n    provisional: true\n    holidays:\n      - {name_zh: 元旦, name_en: NY, start: 2027-01-01,"
     " end: 2027-01-01, adjusted_working_days: [2027-01-02]}\n", "provisional year with adjusted working days"),
    ("timezone: Mars/Olympus\nyears:\n  2025:\n    holidays: []\n", "timezone"),
    ("holidays: []\n", "top-level 'years' key"),
])
def test_broken_calendar_is_rejected(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(ConfigurationError) as err:
        load_calendar(_broken(tmp_path, text))
    assert "calendar.yaml" in str(err.value) and needle in str(err.value), str(err.value)
    assert "\n" not in str(err.value)


def test_calendar_folder_follows_the_taxonomy_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "taxonomy"
    shutil.copytree(DEFAULT_DIR, folder)
    data = yaml.safe_load((folder / "calendar.yaml").read_text(encoding="utf-8"))
    data["years"] = {2025: data["years"][2025]}
    (folder / "calendar.yaml").write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    monkeypatch.setenv("WANGGE_TAXONOMY_DIR", str(folder))
    cal = load_calendar()
    assert isinstance(cal, WorkCalendar)
    assert cal.covers(2025) and not cal.covers(2024)
    assert cal.is_working_day(D(2024, 10, 1))  # 2024 no longer known: a plain Tuesday
