"""GeoJSON layers, health and docs over HTTP."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.conftest import DEMO


def test_jurisdictions_by_level_carry_the_package_properties(client: TestClient) -> None:
    r = client.get("/api/v1/jurisdictions", params={"level": "township"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/geo+json")
    fc = r.json()
    assert fc["type"] == "FeatureCollection"
    assert {f["properties"]["name"] for f in fc["features"]} >= {"J镇"}
    props = fc["features"][0]["properties"]
    assert set(props) >= {"code", "name", "level", "parent_code", "kind", "households", "population"}
    assert props["parent_code"] == "330212000000"
    villages = client.get("/api/v1/jurisdictions", params={"level": "village"}).json()["features"]
    assert sum(f["properties"]["parent_code"] == "330212101000" for f in villages) == 63
    # RFC 7946: lon first, WGS84 ranges.
    lon, lat = villages[0]["geometry"]["coordinates"][0][0][0]
    assert 121.4 < lon < 121.8 and 29.5 < lat < 29.9


def test_cells_of_one_village_with_their_grid_worker(client: TestClient) -> None:
    package = json.loads((DEMO / "cells.geojson").read_text())["features"]
    village = package[0]["properties"]["village_code"]
    expected = sorted(f["properties"]["code"] for f in package if f["properties"]["village_code"] == village)
    fc = client.get("/api/v1/cells", params={"village": village}).json()
    assert all("crs" not in f["geometry"] for f in fc["features"])  # RFC 7946: lon/lat, no crs member
    assert sorted(f["properties"]["code"] for f in fc["features"]) == expected
    assert all(f["properties"]["worker_id"] for f in fc["features"])
    assert "phone" not in json.dumps(fc)
    assert len(client.get("/api/v1/cells").json()["features"]) == len(package)
    r = client.get("/api/v1/cells", params={"village": "330212101999"})
    assert r.status_code == 404 and "330212101999" in r.json()["detail"]


def test_devices_layer(client: TestClient) -> None:
    fc = client.get("/api/v1/devices").json()
    kinds = {f["properties"]["kind"] for f in fc["features"]}
    assert kinds == {"sensor", "camera"}
    assert len(fc["features"]) >= 100
    cams = client.get("/api/v1/devices", params={"kind": "camera"}).json()["features"]
    assert cams and all(f["properties"]["subtype"] == "video" for f in cams)
    assert client.get("/api/v1/devices", params={"kind": "drone"}).status_code == 422


def test_health_and_docs(client: TestClient) -> None:
    h = client.get("/healthz")
    assert h.status_code == 200 and h.json()["database"] is True and h.json()["dataset_revision"] >= 1
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/api/v1/locate" in spec["paths"]
    # The intake endpoints parse their bodies themselves; their documented bodies still resolve.
    body = spec["paths"]["/api/v1/events"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/EventIn"}
    assert {"EventIn", "BatchIn", "Reporter"} <= set(spec["components"]["schemas"])
    assert "DeviceKey" in spec["components"]["securitySchemes"]


def test_health_reports_an_unreachable_database() -> None:
    from api.app import create_app

    with TestClient(create_app("postgresql+psycopg://nobody@127.0.0.1:1/none")) as c:
        r = c.get("/healthz")
    assert r.status_code == 503 and r.json()["database"] is False
