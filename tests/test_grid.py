"""Grid versions on a real PostGIS: drafts, split/merge/snap, validation, preview, publish, versions and diff, the
GeoPackage round trip through the CLI, and who may do what.

Each test that publishes gets its own copy of the demo township. The village used is 330212101001 (four cells).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pytest
import shapely
from argon2 import PasswordHasher
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from api.app import create_app
from gis import accounts, db, grid, kpi
from gis.crs import transformer
from gis.intake import TZ, Report
from gis.workflow import Actor
from tests.loop_helpers import TOWN, World, build_world
from tests.test_cli import wangge

VILLAGE = "330212101001"
OTHER_TOWN_VILLAGE = "330212102001"
PLANNER = Actor("planner", "planner", TOWN)
EPSG = 4550


@pytest.fixture
def w(fresh_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("WANGGE_SUPERVISION_SECONDS", "0")
    monkeypatch.setattr(accounts, "_hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))
    with TestClient(create_app(fresh_url)) as client:
        yield build_world(client, fresh_url)


def engine_of(w: World) -> Engine:
    return db.engine_for(w.url)


def metric(g: Any) -> Any:
    tf = transformer(4490, EPSG)
    return shapely.transform(g, lambda xy: np.column_stack(tf.transform(xy[:, 0], xy[:, 1])))


def village_geom(engine: Engine, code: str = VILLAGE) -> Any:
    with engine.connect() as conn:
        return shapely.from_wkb(conn.execute(text("SELECT ST_AsBinary(geom) FROM jurisdictions WHERE code = :c"),
                                             {"c": code}).scalar_one())


def cells_of(draft: dict[str, Any]) -> dict[str, Any]:
    return {f["id"]: f for f in draft["cells"]["features"]}


def adjacent_pair(cells: dict[str, Any]) -> tuple[str, str]:
    """Two cells sharing an edge (longest shared border first)."""
    best: tuple[float, str, str] = (0.0, "", "")
    codes = sorted(cells)
    for i, a in enumerate(codes):
        for b in codes[i + 1:]:
            ga, gb = (metric(shapely.geometry.shape(cells[c]["geometry"])) for c in (a, b))
            shared = shapely.intersection(ga.buffer(0.5), gb).area
            if shared > best[0]:
                best = (shared, a, b)
    return best[1], best[2]


def cut_line(g: Any) -> dict[str, Any]:
    """A north–south line through the middle of a cell, reaching beyond it on both sides."""
    _, miny, _, maxy = g.bounds
    x = shapely.point_on_surface(g).x
    return {"type": "LineString", "coordinates": [[x, miny - 0.001], [x, maxy + 0.001]]}


def coverage(engine: Engine, draft_id: int) -> tuple[float, float]:
    """(gap, overlap) in m² of a draft's cells against its village."""
    d = grid.get_draft(engine, PLANNER, draft_id)
    geoms = [metric(shapely.geometry.shape(f["geometry"])) for f in d["cells"]["features"]]
    v = metric(village_geom(engine))
    union = shapely.union_all(geoms)
    gap = shapely.difference(v, union).area
    overlap = sum(g.area for g in geoms) - union.area
    return gap, overlap


