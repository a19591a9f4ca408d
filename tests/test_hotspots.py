"""Hotspot analytics on a hand-built town: a cluster that must come out hot, an empty area that must not, places
where one problem keeps coming back, village figures and trends computed by hand, and scopes."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import shapely
from sqlalchemy import Connection, Engine, text

from gis import db, hotspots
from gis.intake import TZ
from gis.workflow import Actor
from tests.conftest import create_database

START = dt.datetime(2026, 6, 1, tzinfo=TZ)
END = dt.datetime(2026, 7, 1, tzinfo=TZ)
NOW = dt.datetime(2026, 6, 30, 15, 0, tzinfo=TZ)
DAY = dt.timedelta(days=1)
HOT_CATEGORY = "street_vending"
TOWN = "330212101000"


@dataclass
class Town:
    engine: Engine
    hot_village: str        # where the cluster lies
    hot_point: tuple[float, float]
    quiet_village: str      # a village with no events at all in the window (in the east, another township)
    recurring_point: tuple[float, float]
    villages: dict[str, dict[str, Any]]


def add_event(conn: Connection, lon: float, lat: float, received: dt.datetime, *, category: str = "road_damage",
              platform: str = "enforcement", status: str = "reported", deadline: dt.datetime | None = None,
              closed_at: dt.datetime | None = None, overdue: bool = False, report_count: int = 1) -> int:
    """One case at a point, with the cell, village and township that hold it (as intake would record them)."""
    return int(conn.execute(text("""
        INSERT INTO events (source, category, grade, platform, status, level, located_by, geom, cell_code,
                            cell_name, village_code, township_code, district_code, occurred_at, received_at,
                            last_report_at, updated_at, deadline, closed_at, overdue, report_count)
        SELECT 'grid_worker', :cat, 1, :plat, :status, 'village', 'point', p.g, c.code, c.name, v.code, t.code,
               d.code, :t, :t, :t, :t, :deadline, :closed, :overdue, :rc
        FROM (SELECT ST_SetSRID(ST_MakePoint(:lon, :lat), 4490) AS g) p
        LEFT JOIN cells c ON ST_Intersects(c.geom, p.g) AND c.valid_to IS NULL
        LEFT JOIN jurisdictions v ON v.id = c.village_id LEFT JOIN jurisdictions t ON t.id = v.parent_id
        LEFT JOIN jurisdictions d ON d.id = t.parent_id
        ORDER BY c.code LIMIT 1 RETURNING id"""),
        {"cat": category, "plat": platform, "status": status, "lon": lon, "lat": lat, "t": received,
         "deadline": deadline or received + 3 * DAY, "closed": closed_at, "overdue": overdue,
         "rc": report_count}).scalar_one())


def inner_point(conn: Connection, code: str) -> tuple[float, float]:
    g = shapely.from_wkb(conn.execute(text("SELECT ST_AsBinary(geom) FROM jurisdictions WHERE code = :c"),
                                      {"c": code}).scalar_one())
    p = g.representative_point() if not g.centroid.within(g) else g.centroid
    return p.x, p.y


def offset(point: tuple[float, float], east_m: float, north_m: float) -> tuple[float, float]:
    lon, lat = point
    return lon + east_m / (111_320 * math.cos(math.radians(lat))), lat + north_m / 110_540


@pytest.fixture(scope="module")
def town(server_url: str, template_db: str) -> Iterator[Town]:
    url = create_database(server_url, "wangge_test_hotspots", template=template_db)
    engine = db.engine_for(url)
    with engine.begin() as conn:
        villages = {r.code: dict(r._mapping) for r in conn.execute(text(
            "SELECT code, name, area_m2, population, parent_id FROM jurisdictions WHERE level = 'village' "
            "ORDER BY code"))}
        town_villages = [c for c in villages if c.startswith(TOWN[:9])]
        other_villages = [c for c in villages if not c.startswith(TOWN[:9])]
        hot_village, quiet_village = town_villages[0], other_villages[-1]
        hot = inner_point(conn, hot_village)
        rng = np.random.default_rng(7)
        # Background: one case in each of the town's other villages, spread over the window.
        for k, code in enumerate(town_villages[1:]):
            add_event(conn, *inner_point(conn, code), START + (k % 28) * DAY + dt.timedelta(hours=9))
        # The cluster: 40 cases within 25 m of one point of the hot village.
        for k in range(40):
            p = offset(hot, *rng.uniform(-25, 25, 2))
            add_event(conn, *p, START + (k % 29) * DAY + dt.timedelta(hours=10), category="road_damage")
        # A recurring place: the same category five times within 15 m, days apart, 300 m from the cluster.
        rec = offset(hot, 300, 300)
        for k in range(5):
            add_event(conn, *offset(rec, *rng.uniform(-10, 10, 2)), START + (3 + 5 * k) * DAY,
                      category=HOT_CATEGORY, platform="enforcement", report_count=2 if k == 0 else 1)
        # Not recurring: two of a kind (fewer than three), and three different categories at one spot.
        other = offset(hot, -400, -300)
        for k in range(2):
            add_event(conn, *offset(other, k * 5, 0), START + (2 + k) * DAY, category="illegal_parking")
        for cat in ("noise", "garbage_dumping", "stray_dogs"):
            add_event(conn, *offset(other, 200, 0), START + 4 * DAY, category=cat, platform="governance")
    yield Town(engine, hot_village, hot, quiet_village, rec, villages)
    engine.dispose()


def test_hexagon_index_is_the_postgis_hexagon_that_holds_the_point(town: Town) -> None:
    """Our arithmetic (i, j) agrees with ST_Hexagon for points everywhere, negative coordinates included, and
    the six neighbours are the hexagons sharing an edge."""
    size = 250.0
    with town.engine.connect() as conn:
        rows = conn.execute(text(f"""
            WITH p AS MATERIALIZED (SELECT (random() - 0.5) * 2e6 AS x, (random() - 0.5) * 2e6 AS y
                                    FROM generate_series(1, 3000))
            SELECT hx.i, hx.j, ST_Intersects(ST_Hexagon(:size, hx.i::int, hx.j::int), ST_MakePoint(p.x, p.y)) AS ok
            FROM p {hotspots._hex_ij_sql("p.x", "p.y")}"""), {"size": size}).all()
        assert all(r.ok for r in rows)
        assert any(r.i < 0 and r.i % 2 for r in rows)  # odd negative columns were exercised
        for i, j in [(0, 0), (1, 0), (-1, -1), (7, 4), (-6, 3)]:
            for ni, nj in hotspots._hex_neighbours(i, j):
                shared = conn.execute(text("SELECT ST_Length(ST_Intersection(ST_Boundary(ST_Hexagon(:s, :i, :j)), "
                                           "ST_Boundary(ST_Hexagon(:s, :ni, :nj))))"),
                                      {"s": size, "i": i, "j": j, "ni": ni, "nj": nj}).scalar_one()
                assert shared == pytest.approx(size)
        # The WGS84 polygons drawn in Python are ST_Hexagon's, transformed.
        srid = hotspots._revision_and_srid(conn)[1]
        ours = hotspots._hex_polygons([(1201, 13220)], size, srid)[0]["coordinates"][0]
        theirs = conn.execute(text(f"SELECT ST_AsText(ST_Transform(ST_SetSRID(ST_Hexagon(:s, 1201, 13220), {srid}), "
                                   "4326))"), {"s": size}).scalar_one()
    ring = shapely.from_wkt(theirs).exterior.coords
    assert np.allclose(np.array(ours), np.array(ring), atol=2e-6)


def test_a_tight_cluster_is_a_hot_spot_and_an_empty_area_is_not(town: Town) -> None:
    gi = hotspots.getis_ord(town.engine, START, END, unit="hex", size_m=250)
    assert gi["p_kind"] == "permutation" and gi["unit"] == "hex"
    feats = gi["features"]
    assert sum(f["properties"]["count"] for f in feats) == gi["total"]
    hot = [f for f in feats if shapely.geometry.shape(f["geometry"]).contains(shapely.Point(*town.hot_point))]
    assert len(hot) == 1
    h = hot[0]["properties"]
    assert h["count"] >= 20 and h["class"] == "hot_99" and h["p"] <= 0.01 and h["gi_z"] > 3
    # The quiet village (another township, nothing happened there): no hot spot anywhere in it.
    with town.engine.connect() as conn:
        quiet = shapely.from_wkb(conn.execute(text("SELECT ST_AsBinary(geom) FROM jurisdictions WHERE code = :c"),
                                              {"c": town.quiet_village}).scalar_one())
    in_quiet = [f["properties"] for f in feats if shapely.geometry.shape(f["geometry"]).within(quiet)]
    assert in_quiet and all(p["count"] == 0 for p in in_quiet)
    assert all(p["class"] == "none" or p["class"].startswith("cold") for p in in_quiet)
    # Empty units are part of the study area (so cold spots can exist), and the classes add up.
    assert sum(gi["counts"].values()) == len(feats) > 1000
    assert gi["counts"]["hot_99"] >= 1
    # Seeded permutations: the same data give the same answer.
    again = hotspots.getis_ord(town.engine, START, END, unit="hex", size_m=250)
    assert [f["properties"]["p"] for f in again["features"]] == [f["properties"]["p"] for f in feats]


def test_hot_spot_by_grid_cell(town: Town) -> None:
    gi = hotspots.getis_ord(town.engine, START, END, unit="cell")
    feats = {f["properties"]["code"]: f["properties"] for f in gi["features"]}
    with town.engine.connect() as conn:
        live = conn.execute(text("SELECT count(*) FROM cells WHERE valid_to IS NULL")).scalar_one()
        hot_cell = conn.execute(text("SELECT code FROM cells WHERE valid_to IS NULL AND ST_Intersects(geom, "
                                     "ST_SetSRID(ST_MakePoint(:x, :y), 4490))"),
                                {"x": town.hot_point[0], "y": town.hot_point[1]}).scalar_one()
    assert len(feats) == live
    assert feats[hot_cell]["class"].startswith("hot") and feats[hot_cell]["count"] >= 20


def test_density_by_hexagon_and_by_cell(town: Town) -> None:
    with town.engine.connect() as conn:
        window = conn.execute(text("SELECT count(*) FROM events WHERE received_at >= :s AND received_at < :e"),
                              {"s": START, "e": END}).scalar_one()
    hexes = hotspots.hex_density(town.engine, START, END, size_m=250)
    assert hexes["total"] == window and all(f["properties"]["count"] > 0 for f in hexes["features"])
    top = hexes["features"][0]["properties"]
    assert top["count"] == hexes["max_count"] >= 20
    assert top["per_km2"] == pytest.approx(top["count"] / (1.5 * math.sqrt(3) * 0.25 ** 2), rel=1e-3)
    cells = hotspots.cell_density(town.engine, START, END)
    assert cells["total"] == window
    assert {f["properties"]["code"] for f in cells["features"] if f["properties"]["count"] == 0}
    governance = hotspots.hex_density(town.engine, START, END, platform="governance")
    assert governance["total"] == 3 and governance["max_count"] == 3
    only = hotspots.cell_density(town.engine, START, END, categories=[HOT_CATEGORY, "illegal_parking"])
    assert only["total"] == 7


def test_recurring_places(town: Town) -> None:
    places = hotspots.recurring_places(town.engine, START, END, radius_m=50, min_count=3)
    # The cluster and the five of a kind; not the pair, not the three different kinds at one spot.
    assert [(p["category"], p["count"]) for p in places] == [("road_damage", 40), (HOT_CATEGORY, 5)]
    p = places[1]
    assert p["count"] == 5 and p["reports"] == 6 and p["village_code"] == town.hot_village
    assert p["first"].startswith("2026-06-04") and p["last"].startswith("2026-06-24")
    assert p["radius_m"] < 20 and len(p["event_ids"]) == 5
    lon, lat = town.recurring_point
    assert abs(p["lon"] - lon) < 1e-4 and abs(p["lat"] - lat) < 1e-4
    big = hotspots.recurring_places(town.engine, START, END, radius_m=50, min_count=30)
    assert [(b["category"], b["count"]) for b in big] == [("road_damage", 40)]
    # Only four of the five fall in a window that ends on the 20th: still recurring; with min_count 5 not.
    early = dt.datetime(2026, 6, 20, tzinfo=TZ)
    assert hotspots.recurring_places(town.engine, START, early, min_count=4, categories=[HOT_CATEGORY])[0][
        "count"] == 4
    assert hotspots.recurring_places(town.engine, START, early, min_count=5, categories=[HOT_CATEGORY]) == []


@pytest.fixture
def stats_db(fresh_url: str) -> Iterator[tuple[Engine, str, str]]:
    """Two villages with hand-placed cases around the window [June 1, July 1) and the previous one (May 2–June 1)."""
    engine = db.engine_for(fresh_url)
    with engine.begin() as conn:
        a, b = [r.code for r in conn.execute(text(
            "SELECT code FROM jurisdictions WHERE level = 'village' AND code LIKE :t ORDER BY code LIMIT 2"),
            {"t": TOWN[:9] + "%"})]
        pa, pb = inner_point(conn, a), inner_point(conn, b)
        june = START + 2 * DAY
        # Village A: 4 cases in the window, 1 in the previous period, 1 older (counted nowhere but the backlog).
        add_event(conn, *pa, june, status="closed", closed_at=june + DAY)                      # on time
        add_event(conn, *pa, june, status="closed", closed_at=june + 5 * DAY)                  # late
        add_event(conn, *pa, june + DAY, status="in_progress", deadline=june + 40 * DAY)       # open, in progress
        add_event(conn, *pa, june + 2 * DAY, status="accepted", deadline=june + 3 * DAY)       # open, overdue
        add_event(conn, *pa, START - 3 * DAY, status="closed", closed_at=NOW - dt.timedelta(hours=2))  # previous
        add_event(conn, *pa, START - 60 * DAY, status="dispatched", overdue=True)             # old backlog
        # Village B: nothing in the window, 2 in the previous period (one a market case).
        add_event(conn, *pb, START - 10 * DAY, status="closed", closed_at=START - 9 * DAY)
        add_event(conn, *pb, START - 5 * DAY, status="closed", closed_at=START - 4 * DAY, platform="market",
                  category="street_vending")
        # After the window: counted nowhere.
        add_event(conn, *pa, END + DAY, status="reported")
    yield engine, a, b


def test_village_stats_and_trends_by_hand(stats_db: tuple[Engine, str, str]) -> None:
    engine, a, b = stats_db
    rows = {r["code"]: r for r in hotspots.village_stats(engine, START, END, now=NOW)}
    assert len(rows) == 71  # every village, with or without cases
    ra, rb = rows[a], rows[b]
    assert (ra["events"], ra["previous"], ra["trend"]) == (4, 1, 1)
    assert (rb["events"], rb["previous"], rb["trend"]) == (0, 2, -1)
    # Backlog now: the in-progress case, the overdue accepted one and the old dispatched one (overdue flag).
    assert (ra["open"], ra["in_progress"], ra["overdue"]) == (3, 2, 2)
    assert ra["closed_today"] == 1 and rb["closed_today"] == 0
    assert ra["on_time_rate"] == 0.5 and rb["on_time_rate"] is None
    assert ra["per_km2"] == pytest.approx(4 / ra["area_km2"], rel=1e-2)
    assert ra["per_1000"] == pytest.approx(4000 / ra["population"], abs=0.01)
    assert next(iter(rows)) == a  # most events first
    other = next(r for c, r in rows.items() if c not in (a, b))
    assert (other["events"], other["previous"], other["trend"], other["open"]) == (0, 0, 0, 0)
    # Filters: the market platform, a category.
    market = {r["code"]: r for r in hotspots.village_stats(engine, START, END, platform="market", now=NOW)}
    assert (market[b]["events"], market[b]["previous"], market[a]["events"]) == (0, 1, 0)
    cats = {r["code"]: r for r in hotspots.village_stats(engine, START, END, categories=["street_vending"], now=NOW)}
    assert cats[b]["previous"] == 1 and cats[a]["events"] == 0


def test_scope_limits_every_function(stats_db: tuple[Engine, str, str]) -> None:
    engine, a, b = stats_db
    village_leader = Actor("vl", "grid_leader", a)
    rows = hotspots.village_stats(engine, START, END, actor=village_leader, now=NOW)
    assert [r["code"] for r in rows] == [a] and rows[0]["events"] == 4
    other_leader = Actor("ol", "grid_leader", b)
    assert hotspots.hex_density(engine, START, END, actor=other_leader)["total"] == 0
    assert hotspots.hex_density(engine, START, END, actor=village_leader)["total"] == 4
    cells = hotspots.cell_density(engine, START, END, actor=village_leader)
    assert cells["total"] == 4 and all(f["properties"]["village_code"] == a for f in cells["features"])
    gi = hotspots.getis_ord(engine, START, END, actor=other_leader)
    assert gi["total"] == 0 and gi["features"] and gi["counts"]["none"] == len(gi["features"])
    township = Actor("t", "leader", TOWN)
    assert len(hotspots.village_stats(engine, START, END, actor=township)) == sum(
        1 for _ in hotspots.village_outlines(engine, township)["features"]) < 71


def test_bad_periods_are_refused(town: Town) -> None:
    with pytest.raises(ValueError, match="empty"):
        hotspots.village_stats(town.engine, END, START)
    with pytest.raises(ValueError, match="aware"):
        hotspots.hex_density(town.engine, dt.datetime(2026, 6, 1), dt.datetime(2026, 7, 1))
    with pytest.raises(ValueError, match="unit"):
        hotspots.getis_ord(town.engine, START, END, unit="county")  # type: ignore[arg-type]


def test_wall_figures_by_hand(stats_db: tuple[Engine, str, str]) -> None:
    """The wall's one-pass figures for today: the same village rows as village_stats over today, and the totals."""
    from dashboard import data

    engine, a, b = stats_db
    with engine.begin() as conn:
        # Village B: received and closed today, on time, a market case. A report nobody could place (no village,
        # no township: the triage queue), received today and still open.
        add_event(conn, *inner_point(conn, b), NOW - dt.timedelta(hours=3), status="closed",
                  closed_at=NOW - dt.timedelta(hours=1), platform="market", category="street_vending")
        add_event(conn, 0.0, 0.0, NOW - dt.timedelta(hours=2), status="needs_location")
    centre = Actor("c", "command_centre", TOWN)
    wall = data.wall_figures(engine, centre, now=NOW)
    day0 = dt.datetime(2026, 6, 30, tzinfo=TZ)
    expected = hotspots.village_stats(engine, day0, day0 + DAY, actor=centre, now=NOW)
    keys = ("code", "events", "per_km2", "per_1000", "open", "in_progress", "overdue", "closed_today")
    assert [{k: r[k] for k in keys} for r in wall["villages"]] == [{k: r[k] for k in keys} for r in expected]
    rows = {r["code"]: r for r in wall["villages"]}
    assert (rows[b]["events"], rows[b]["closed_today"]) == (1, 1)
    assert (rows[a]["events"], rows[a]["open"], rows[a]["in_progress"], rows[a]["overdue"],
            rows[a]["closed_today"]) == (0, 3, 2, 2, 1)
    # Totals: the triage case counts (received, open) though it is in no village; of today's two closures (A's
    # late one, B's on-time one) half were on time.
    assert wall["totals"] == {"received": 2, "closed": 2, "open": 4, "overdue": 2, "on_time_rate": 0.5}
    assert wall["platforms"] == {"market": 1, "enforcement": 1}
    # A township leader does not see the triage queue; a village leader sees their village only.
    leader = data.wall_figures(engine, Actor("t", "leader", TOWN), now=NOW)
    assert leader["totals"]["received"] == 1 and leader["platforms"] == {"market": 1}
    village = data.wall_figures(engine, Actor("vl", "grid_leader", a), now=NOW)
    assert [r["code"] for r in village["villages"]] == [a] and village["totals"]["open"] == 3


