"""One intake pipeline for every channel: validate → deduplicate → locate → route → merge → store.

A batch is one transaction: if any item is invalid nothing is stored and every item's problem is reported.
Idempotency: the same external_id (or Idempotency-Key) from the same source returns the first event; concurrent
retries are serialised by transaction-scoped advisory locks on the key. Alarm storms: a report of the same
category from the same device, or within the merge distance and time window of an open event, is linked to that
event (report_count + 1) instead of opening a new case — across channels.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Connection, Engine, text

from gis import eventlog
from gis.errors import WanggeError
from gis.locate import Locator
from gis.taxonomy import Taxonomy
from gis.workcalendar import WorkCalendar

SOURCES = ("grid_worker", "sensor", "camera", "hotline", "assigned", "citizen")
OPEN = "('needs_location', 'reported', 'accepted', 'dispatched', 'in_progress', 'feedback', 'review')"
TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
_LOCK_BUCKETS = 4096


class IntakeSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WANGGE_", env_file=".env", extra="ignore")

    merge_distance_m: float = 50.0
    merge_window_minutes: float = 30.0


class BatchInvalid(WanggeError):
    """Some items of a batch are invalid (HTTP 422); nothing was stored."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        self.errors = errors
        first = errors[0]["message"] if errors else ""
        n = len(errors)
        super().__init__(f"{n} invalid item{'s' if n != 1 else ''}, nothing stored; first: {first}")


@dataclass
class Report:
    source: str
    category: str | None = None
    lon: float | None = None
    lat: float | None = None
    crs: str = "EPSG:4326"
    device_id: str | None = None
    address: str | None = None
    village_code: str | None = None
    occurred_at: dt.datetime | None = None
    description: str | None = None
    reporter_name: str | None = None
    reporter_phone: str | None = None
    external_id: str | None = None
    idempotency_key: str | None = None
    grade: int | None = None
    photos: list[str] = field(default_factory=list)


@dataclass
class Located:
    lon: float | None
    lat: float | None
    how: str
    result: dict[str, Any] | None  # the locate answer, None for village-only or unlocated
    reason: str | None = None


