"""Shared set-up for the closed-loop tests: a private demo database, accounts and their tokens."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import shapely
from fastapi.testclient import TestClient
from sqlalchemy import text

from api.app import create_app
from gis import accounts, db
from tests.conftest import create_database

TOWN = "330212101000"
DISTRICT = "330212000000"
PASSWORD = "correct-horse-42"


@dataclass
class World:
    client: TestClient
    url: str
    tokens: dict[str, str] = field(default_factory=dict)
    cell: str = ""
    other_cell: str = ""
    village: str = ""
    worker: str = ""
    point: tuple[float, float] = (0.0, 0.0)
    other_point: tuple[float, float] = (0.0, 0.0)

    def h(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def post(self, who: str, body: dict[str, Any], **kw: Any) -> Any:
        return self.client.post("/api/v1/events", json=body, headers={**self.h(who), **kw.pop("headers", {})}, **kw)

    def act(self, who: str, event_id: int, action: str, **payload: Any) -> Any:
        return self.client.post(f"/api/v1/events/{event_id}/actions/{action}", json=payload, headers=self.h(who))

    def get(self, who: str, event_id: int) -> Any:
        return self.client.get(f"/api/v1/events/{event_id}", headers=self.h(who))


def world_in(server_url: str, template_db: str, name: str) -> Iterator[World]:
    """A module's own copy of the demo database, the app on it, and accounts for every role."""
    url = create_database(server_url, name, template=template_db)
    with TestClient(create_app(url)) as client:
        yield build_world(client, url)
    db.engine_for(url).dispose()


def build_world(client: TestClient, url: str) -> World:
    engine = db.engine_for(url)
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT c.code, v.code AS village, a.worker_id, ST_AsBinary(c.geom) AS g FROM cells c
            JOIN jurisdictions v ON v.id = c.village_id
            JOIN worker_assignments a ON a.cell_id = c.id AND a.role = 'grid_worker'
            WHERE v.parent_id = (SELECT id FROM jurisdictions WHERE code = :t) ORDER BY c.code LIMIT 2"""),
            {"t": TOWN}).all()
    (cell, village, worker, geom), (other, _, _, other_geom) = rows[0], rows[1]
    w = World(client, url, cell=cell, other_cell=other, village=village, worker=worker)
    p = shapely.from_wkb(geom).representative_point()
    q = shapely.from_wkb(other_geom).representative_point()
    w.point, w.other_point = (p.x, p.y), (q.x, q.y)
    people = [
        ("centre", "command_centre", TOWN, None), ("admin", "admin", DISTRICT, None),
        ("leader", "leader", TOWN, None), ("village_leader", "grid_leader", village, None),
        ("worker", "grid_worker", cell, None), ("other_worker", "grid_worker", other, None),
        ("market", "unit_handler", TOWN, "market_supervision_office"),
        ("fire", "unit_handler", TOWN, "fire_station"),
        ("police", "unit_handler", TOWN, "police_station"),
        ("governance", "unit_handler", TOWN, "governance_office"),
        ("housing", "unit_handler", TOWN, "housing_office"),
        ("env", "unit_handler", TOWN, "env_enforcement_squad"),
        ("district_agri", "unit_handler", DISTRICT, "district_agriculture_bureau"),
        ("planner", "planner", TOWN, None),
    ]
    for name, role, scope, unit in people:
        accounts.create_user(engine, name, PASSWORD, role, scope, unit_code=unit)
    for name, *_ in people:
        r = client.post("/api/v1/auth/token", data={"username": name, "password": PASSWORD})
        assert r.status_code == 200, r.text
        w.tokens[name] = r.json()["access_token"]
    return w