def test_fdr_adjusted_p_values_by_hand() -> None:
    # Sorted: 0.01, 0.03, 0.04, 0.2 → n·p/rank: 0.04, 0.06, 0.0533, 0.2 → the least from each rank on.
    q = hotspots.fdr_adjust(np.array([0.01, 0.04, 0.03, 0.2]))
    assert np.allclose(q, [0.04, 0.16 / 3, 0.16 / 3, 0.2])
    assert hotspots.fdr_adjust(np.array([0.5, 0.9])).tolist() == [0.9, 0.9]


def test_with_the_fdr_correction_the_cluster_stays_hot_and_chance_spots_go(town: Town) -> None:
    """Corrected for testing every hexagon at once: the tight cluster is still a hot spot, and fewer units are
    marked than their uncorrected p-values would mark (q is never below p)."""
    from scipy.stats import norm

    plain = hotspots.getis_ord(town.engine, START, END, unit="hex", size_m=250)
    fdr = hotspots.getis_ord(town.engine, START, END, unit="hex", size_m=250, correction="fdr")
    assert fdr["correction"] == "fdr" and plain["correction"] == "none"
    assert "q" not in plain["features"][0]["properties"]
    hot = next(f["properties"] for f in fdr["features"]
               if shapely.geometry.shape(f["geometry"]).contains(shapely.Point(*town.hot_point)))
    assert hot["class"].startswith("hot_") and hot["q"] <= 0.05
    props = [f["properties"] for f in fdr["features"]]
    raw = norm.sf(np.abs([pr["gi_z"] for pr in props]))
    assert all(pr["q"] >= r - 1e-4 for pr, r in zip(props, raw, strict=True))
    marked = sum(v for k, v in fdr["counts"].items() if k != "none")
    assert 1 <= marked < int((raw <= 0.05).sum())
    assert all((pr["class"] != "none") == (pr["q"] <= 0.05 and pr["gi_z"] != 0
                                           and not (pr["gi_z"] > 0 and pr["local"] < hotspots.MIN_LOCAL))
               for pr in props)