def rules(result: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for p in result["problems"]:
        out.setdefault(p["rule"], []).append(p)
    return out


# -- split, merge, snap ---------------------------------------------------------------------------------------
def test_split_and_merge_keep_the_village_covered_with_no_gap_or_overlap(w: World) -> None:
    engine = engine_of(w)
    d = grid.create_draft(engine, PLANNER, VILLAGE)
    cells = cells_of(d)
    assert len(cells) == 4 and all(f["properties"]["worker_id"] for f in cells.values())
    big = max(cells, key=lambda c: metric(shapely.geometry.shape(cells[c]["geometry"])).area)
    before = cells[big]["properties"]
    codes = grid.split_cell(engine, PLANNER, d["id"], big, cut_line(shapely.geometry.shape(cells[big]["geometry"])))
    assert codes[0] == big and len(codes) == 2 and codes[1] == f"{VILLAGE}005"  # a fresh serial
    after = cells_of(grid.get_draft(engine, PLANNER, d["id"]))
    assert len(after) == 5
    assert after[big]["properties"]["worker_id"] == before["worker_id"]  # the larger piece keeps its worker
    assert after[codes[1]]["properties"]["worker_id"] is None
    if before["households"] is not None:
        assert after[big]["properties"]["households"] + after[codes[1]]["properties"]["households"] == \
            before["households"]
    gap, overlap = coverage(engine, d["id"])
    assert gap < 1.0 and overlap < 1.0
    problems = rules(grid.validate_draft(engine, PLANNER, d["id"]))
    assert set(problems) == {"no-worker"} and problems["no-worker"][0]["code"] == codes[1]

    a, b = adjacent_pair(after)
    kept = grid.merge_cells(engine, PLANNER, d["id"], [b, a])
    assert kept == min(a, b)
    merged = cells_of(grid.get_draft(engine, PLANNER, d["id"]))
    assert len(merged) == 4 and max(a, b) not in merged
    gap, overlap = coverage(engine, d["id"])
    assert gap < 1.0 and overlap < 1.0
    # Nothing live changed while editing.
    with engine.connect() as conn:
        assert conn.execute(text("""SELECT count(*) FROM cells c JOIN jurisdictions v ON v.id = c.village_id
                                    WHERE v.code = :v AND c.valid_to IS NULL"""), {"v": VILLAGE}).scalar_one() == 4


def test_merging_cells_that_share_no_edge_is_refused(w: World) -> None:
    engine = engine_of(w)
    d = grid.create_draft(engine, PLANNER, TOWN)
    r = w.client.post(f"/api/v1/grid/drafts/{d['id']}/merge", json={"codes": [f"{VILLAGE}001", "330212101002001"]},
                      headers=w.h("planner"))
    assert r.status_code == 422 and "village" in r.json()["detail"]
    far = [c for c in sorted(cells_of(d)) if c.startswith(VILLAGE)]
    cells = cells_of(d)
    pairs = [(a, b) for a in far for b in far if a < b and not shapely.intersects(
        metric(shapely.geometry.shape(cells[a]["geometry"])).buffer(0.5),
        metric(shapely.geometry.shape(cells[b]["geometry"])))]
    if pairs:
        r = w.client.post(f"/api/v1/grid/drafts/{d['id']}/merge", json={"codes": list(pairs[0])},
                          headers=w.h("planner"))
        assert r.status_code == 422 and "share no edge" in r.json()["detail"]


def test_an_edited_cell_snaps_to_its_neighbours_and_the_village_boundary(w: World) -> None:
    engine = engine_of(w)
    d = grid.create_draft(engine, PLANNER, VILLAGE)
    cells = cells_of(d)
    code = sorted(cells)[0]
    g = shapely.geometry.shape(cells[code]["geometry"])
    # Redraw it 3 m smaller all round: gaps of 3 m open against neighbours and the village edge.
    m = metric(g)
    shrunk = m.buffer(-3.0, join_style="mitre")
    back = transformer(EPSG, 4490)
    drawn = shapely.transform(shrunk, lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])))
    grid.put_cell(engine, PLANNER, d["id"], code, shapely.geometry.mapping(drawn))
    assert "gap" in rules(grid.validate_draft(engine, PLANNER, d["id"]))
    r = w.client.put(f"/api/v1/grid/drafts/{d['id']}/cells/{code}?snap_m=5",
                     json={"geometry": shapely.geometry.mapping(drawn), "properties": {}}, headers=w.h("planner"))
    assert r.status_code == 200, r.text
    gap, overlap = coverage(engine, d["id"])
    assert gap < 1.0 and overlap < 1.0
    # Drawn 4 m too large instead: clipped, so it overlaps nothing and stays inside the village.
    grown = shapely.transform(m.buffer(4.0, join_style="mitre"),
                              lambda xy: np.column_stack(back.transform(xy[:, 0], xy[:, 1])))
    r = w.client.put(f"/api/v1/grid/drafts/{d['id']}/cells/{code}?snap_m=5",
                     json={"geometry": shapely.geometry.mapping(grown), "properties": {}}, headers=w.h("planner"))
    assert r.status_code == 200
    problems = rules(grid.validate_draft(engine, PLANNER, d["id"]))
    assert not {"gap", "overlap", "outside-village"} & set(problems), problems