class Intake:
    def __init__(self, engine: Engine, locator: Locator, taxonomy: Taxonomy, calendar: WorkCalendar,
                 settings: IntakeSettings | None = None, gazetteer: Any = None) -> None:
        self.engine = engine
        self.locator = locator
        self.taxonomy = taxonomy
        self.calendar = calendar
        self.settings = settings or IntakeSettings()
        self.gazetteer = gazetteer  # callable(text) -> (lon, lat, village_code) | None

    # -- public -------------------------------------------------------------------------------------------
    def ingest(self, reports: list[Report], now: dt.datetime | None = None) -> list[dict[str, Any]]:
        """Store a batch in one transaction; per-item results in the same order."""
        now = (now or dt.datetime.now(TZ)).astimezone(TZ)
        with self.engine.begin() as conn:
            devices = self._devices(conn, {r.device_id for r in reports if r.device_id})
            self._validate(reports, devices)
            self._lock_keys(conn, reports)
            results: list[dict[str, Any] | None] = [self._existing(conn, r) for r in reports]
            todo = [i for i, r in enumerate(results) if r is None]
            located = self._locate([reports[i] for i in todo], devices)
            for i, loc in zip(todo, located, strict=True):
                results[i] = self._store(conn, reports[i], loc, now, seen=results)
            eventlog.notify(conn, [r["id"] for r in results if r])
        return [r for r in results if r is not None]

    # -- steps --------------------------------------------------------------------------------------------
    def _devices(self, conn: Connection, ids: set[str | None]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        rows = conn.execute(text("SELECT id, kind, subtype, ST_X(geom), ST_Y(geom) FROM devices WHERE id = ANY(:ids)"),
                            {"ids": sorted(i for i in ids if i)}).all()
        return {r[0]: {"kind": r[1], "subtype": r[2], "lon": r[3], "lat": r[4]} for r in rows}

    def _validate(self, reports: list[Report], devices: dict[str, dict[str, Any]]) -> None:
        errors: list[dict[str, Any]] = []

        def bad(i: int, msg: str) -> None:
            errors.append({"index": i, "message": msg})

        for i, r in enumerate(reports):
            if r.source not in SOURCES:
                bad(i, f"source {r.source!r} is not one of {', '.join(SOURCES)}")
                continue
            if r.device_id and r.device_id not in devices:
                bad(i, f"device {r.device_id} is not known")
                continue
            if r.category is None and r.device_id:
                r.category = self.taxonomy.category_for_device(devices[r.device_id]["subtype"]).code
            if r.category is None:
                bad(i, "category is missing")
            elif r.category not in self.taxonomy.categories:
                bad(i, f"category {r.category!r} is not in the taxonomy")
            if r.grade is not None and r.grade not in (1, 2, 3):
                bad(i, f"grade {r.grade} must be 1, 2 or 3")
            has_point = r.lon is not None and r.lat is not None
            if (r.lon is None) != (r.lat is None):
                bad(i, "lon and lat go together")
            elif not (has_point or r.device_id or r.address or r.village_code):
                bad(i, "a location is needed: lon/lat, device_id, address or (for assigned tasks) village_code")
            elif r.village_code and not (has_point or r.device_id or r.address) and r.source != "assigned":
                bad(i, "only tasks assigned from above may give just a village_code")
        if errors:
            raise BatchInvalid(errors)

    def _lock_keys(self, conn: Connection, reports: list[Report]) -> None:
        """Serialise concurrent retries of the same key (few buckets: bounded locks per transaction)."""
        buckets = sorted({_bucket(r.source, k) for r in reports for k in (r.external_id, r.idempotency_key) if k})
        for b in buckets:
            conn.execute(text("SELECT pg_advisory_xact_lock(7301, :b)"), {"b": b})

    def _existing(self, conn: Connection, r: Report) -> dict[str, Any] | None:
        for col, key in (("external_id", r.external_id), ("idempotency_key", r.idempotency_key)):
            if not key:
                continue
            row = conn.execute(text(f"SELECT id FROM events WHERE source = :s AND {col} = :k"),
                               {"s": r.source, "k": key}).first()
            if row is None and col == "external_id":
                row = conn.execute(text("SELECT event_id FROM event_reports WHERE source = :s AND external_id = :k"),
                                   {"s": r.source, "k": key}).first()
            if row is not None:
                return self._summary(conn, row[0], "duplicate")
        return None

    def _locate(self, reports: list[Report], devices: dict[str, dict[str, Any]]) -> list[Located]:
        out: list[Located | None] = [None] * len(reports)
        pts: dict[str, list[tuple[int, float, float]]] = {}
        for i, r in enumerate(reports):
            if r.lon is not None and r.lat is not None:
                pts.setdefault(r.crs or "EPSG:4326", []).append((i, r.lon, r.lat))
            elif r.device_id:
                d = devices[r.device_id]
                pts.setdefault("EPSG:4490", []).append((i, d["lon"], d["lat"]))
            elif r.address:
                hit = self.gazetteer(r.address) if self.gazetteer else None
                if hit is None:
                    out[i] = Located(None, None, "address", None, f"address not found: {r.address}")
                else:
                    pts.setdefault("EPSG:4490", []).append((i, hit[0], hit[1]))
            else:
                out[i] = Located(None, None, "village", None)
        for crs, items in pts.items():
            idx = [t[0] for t in items]
            xs = np.array([t[1] for t in items])
            ys = np.array([t[2] for t in items])
            lon, lat = self.locator.to_storage(xs, ys, crs)
            answers = self.locator.locate(lon, lat, "EPSG:4490")
            for i, x, y, a in zip(idx, lon.tolist(), lat.tolist(), answers, strict=True):
                r = reports[i]
                how = "point" if r.lon is not None else ("device" if r.device_id else "address")
                out[i] = Located(x, y, how, a, a["reason"] if a["cell"] is None else None)
        return [o for o in out if o is not None]

    def _store(self, conn: Connection, r: Report, loc: Located, now: dt.datetime,
               seen: list[dict[str, Any] | None]) -> dict[str, Any]:
        occurred = (r.occurred_at or now).astimezone(TZ)
        if loc.lon is not None and loc.result and loc.result["cell"] is not None:
            target = self._merge_target(conn, r, loc, occurred)
            if target is not None:
                self._add_report(conn, target, r, loc, occurred, now)
                conn.execute(text("""UPDATE events SET report_count = report_count + 1, updated_at = :now,
                                     last_report_at = greatest(last_report_at, :t) WHERE id = :id"""),
                             {"id": target, "now": now, "t": occurred})
                status = conn.execute(text("SELECT status FROM events WHERE id = :id"), {"id": target}).scalar_one()
                self._log(conn, target, now, r.source, "merge", status, status,
                          f"{r.source} report merged", {"source": r.source, "external_id": r.external_id})
                return self._summary(conn, target, "merged")
        assert r.category is not None
        cat = self.taxonomy.category(r.category)
        grade = r.grade or cat.default_grade
        level = cat.level
        village = _code(loc.result, "village") or r.village_code
        if loc.result is None and r.village_code:
            chain = conn.execute(text("""SELECT v.code, t.code, d.code FROM jurisdictions v
                                         JOIN jurisdictions t ON t.id = v.parent_id
                                         JOIN jurisdictions d ON d.id = t.parent_id
                                         WHERE v.code = :c AND v.level = 'village'"""), {"c": r.village_code}).first()
            if chain is None:
                raise BatchInvalid([{"index": seen.index(None), "message": f"village {r.village_code} is not known"}])
            township, district = chain[1], chain[2]
        else:
            township, district = _code(loc.result, "township"), _code(loc.result, "district")
        unlocated = loc.reason is not None or (loc.result is None and not r.village_code)
        status = "needs_location" if unlocated else "reported"
        platform = self.taxonomy.platform_of(cat.code).key
        unit = self.taxonomy.lead_unit(cat.code, level).code
        deadline = self.calendar.deadline(now, self.taxonomy.time_limit(cat.code, grade))
        res = loc.result or {}
        row = conn.execute(text("""
            INSERT INTO events (source, external_id, idempotency_key, category, grade, platform, status, level,
                unit_code, geom, located_by, address, cell_code, cell_name, worker_id, worker_name, village_code,
                township_code, district_code, snapped, distance_m, reason, device_id, description, reporter_name,
                reporter_phone, occurred_at, received_at, last_report_at, deadline, updated_at)
            VALUES (:source, :external_id, :idem, :category, :grade, :platform, :status, :level, :unit,
                CASE WHEN CAST(:lon AS float8) IS NULL THEN NULL
                     ELSE ST_SetSRID(ST_MakePoint(:lon, :lat), 4490) END,
                :how, :address, :cell, :cell_name, :worker, :worker_name, :village, :township, :district,
                :snapped, :distance, :reason, :device, :description, :rname, :rphone, :occurred, :now, :occurred,
                :deadline, :now)
            RETURNING id"""), {
            "source": r.source, "external_id": r.external_id, "idem": r.idempotency_key, "category": cat.code,
            "grade": grade, "platform": platform, "status": status, "level": level, "unit": unit,
            "lon": loc.lon, "lat": loc.lat, "how": loc.how, "address": r.address,
            "cell": _code(res, "cell"), "cell_name": (res.get("cell") or {}).get("name"),
            "worker": (res.get("worker") or {}).get("id"), "worker_name": (res.get("worker") or {}).get("name"),
            "village": village, "township": township, "district": district,
            "snapped": bool(res.get("snapped")), "distance": float(res.get("distance_m") or 0.0),
            "reason": loc.reason, "device": r.device_id, "description": r.description, "rname": r.reporter_name,
            "rphone": r.reporter_phone, "occurred": occurred, "now": now, "deadline": deadline,
        }).scalar_one()
        self._add_report(conn, row, r, loc, occurred, now, external=False)
        self._log(conn, row, now, r.source, "report", None, status, loc.reason,
                  {"source": r.source, "photos": r.photos} if r.photos else {"source": r.source})
        for url in r.photos:
            conn.execute(text("INSERT INTO attachments (event_id, url, created_at) VALUES (:e, :u, :now)"),
                         {"e": row, "u": url, "now": now})
        return self._summary(conn, row, "created")

    def _merge_target(self, conn: Connection, r: Report, loc: Located, occurred: dt.datetime) -> int | None:
        window = dt.timedelta(minutes=self.settings.merge_window_minutes)
        # Degrees that surely cover the merge distance at these latitudes (a cheap index filter first).
        pad = self.settings.merge_distance_m / 80_000.0
        row = conn.execute(text(f"""
            SELECT id FROM events
            WHERE status IN {OPEN} AND category = :cat AND geom IS NOT NULL AND (
                (CAST(:device AS text) IS NOT NULL AND device_id = :device)
                OR (geom && ST_Expand(ST_SetSRID(ST_MakePoint(:lon, :lat), 4490), :pad)
                    AND last_report_at BETWEEN :t0 AND :t1
                    AND ST_DWithin(geom::geography, ST_SetSRID(ST_MakePoint(:lon, :lat), 4490)::geography, :m)))
            ORDER BY (device_id IS NOT DISTINCT FROM :device) DESC,
                     geom <-> ST_SetSRID(ST_MakePoint(:lon, :lat), 4490), id
            LIMIT 1 FOR UPDATE"""), {
            "cat": r.category, "device": r.device_id, "lon": loc.lon, "lat": loc.lat, "pad": pad,
            "t0": occurred - window, "t1": occurred + window, "m": self.settings.merge_distance_m,
        }).first()
        return None if row is None else int(row[0])

    def _add_report(self, conn: Connection, event_id: int, r: Report, loc: Located, occurred: dt.datetime,
                    now: dt.datetime, external: bool = True) -> None:
        conn.execute(text("""
            INSERT INTO event_reports (event_id, source, external_id, device_id, description, reporter_name,
                reporter_phone, geom, occurred_at, received_at)
            VALUES (:e, :s, :x, :d, :desc, :n, :p,
                    CASE WHEN CAST(:lon AS float8) IS NULL THEN NULL
                         ELSE ST_SetSRID(ST_MakePoint(:lon, :lat), 4490) END, :o, :now)"""), {
            "e": event_id, "s": r.source, "x": r.external_id if external else None, "d": r.device_id,
            "desc": r.description, "n": r.reporter_name, "p": r.reporter_phone, "lon": loc.lon, "lat": loc.lat,
            "o": occurred, "now": now})

    @staticmethod
    def _log(conn: Connection, event_id: int, now: dt.datetime, actor: str, action: str, frm: str | None, to: str,
             note: str | None, data: dict[str, Any]) -> None:
        eventlog.append(conn, event_id, now, f"intake:{actor}", "system", action, frm, to, note, data)

    @staticmethod
    def _summary(conn: Connection, event_id: int, outcome: str) -> dict[str, Any]:
        e = conn.execute(text("""
            SELECT e.id, e.status, e.cell_code, e.cell_name, e.worker_id, e.worker_name, e.village_code, v.name,
                   e.township_code, t.name, e.district_code, d.name, e.platform, e.grade, e.level, e.deadline,
                   e.report_count, e.reason, e.unit_code
            FROM events e LEFT JOIN jurisdictions v ON v.code = e.village_code
            LEFT JOIN jurisdictions t ON t.code = e.township_code LEFT JOIN jurisdictions d ON d.code = e.district_code
            WHERE e.id = :id"""), {"id": event_id}).one()

        def ref(code: str | None, name: str | None) -> dict[str, str] | None:
            return None if code is None else {"code": code, "name": name or ""}

        return {
            "id": e[0], "status": e[1], "cell": ref(e[2], e[3]),
            "worker": None if e[4] is None else {"id": e[4], "name": e[5]},
            "village": ref(e[6], e[7]), "township": ref(e[8], e[9]), "district": ref(e[10], e[11]),
            "platform": e[12], "grade": e[13], "level": e[14],
            "deadline": e[15].astimezone(TZ).isoformat() if e[15] else None,
            "unit": e[18], "reports": e[16], "reason": e[17], "outcome": outcome,
        }


def _code(result: dict[str, Any] | None, key: str) -> str | None:
    if not result or not result.get(key):
        return None
    return str(result[key]["code"])


def _bucket(source: str, key: str) -> int:
    return int.from_bytes(hashlib.sha1(f"{source}\0{key}".encode()).digest()[:4], "big") % _LOCK_BUCKETS