def test_a_single_report_in_a_quiet_period_makes_no_hot_spot(town: Town) -> None:
    """One report among a town of empty hexagons is 'significant' for its unit and every neighbour; a hot spot
    needs MIN_LOCAL events in its window, so a leader sees none — unless they ask for min_local=1."""
    with town.engine.connect() as conn:
        category, at = conn.execute(text("""SELECT category, received_at FROM events
                                            WHERE received_at >= :s AND received_at < :e AND geom IS NOT NULL
                                            GROUP BY 1, 2 HAVING count(*) = 1 ORDER BY 2 LIMIT 1"""),
                                    {"s": START, "e": END}).one()
    window = dict(unit="hex", size_m=250, categories=[category])
    lone = hotspots.getis_ord(town.engine, at, at + dt.timedelta(microseconds=1), **window)  # type: ignore[arg-type]
    assert lone["total"] == 1 and lone["min_local"] == hotspots.MIN_LOCAL
    assert not [k for k, v in lone["counts"].items() if k.startswith("hot") and v]
    assert max(f["properties"]["local"] for f in lone["features"]) == 1
    raw = hotspots.getis_ord(town.engine, at, at + dt.timedelta(microseconds=1), min_local=1,
                             **window)  # type: ignore[arg-type]
    hot = [f["properties"] for f in raw["features"] if f["properties"]["class"].startswith("hot")]
    assert 1 < len(hot) <= 7 and all(p["local"] == 1 for p in hot)  # the unit and its neighbours
    with pytest.raises(ValueError, match="min_local"):
        hotspots.getis_ord(town.engine, START, END, min_local=0)