def test_a_map_gesture_is_stored_whole_or_not_at_all(w: World) -> None:
    """The planner's gestures change several cells at once (a cell drawn over its neighbours takes their area;
    several cells edited or deleted together): one refused cell leaves every cell as it was."""
    from dashboard import planner

    engine = engine_of(w)
    d = grid.create_draft(engine, PLANNER, VILLAGE)
    cells = cells_of(d)
    a, b = adjacent_pair(cells)
    before = grid.get_draft(engine, PLANNER, d["id"])
    # a redrawn over all of b (b would be removed), together with a cell drawn as a line: refused.
    over = shapely.union_all([shapely.geometry.shape(cells[c]["geometry"]) for c in (a, b)])
    bad = {"type": "LineString", "coordinates": [[121.0, 29.0], [121.1, 29.1]]}
    with pytest.raises(grid.GeometryRejected):
        planner.apply_gesture(engine, PLANNER, VILLAGE, d["id"], {"type": "draw:edited"},
                              [{"geometry": shapely.geometry.mapping(over), "properties": {"code": a}},
                               {"geometry": bad, "properties": {"code": sorted(set(cells) - {a, b})[0]}}], [])
    with pytest.raises(grid.NotFound):
        planner.apply_gesture(engine, PLANNER, VILLAGE, d["id"], {"type": "draw:deleted"},
                              [{"geometry": cells[b]["geometry"], "properties": {"code": b}},
                               {"geometry": cells[b]["geometry"], "properties": {"code": VILLAGE + "999"}}], [])
    after = grid.get_draft(engine, PLANNER, d["id"])
    assert cells_of(after) == cells_of(before) and after["edits"] == before["edits"]
    # The same edit alone goes through: b gives up its area to a and is removed.
    planner.apply_gesture(engine, PLANNER, VILLAGE, d["id"], {"type": "draw:edited"},
                          [{"geometry": shapely.geometry.mapping(over), "properties": {"code": a}}], [])
    assert b not in cells_of(grid.get_draft(engine, PLANNER, d["id"]))


