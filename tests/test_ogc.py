"""OGC API – Features at /ogc, served by uvicorn on a loopback port over a private copy of the demo database, read
by plain HTTP and by GDAL's own OAPIF client (ogrinfo, ogr2ogr) as a QGIS user's machine would."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from api.app import create_app
from api.ogc import COLLECTIONS, CRS84, EPSG4490, _filters, _sql
from gis import db
from tests.conftest import create_database

SECRET_NAME = "王秘密"
SECRET_PHONE = "13912345678"
SECRET_TEXT = "住在幸福路8号的张三说"
REDRAWN = dt.date(2025, 6, 1)  # the day a newer version of one cell takes over
EVENTS = 25


@dataclass
class Served:
    url: str  # database
    base: str  # http://127.0.0.1:port/ogc
    cell: str  # the cell that has an older and a newer version
    old_worker: str
    new_worker: str

    def rows(self, sql: str, **params: Any) -> list[Any]:
        with db.engine_for(self.url).connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params).all()]

    def get(self, path: str, **params: Any) -> httpx.Response:
        return httpx.get(self.base + path, params=params, timeout=30)


def _prepare(url: str) -> tuple[str, str, str]:
    """A redrawn cell (an older and a newer version, each with its own grid worker) and cases carrying personal
    data, written by SQL into the private copy."""
    with db.engine_for(url).begin() as conn:
        cell_id, code, old_worker = conn.execute(text("""
            SELECT c.id, c.code, a.worker_id FROM cells c
            JOIN worker_assignments a ON a.cell_id = c.id AND a.role = 'grid_worker'
            ORDER BY c.code LIMIT 1""")).one()
        new_worker = conn.execute(text("SELECT id FROM workers WHERE id <> :w ORDER BY id DESC LIMIT 1"),
                                  {"w": old_worker}).scalar_one()
        conn.execute(text("UPDATE cells SET valid_to = :d WHERE id = :id"), {"d": REDRAWN, "id": cell_id})
        conn.execute(text("UPDATE worker_assignments SET valid_to = :d WHERE cell_id = :id"),
                     {"d": REDRAWN, "id": cell_id})
        new_id = conn.execute(text("""
            INSERT INTO cells (code, name, village_id, households, population, area_m2, valid_from, geom)
            SELECT code, name || '（新）', village_id, households + 100, population, area_m2, :d, geom
            FROM cells WHERE id = :id RETURNING id"""), {"d": REDRAWN, "id": cell_id}).scalar_one()
        conn.execute(text("""INSERT INTO worker_assignments (worker_id, role, cell_id, valid_from)
                             VALUES (:w, 'grid_worker', :c, :d)"""), {"w": new_worker, "c": new_id, "d": REDRAWN})
        # Cases on 25 consecutive days of 2026, at a point of a cell each; the last one has no location.
        conn.execute(text("""
            INSERT INTO events (source, category, grade, platform, status, level, located_by, geom, address,
                                cell_code, village_code, description, reporter_name, reporter_phone, occurred_at,
                                received_at, last_report_at, updated_at)
            SELECT 'citizen', 'road_damage', 2, 'comprehensive_enforcement', CASE WHEN n = :n THEN 'needs_location'
                   ELSE 'reported' END, 'village', 'point',
                   CASE WHEN n = :n THEN NULL ELSE ST_PointOnSurface(c.geom) END, :secret_text, c.code,
                   v.code, :secret_text, :secret_name, :secret_phone, t, t, t, t
            FROM generate_series(1, :n) n
            CROSS JOIN LATERAL (SELECT timestamptz '2026-03-01 10:00+08' + (n - 1) * interval '1 day' AS t) tt
            JOIN LATERAL (SELECT * FROM cells ORDER BY code OFFSET n LIMIT 1) c ON true
            JOIN jurisdictions v ON v.id = c.village_id"""),
            {"n": EVENTS, "secret_text": SECRET_TEXT, "secret_name": SECRET_NAME, "secret_phone": SECRET_PHONE})
    return code, old_worker, new_worker


@pytest.fixture(scope="module")
def served(server_url: str, template_db: str) -> Iterator[Served]:
    url = create_database(server_url, "wangge_test_ogc", template=template_db)
    cell, old_worker, new_worker = _prepare(url)
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
        yield Served(url, f"http://127.0.0.1:{port}/ogc", cell, old_worker, new_worker)
    finally:
        server.should_exit = True
        thread.join(10)
        db.engine_for(url).dispose()


def _walk(served: Served, path: str, **params: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every feature, following the next links from the first page; and every page."""
    features: list[dict[str, Any]] = []
    pages: list[dict[str, Any]] = []
    r = served.get(path, **params)
    while True:
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/geo+json")
        page = r.json()
        pages.append(page)
        features += page["features"]
        nxt = [link["href"] for link in page["links"] if link["rel"] == "next"]
        if not nxt:
            return features, pages
        assert nxt[0].startswith("http://127.0.0.1:")
        r = httpx.get(nxt[0], timeout=30)


