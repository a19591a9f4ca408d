"""Point → cell, worker and jurisdiction, through the HTTP API, checked against shapely on the package polygons."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pytest
import shapely
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gis.crs import transformer
from gis.gcj02 import wgs84_to_gcj02
from tests.conftest import DEMO

J_TOWN = "330212101000"


@pytest.fixture(scope="module")
def package() -> dict[str, gpd.GeoDataFrame]:
    cells = gpd.read_file(DEMO / "cells.geojson")
    jur = gpd.read_file(DEMO / "jurisdictions.geojson")
    return {"cells": cells, "jurisdictions": jur}


@pytest.fixture(scope="module")
def town(package: dict[str, gpd.GeoDataFrame]) -> shapely.Geometry:
    jur = package["jurisdictions"]
    return jur.loc[jur["code"] == J_TOWN].geometry.iloc[0]


def _covering(cells: gpd.GeoDataFrame, lon: float, lat: float) -> list[str]:
    pt = shapely.Point(lon, lat)
    return sorted(cells.loc[cells.geometry.covers(pt), "code"])


def _post(client: TestClient, points: list[list[float]], crs: str = "EPSG:4326") -> list[dict]:
    r = client.post("/api/v1/locate", json={"crs": crs, "points": points})
    assert r.status_code == 200, r.text
    return r.json()["results"]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1))
def test_every_point_in_the_township_gets_the_cell_shapely_gives(
    client: TestClient, package: dict[str, gpd.GeoDataFrame], town: shapely.Geometry, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    minx, miny, maxx, maxy = town.bounds
    xy = rng.uniform([minx, miny], [maxx, maxy], size=(400, 2))
    results = _post(client, xy.tolist())
    cells = package["cells"]
    inside = shapely.contains_xy(town, xy[:, 0], xy[:, 1])
    assert inside.sum() > 100
    for (lon, lat), res, ins in zip(xy, results, inside, strict=True):
        expected = _covering(cells, lon, lat)
        if ins:
            assert res["cell"] is not None, (lon, lat, res)
            assert res["snapped"] is False
            assert res["township"]["code"] == J_TOWN
        if expected:
            # Exactly one cell, and it is one shapely says covers the point (the lowest code on an edge).
            assert res["cell"]["code"] == expected[0]
            assert res["village"]["code"] == res["cell"]["code"][:12]
            assert res["worker"] is not None


def test_point_on_a_shared_edge_gets_one_cell_every_time(client: TestClient, package: dict) -> None:
    cells = package["cells"]
    a, b = None, None
    for i, j in shapely.STRtree(cells.geometry.values).query(cells.geometry.values, predicate="touches").T:
        shared = shapely.get_coordinates(shapely.intersection(cells.geometry.iloc[i], cells.geometry.iloc[j]))
        if len(shared) >= 3:
            a, b = i, j
            break
    assert a is not None
    # A vertex inside the shared border lies exactly on both cells (an interpolated point would not).
    pt = shapely.Point(shared[len(shared) // 2])
    codes = sorted([cells["code"].iloc[a], cells["code"].iloc[b]])
    assert set(_covering(cells, pt.x, pt.y)) >= set(codes)
    got = {client.get("/api/v1/locate", params={"lon": pt.x, "lat": pt.y}).json()["cell"]["code"] for _ in range(3)}
    got |= {r["cell"]["code"] for r in _post(client, [[pt.x, pt.y]] * 5)}
    assert got == {_covering(cells, pt.x, pt.y)[0]}


def test_single_point_answer_has_cell_worker_and_the_whole_chain(client: TestClient, package: dict) -> None:
    cell = package["cells"].iloc[10]
    p = cell.geometry.representative_point()
    r = client.get("/api/v1/locate", params={"lon": p.x, "lat": p.y})
    assert r.status_code == 200
    body = r.json()
    assert body["cell"] == {"code": cell["code"], "name": cell["name"]}
    assert body["worker"]["id"].startswith("W") and body["worker"]["name"]
    assert body["village"]["code"] == cell["village_code"]
    assert body["township"]["code"] == J_TOWN and body["township"]["name"] == "J镇"
    assert body["district"]["code"] == "330212000000"
    assert body["snapped"] is False and body["distance_m"] == 0 and body["reason"] is None


def _outside(town_or_district: shapely.Geometry, metres: float) -> tuple[float, float]:
    """A point `metres` outside the boundary (outer side), in lon/lat."""
    to_m, to_deg = transformer(4490, 4550), transformer(4550, 4490)
    poly = shapely.transform(town_or_district, lambda xy: np.column_stack(to_m.transform(xy[:, 0], xy[:, 1])))
    ring = shapely.get_exterior_ring(shapely.get_parts(poly.buffer(metres, quad_segs=32))[0])
    p = shapely.line_interpolate_point(ring, 0.37, normalized=True)
    lon, lat = to_deg.transform(p.x, p.y)
    return float(lon), float(lat)


def test_points_just_outside_snap_within_30_m_and_stay_unassigned_beyond(client: TestClient, package: dict) -> None:
    jur = package["jurisdictions"]
    district = jur.loc[jur["level"] == "district"].geometry.iloc[0]
    lon, lat = _outside(district, 20)
    near = client.get("/api/v1/locate", params={"lon": lon, "lat": lat}).json()
    assert near["snapped"] is True
    assert near["cell"] is not None
    assert 19.0 < near["distance_m"] < 21.0
    lon, lat = _outside(district, 45)
    far = client.get("/api/v1/locate", params={"lon": lon, "lat": lat}).json()
    assert far["cell"] is None and far["worker"] is None and far["snapped"] is False
    assert "nearest cell" in far["reason"] and 44.0 < far["distance_m"] < 46.0


def test_gcj02_and_projected_input_find_the_same_cell(client: TestClient, package: dict) -> None:
    cell = package["cells"].iloc[42]
    p = cell.geometry.representative_point()
    glon, glat = wgs84_to_gcj02(p.x, p.y)
    assert abs(glon - p.x) > 1e-3  # the obfuscation is hundreds of metres: ignoring it would miss
    r = client.get("/api/v1/locate", params={"lon": glon, "lat": glat, "crs": "GCJ02"}).json()
    assert r["cell"]["code"] == cell["code"]
    x, y = transformer(4490, 4550).transform(p.x, p.y)
    r = _post(client, [[x, y]], crs="EPSG:4550")[0]
    assert r["cell"]["code"] == cell["code"]
    r = client.get("/api/v1/locate", params={"lon": p.x, "lat": p.y, "crs": "EPSG:4490"}).json()
    assert r["cell"]["code"] == cell["code"]


@pytest.mark.parametrize(
    ("params", "phrase"),
    [
        ({"lon": "nan", "lat": "29.7"}, "not finite"),
        ({"lon": "inf", "lat": "29.7"}, "not finite"),
        ({"lon": "121.5", "lat": "abc"}, "valid number"),
        ({"lon": "200", "lat": "29.7"}, "out of range"),
        ({"lon": "29.7", "lat": "121.55"}, "swapped"),
        ({"lon": "121.5", "lat": "29.7", "crs": "EPSG:999999"}, "unknown crs"),
    ],
)
def test_bad_coordinates_get_a_clear_422(client: TestClient, params: dict, phrase: str) -> None:
    r = client.get("/api/v1/locate", params=params)
    assert r.status_code == 422
    assert phrase in r.text


def test_swapped_point_in_range_is_rejected_saying_so(client: TestClient, package: dict) -> None:
    # A phone app that sends [lat, lon]: the batch is refused, naming the point.
    p = package["cells"].iloc[5].geometry.representative_point()
    r = client.post("/api/v1/locate", json={"points": [[p.x, p.y], [p.y, p.x]]})
    assert r.status_code == 422
    body = r.json()
    assert "swapped" in body["detail"]
    assert body["errors"][0]["index"] == 1


def test_batch_keeps_order_and_refuses_more_than_100000(client: TestClient, package: dict) -> None:
    pts = [list(g.representative_point().coords[0]) for g in package["cells"].geometry.iloc[:50]]
    res = _post(client, pts[::-1])
    assert [r["cell"]["code"] for r in res] == list(package["cells"]["code"].iloc[:50][::-1])
    r = client.post("/api/v1/locate", json={"points": [[121.5, 29.7]] * 100_001})
    assert r.status_code == 422 and "at most 100,000" in r.json()["detail"]


def test_date_before_the_grid_existed_has_no_cell(client: TestClient, package: dict) -> None:
    p = package["cells"].geometry.iloc[3].representative_point()
    r = client.get("/api/v1/locate", params={"lon": p.x, "lat": p.y, "date": "2016-06-01"}).json()
    assert r["cell"] is None and r["worker"] is None
    assert r["village"]["code"] == package["cells"]["village_code"].iloc[3]
    assert "no grid cell" in r["reason"]