# -- validation -----------------------------------------------------------------------------------------------
def test_validation_finds_and_locates_each_kind_of_problem(w: World) -> None:
    engine = engine_of(w)
    d = grid.create_draft(engine, PLANNER, VILLAGE)
    cells = cells_of(d)
    c1, c2, c3, c4 = sorted(cells)
    vg = village_geom(engine)
    g1 = shapely.geometry.shape(cells[c1]["geometry"])
    g2 = shapely.geometry.shape(cells[c2]["geometry"])
    h = w.h("planner")
    url = f"/api/v1/grid/drafts/{d['id']}/cells"
    # overlap: c1 grows 20 m over its neighbours (and out of the village where it borders it)
    grown = shapely.transform(metric(g1).buffer(20), lambda xy: np.column_stack(
        transformer(EPSG, 4490).transform(xy[:, 0], xy[:, 1])))
    assert w.client.put(f"{url}/{c1}", json={"geometry": shapely.geometry.mapping(grown), "properties": {}},
                        headers=h).status_code == 200
    # gap: c3 is deleted
    assert w.client.delete(f"{url}/{c3}", headers=h).status_code == 204
    # no worker: c4 loses its worker
    assert w.client.put(f"{url}/{c4}", json={"geometry": cells[c4]["geometry"], "properties": {"worker_id": None}},
                        headers=h).status_code == 200
    # self-intersecting: a bow-tie across c2's interior
    x0, y0, x1, y1 = g2.centroid.buffer(0.001).bounds
    bowtie = {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y1], [x1, y0], [x0, y1], [x0, y0]]]}
    r = w.client.put(f"{url}/{c2}", json={"geometry": bowtie, "properties": {}}, headers=h)
    assert r.status_code == 200, r.text  # stored as drawn, so that validation can locate it
    # sliver: a 10 m × 10 m cell in a corner of the village, a new code
    p = shapely.point_on_surface(vg)
    tiny = shapely.transform(metric(p).buffer(5, cap_style="square"), lambda xy: np.column_stack(
        transformer(EPSG, 4490).transform(xy[:, 0], xy[:, 1])))
    assert w.client.put(f"{url}/{VILLAGE}009", json={"geometry": shapely.geometry.mapping(tiny),
                                                      "properties": {"worker_id": "W0001"}},
                        headers=h).status_code == 200
    # code collision: a new cell takes a code a cell of another village already has
    foreign = "330212101002001"
    assert w.client.put(f"{url}/{foreign}", json={"geometry": shapely.geometry.mapping(tiny),
                                                  "properties": {"village_code": VILLAGE, "worker_id": "W0001"}},
                        headers=h).status_code == 200
    r = w.client.post(f"/api/v1/grid/drafts/{d['id']}/validate", headers=h)
    assert r.status_code == 200
    body = r.json()
    assert not body["valid"]
    found = rules(body)
    for rule in ("overlap", "gap", "outside-village", "no-worker", "invalid-geometry", "sliver", "code-collision"):
        assert rule in found, (rule, sorted(found))
        for problem in found[rule]:
            assert problem["lon"] is not None and problem["geometry"] is not None, problem
            assert 121 < problem["lon"] < 122 and 29 < problem["lat"] < 30
    assert {p["code"] for p in found["no-worker"]} == {c4}
    assert found["invalid-geometry"][0]["code"] == c2 and "Self-intersection" in found["invalid-geometry"][0]["message"]
    assert {p["code"] for p in found["code-collision"]} == {foreign}
    assert any(p["code"] == f"{VILLAGE}009" for p in found["sliver"])
    assert any(p["code"] == VILLAGE for p in found["gap"])
    # the gap is located where c3 was
    g3 = shapely.geometry.shape(cells[c3]["geometry"])
    assert any(shapely.geometry.shape(p["geometry"]).intersects(g3) for p in found["gap"])
    # Publishing refuses, naming the problems, and changes nothing.
    r = w.client.post(f"/api/v1/grid/drafts/{d['id']}/publish", json={"effective_date": str(dt.date.today())},
                      headers=h)
    assert r.status_code == 422 and r.json()["errors"], r.text
    assert len(w.client.get("/api/v1/grid/versions", headers=h).json()["versions"]) == 1


@pytest.mark.parametrize(("geometry", "phrase"), [
    ({"type": "Point", "coordinates": [121.5, 29.7]}, "expected a Polygon"),
    ({"type": "Polygon", "coordinates": [[[29.7, 121.5], [29.8, 121.5], [29.8, 121.6], [29.7, 121.5]]]},
     "out of range"),
    ({"type": "Polygon", "coordinates": [[[121.5, 29.7], [121.6, 29.7], [121.5, 29.7]]]}, "at least 4"),
    ({"type": "Polygon", "coordinates": "nonsense"}, "unreadable"),
])
def test_bad_geometry_is_refused_naming_the_problem(client: TestClient, demo_engine: Engine,
                                                    geometry: dict[str, Any], phrase: str) -> None:
    accounts_ok = accounts.actor_for(demo_engine, "grid_test_planner")
    if accounts_ok is None:
        accounts.create_user(demo_engine, "grid_test_planner", "correct-horse-42", "planner", TOWN)
    token = client.post("/api/v1/auth/token", data={"username": "grid_test_planner",
                                                    "password": "correct-horse-42"}).json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    d = client.post("/api/v1/grid/drafts", json={"scope": VILLAGE}, headers=h).json()
    r = client.put(f"/api/v1/grid/drafts/{d['id']}/cells/{VILLAGE}001", json={"geometry": geometry}, headers=h)
    assert r.status_code == 422 and phrase in r.json()["detail"] and f"{VILLAGE}001" in r.json()["detail"], r.text


