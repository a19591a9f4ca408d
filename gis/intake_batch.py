"""Deciding and writing one intake batch inside the caller's transaction.

Merging is decided in memory (gis/merge.py) after one read of the candidate open cases; new cases, linked
reports and log entries are written with COPY, merges with one UPDATE: a batch of 10,000 costs a handful of
round trips, not 10,000.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import zlib
from typing import TYPE_CHECKING, Any

import numpy as np
from sqlalchemy import Connection, text

from gis.crs import transformer
from gis.merge import MergeIndex, OpenCase
from gis.workflow import OPEN_SQL

if TYPE_CHECKING:
    from gis.intake import Intake, Located, Report

MERGE_LOCKS = 7302
BUCKETS = 512
EVENT_COLUMNS = (
    "id", "source", "external_id", "idempotency_key", "category", "grade", "platform", "status", "level", "unit_code",
    "geom", "located_by", "address", "cell_code", "cell_name", "worker_id", "worker_name", "village_code",
    "township_code", "district_code", "snapped", "distance_m", "reason", "device_id", "description", "reporter_name",
    "reporter_phone", "occurred_at", "received_at", "last_report_at", "deadline", "updated_at", "report_count")


def bucket(*parts: object) -> int:
    """A lock bucket for a key; stable across processes (unlike hash())."""
    return zlib.crc32("\0".join(map(str, parts)).encode()) % BUCKETS

def _ref(d: dict[str, Any] | None, key: str) -> dict[str, str] | None:
    return (d or {}).get(key)


class Batch:
    """Decides and writes one batch inside the caller's transaction."""

    def __init__(self, intake: Intake, conn: Connection, now: dt.datetime, villages: dict[str, dict[str, Any]],
                 metric_epsg: int):
        self.i, self.conn, self.now, self.villages = intake, conn, now, villages
        self.window = dt.timedelta(minutes=intake.settings.merge_window_minutes)
        self.epsg = metric_epsg
        self.tz = now.tzinfo
        self._deadlines: dict[tuple[str, int], dt.datetime] = {}

    def run(self, reports: list[Report], located: list[Located]) -> list[dict[str, Any]]:
        occurred = [(r.occurred_at or self.now).astimezone(self.tz) for r in reports]
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
                keys.add(bucket("device", cat, r.device_id))
            x, y = mx[k], my[k]
            for i in range(math.floor((x - d) / size), math.floor((x + d) / size) + 1):
                for j in range(math.floor((y - d) / size), math.floor((y + d) / size) + 1):
                    tiles.add((cat, i, j))
        keys |= {bucket(*t) for t in tiles}
        self.i.lock(self.conn, MERGE_LOCKS, sorted(keys))

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
                  AND e.status IN {OPEN_SQL}) e
            UNION
            SELECT {cols} FROM events e
            WHERE e.device_id = ANY(:devices) AND e.category = ANY(:cats) AND e.status IN {OPEN_SQL}
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
        with cur.copy(f"COPY events ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as cp:
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