def _hex_patch(n: int) -> tuple[list[tuple[int, int]], list[list[int]]]:
    keys = [(i, j) for i in range(n) for j in range(n)]
    index = {k: m for m, k in enumerate(keys)}
    return keys, [[index[x] for x in hotspots._hex_neighbours(i, j) if x in index] for i, j in keys]


def test_a_quiet_period_has_no_cold_spots_and_a_hole_in_a_busy_area_is_one() -> None:
    """Empty units among empty neighbours tie with every permutation draw: not a cold spot (they were all
    'cold 99 %' when ties counted as larger only — a quiet month showed the whole town blue)."""
    keys, neighbours = _hex_patch(20)
    index = {k: m for m, k in enumerate(keys)}

    def classes(y: np.ndarray) -> dict[str, int]:
        z, p = hotspots._gi_star(y, neighbours, 999, 12345)
        out: dict[str, int] = {}
        for a, b in zip(z, p, strict=True):
            c = hotspots._classify(float(a), float(b), 0.05)
            out[c] = out.get(c, 0) + 1
        return out

    one = np.zeros(len(keys))
    one[index[(10, 10)]] = 1
    assert not any(c.startswith("cold") for c in classes(one))
    busy = np.random.default_rng(1).poisson(5, len(keys)).astype(float)
    hole = [index[(i, j)] for i in range(3, 8) for j in range(3, 8)]
    busy[hole] = 0
    z, p = hotspots._gi_star(busy, neighbours, 999, 12345)
    centre = index[(5, 5)]
    assert hotspots._classify(float(z[centre]), float(p[centre]), 0.05) == "cold_99"
    assert sum(v for c, v in classes(busy).items() if c.startswith("cold")) >= 9