# -- preview and publish --------------------------------------------------------------------------------------
def _report(w: World, at: dt.datetime, lon: float, lat: float, category: str = "sanitation") -> int:
    intake = w.client.app.state.intake  # type: ignore[attr-defined]
    return int(intake.ingest([Report(source="grid_worker", category=category, grade=2, lon=lon, lat=lat,
                                     occurred_at=at)], now=at)[0]["id"])


def _close(w: World, eid: int, at: dt.datetime, village: str, worker: str, cell: str) -> None:
    cases = w.client.app.state.cases  # type: ignore[attr-defined]
    leader = Actor("village_leader", "grid_leader", village)
    grid_worker = Actor("gw", "grid_worker", cell, worker_id=worker)
    steps = [(leader, "accept", {}), (leader, "dispatch", {"unit": "village_committee"}), (grid_worker, "start", {}),
             (grid_worker, "feedback", {"result": "done"}), (leader, "review", {}), (leader, "close", {})]
    for i, (actor, action, payload) in enumerate(steps):
        cases.act(eid, action, actor, payload, now=at + dt.timedelta(hours=i + 1))


def _point_in(cells: dict[str, Any], code: str) -> tuple[float, float]:
    p = shapely.point_on_surface(shapely.geometry.shape(cells[code]["geometry"]))
    return p.x, p.y


