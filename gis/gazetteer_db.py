"""The address gazetteer loaded from PostGIS, rebuilt when the dataset revision changes."""

from __future__ import annotations

import threading

from sqlalchemy import Engine, text

from gis.gazetteer import Address, Gazetteer


class GazetteerCache:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        self._revision = -1
        self._gazetteer: Gazetteer | None = None

    def get(self) -> Gazetteer:
        with self.engine.connect() as conn:
            revision = int(conn.execute(text("SELECT revision FROM dataset_state WHERE id = 1")).scalar_one())
            with self._lock:
                if self._gazetteer is None or revision != self._revision:
                    rows = conn.execute(text("""SELECT id, village_code, road, number, name, ST_X(geom), ST_Y(geom)
                                                FROM addresses ORDER BY id""")).all()
                    villages: dict[str, str] = dict(conn.execute(text(
                        "SELECT code, name FROM jurisdictions WHERE level = 'village'")).all())
                    self._gazetteer = Gazetteer([Address(*r) for r in rows], villages=villages)
                    self._revision = revision
                return self._gazetteer

    def match(self, address: str) -> tuple[float, float, str] | None:
        """(lon, lat, village code) of an address text, or None when unknown or ambiguous."""
        m = self.get().match(address)
        if m is None:
            return None
        return m.address.lon, m.address.lat, m.address.village_code
