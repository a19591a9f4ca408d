"""The traffic simulator against the real app served by uvicorn on a loopback port, on its own database."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest
import uvicorn
from sqlalchemy import text

from api.app import create_app
from api.simulate import SimStats, SimulationError, check_url, parse_duration, parse_rate, run
from gis import accounts, db
from gis.errors import WanggeError
from gis.workflow import replay
from tests.conftest import create_database

PASSWORD = "simulated-town-42"


@dataclass
class Served:
    url: str  # database
    base: str  # http://127.0.0.1:port


@contextmanager
def _served(server_url: str, template_db: str, name: str) -> Iterator[Served]:
    """A private copy of the demo database with an admin account, served by uvicorn on a free loopback port."""
    url = create_database(server_url, name, template=template_db)
    accounts.create_user(db.engine_for(url), "admin", PASSWORD, "admin", "330212000000")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(url), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Served(url, f"http://127.0.0.1:{port}")
    finally:
        server.should_exit = True
        thread.join(10)
        db.engine_for(url).dispose()


@pytest.fixture(scope="module")
def served(server_url: str, template_db: str) -> Iterator[Served]:
    with _served(server_url, template_db, "wangge_test_simulate") as s:
        yield s


@pytest.fixture(scope="module")
def stats(served: Served) -> SimStats:
    seen: list[float] = []
    started = time.monotonic()
    result = run(served.base, "admin", PASSWORD, "20/s", "5s", seed=7, progress=lambda s, done: seen.append(done))
    assert seen and seen[-1] == 1.0
    print(f"{time.monotonic() - started:.1f} s", result)
    return result


def _rows(served: Served, sql: str) -> list[Any]:
    with db.engine_for(served.url).connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql)).all()]


def test_parse_rate_and_duration() -> None:
    assert parse_rate("5/s") == 5 and parse_rate("300/min") == 5 and parse_rate("2") == 2
    assert parse_rate("7200/h") == 2 and parse_rate(" 0.5 / s ") == 0.5
    assert parse_duration("90s") == 90 and parse_duration("10m") == 600 and parse_duration("2h") == 7200
    assert parse_duration("1h30m") == 5400 and parse_duration("45") == 45
    for bad in ("fast", "0/s", "-3/s", "5/week"):
        with pytest.raises(SimulationError, match="rate"):
            parse_rate(bad)
    for bad in ("soon", "0s", "10 parsecs"):
        with pytest.raises(SimulationError, match="duration"):
            parse_duration(bad)


def test_refuses_non_loopback_and_unreachable_services() -> None:
    for url in ("http://10.0.0.8:8000", "https://wangge.example.gov.cn", "http://192.168.1.2"):
        with pytest.raises(WanggeError, match="loopback"):
            run(url, "admin", PASSWORD, "1/s", "1s")
    assert check_url("http://localhost:8000/") == "http://localhost:8000"
    assert check_url("http://[::1]:8000") and check_url("http://127.0.0.2")
    assert check_url("https://wangge.example.gov.cn", allow_remote=True)
    with pytest.raises(WanggeError, match="not an http"):
        run("ftp://127.0.0.1/", "admin", PASSWORD, "1/s", "1s")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    with pytest.raises(WanggeError, match="not reachable"):
        run(f"http://127.0.0.1:{closed_port}", "admin", PASSWORD, "1/s", "1s")


def test_wrong_password_is_one_clear_error(served: Served) -> None:
    with pytest.raises(WanggeError, match="login as 'admin' refused"):
        run(served.base, "admin", "not-the-password", "1/s", "1s")


def test_traffic_from_every_channel_with_merges(served: Served, stats: SimStats) -> None:
    assert stats.posted == 100 and sum(stats.by_source.values()) == 100
    sources = dict(_rows(served, "SELECT source, count(*) FROM events GROUP BY source"))
    assert set(sources) == {"grid_worker", "sensor", "camera", "hotline", "assigned", "citizen"}, sources
    assert _rows(served, "SELECT max(report_count) FROM events")[0][0] > 1
    assert stats.merged > 0 and stats.created == _rows(served, "SELECT count(*) FROM events")[0][0]
    # An alarm storm: one device, many reports, one case.
    assert _rows(served, """SELECT count(*) FROM event_reports r JOIN events e ON e.id = r.event_id
                            WHERE r.device_id IS NOT NULL AND r.event_id IN (SELECT event_id FROM event_reports
                            GROUP BY event_id HAVING count(*) > 2)""")[0][0] > 0
    assert stats.needs_location > 0
    # Hot villages get much more than their share.
    per_village = [n for (n,) in _rows(served, """SELECT count(*) FROM events WHERE village_code IS NOT NULL
                                                 GROUP BY village_code ORDER BY 1 DESC""")]
    assert per_village[0] >= 4 * per_village[len(per_village) // 2]


def test_the_papers_three_cases(served: Served, stats: SimStats) -> None:
    ids = stats.paper_cases
    assert set(ids) == {"shop_fire_hazard", "fire_passage", "fishing_nets"}
    (shop,) = _rows(served, "SELECT source, category, platform, description FROM events "
                            f"WHERE id = {ids['shop_fire_hazard']}")
    assert shop[:3] == ("sensor", "fire_hazard_shop", "market") and "横街" in str(shop[3])
    (passage,) = _rows(served, f"SELECT source, platform, address FROM events WHERE id = {ids['fire_passage']}")
    assert passage[:2] == ("hotline", "enforcement") and "文昌街" in str(passage[2])
    (nets,) = _rows(served, f"SELECT source, category, platform FROM events WHERE id = {ids['fishing_nets']}")
    assert nets == ("grid_worker", "illegal_fishing", "enforcement")
    dispatched = dict(_rows(served, f"""SELECT event_id, data FROM event_log WHERE action = 'dispatch'
                                        AND event_id IN ({', '.join(str(i) for i in ids.values())})"""))
    assert dispatched[ids["shop_fire_hazard"]]["unit"] == "market_supervision_office"
    assert dispatched[ids["fire_passage"]] == {
        "unit": "fire_station", "assisting": ["governance_office", "police_station", "housing_office"]}
    assert dispatched[ids["fishing_nets"]]["unit"] == "env_enforcement_squad"


def test_handlers_move_cases_around_the_loop(served: Served, stats: SimStats) -> None:
    status = dict(_rows(served, "SELECT status, count(*) FROM events GROUP BY status"))
    assert status.get("closed", 0) > 0 and status.get("closed") == stats.closed
    assert sum(n for s, n in status.items() if s not in ("closed", "rejected")) > 0
    assert stats.escalated > 0 and _rows(served, "SELECT count(*) FROM events WHERE escalations > 0")[0][0]
    assert stats.returned > 0 and stats.reworked > 0 and stats.rejected > 0
    assert stats.actions > stats.created
    assert stats.errors == 0, stats.error_samples
    rows = _rows(served, """SELECT e.id, e.status, json_agg(json_build_object('id', l.id, 'from_status',
                                   l.from_status, 'to_status', l.to_status) ORDER BY l.id)
                            FROM events e JOIN event_log l ON l.event_id = e.id GROUP BY e.id""")
    assert len(rows) == stats.created
    for event_id, current, log in rows:
        assert log[0]["from_status"] is None, event_id
        assert replay(log[1:], log[0]["to_status"]) == current, event_id


def test_the_same_seed_makes_the_same_town_and_stop_ends_a_run(server_url: str, template_db: str) -> None:
    runs = []
    for name in ("wangge_test_simulate_a", "wangge_test_simulate_b"):
        with _served(server_url, template_db, name) as s:
            runs.append(run(s.base, "admin", PASSWORD, "10/s", "1s", seed=3))
    assert runs[0].posted == runs[1].posted == 10
    assert runs[0] == runs[1]
    # A stop event (Ctrl-C in the CLI) ends a ten-minute run early with the totals so far.
    stop = threading.Event()
    with _served(server_url, template_db, "wangge_test_simulate_a") as s:
        started = time.monotonic()
        cut = run(s.base, "admin", PASSWORD, "2/s", "10m", seed=11, stop=stop,
                  progress=lambda done, _: stop.set() if done.posted >= 3 else None)
    assert cut.posted == 3 and time.monotonic() - started < 30