def test_publish_reassigns_open_cases_keeps_closed_ones_and_past_kpis(w: World) -> None:
    engine = engine_of(w)
    d = grid.create_draft(engine, PLANNER, VILLAGE)
    cells = cells_of(d)
    a, b = adjacent_pair(cells)  # a < b: merging keeps a, b disappears
    worker_a, worker_b = cells[a]["properties"]["worker_id"], cells[b]["properties"]["worker_id"]
    now = dt.datetime.now(TZ)
    last_month = now - dt.timedelta(days=40)
    closed = _report(w, last_month, *_point_in(cells, b))
    _close(w, closed, last_month, VILLAGE, worker_b, b)
    open_old = _report(w, now - dt.timedelta(days=3), *_point_in(cells, b), category="garbage_dumping")
    open_stays = _report(w, now - dt.timedelta(days=2), *_point_in(cells, a), category="noise")
    centre = Actor("centre", "command_centre", TOWN)
    period = (last_month - dt.timedelta(days=1), last_month + dt.timedelta(days=2))
    kpis_before = {by: kpi.kpis(engine, centre, *period, by) for by in ("village", "worker", "unit", "platform")}

    grid.merge_cells(engine, PLANNER, d["id"], [a, b])
    pv = w.client.get(f"/api/v1/grid/drafts/{d['id']}/preview", headers=w.h("planner"))
    assert pv.status_code == 200
    preview = pv.json()
    assert preview["summary"]["removed"] == 1 and preview["summary"]["changed"] == 1
    status = {c["code"]: c for c in preview["cells"]}
    assert status[b]["status"] == "removed" and status[a]["status"] == "changed"
    assert status[a]["draft"]["open_cases"] == status[a]["live"]["open_cases"] + status[b]["live"]["open_cases"]
    assert status[a]["draft"]["area_m2"] == pytest.approx(status[a]["live"]["area_m2"] + status[b]["live"]["area_m2"],
                                                          abs=2.0)
    assert [m["event_id"] for m in preview["moving_cases"]] == [open_old]
    assert preview["moving_cases"][0]["to_cell"] == a and preview["moving_cases"][0]["to_worker"] == worker_a
    workers = {x["worker_id"]: x for x in preview["workers"]}
    assert workers[worker_b]["draft"]["cells"] == 0 and workers[worker_a]["draft"]["open_cases"] == 2

    r = w.client.post(f"/api/v1/grid/drafts/{d['id']}/publish", json={"effective_date": str(now.date())},
                      headers=w.h("planner"))
    assert r.status_code == 200, r.text
    v = r.json()
    assert v["version"] == 1 and v["reassigned_cases"] == 1
    assert v["summary"]["removed"] == [b] and v["summary"]["changed"] == [a]

    moved = w.get("centre", open_old).json()
    assert moved["cell_code"] == a and moved["worker_id"] == worker_a
    entry = moved["timeline"][-1]
    assert entry["action"] == "reassign" and entry["actor"] == "planner"
    assert entry["data"] == {"grid_version": 1, "from_cell": b, "to_cell": a, "from_worker": worker_b,
                             "to_worker": worker_a}
    assert entry["from_status"] == entry["to_status"] == moved["status"]
    kept = w.get("centre", closed).json()
    assert kept["status"] == "closed" and kept["cell_code"] == b and kept["worker_id"] == worker_b
    assert all(e["action"] != "reassign" for e in kept["timeline"])
    assert all(e["action"] != "reassign" for e in w.get("centre", open_stays).json()["timeline"])
    # The grid worker now sees the case among theirs.
    kpis_after = {by: kpi.kpis(engine, centre, *period, by) for by in ("village", "worker", "unit", "platform")}
    assert kpis_after == kpis_before
    # History is kept: the old cell is still there, valid until the effective date.
    with engine.connect() as conn:
        old = conn.execute(text("SELECT valid_to, retired_version_id FROM cells WHERE code = :c"), {"c": b}).one()
    assert old.valid_to == now.date() and old.retired_version_id == 1
    # The draft is spent.
    again = w.client.post(f"/api/v1/grid/drafts/{d['id']}/publish", json={"effective_date": str(now.date())},
                          headers=w.h("planner"))
    assert again.status_code == 409 and "published" in again.json()["detail"]

    # Versions and diff.
    vs = w.client.get("/api/v1/grid/versions", headers=w.h("leader")).json()["versions"]
    assert [x["version"] for x in vs] == [0, 1] and vs[1]["villages"] == [VILLAGE]
    diff = w.client.get("/api/v1/grid/versions/0/diff/1", headers=w.h("leader")).json()
    assert [c["code"] for c in diff["removed"]] == [b] and diff["added"] == []
    assert [c["code"] for c in diff["changed"]] == [a]
    assert diff["changed"][0]["geometry_change_m2"] == pytest.approx(status[b]["live"]["area_m2"], rel=1e-3)
    assert diff["unchanged"] == 215 - 2
    assert w.client.get("/api/v1/grid/versions/0/diff/7", headers=w.h("leader")).status_code == 404

    # A new cell may not take the retired code b: events keep it.
    d2 = grid.create_draft(engine, PLANNER, VILLAGE)
    grid.split_cell(engine, PLANNER, d2["id"], a, cut_line(shapely.geometry.shape(cells_of(d2)[a]["geometry"])))
    fresh = sorted(cells_of(grid.get_draft(engine, PLANNER, d2["id"])))[-1]
    assert fresh > b and fresh == f"{VILLAGE}005"


def test_locate_uses_the_new_cells_from_the_effective_date_and_the_old_ones_before(w: World) -> None:
    engine = engine_of(w)
    d = grid.create_draft(engine, PLANNER, VILLAGE)
    cells = cells_of(d)
    a, b = adjacent_pair(cells)
    lon, lat = _point_in(cells, b)
    eff = dt.date.today() + dt.timedelta(days=10)

    def where(day: dt.date) -> str:
        r = w.client.get(f"/api/v1/locate?lon={lon}&lat={lat}&date={day}")
        return str(r.json()["cell"]["code"])

    assert where(eff) == b  # the locator has cached the old grid
    grid.merge_cells(engine, PLANNER, d["id"], [a, b])
    v = grid.publish(engine, PLANNER, d["id"], eff)
    assert v["reassigned_cases"] == 0 and v["reassigned_at"] is None  # not effective yet
    assert where(eff - dt.timedelta(days=1)) == b
    assert where(eff) == a
    assert where(dt.date(2020, 1, 1)) == b
    # A report that occurred before the effective date goes to the old cell, one after it to the new.
    before = w.post("worker", {"source": "grid_worker", "category": "sanitation", "lon": lon, "lat": lat,
                               "occurred_at": dt.datetime.now(TZ).isoformat()})
    assert before.json()["cell"]["code"] == b
    after = grid.reassign_due(engine, dt.datetime.combine(eff, dt.time(8), TZ))
    assert after == 1  # on the effective date the open case follows the grid
    with engine.connect() as conn:
        assert conn.execute(text("SELECT cell_code FROM events WHERE id = :i"),
                            {"i": before.json()["id"]}).scalar_one() == a
    assert grid.reassign_due(engine, dt.datetime.combine(eff, dt.time(9), TZ)) == 0  # once only


