"""One intake pipeline for every channel: validate → deduplicate → locate → route → merge → store.

A batch is one transaction: if any item is invalid nothing is stored and every item's problem is reported.
Idempotency: the same external_id (or Idempotency-Key) from the same source returns the first event; concurrent
retries are serialised by transaction-scoped advisory locks on the key. Alarm storms: a report of the same
category from the same device, or within the merge distance and time window of an open event, is linked to that
event (report_count + 1) instead of opening a new case — across channels. Concurrent merging decisions are
serialised per category and neighbourhood by advisory locks, so two transactions cannot open twin cases.

The whole batch is decided in memory (one read of candidate cases, vectorised location) and written with COPY:
a batch of 10,000 costs a handful of round trips, not 10,000.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zlib
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Connection, Engine, text

from gis import eventlog
from gis.crs import transformer
from gis.errors import WanggeError
from gis.locate import Locator, Snapshot, assign_arrays, to_results
from gis.merge import MergeIndex, OpenCase
from gis.taxonomy import Taxonomy
from gis.workcalendar import WorkCalendar

SOURCES = ("grid_worker", "sensor", "camera", "hotline", "assigned", "citizen")
OPEN = "('needs_location', 'reported', 'accepted', 'dispatched', 'in_progress', 'feedback', 'review')"
TZ = zoneinfo.ZoneInfo("Asia/Shanghai")
_KEY_LOCKS, _MERGE_LOCKS = 7301, 7302
_BUCKETS = 512
_EVENT_COLUMNS = (
    "id", "source", "external_id", "idempotency_key", "category", "grade", "platform", "status", "level", "unit_code",
    "geom", "located_by", "address", "cell_code", "cell_name", "worker_id", "worker_name", "village_code",
    "township_code", "district_code", "snapped", "distance_m", "reason", "device_id", "description", "reporter_name",
    "reporter_phone", "occurred_at", "received_at", "last_report_at", "deadline", "updated_at", "report_count")


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
    result: dict[str, Any] | None  # the locate answer; None for village-only or unlocated reports
    reason: str | None = None


def _ref(d: dict[str, Any] | None, key: str) -> dict[str, str] | None:
    return (d or {}).get(key)


def _bucket(*parts: object) -> int:
    """A lock bucket for a key; stable across processes (unlike hash())."""
    return zlib.crc32("\0".join(map(str, parts)).encode()) % _BUCKETS


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
        if not reports:
            return []
        # Everything that needs no lock happens before the transaction: one connection per request at a time.
        snap = self.locator.snapshot()
        with self.engine.connect() as conn:
            devices = self._devices(conn, {r.device_id for r in reports if r.device_id})
            villages = self._villages(conn, {r.village_code for r in reports if r.village_code})
        self._validate(reports, devices, villages)
        located_all = self._locate(snap, reports, devices)
        with self.engine.begin() as conn:
            self._lock(conn, _KEY_LOCKS, sorted({_bucket(r.source, k) for r in reports
                                                 for k in (r.external_id, r.idempotency_key) if k}))
            results: list[dict[str, Any] | None] = self._existing(conn, reports)
            todo = [i for i, r in enumerate(results) if r is None]
            located = [located_all[i] for i in todo]
            results_todo = _Batch(self, conn, now, villages, snap.metric_epsg).run([reports[i] for i in todo],
                                                                                   located)
            for i, res in zip(todo, results_todo, strict=True):
                results[i] = res
            final = [r for r in results if r is not None]
            self._fill_names(conn, final)
            eventlog.notify(conn, [r["id"] for r in final])
        return final

    # -- steps --------------------------------------------------------------------------------------------
    @staticmethod
    def _lock(conn: Connection, space: int, buckets: list[int]) -> None:
        if buckets:
            conn.execute(text("SELECT pg_advisory_xact_lock(:space, b) FROM unnest(CAST(:b AS int[])) b"),
                         {"space": space, "b": buckets})

    @staticmethod
    def _devices(conn: Connection, ids: set[str | None]) -> dict[str, dict[str, Any]]:
        if not ids:
            return {}
        rows = conn.execute(text("SELECT id, kind, subtype, ST_X(geom), ST_Y(geom) FROM devices WHERE id = ANY(:ids)"),
                            {"ids": sorted(i for i in ids if i)}).all()
        return {r[0]: {"kind": r[1], "subtype": r[2], "lon": r[3], "lat": r[4]} for r in rows}

    @staticmethod
    def _villages(conn: Connection, codes: set[str | None]) -> dict[str, dict[str, Any]]:
        if not codes:
            return {}
        rows = conn.execute(text("""SELECT v.code, v.name, t.code, t.name, d.code, d.name FROM jurisdictions v
                                    JOIN jurisdictions t ON t.id = v.parent_id
                                    JOIN jurisdictions d ON d.id = t.parent_id
                                    WHERE v.code = ANY(:c) AND v.level = 'village'"""),
                            {"c": sorted(c for c in codes if c)}).all()
        return {r[0]: {"village": {"code": r[0], "name": r[1]}, "township": {"code": r[2], "name": r[3]},
                       "district": {"code": r[4], "name": r[5]}} for r in rows}

    def _validate(self, reports: list[Report], devices: dict[str, dict[str, Any]],
                  villages: dict[str, dict[str, Any]]) -> None:
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
            elif r.village_code and not (has_point or r.device_id or r.address):
                if r.source != "assigned":
                    bad(i, "only tasks assigned from above may give just a village_code")
                elif r.village_code not in villages:
                    bad(i, f"village {r.village_code} is not known")
        if errors:
            raise BatchInvalid(errors)

    def _existing(self, conn: Connection, reports: list[Report]) -> list[dict[str, Any] | None]:
        """Results for reports whose key was seen before (in the database or earlier in this batch)."""
        out: list[dict[str, Any] | None] = [None] * len(reports)
        keys = [(i, r.source, col, k) for i, r in enumerate(reports)
                for col, k in (("external_id", r.external_id), ("idempotency_key", r.idempotency_key)) if k]
        if not keys:
            return out
        found: dict[tuple[str, str, str], int] = {}
        for col in ("external_id", "idempotency_key"):
            wanted = [(s, k) for _, s, c, k in keys if c == col]
            if not wanted:
                continue
            rows = conn.execute(text(f"""SELECT e.source, e.{col}, e.id FROM events e
                                         JOIN unnest(CAST(:s AS text[]), CAST(:k AS text[])) AS w(s, k)
                                           ON e.source = w.s AND e.{col} = w.k"""),
                                {"s": [w[0] for w in wanted], "k": [w[1] for w in wanted]}).all()
            found |= {(r[0], col, r[1]): r[2] for r in rows}
            if col == "external_id":
                rows = conn.execute(text("""SELECT r.source, r.external_id, r.event_id FROM event_reports r
                                            JOIN unnest(CAST(:s AS text[]), CAST(:k AS text[])) AS w(s, k)
                                              ON r.source = w.s AND r.external_id = w.k"""),
                                    {"s": [w[0] for w in wanted], "k": [w[1] for w in wanted]}).all()
                for r in rows:
                    found.setdefault((r[0], col, r[1]), r[2])
        for i, source, col, k in keys:
            if out[i] is None and (source, col, k) in found:
                out[i] = {"id": found[(source, col, k)], "outcome": "duplicate"}
        return out

    def _locate(self, snap: Snapshot, reports: list[Report], devices: dict[str, dict[str, Any]]) -> list[Located]:
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
            lon, lat = self.locator.to_storage(np.array([t[1] for t in items]), np.array([t[2] for t in items]), crs)
            answers = to_results(snap, assign_arrays(snap, lon, lat, self.locator.settings.snap_distance_m))
            for (i, _, _), x, y, a in zip(items, lon.tolist(), lat.tolist(), answers, strict=True):
                r = reports[i]
                how = "point" if r.lon is not None else ("device" if r.device_id else "address")
                out[i] = Located(x, y, how, a, a["reason"] if a["cell"] is None else None)
        return [o for o in out if o is not None]

    @staticmethod
    def _fill_names(conn: Connection, results: list[dict[str, Any]]) -> None:
        """Complete the results of duplicates and merges with the case as it now stands (one query)."""
        need = sorted({r["id"] for r in results if "status" not in r or r["outcome"] == "merged"})
        if not need:
            return
        rows = conn.execute(text("""
            SELECT e.id, e.status, e.cell_code, e.cell_name, e.worker_id, e.worker_name, e.village_code, v.name,
                   e.township_code, t.name, e.district_code, d.name, e.platform, e.grade, e.level, e.deadline,
                   e.report_count, e.reason, e.unit_code
            FROM events e LEFT JOIN jurisdictions v ON v.code = e.village_code
            LEFT JOIN jurisdictions t ON t.code = e.township_code LEFT JOIN jurisdictions d ON d.code = e.district_code
            WHERE e.id = ANY(:ids)"""), {"ids": need}).all()

        def ref(code: str | None, name: str | None) -> dict[str, str] | None:
            return None if code is None else {"code": code, "name": name or ""}

        by_id = {e[0]: {
            "id": e[0], "status": e[1], "cell": ref(e[2], e[3]),
            "worker": None if e[4] is None else {"id": e[4], "name": e[5]},
            "village": ref(e[6], e[7]), "township": ref(e[8], e[9]), "district": ref(e[10], e[11]),
            "platform": e[12], "grade": e[13], "level": e[14],
            "deadline": e[15].astimezone(TZ).isoformat() if e[15] else None,
            "unit": e[18], "reports": e[16], "reason": e[17]} for e in rows}
        for r in results:
            if r["id"] in by_id:
                running = r.get("reports")
                r |= {k: v for k, v in by_id[r["id"]].items()}
                if r["outcome"] == "merged" and running is not None:
                    r["reports"] = running  # the count when this report joined


class _Batch:
    """Decides and writes one batch inside the caller's transaction."""

    def __init__(self, intake: Intake, conn: Connection, now: dt.datetime, villages: dict[str, dict[str, Any]],
                 metric_epsg: int):
        self.i, self.conn, self.now, self.villages = intake, conn, now, villages
        self.window = dt.timedelta(minutes=intake.settings.merge_window_minutes)
        self.epsg = metric_epsg
        self._deadlines: dict[tuple[str, int], dt.datetime] = {}

    def run(self, reports: list[Report], located: list[Located]) -> list[dict[str, Any]]:
        occurred = [(r.occurred_at or self.now).astimezone(TZ) for r in reports]
        mx, my = self._metric(located)
        mergeable = [k for k, loc in enumerate(located) if loc.result is not None and loc.result["cell"] is not None]
        self._lock_neighbourhoods(reports, mergeable, mx, my)
        index = self._candidates(reports, mergeable, located, occurred)
        results: list[dict[str, Any]] = []
        can_merge = set(mergeable)
        new_rows: list[tuple[Report, Located, dt.datetime, dict[str, Any]]] = []
        merges: dict[int, list[tuple[Report, Located, dt.datetime]]] = {}
        seen_keys: dict[tuple[str, str], dict[str, Any]] = {}
        for k, (r, loc, t) in enumerate(zip(reports, located, occurred, strict=True)):
            given = r.external_id or r.idempotency_key
            key = (r.source, given) if given else None
            if key is not None and key in seen_keys:
                results.append({**seen_keys[key], "outcome": "duplicate"})
                continue
            assert r.category is not None
            target = index.find(r.category, r.device_id, mx[k], my[k], t) if k in can_merge else None
            res: dict[str, Any]
            if target is not None:
                target.reports += 1
                target.last_t = max(target.last_t, t)
                merges.setdefault(target.key, []).append((r, loc, t))
                res = {"id": target.key, "outcome": "merged", "reports": target.reports}
            else:
                res = self._route(r, loc)
                new_rows.append((r, loc, t, res))
                if k in can_merge:
                    index.add(OpenCase(-len(new_rows), r.category, r.device_id, mx[k], my[k], t, res["status"], 1))
                res["_placeholder"] = -len(new_rows)
            results.append(res)
            if key is not None:
                seen_keys[key] = res
        ids = self._write(new_rows, merges, index)
        for res in results:
            ph = res.pop("_placeholder", None)
            if ph is not None:
                res["id"] = ids[-ph - 1]
            elif res["id"] < 0:
                res["id"] = ids[-res["id"] - 1]
        return results

    def _metric(self, located: list[Located]) -> tuple[list[float], list[float]]:
        lon = np.array([loc.lon if loc.lon is not None else np.nan for loc in located], dtype=float)
        lat = np.array([loc.lat if loc.lat is not None else np.nan for loc in located], dtype=float)
        x, y = transformer(4490, self.epsg).transform(lon, lat)
        return list(map(float, x)), list(map(float, y))

    def _lock_neighbourhoods(self, reports: list[Report], mergeable: list[int], mx: list[float],
                             my: list[float]) -> None:
        """Two reports that could join each other (same category, within the merge distance) share a lock:
        each locks every tile its distance square touches, and that square holds the other's tile."""
        d = self.i.settings.merge_distance_m
        size = 4 * d
        tiles: set[tuple[str, int, int]] = set()
        keys: set[int] = set()
        for k in mergeable:
            r = reports[k]
            cat = str(r.category)
            if r.device_id:
                keys.add(_bucket("device", cat, r.device_id))
            x, y = mx[k], my[k]
            for i in range(math.floor((x - d) / size), math.floor((x + d) / size) + 1):
                for j in range(math.floor((y - d) / size), math.floor((y + d) / size) + 1):
                    tiles.add((cat, i, j))
        keys |= {_bucket(*t) for t in tiles}
        Intake._lock(self.conn, _MERGE_LOCKS, sorted(keys))

    def _candidates(self, reports: list[Report], mergeable: list[int], located: list[Located],
                    occurred: list[dt.datetime]) -> MergeIndex:
        index = MergeIndex(self.i.settings.merge_distance_m, self.window)
        if not mergeable:
            return index
        # Open cases near each report in space and time, plus open cases of the reporting devices.
        # One index probe per report, whatever the (possibly stale) statistics say about the events table.
        self.conn.execute(text("SET LOCAL enable_seqscan = off"))
        cols = "e.id, e.category, e.device_id, ST_X(e.geom), ST_Y(e.geom), e.last_report_at, e.status, e.report_count"
        rows = self.conn.execute(text(f"""
            SELECT e.* FROM unnest(CAST(:x AS float8[]), CAST(:y AS float8[]), CAST(:c AS text[]),
                                   CAST(:t AS timestamptz[])) AS p(x, y, c, t)
            CROSS JOIN LATERAL (
                SELECT {cols} FROM events e
                WHERE e.geom && ST_Expand(ST_SetSRID(ST_MakePoint(p.x, p.y), 4490), :pad)
                  AND e.category = p.c AND e.last_report_at BETWEEN p.t - :w AND p.t + :w
                  AND e.status IN {OPEN}) e
            UNION
            SELECT {cols} FROM events e
            WHERE e.device_id = ANY(:devices) AND e.category = ANY(:cats) AND e.status IN {OPEN}
              AND e.geom IS NOT NULL
            ORDER BY 1"""), {
            "cats": sorted({str(reports[k].category) for k in mergeable}),
            "devices": sorted({str(reports[k].device_id) for k in mergeable if reports[k].device_id}),
            "x": [located[k].lon for k in mergeable], "y": [located[k].lat for k in mergeable],
            "c": [reports[k].category for k in mergeable], "t": [occurred[k] for k in mergeable],
            "pad": self.i.settings.merge_distance_m / 80_000.0,  # degrees that surely cover the distance here
            "w": self.window}).all()
        if rows:
            x, y = transformer(4490, self.epsg).transform([r[3] for r in rows], [r[4] for r in rows])
            for r, cx, cy in zip(rows, x, y, strict=True):
                index.add(OpenCase(r[0], r[1], r[2], float(cx), float(cy), r[5], r[6], r[7]))
        return index

    def _route(self, r: Report, loc: Located) -> dict[str, Any]:
        assert r.category is not None
        cat = self.i.taxonomy.category(r.category)
        grade = r.grade or cat.default_grade
        chain = loc.result if loc.result is not None else self.villages.get(r.village_code or "", {})
        unlocated = loc.reason is not None or (loc.result is None and not r.village_code)
        key = (cat.code, grade)
        if key not in self._deadlines:
            self._deadlines[key] = self.i.calendar.deadline(self.now, self.i.taxonomy.time_limit(cat.code, grade))
        return {
            "id": 0, "status": "needs_location" if unlocated else "reported",
            "cell": _ref(chain, "cell"), "worker": _ref(chain, "worker"), "village": _ref(chain, "village"),
            "township": _ref(chain, "township"), "district": _ref(chain, "district"),
            "platform": self.i.taxonomy.platform_of(cat.code).key, "grade": grade, "level": cat.level,
            "deadline": self._deadlines[key].isoformat(), "unit": self.i.taxonomy.lead_unit(cat.code, cat.level).code,
            "reports": 1, "reason": loc.reason, "outcome": "created",
        }

    def _write(self, new_rows: list[tuple[Report, Located, dt.datetime, dict[str, Any]]],
               merges: dict[int, list[tuple[Report, Located, dt.datetime]]], index: MergeIndex) -> list[int]:
        conn, now = self.conn, self.now
        ids: list[int] = []
        if new_rows:
            ids = [r[0] for r in conn.execute(text(
                "SELECT nextval(pg_get_serial_sequence('events', 'id')) FROM generate_series(1, :n)"),
                {"n": len(new_rows)})]
        merged_into = {key: (ids[-key - 1] if key < 0 else key) for key in merges}
        counts = {key: 1 + len(merges.get(-(k + 1), [])) for k, key in enumerate(ids)}
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        with cur.copy(f"COPY events ({', '.join(_EVENT_COLUMNS)}) FROM STDIN") as cp:
            for eid, (r, loc, t, res) in zip(ids, new_rows, strict=True):
                last = max([t, *(m[2] for m in merges.get(res["_placeholder"], []))])
                cp.write_row((
                    eid, r.source, r.external_id, r.idempotency_key, r.category, res["grade"], res["platform"],
                    res["status"], res["level"], res["unit"], _ewkt(loc), loc.how, r.address,
                    (res["cell"] or {}).get("code"), (res["cell"] or {}).get("name"),
                    (res["worker"] or {}).get("id"), (res["worker"] or {}).get("name"),
                    (res["village"] or {}).get("code"), (res["township"] or {}).get("code"),
                    (res["district"] or {}).get("code"), bool((loc.result or {}).get("snapped")),
                    float((loc.result or {}).get("distance_m") or 0.0), loc.reason, r.device_id, r.description,
                    r.reporter_name, r.reporter_phone, t, now, last, dt.datetime.fromisoformat(res["deadline"]), now,
                    counts[eid]))
        reports = [(eid, r, loc, t, False) for eid, (r, loc, t, _) in zip(ids, new_rows, strict=True)]
        reports += [(merged_into[key], r, loc, t, True) for key, items in merges.items() for r, loc, t in items]
        with cur.copy("COPY event_reports (event_id, source, external_id, device_id, description, reporter_name, "
                      "reporter_phone, geom, occurred_at, received_at) FROM STDIN") as cp:
            for eid, r, loc, t, merged in reports:
                cp.write_row((eid, r.source, r.external_id if merged else None, r.device_id, r.description,
                              r.reporter_name, r.reporter_phone, _ewkt(loc), t, now))
        status_of = {c.key: c.status for cases in index._bins.values() for c in cases}
        with cur.copy("COPY event_log (event_id, at, actor, role, action, from_status, to_status, note, data) "
                      "FROM STDIN") as cp:
            for eid, (r, loc, _, res) in zip(ids, new_rows, strict=True):
                data = {"source": r.source, "photos": r.photos} if r.photos else {"source": r.source}
                cp.write_row((eid, now, f"intake:{r.source}", "system", "report", None, res["status"], loc.reason,
                              json.dumps(data, ensure_ascii=False)))
            for key, items in merges.items():
                status = status_of.get(key, "reported")
                for r, _, _ in items:
                    cp.write_row((merged_into[key], now, f"intake:{r.source}", "system", "merge", status, status,
                                  f"{r.source} report merged",
                                  json.dumps({"source": r.source, "external_id": r.external_id})))
        existing = [(key, len(items), max(m[2] for m in items)) for key, items in merges.items() if key > 0]
        if existing:
            conn.execute(text("""UPDATE events e SET report_count = e.report_count + v.n, updated_at = :now,
                                     last_report_at = greatest(e.last_report_at, v.t)
                                 FROM unnest(CAST(:ids AS bigint[]), CAST(:ns AS int[]), CAST(:ts AS timestamptz[]))
                                      AS v(id, n, t) WHERE e.id = v.id"""),
                         {"ids": [e[0] for e in existing], "ns": [e[1] for e in existing],
                          "ts": [e[2] for e in existing], "now": now})
        photos = [(eid, url) for eid, (r, *_rest) in zip(ids, new_rows, strict=True) for url in r.photos]
        if photos:
            conn.execute(text("INSERT INTO attachments (event_id, url, created_at) VALUES (:e, :u, :now)"),
                         [{"e": e, "u": u, "now": now} for e, u in photos])
        return ids


def _ewkt(loc: Located) -> str | None:
    return None if loc.lon is None else f"SRID=4490;POINT({loc.lon!r} {loc.lat!r})"