def _current_cells(served: Served) -> int:
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    return served.rows("SELECT count(*) FROM cells WHERE valid_from <= :d AND (valid_to IS NULL OR :d < valid_to)",
                       d=today)[0][0]


# ------------------------------------------------------------------------------------------------ metadata

def test_landing_page_conformance_and_api_definition(served: Served) -> None:
    r = served.get("")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    links = {link["rel"]: link for link in r.json()["links"]}
    assert set(links) >= {"self", "conformance", "data", "service-desc", "service-doc"}
    assert all(link["href"].startswith("http://127.0.0.1:") for link in links.values())
    api = httpx.get(links["service-desc"]["href"], timeout=30)
    assert api.headers["content-type"].startswith("application/vnd.oai.openapi+json;version=3.0")
    items = api.json()["paths"]["/ogc/collections/{collectionId}/items"]["get"]
    limit = next(p for p in items["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 10000, "default": 10}
    assert {p["name"] for p in items["parameters"]} >= {"bbox", "bbox-crs", "datetime", "crs", "offset", "f"}
    assert httpx.get(links["service-doc"]["href"], timeout=30).status_code == 200

    conf = httpx.get(links["conformance"]["href"], timeout=30).json()["conformsTo"]
    assert set(conf) == {
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson",
        "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30",
        "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    }
    assert served.get("", f="json").status_code == 200


def test_collections_carry_extents_and_the_offered_crs(served: Served) -> None:
    body = served.get("/collections").json()
    cols = {c["id"]: c for c in body["collections"]}
    assert list(cols) == ["jurisdictions", "cells", "devices", "events"]
    for c in cols.values():
        assert c["crs"] == [CRS84, EPSG4490] and c["storageCrs"] == EPSG4490
        items = next(link for link in c["links"] if link["rel"] == "items")
        assert items["type"] == "application/geo+json" and items["href"].endswith(f"/collections/{c['id']}/items")
        assert served.get(f"/collections/{c['id']}").json() == c
    # The spatial extent is the data's, in CRS84 lon/lat.
    x0, y0, x1, y1 = served.rows("""SELECT ST_XMin(b), ST_YMin(b), ST_XMax(b), ST_YMax(b)
                                    FROM (SELECT ST_Extent(geom) b FROM cells) x""")[0]
    assert cols["cells"]["extent"]["spatial"]["bbox"][0] == pytest.approx([x0, y0, x1, y1], abs=1e-6)
    assert cols["cells"]["extent"]["spatial"]["crs"] == CRS84
    assert cols["cells"]["extent"]["temporal"]["interval"] == [["2017-01-01T00:00:00+08:00", None]]
    assert cols["events"]["extent"]["temporal"]["interval"] == [["2026-03-01T02:00:00Z", None]]
    assert "temporal" not in cols["devices"]["extent"]
    assert 121 < cols["devices"]["extent"]["spatial"]["bbox"][0][0] < 122


# ------------------------------------------------------------------------------------------------ paging

@pytest.mark.parametrize("collection", ["jurisdictions", "cells", "devices", "events"])
def test_next_links_walk_every_feature_once(served: Served, collection: str) -> None:
    table = {"jurisdictions": "jurisdictions", "cells": "cells", "devices": "devices", "events": "events"}
    expected = _current_cells(served) if collection == "cells" else \
        served.rows(f"SELECT count(*) FROM {table[collection]}")[0][0]
    features, pages = _walk(served, f"/collections/{collection}/items", limit=37)
    assert len(features) == expected
    assert len({f["id"] for f in features}) == expected
    assert len(pages) == -(-expected // 37)
    for i, page in enumerate(pages):
        assert page["type"] == "FeatureCollection"
        # the total on the first page; the others do without (counting it cost a quarter of a page's time)
        assert page.get("numberMatched") == (expected if i == 0 else None)
        assert page["numberReturned"] == len(page["features"]) and page["timeStamp"].endswith("Z")
        rels = [link["rel"] for link in page["links"]]
        assert ("prev" in rels) == (i > 0) and ("next" in rels) == (i < len(pages) - 1)
    # RFC 7946 geometries: no "crs" member (the Content-Crs header names the CRS)
    assert all(f["geometry"] is None or "crs" not in f["geometry"] for f in features)
    # The prev link of the second page is the first page.
    if len(pages) > 1:
        prev = next(link["href"] for link in pages[1]["links"] if link["rel"] == "prev")
        assert httpx.get(prev, timeout=30).json()["features"] == pages[0]["features"]


@pytest.mark.parametrize("collection", ["cells", "events"])
def test_pages_go_by_key_and_the_prev_links_walk_back_the_same_pages(served: Served, collection: str) -> None:
    """The next links page after the last feature's id (a deep page costs what the first does, where OFFSET
    read and dropped every feature before it); prev links walk back through exactly the same pages."""
    _, pages = _walk(served, f"/collections/{collection}/items", limit=7)
    assert len(pages) > 2
    for page in pages[:-1]:
        nxt = httpx.URL(next(link["href"] for link in page["links"] if link["rel"] == "next"))
        assert nxt.params["after"] == str(page["features"][-1]["id"]) and "offset" not in nxt.params
    back = [pages[-1]]
    while True:
        prev = [link["href"] for link in back[-1]["links"] if link["rel"] == "prev"]
        if not prev:
            break
        back.append(httpx.get(prev[0], timeout=30).json())
    assert [pg["features"] for pg in reversed(back)] == [pg["features"] for pg in pages]
    # Past the end, by key or by offset: an empty page whose prev link is the last page.
    last_id = pages[-1]["features"][-1]["id"]
    beyond = served.get(f"/collections/{collection}/items", after=last_id, limit=7).json()
    assert beyond["features"] == [] and not [link for link in beyond["links"] if link["rel"] == "next"]
    prev = next(link["href"] for link in beyond["links"] if link["rel"] == "prev")
    assert httpx.get(prev, timeout=30).json()["features"][-1]["id"] == last_id


def test_default_and_maximum_limit(served: Served) -> None:
    page = served.get("/collections/cells/items").json()
    assert page["numberReturned"] == 10
    big = served.get("/collections/cells/items", limit=1_000_000).json()
    assert big["numberReturned"] == big["numberMatched"] == _current_cells(served)
    past = served.get("/collections/cells/items", offset=100_000).json()
    assert past["numberReturned"] == 0 and past["features"] == []


# ------------------------------------------------------------------------------------------------ filters

def test_bbox_selects_what_postgis_intersects_in_either_axis_order(served: Served) -> None:
    x0, y0, x1, y1 = 121.50, 29.68, 121.54, 29.71
    expected = {r[0] for r in served.rows("""SELECT code FROM cells WHERE valid_to IS NULL
        AND ST_Intersects(geom, ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490))""", x0=x0, y0=y0, x1=x1, y1=y1)}
    assert 0 < len(expected) < _current_cells(served)
    lonlat, _ = _walk(served, "/collections/cells/items", bbox=f"{x0},{y0},{x1},{y1}", limit=1000)
    assert {f["properties"]["code"] for f in lonlat} == expected
    latlon, _ = _walk(served, "/collections/cells/items", bbox=f"{y0},{x0},{y1},{x1}", limit=1000,
                      **{"bbox-crs": EPSG4490})
    assert {f["properties"]["code"] for f in latlon} == expected
    three_d = served.get("/collections/cells/items", bbox=f"{x0},{y0},0,{x1},{y1},100", limit=1000).json()
    assert {f["properties"]["code"] for f in three_d["features"]} == expected
    far = served.get("/collections/devices/items", bbox="0,0,1,1").json()
    assert far["numberMatched"] == 0 and far["features"] == []
    # A zoomed-out map asks for more than the globe: clipped, not refused.
    world = served.get("/collections/devices/items", bbox="-200,-100,200,100").json()
    assert world["numberMatched"] == served.rows("SELECT count(*) FROM devices")[0][0]


@pytest.mark.parametrize("collection", ["jurisdictions", "cells", "devices", "events"])
def test_bbox_queries_can_use_the_gist_index(served: Served, collection: str) -> None:
    c = COLLECTIONS[collection]
    where, params = _filters(c, [(121.50, 29.68, 121.54, 29.71)], None)
    count_sql, page_sql = _sql(c, CRS84, where)
    with db.engine_for(served.url).begin() as conn:
        conn.execute(text("SET LOCAL enable_seqscan = off"))  # tiny tables: make the planner show what it can do
        for sql in (count_sql, page_sql):
            plan = conn.execute(text("EXPLAIN " + sql), {**params, "limit": 10, "offset": 0}).scalars().all()
            assert any(f"ix_{c.table.split()[0]}_geom" in line for line in plan), "\n".join(plan)


def test_datetime_selects_the_cell_version_valid_then(served: Served) -> None:
    def version(**params: Any) -> list[dict[str, Any]]:
        fc, _ = _walk(served, "/collections/cells/items", limit=1000, **params)
        return [f for f in fc if f["properties"]["code"] == served.cell]

    (today,) = version()
    assert today["id"] == f"{served.cell}@{REDRAWN}" and today["properties"]["name"].endswith("（新）")
    assert today["properties"]["valid_from"] == str(REDRAWN) and today["properties"]["valid_to"] is None
    assert today["properties"]["worker_id"] == served.new_worker
    for instant in ("2020-01-01", "2020-01-01T12:00:00Z", "2025-05-31T23:59:59+08:00"):
        (old,) = version(datetime=instant)
        assert old["id"] == f"{served.cell}@2017-01-01", instant
        assert old["properties"]["valid_to"] == str(REDRAWN) and old["properties"]["worker_id"] == served.old_worker
    (new,) = version(datetime="2025-05-31T16:00:00Z")  # midnight in China: the new version's first day
    assert new["id"] == today["id"]
    both = version(datetime="2020-01-01T00:00:00Z/..")
    assert [f["id"] for f in both] == [f"{served.cell}@2017-01-01", f"{served.cell}@{REDRAWN}"]
    assert [f["properties"]["worker_id"] for f in both] == [served.old_worker, served.new_worker]
    assert version(datetime="../2016-12-31") == []
    # Both versions stay addressable; the bare code is today's.
    old = served.get(f"/collections/cells/items/{served.cell}@2017-01-01").json()
    assert old["properties"]["worker_id"] == served.old_worker and old["properties"]["valid_to"] == str(REDRAWN)
    assert served.get(f"/collections/cells/items/{served.cell}").json()["id"] == today["id"]


def test_datetime_filters_when_cases_occurred(served: Served) -> None:
    def count(value: str) -> int:
        r = served.get("/collections/events/items", datetime=value)
        assert r.status_code == 200, r.text
        n: int = r.json()["numberMatched"]
        return n

    assert count("2026-03-01") == 1  # a whole day in China
    assert count("2026-03-01T02:00:00Z") == 1 and count("2026-03-01T02:00:01Z") == 0  # an instant
    assert count("2026-03-01/2026-03-10") == 10
    assert count("2026-03-01T10:00:00+08:00/2026-03-03T10:00:00+08:00") == 3  # both ends inclusive
    assert count("2026-03-20/..") == 6 and count("../2026-03-05") == 5 and count("2026-03-20/") == 6
    assert count("../..") == EVENTS


# ------------------------------------------------------------------------------------------------ CRS

def test_epsg_4490_is_served_latitude_first(served: Served) -> None:
    lonlat = served.get("/collections/devices/items", limit=5)
    latlon = served.get("/collections/devices/items", limit=5, crs=EPSG4490)
    assert lonlat.headers["content-crs"] == f"<{CRS84}>" and latlon.headers["content-crs"] == f"<{EPSG4490}>"
    for a, b in zip(lonlat.json()["features"], latlon.json()["features"], strict=True):
        lon, lat = a["geometry"]["coordinates"]
        assert 121 < lon < 122 and 29 < lat < 30
        assert b["geometry"]["coordinates"] == [lat, lon]
    one = served.get(f"/collections/cells/items/{served.cell}", crs=EPSG4490)
    assert one.headers["content-crs"] == f"<{EPSG4490}>"
    lat, lon = one.json()["geometry"]["coordinates"][0][0][0]
    assert 29 < lat < 30 and 121 < lon < 122


# ------------------------------------------------------------------------------------------------ privacy

def test_events_publish_no_personal_data(served: Served) -> None:
    features, pages = _walk(served, "/collections/events/items", limit=10)
    assert len(features) == EVENTS
    dump = json.dumps(pages, ensure_ascii=False)
    for secret in (SECRET_NAME, SECRET_PHONE, SECRET_TEXT, "reporter", "description", "address", "phone"):
        assert secret not in dump
    one = served.get(f"/collections/events/items/{features[0]['id']}").text
    assert SECRET_NAME not in one and SECRET_PHONE not in one and SECRET_TEXT not in one
    assert isinstance(features[0]["id"], int)
    assert features[0]["properties"]["category"] == "road_damage"
    assert features[0]["properties"]["occurred_at"].startswith("2026-03-01")
    assert sum(f["geometry"] is None for f in features) == 1  # the case without a location


# ------------------------------------------------------------------------------------------------ errors

@pytest.mark.parametrize(("path", "params", "status", "words"), [
    ("/collections/roads", {}, 404, "roads"),
    ("/collections/roads/items", {}, 404, "roads"),
    ("/collections/cells/items/999999999999999", {}, 404, "999999999999999"),
    ("/collections/cells/items/330212101001001@2030-13-01", {}, 404, "330212101001001"),
    ("/collections/events/items/abc", {}, 404, "abc"),
    ("/collections/events/items/987654321", {}, 404, "987654321"),
    ("/collections/events/items/99999999999999999999999", {}, 404, "99999999999999999999999"),
    ("/collections/devices/items/NO-SUCH", {}, 404, "NO-SUCH"),
    ("/collections/cells/items", {"limit": "ten"}, 400, "limit"),
    ("/collections/cells/items", {"limit": "0"}, 400, "limit"),
    ("/collections/cells/items", {"offset": "-1"}, 400, "offset"),
    ("/collections/events/items", {"after": "abc"}, 400, "after=abc"),
    ("/collections/cells/items", {"before": "330212101001001"}, 400, "CODE@YYYY-MM-DD"),
    ("/collections/events/items", {"after": "1", "offset": "10"}, 400, "one of offset, after and before"),
    ("/collections/cells/items", {"bbox": "121,29,122"}, 400, "bbox"),
    ("/collections/cells/items", {"bbox": "121,29,122,nan"}, 400, "bbox"),
    ("/collections/cells/items", {"bbox": "29,121,30,122"}, 400, "out of range"),
    ("/collections/cells/items", {"bbox": "121,30,122,29"}, 400, "latitude"),
    ("/collections/cells/items", {"datetime": "yesterday"}, 400, "datetime"),
    ("/collections/cells/items", {"datetime": "2024-05-01T10:00:00"}, 400, "time zone"),
    ("/collections/cells/items", {"datetime": "2024-05-02/2024-05-01"}, 400, "ends before"),
    ("/collections/cells/items", {"datetime": ".."}, 400, "open"),
    ("/collections/cells/items", {"crs": "http://www.opengis.net/def/crs/EPSG/0/4326"}, 400, "crs"),
    ("/collections/cells/items", {"bbox-crs": "EPSG:3857", "bbox": "1,2,3,4"}, 400, "bbox-crs"),
    ("/collections/cells/items", {"village": "330212101001"}, 400, "village"),
    ("/collections/cells/items", {"f": "html"}, 400, "html"),
    ("/collections", {"sortby": "name"}, 400, "sortby"),
    ("/collections/cells/items/330212101001001", {"crs": "EPSG:3857"}, 400, "crs"),
])
def test_bad_requests_say_what_is_wrong(served: Served, path: str, params: dict[str, str], status: int,
                                        words: str) -> None:
    r = served.get(path, **params)
    assert r.status_code == status, r.text
    assert words in r.json()["detail"]


# ------------------------------------------------------------------------------------------------ GDAL

GDAL_ENV = {**os.environ, "GDAL_HTTP_TIMEOUT": "30", "GDAL_HTTP_MAX_RETRY": "0", "CPL_DEBUG": "OFF",
            "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"}
for _proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
    GDAL_ENV.pop(_proxy, None)


def _gdal(*args: str) -> str:
    # GDAL's OAPIF client is a real client the tests need (scripts/bootstrap --test installs gdal-bin): no skipping.
    assert shutil.which(args[0]), f"{args[0]} not found: install gdal-bin"
    done = subprocess.run(args, capture_output=True, text=True, timeout=300, env=GDAL_ENV, check=False)
    assert done.returncode == 0 and "ERROR" not in done.stderr, done.stdout + done.stderr
    return done.stdout


def test_gdal_lists_the_four_collections(served: Served) -> None:
    out = _gdal("ogrinfo", "-ro", "-so", f"OAPIF:{served.base}")
    for i, name in enumerate(["jurisdictions", "cells", "devices", "events"], start=1):
        assert f"{i}: {name} (" in out
    summary = _gdal("ogrinfo", "-ro", "-so", f"OAPIF:{served.base}", "events")
    assert f"Feature Count: {EVENTS}" in summary
    fields = summary[summary.index("Data axis to CRS axis mapping"):]  # the attributes, typed by the schema
    assert "category: String" in fields and "occurred_at: DateTime" in fields and "closed_at: DateTime" in fields
    assert "snapped: Integer(Boolean)" in fields and "distance_m: Real" in fields
    assert not any(word in fields for word in ("reporter", "phone", "description", "address"))
    assert "Extent: (121." in _gdal("ogrinfo", "-ro", "-so", f"OAPIF:{served.base}", "devices")


def test_gdal_reads_every_cell_with_its_attributes(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "cells.geojson"
    _gdal("ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{served.base}", "cells")
    got = {f["properties"]["code"]: f for f in json.loads(out.read_text())["features"]}
    today = dt.datetime.now(dt.timezone(dt.timedelta(hours=8))).date()
    rows = served.rows("""
        SELECT c.code, c.name, v.code, c.households, c.valid_from, a.worker_id,
               ST_X(ST_PointN(ST_ExteriorRing(ST_GeometryN(c.geom, 1)), 1)),
               ST_Y(ST_PointN(ST_ExteriorRing(ST_GeometryN(c.geom, 1)), 1))
        FROM cells c JOIN jurisdictions v ON v.id = c.village_id
        LEFT JOIN worker_assignments a ON a.cell_id = c.id AND a.role = 'grid_worker'
             AND a.valid_from <= :d AND (a.valid_to IS NULL OR :d < a.valid_to)
        WHERE c.valid_from <= :d AND (c.valid_to IS NULL OR :d < c.valid_to)""", d=today)
    assert len(got) == len(rows) == _current_cells(served)
    for code, name, village, households, valid_from, worker, x, y in rows:
        p = got[code]["properties"]
        assert (p["name"], p["village_code"], p["households"], p["worker_id"]) == (name, village, households, worker)
        assert p["valid_from"].startswith(str(valid_from)) and p["id"] == f"{code}@{valid_from}"
        assert got[code]["geometry"]["coordinates"][0][0][0] == pytest.approx([x, y], abs=1e-6)
    assert got[served.cell]["properties"]["worker_id"] == served.new_worker


def test_gdal_reads_the_grid_of_an_earlier_day(served: Served, tmp_path: Path) -> None:
    out = tmp_path / "cells-2020.geojson"
    _gdal("ogr2ogr", "-f", "GeoJSON", str(out), f"OAPIF:{served.base}?datetime=2020-01-01", "cells")
    got = {f["properties"]["code"]: f["properties"] for f in json.loads(out.read_text())["features"]}
    assert len(got) == served.rows("SELECT count(*) FROM cells WHERE valid_from <= '2020-01-01'")[0][0]
    assert got[served.cell]["worker_id"] == served.old_worker and not got[served.cell]["name"].endswith("（新）")


def test_gdal_spatial_filter_and_events(served: Served, tmp_path: Path) -> None:
    x0, y0, x1, y1 = 121.50, 29.68, 121.54, 29.71
    out = tmp_path / "devices.geojson"
    _gdal("ogr2ogr", "-f", "GeoJSON", "-spat", str(x0), str(y0), str(x1), str(y1), str(out),
          f"OAPIF:{served.base}", "devices")
    expected = {r[0] for r in served.rows("""SELECT id FROM devices
        WHERE ST_Intersects(geom, ST_MakeEnvelope(:x0, :y0, :x1, :y1, 4490))""", x0=x0, y0=y0, x1=x1, y1=y1)}
    assert expected and {f["properties"]["id"] for f in json.loads(out.read_text())["features"]} == expected
    listing = _gdal("ogrinfo", "-ro", "-q", f"OAPIF:{served.base}", "events")
    assert listing.count("OGRFeature(events)") == EVENTS
    assert SECRET_NAME not in listing and SECRET_PHONE not in listing and SECRET_TEXT not in listing
    assert "status (String) = needs_location" in listing