def test_two_planners_publishing_at_once_the_second_gets_409(w: World) -> None:
    engine = engine_of(w)
    d1 = grid.create_draft(engine, PLANNER, VILLAGE)
    d2 = grid.create_draft(engine, Actor("admin", "admin", "330212000000"), VILLAGE)
    a, b = adjacent_pair(cells_of(d1))
    grid.merge_cells(engine, PLANNER, d1["id"], [a, b])
    c1 = cells_of(d2)
    first = sorted(c1)[0]
    grid.split_cell(engine, PLANNER, d2["id"], first, cut_line(shapely.geometry.shape(c1[first]["geometry"])))
    grid.put_cell(engine, PLANNER, d2["id"], f"{VILLAGE}005", cells_of(grid.get_draft(engine, PLANNER, d2["id"]))[
        f"{VILLAGE}005"]["geometry"], {"worker_id": "W0001"})
    barrier = threading.Barrier(2)
    results: dict[str, Any] = {}

    def go(who: str, draft_id: int) -> None:
        barrier.wait()
        results[who] = w.client.post(f"/api/v1/grid/drafts/{draft_id}/publish",
                                     json={"effective_date": str(dt.date.today())}, headers=w.h(who))

    threads = [threading.Thread(target=go, args=("planner", d1["id"])),
               threading.Thread(target=go, args=("admin", d2["id"]))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results.values())
    assert codes == [200, 409], {k: r.text for k, r in results.items()}
    loser = next(r for r in results.values() if r.status_code == 409)
    assert "start a new draft" in loser.json()["detail"] and "version 1" in loser.json()["detail"]
    assert len(grid.list_versions(engine)) == 2
    # Drafts of other villages are not stale: publishes of different villages do not conflict.
    d3 = grid.create_draft(engine, PLANNER, "330212101002")
    d4 = grid.create_draft(engine, PLANNER, "330212101003")
    for draft in (d3, d4):
        grid.merge_cells(engine, PLANNER, draft["id"], list(adjacent_pair(cells_of(draft))))
    assert grid.publish(engine, PLANNER, d3["id"], dt.date.today())["version"] == 2
    assert grid.publish(engine, PLANNER, d4["id"], dt.date.today())["version"] == 3


# -- files and roles ------------------------------------------------------------------------------------------
def test_a_village_round_trips_through_geopackage_into_a_draft(fresh_url: str, tmp_path: Path) -> None:
    env = {"WANGGE_DATABASE_URL": fresh_url}
    out = tmp_path / "cells.gpkg"
    r = wangge("export", "--village", VILLAGE, "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    df = gpd.read_file(out, layer="cells")
    assert len(df) == 4 and {"code", "worker_id", "households"} <= set(df.columns)
    r = wangge("load", "--draft", str(out), "--village", VILLAGE, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no problems" in r.stdout and "0 added, 0 removed, 0 changed, 4 unchanged" in r.stdout
    # Edited in QGIS: two neighbouring cells dissolved into one, the other code dropped.
    cells = {row.code: {"geometry": shapely.geometry.mapping(row.geometry)} for row in df.itertuples()}
    a, b = adjacent_pair(cells)
    merged = shapely.union_all([df.set_index("code").geometry[a], df.set_index("code").geometry[b]])
    df2 = df[df.code != b].copy()
    df2.loc[df2.code == a, "geometry"] = merged
    df2.to_file(tmp_path / "edited.gpkg", layer="cells", driver="GPKG")
    r = wangge("load", "--draft", str(tmp_path / "edited.gpkg"), "--village", VILLAGE, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 added, 1 removed, 1 changed, 2 unchanged" in r.stdout
    # Problems are printed (and the exit code says so); a broken file is one line.
    df3 = df.copy()
    df3.loc[0, "worker_id"] = None
    df3.to_file(tmp_path / "noworker.gpkg", layer="cells", driver="GPKG")
    r = wangge("load", "--draft", str(tmp_path / "noworker.gpkg"), "--village", VILLAGE, env=env)
    assert r.returncode == 1 and "no-worker" in r.stdout and df.code[0] in r.stdout
    (tmp_path / "broken.gpkg").write_bytes(b"not a geopackage")
    r = wangge("load", "--draft", str(tmp_path / "broken.gpkg"), "--village", VILLAGE, env=env)
    errors = [ln for ln in r.stderr.strip().splitlines() if ln.startswith("error:")]
    assert r.returncode == 1 and len(errors) == 1 and "broken.gpkg" in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_only_planners_and_admins_write_within_their_scope(w: World) -> None:
    body = {"scope": VILLAGE}
    for who in ("centre", "leader", "worker", "village_leader", "market"):
        r = w.client.post("/api/v1/grid/drafts", json=body, headers=w.h(who))
        assert r.status_code == 403, (who, r.text)
    assert w.client.post("/api/v1/grid/drafts", json=body).status_code == 401
    r = w.client.post("/api/v1/grid/drafts", json={"scope": OTHER_TOWN_VILLAGE}, headers=w.h("planner"))
    assert r.status_code == 403 and "outside your scope" in r.json()["detail"]
    assert w.client.post("/api/v1/grid/drafts", json={"scope": OTHER_TOWN_VILLAGE},
                         headers=w.h("admin")).status_code == 201
    d = w.client.post("/api/v1/grid/drafts", json=body, headers=w.h("planner"))
    assert d.status_code == 201
    draft = d.json()
    url = f"/api/v1/grid/drafts/{draft['id']}"
    code = sorted(cells_of(draft))[0]
    cell = {"geometry": cells_of(draft)[code]["geometry"], "properties": {"worker_id": "W0002"}}
    for who in ("centre", "worker"):
        assert w.client.put(f"{url}/cells/{code}", json=cell, headers=w.h(who)).status_code == 403
        assert w.client.post(f"{url}/publish", json={"effective_date": "2030-01-01"},
                             headers=w.h(who)).status_code == 403
    assert w.client.get(url, headers=w.h("leader")).status_code == 200
    assert w.client.get(url, headers=w.h("worker")).status_code == 403
    assert w.client.get("/api/v1/grid/versions", headers=w.h("worker")).status_code == 200
    r = w.client.put(f"{url}/cells/{code}", json=cell, headers=w.h("planner"))
    assert r.status_code == 200 and r.json()["properties"]["worker_id"] == "W0002"
    with db.engine_for(w.url).connect() as conn:
        log = conn.execute(text("SELECT action FROM grid_log WHERE draft_id = :d ORDER BY id"),
                           {"d": draft["id"]}).scalars().all()
    assert log == ["create_draft", "put_cell"]
    listed = w.client.get("/api/v1/grid/drafts", headers=w.h("planner")).json()["drafts"]
    assert draft["id"] in [x["id"] for x in listed]
    assert OTHER_TOWN_VILLAGE not in [x["scope_code"] for x in listed]  # the admin's draft elsewhere: not shown
    assert w.client.delete(url, headers=w.h("planner")).status_code == 204
    r = w.client.put(f"{url}/cells/{code}", json=cell, headers=w.h("planner"))
    assert r.status_code == 409 and "discarded" in r.json()["detail"]
