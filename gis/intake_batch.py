"""Deciding and writing one intake batch inside the caller's transaction.

Merging is decided in memory (gis/merge.py) after one read of the candidate open cases; new cases, linked
reports and log entries are written with COPY, merges with one UPDATE: a batch of 10,000 costs a handful of
round trips, not 10,000.
"""

from __future__ import annotations

import datetime as dt
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import orjson

from gis.crs import transformer
from gis.intake_io import Copy, Plan, Send, Statement
from gis.merge import MergeIndex, OpenCase
from gis.workflow import FINAL_STATUSES

# Open cases, spelt as the predicate of the partial index ix_events_mergeable so that the planner uses it.
NOT_FINAL = "e.status NOT IN (" + ", ".join(f"'{s}'" for s in FINAL_STATUSES) + ")"

if TYPE_CHECKING:
    from gis.intake import Intake, Located, Report

EPOCH_LOCKS = 7304  # advisory-lock spaces, taken in this order
SLOT_LOCKS = 7303
MERGE_LOCKS = 7302
R = TypeVar("R")
BUCKETS = 512  # of places
SLOTS_PER_EPOCH = 64  # an epoch: 64 time slots (32 hours of 30-minute slots)
EPOCH_BUCKETS = 1024  # of epochs (an epoch number modulo this: ~3.7 years of 32-hour epochs)
MAX_SLOT_LOCKS = 1024  # a batch touching more time slots locks its epochs exclusively instead
INT4 = 2**31 - 1
COARSE_ABOVE = 500  # reports a batch may merge; above, it locks its time slots exclusively, and no places
EVENT_COLUMNS = (
    "id", "source", "external_id", "idempotency_key", "category", "grade", "platform", "status", "level", "unit_code",
    "geom", "located_by", "address", "cell_code", "cell_name", "worker_id", "worker_name", "village_code",
    "township_code", "district_code", "snapped", "distance_m", "reason", "device_id", "description", "reporter_name",
    "reporter_phone", "occurred_at", "received_at", "last_report_at", "deadline", "updated_at", "report_count")
REPORT_COLUMNS = ("event_id", "source", "external_id", "device_id", "description", "reporter_name", "reporter_phone",
                  "geom", "occurred_at", "received_at")
KEY_COLUMNS = ("source", "kind", "key", "event_id")
LOG_COLUMNS = ("event_id", "at", "actor", "role", "action", "from_status", "to_status", "note", "data")
COPY_ABOVE = 100  # rows; fewer are inserted with one statement that can travel in a pipeline
ALONE_ABOVE = 64  # mergeable reports from which the merge index's pre-pass (MergeIndex.alone) pays


def bucket(*parts: object) -> int:
    """A lock bucket for a key; stable across processes (unlike hash())."""
    return zlib.crc32("\0".join(map(str, parts)).encode()) % BUCKETS

def locks(space: int, buckets: list[int], shared: bool = False) -> Statement:
    """Transaction-scoped advisory locks in one space, in ascending order (every plan takes them so: no cycles)."""
    fn = "pg_advisory_xact_lock_shared" if shared else "pg_advisory_xact_lock"
    return (f"""SELECT count({fn}(%(space)s, l.b))
                FROM (SELECT b FROM unnest(CAST(%(b)s AS int[])) b ORDER BY b) l""",
            {"space": space, "b": array_literal(buckets)})


_CATEGORY_HASHES: dict[str, int] = {}


def _category_hash(category: str) -> int:
    h = _CATEGORY_HASHES.get(category)
    if h is None:
        h = _CATEGORY_HASHES[category] = zlib.crc32(category.encode())
    return h


def array_literal(values: list[Any]) -> str:
    """A PostgreSQL array literal ('{…}') for numbers or text, passed as one text parameter and CAST in SQL:
    psycopg adapts long Python lists element by element, which costs more than the query itself. Lists of one
    type (no None) are joined in one go: a batch sends ~10 lists of 10,000, and the loop below took ~2.5 ms each."""
    kinds = set(map(type, values))
    if kinds == {int}:
        return "{" + ",".join(map(str, values)) + "}"
    if kinds == {float}:
        return "{" + ",".join(map(repr, values)) + "}"
    if kinds == {str}:
        joined = "".join(values)
        if '"' not in joined and "\\" not in joined:
            return '{"' + '","'.join(values) + '"}'
    out = []
    for v in values:
        if v is None:
            out.append("NULL")
        elif isinstance(v, str):
            out.append('"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"')
        elif isinstance(v, float):
            out.append(repr(v))
        else:
            out.append(str(v))
    return "{" + ",".join(out) + "}"


class Batch:
    """Decides and writes one batch inside the caller's transaction."""

    def __init__(self, intake: Intake, now: dt.datetime, villages: dict[str, dict[str, Any]], metric_epsg: int):
        self.i, self.now, self.villages = intake, now, villages
        self._finish: list[Statement] = []
        self.window = dt.timedelta(minutes=intake.settings.merge_window_minutes)
        self.epsg = metric_epsg
        self.tz = now.tzinfo
        self._routes: dict[tuple[str, int | None], dict[str, Any]] = {}
        self._answers: dict[tuple[Any, ...], dict[str, Any]] = {}

    def run(self, reports: list[Report], located: list[Located], open_cases: list[Any], ids: list[int],
            stamps: np.ndarray) -> Plan[list[dict[str, Any]]]:
        """Decide every report (merge or new case) and write it (steps for gis/intake_io); `open_cases` are the
        rows of candidates(), `ids` at least as many fresh event ids as there are reports, `stamps` their times
        (epoch seconds). The writes that need no answer are left for finish().

        A large batch is decided while its new cases stream to the server: COPY takes each row as it is made, so
        the server inserts (and indexes) while Python decides the rest — measured per 10,000 reports, ~100 ms of
        deciding no longer waits in front of ~170 ms of COPY. A new case is written as its own single report;
        reports merged into it later in the batch are added by the same UPDATE as merges into older cases."""
        d = _Decided(self._index(open_cases))
        if len(reports) > COPY_ABOVE:
            yield from self._flush()
            yield Copy(f"COPY events ({', '.join(COPY_COLUMNS)}) FROM STDIN (FORMAT binary)",
                       _EventCopy(self.now, stamps).blocks(self._decide(reports, located, ids, stamps, d, _new_case)),
                       raw=True)
        else:
            yield from self._bulk("events", EVENT_COLUMNS, self._decide(reports, located, ids, stamps, d, _event_row))
        yield from self._write(d, ids)
        for res in d.results:
            if res["id"] < 0:  # merged into a case of this batch
                res["id"] = ids[-res["id"] - 1]
        # The keys of every report stored, in one order: two batches racing for keys wait for each other in that
        # order, never in a cycle.
        stored = [(r, res["id"]) for r, res in zip(reports, d.results, strict=True) if res["outcome"] != "duplicate"]
        keys = [(r.source, "e", r.external_id, eid) for r, eid in stored if r.external_id]
        keys += [(r.source, "i", r.idempotency_key, eid) for r, eid in stored if r.idempotency_key]
        keys.sort()
        if len(keys) > COPY_ABOVE:
            yield from self._flush()
            prefixes = _Encoded(lambda source, kind: _field(source) + _field(kind))
            yield Copy("COPY intake_keys (event_id, source, kind, key) FROM STDIN (FORMAT binary)", [_binary_rows(
                4, [k[3] for k in keys],
                [prefixes[k[0], k[1]] for k in keys], map(_field, [k[2] for k in keys]))], raw=True)
        else:
            yield from self._bulk("intake_keys", KEY_COLUMNS, keys)
        return d.results

    def _decide(self, reports: list[Report], located: list[Located], ids: list[int], stamps: np.ndarray, d: _Decided,
                row: Callable[[int, int, Report, Located, dict[str, Any], dt.datetime, dt.datetime], R]
                ) -> Iterator[R]:
        """The events row of each new case (made by `row`), as it is decided; merges and every report's answer go
        to `d`."""
        # (Aware times stay in their own zone: converting 10,000 cost ~5 ms, and every use compares instants.)
        now = self.now
        occurred = [now if (t := r.occurred_at) is None else t if t.tzinfo is not None else t.astimezone(self.tz)
                    for r in reports]
        mx, my = self._metric([None if loc.lon is None else (loc.lon, loc.lat) for loc in located])  # type: ignore[misc]
        index = d.index
        mergeable = [k for k, loc in enumerate(located) if loc.result is not None and loc.result["cell"] is not None]
        # Reports that may join a case or be joined go through the index; the others open a case each (a small
        # group all go: building the trees would cost more).
        can_merge = set(mergeable)
        if len(mergeable) > ALONE_ABOVE:
            alone = index.alone([str(reports[k].category) for k in mergeable],
                                [reports[k].device_id for k in mergeable], np.array([mx[k] for k in mergeable]),
                                np.array([my[k] for k in mergeable]), stamps[mergeable])
            can_merge = {k for k, lone in zip(mergeable, alone.tolist(), strict=True) if not lone}
        seen_keys: dict[tuple[str, str], dict[str, Any]] = {}
        for k, (r, loc, t) in enumerate(zip(reports, located, occurred, strict=True)):
            given = r.external_id or r.idempotency_key
            key = (r.source, given) if given else None
            if key is not None and key in seen_keys:
                d.results.append({**seen_keys[key], "outcome": "duplicate"})
                continue
            assert r.category is not None
            target = index.find(r.category, r.device_id, mx[k], my[k], t) if k in can_merge else None
            res: dict[str, Any]
            if target is not None:
                target.reports += 1
                target.last_t = max(target.last_t, t)
                d.merges.setdefault(target.key, []).append((r, loc, t))
                res = {"id": target.key, "outcome": "merged", "reports": target.reports}
            else:
                res = self._route(r, loc)
                d.new.append((r, loc, t, res))
                n = len(d.new)
                if k in can_merge:
                    index.add(OpenCase(-n, r.category, r.device_id, mx[k], my[k], t, res["status"], 1))
                res["id"] = ids[n - 1]
                yield row(k, res["id"], r, loc, res, t, now)
            d.results.append(res)
            if key is not None:
                seen_keys[key] = res

    def _metric(self, points: list[tuple[float, float] | None]) -> tuple[list[float], list[float]]:
        lon = np.array([np.nan if p is None else p[0] for p in points], dtype=float)
        lat = np.array([np.nan if p is None else p[1] for p in points], dtype=float)
        x, y = transformer(4490, self.epsg).transform(lon, lat)
        return list(map(float, x)), list(map(float, y))

    def merge_locks(self, reports: list[Report], points: list[tuple[float, float] | None], stamps: np.ndarray
                    ) -> list[Statement]:
        """The advisory locks that serialise merging decisions (taken by the caller before anything is read).
        Two reports that could join each other (same category, within the merge distance and the time window)
        always meet at a lock:
        - time: a report locks the slots (window-long stretches of time) floor(t / window) and the next, so two
          reports within the window share one — shared by a small plan, exclusive by a large batch. Every plan
          first takes its slots' epochs (64 slots, numbered modulo EPOCH_BUCKETS) shared; a batch touching more
          than MAX_SLOT_LOCKS slots (years of backlog) takes its epochs exclusively instead of its slots, so that
          no plan holds more than ~1,000 locks. (Slots numbered modulo 1,024, as before, made two imports three
          weeks apart wait for each other: in bench/ingest.py two loaders' batches met a third of the time.)
        - place (small plans only): each report locks every tile of its category that its distance square
          touches, and that square holds the other's tile; and the same device's reports of a category share one.
        A large batch thus holds its stretch of time, not every place: a backlog import of last year and the live
        reports of today, or two imports of different months, do not wait for each other (by place, a batch of
        10,000 took all 512 buckets, and everyone waited). `points` are the reports' points in the storage CRS
        (or None): a point outside every cell is never merged, and its locks do no harm."""
        mergeable = [k for k, p in enumerate(points) if p is not None]
        if not mergeable:
            return []
        coarse = len(mergeable) > COARSE_ABOVE
        w = self.window.total_seconds()
        t = stamps[mergeable]
        slot = np.floor(t / w).astype(np.int64)
        slots = np.unique(np.concatenate([slot, slot + 1]))
        epochs = np.unique(slots // SLOTS_PER_EPOCH % EPOCH_BUCKETS).tolist()
        wide = len(slots) > MAX_SLOT_LOCKS
        time_locks = [locks(EPOCH_LOCKS, epochs, shared=not wide),
                      *([] if wide else [locks(SLOT_LOCKS, np.unique(slots % INT4).tolist(), shared=not coarse)])]
        keys: set[int] = {bucket("device", reports[k].category, reports[k].device_id)
                          for k in mergeable if reports[k].device_id}
        if not coarse:
            mx, my = self._metric(points)
            d = self.i.settings.merge_distance_m
            size = 4 * d
            cat = np.array([_category_hash(str(reports[k].category)) for k in mergeable], dtype=np.int64)
            x, y = np.array([mx[k] for k in mergeable]), np.array([my[k] for k in mergeable])
            i0, i1 = np.floor((x - d) / size).astype(np.int64), np.floor((x + d) / size).astype(np.int64)
            j0, j1 = np.floor((y - d) / size).astype(np.int64), np.floor((y + d) / size).astype(np.int64)
            for i, j in ((i0, j0), (i0, j1), (i1, j0), (i1, j1)):
                keys.update(np.mod(cat * 1_000_003 + i * 92_821 + j * 68_917, BUCKETS).tolist())
        return [*time_locks, *([locks(MERGE_LOCKS, sorted(keys))] if keys else [])]

    def candidates(self, reports: list[Report], points: list[tuple[float, float] | None], stamps: np.ndarray
                   ) -> Statement | None:
        """The read of the open cases near each report's point (storage CRS) in space and time, and of the
        reporting devices."""
        mergeable = [k for k, p in enumerate(points) if p is not None]
        if not mergeable:
            return None
        occurred = stamps[mergeable]
        cats = [str(reports[k].category) for k in mergeable]
        x = np.fromiter((points[k][0] for k in mergeable), dtype=np.float64, count=len(mergeable))  # type: ignore[index]
        y = np.fromiter((points[k][1] for k in mergeable), dtype=np.float64, count=len(mergeable))  # type: ignore[index]
        pad, w = self.i.settings.merge_distance_m / 80_000.0, self.window.total_seconds()  # pad: degrees that
        # surely cover the distance here
        cols = "e.id, e.category, e.device_id, ST_X(e.geom), ST_Y(e.geom), e.last_report_at, e.status, e.report_count"
        # Probes of ix_events_mergeable (category, then a stretch of time, are selective; the box test is written so
        # that it cannot pick the GiST index over all events, whose probes grow with the table); enable_seqscan is
        # off in this transaction (see Intake.ingest) whatever stale statistics say. A small plan probes once per
        # report, around its point; a large batch once per stretch of its reports of one category no more than
        # two windows apart, in the box around them: each open case is read once, not once per report near it in
        # time (measured per 10,000 reports of a time-ordered import: 24 → ~6 ms of the server's time).
        if len(mergeable) <= COARSE_ABOVE:
            stretches = (cats, occurred - w, occurred + w, x - pad, x + pad, y - pad, y + pad)
        else:
            codes: dict[str, int] = {}
            code = np.fromiter((codes.setdefault(c, len(codes)) for c in cats), dtype=np.int64, count=len(cats))
            order = np.lexsort((occurred, code))
            code, t, xs, ys = code[order], occurred[order], x[order], y[order]
            starts = np.flatnonzero(np.concatenate([[True], (np.diff(code) != 0) | (np.diff(t) > 2 * w)]))
            ends = np.concatenate([starts[1:], [len(t)]]) - 1
            names = list(codes)
            stretches = ([names[c] for c in code[starts].tolist()], t[starts] - w, t[ends] + w,
                         np.minimum.reduceat(xs, starts) - pad, np.maximum.reduceat(xs, starts) + pad,
                         np.minimum.reduceat(ys, starts) - pad, np.maximum.reduceat(ys, starts) + pad)
        c, lo, hi, x0, x1, y0, y1 = (v if isinstance(v, list) else v.tolist() for v in stretches)
        return (f"""
            SELECT e.* FROM unnest(CAST(%(c)s AS text[]), CAST(%(lo)s AS float8[]), CAST(%(hi)s AS float8[]),
                                   CAST(%(x0)s AS float8[]), CAST(%(x1)s AS float8[]), CAST(%(y0)s AS float8[]),
                                   CAST(%(y1)s AS float8[])) AS p(c, lo, hi, x0, x1, y0, y1)
            CROSS JOIN LATERAL (
                SELECT {cols} FROM events e
                WHERE e.category = p.c
                  AND ST_X(e.geom) BETWEEN p.x0 AND p.x1 AND ST_Y(e.geom) BETWEEN p.y0 AND p.y1
                  AND e.last_report_at BETWEEN to_timestamp(p.lo) AND to_timestamp(p.hi)
                  AND {NOT_FINAL} OFFSET 0) e
            UNION
            SELECT {cols} FROM events e
            WHERE e.device_id = ANY(CAST(%(devices)s AS text[])) AND e.category = ANY(CAST(%(cats)s AS text[]))
              AND {NOT_FINAL} AND e.geom IS NOT NULL
            ORDER BY 1""", {
            "cats": array_literal(sorted(set(cats))),
            "devices": array_literal(sorted({str(reports[k].device_id) for k in mergeable if reports[k].device_id})),
            "c": array_literal(c), "lo": array_literal(lo), "hi": array_literal(hi), "x0": array_literal(x0),
            "x1": array_literal(x1), "y0": array_literal(y0), "y1": array_literal(y1)})

    def _index(self, rows: list[Any]) -> MergeIndex:
        index = MergeIndex(self.i.settings.merge_distance_m, self.window)
        if rows:
            x, y = transformer(4490, self.epsg).transform([r[3] for r in rows], [r[4] for r in rows])
            for r, cx, cy in zip(rows, x, y, strict=True):
                index.add(OpenCase(r[0], r[1], r[2], float(cx), float(cy), r[5], r[6], r[7]))
        return index

    def _route(self, r: Report, loc: Located) -> dict[str, Any]:
        assert r.category is not None
        key = (r.category, r.grade)
        fixed = self._routes.get(key)
        if fixed is None:
            cat = self.i.taxonomy.category(r.category)
            grade = r.grade or cat.default_grade
            deadline = self.i.calendar.deadline(self.now, self.i.taxonomy.time_limit(cat.code, grade))
            fixed = self._routes[key] = {
                "platform": self.i.taxonomy.platform_of(cat.code).key, "grade": grade, "level": cat.level,
                "deadline": deadline.isoformat(), "unit": self.i.taxonomy.lead_unit(cat.code, cat.level).code}
        found = loc.result
        if found is not None and loc.reason is None and (cell := found["cell"]) is not None:
            # The common answer: a case in a cell. Its dicts are shared by the cell's reports (gis.locate.to_results),
            # so the answer of a route and cell is made once and copied (the template holds the cell's dict: the
            # identity that keys it stays valid).
            tk = (key, id(cell))
            template = self._answers.get(tk)
            if template is None:
                template = self._answers[tk] = {
                    "id": 0, "status": "reported", "cell": cell, "worker": found["worker"],
                    "village": found["village"], "township": found["township"], "district": found["district"],
                    **fixed, "reports": 1, "reason": None, "outcome": "created"}
            return template.copy()
        chain = found if found is not None else self.villages.get(r.village_code or "", {})
        unlocated = loc.reason is not None or (found is None and not r.village_code)
        return {
            "id": 0, "status": "needs_location" if unlocated else "reported",
            "cell": chain.get("cell"), "worker": chain.get("worker"), "village": chain.get("village"),
            "township": chain.get("township"), "district": chain.get("district"),
            **fixed, "reports": 1, "reason": loc.reason, "outcome": "created",
        }

    def _bulk(self, table: str, columns: tuple[str, ...], rows: Iterable[tuple[Any, ...]]) -> Plan[None]:
        """Rows for a table. Many go by COPY (after the statements queued so far, which keeps their order); a few
        become one INSERT … json_populate_recordset queued with the batch's last statements, so that a small
        group of single reports is written in the same round trip as its log and notification (json, not jsonb:
        parsed once, ~15 % cheaper for a group's cases). dict values are jsonb columns."""
        cols = ", ".join(columns)
        rows = list(rows)
        if not rows:
            return
        if len(rows) > COPY_ABOVE:
            yield from self._flush()
            yield Copy(f"COPY {table} ({cols}) FROM STDIN",
                       [tuple(json.dumps(v, ensure_ascii=False) if isinstance(v, dict) else v for v in row)
                        for row in rows] if table == "event_log" else rows)
        else:
            payload = orjson.dumps([dict(zip(columns, row, strict=True)) for row in rows],
                                   option=orjson.OPT_SERIALIZE_NUMPY).decode()
            self._finish.append((f"INSERT INTO {table} ({cols}) SELECT {cols} "
                                 f"FROM json_populate_recordset(NULL::{table}, CAST(%(rows)s AS json))",
                                 {"rows": payload}))

    def _flush(self) -> Plan[None]:
        """Send the statements queued so far (before a COPY, which keeps their order)."""
        if self._finish:
            yield Send(self._finish)
            self._finish = []

    def finish(self) -> list[Statement]:
        """The writes that need no answer, for the caller to send with its last statements."""
        out, self._finish = self._finish, []
        return out

    def _write(self, d: _Decided, ids: list[int]) -> Plan[None]:
        """COPY the merged reports and the log entries now (the new cases are written); the rest is left for
        finish()."""
        now, merges, new_rows, index = self.now, d.merges, d.new, d.index
        ids = ids[:len(new_rows)]
        merged_into = {key: (ids[-key - 1] if key < 0 else key) for key in merges}
        # A new case is its own first report; event_reports links the reports merged into a case.
        merged_reports = [(merged_into[key], r, loc, t) for key, items in merges.items() for r, loc, t in items]
        yield from self._bulk("event_reports", REPORT_COLUMNS, [
            (eid, r.source, r.external_id, r.device_id, r.description, r.reporter_name, r.reporter_phone, _ewkt(loc),
             t, now) for eid, r, loc, t in merged_reports])
        # The log's 'report' entries: many by binary COPY, a few made in the server from arrays (in the round trip
        # of the commit; the two spellings are compared by test_a_large_batch_stores_what_a_small_one_stores).
        # Reports with photos name them in the entry and are written after the others, and so are merges: a case's
        # first entry comes before the entries of the reports merged into it.
        plain = [(eid, r.source, res["status"], loc.reason)
                 for eid, (r, loc, _, res) in zip(ids, new_rows, strict=True) if not r.photos]
        if len(plain) > COPY_ABOVE:
            # In COPY's binary format: the case's id, then what its source, status and reason make (few kinds).
            yield from self._flush()
            at = _pg_time(now)
            tails = _Encoded(lambda source, status, reason: b"".join((
                at, _field(f"intake:{source}"), _field("system"), _field("report"), _field(status), _field(reason),
                _jsonb({"source": source}))))
            yield Copy("COPY event_log (event_id, at, actor, role, action, to_status, note, data) FROM STDIN "
                       "(FORMAT binary)", [_binary_rows(8, [p[0] for p in plain], [tails[p[1:]] for p in plain])],
                       raw=True)
        elif plain:
            # (Reading the rows just written back out of events cost 10,000 index probes a batch.)
            self._finish.append(("""
                INSERT INTO event_log (event_id, at, actor, role, action, from_status, to_status, note, data)
                SELECT v.id, %(now)s, 'intake:' || v.source, 'system', 'report', NULL, v.status, v.reason,
                       jsonb_build_object('source', v.source)
                FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(sources)s AS text[]), CAST(%(statuses)s AS text[]),
                            CAST(%(reasons)s AS text[])) AS v(id, source, status, reason)""",
                {"now": now, **{k: array_literal(list(column)) for k, column in zip(
                    ("ids", "sources", "statuses", "reasons"), zip(*plain, strict=True), strict=True)}}))
        status_of = {c.key: c.status for cases in index._bins.values() for c in cases} if merges else {}
        entries: list[tuple[Any, ...]] = [
            (eid, now, f"intake:{r.source}", "system", "report", None, res["status"], loc.reason,
             {"source": r.source, "photos": r.photos})
            for eid, (r, loc, _, res) in zip(ids, new_rows, strict=True) if r.photos]
        for key, items in merges.items():
            status = status_of.get(key, "reported")
            entries += [(merged_into[key], now, f"intake:{r.source}", "system", "merge", status, status,
                         f"{r.source} report merged", {"source": r.source, "external_id": r.external_id})
                        for r, _, _ in items]
        yield from self._bulk("event_log", LOG_COLUMNS, entries)
        targets = [(merged_into[key], len(items), max(m[2] for m in items)) for key, items in merges.items()]
        if targets:
            self._finish.append(("""UPDATE events e SET report_count = e.report_count + v.n, updated_at = %(now)s,
                               last_report_at = greatest(e.last_report_at, v.t)
                           FROM unnest(CAST(%(ids)s AS bigint[]), CAST(%(ns)s AS int[]),
                                       CAST(%(ts)s AS timestamptz[])) AS v(id, n, t)
                           WHERE e.id = v.id""",
                        {"ids": [e[0] for e in targets], "ns": [e[1] for e in targets],
                          "ts": [e[2] for e in targets], "now": now}))
        photos = [(eid, url) for eid, new in zip(ids, new_rows, strict=True) if new[0].photos for url in new[0].photos]
        if photos:
            self._finish.append(("""INSERT INTO attachments (event_id, url, created_at)
                           SELECT e, u, %(now)s
                           FROM unnest(CAST(%(e)s AS bigint[]), CAST(%(u)s AS text[])) AS a(e, u)""",
                                 {"e": [e for e, _ in photos], "u": [u for _, u in photos], "now": now}))


@dataclass
class _Decided:
    """What deciding a batch found: each report's answer, the new cases, the reports merged into each case (by
    event id, or the negative placeholder of a new case)."""

    index: MergeIndex
    results: list[dict[str, Any]] = field(default_factory=list)
    new: list[tuple[Report, Located, dt.datetime, dict[str, Any]]] = field(default_factory=list)
    merges: dict[int, list[tuple[Report, Located, dt.datetime]]] = field(default_factory=dict)


def _new_case(k: int, eid: int, r: Report, loc: Located, res: dict[str, Any], t: dt.datetime, now: dt.datetime
              ) -> tuple[int, int, Report, Located, dict[str, Any]]:
    """A new case as _EventCopy.block takes it (k: the report's place in the batch)."""
    return k, eid, r, loc, res


def _event_row(k: int, eid: int, r: Report, loc: Located, res: dict[str, Any], t: dt.datetime, now: dt.datetime
               ) -> tuple[Any, ...]:
    """A new case as a row of EVENT_COLUMNS."""
    cell, worker, found = res["cell"] or {}, res["worker"] or {}, loc.result or {}
    return (eid, r.source, r.external_id, r.idempotency_key, r.category, res["grade"], res["platform"],
            res["status"], res["level"], res["unit"], _ewkt(loc), loc.how, r.address, cell.get("code"),
            cell.get("name"), worker.get("id"), worker.get("name"), (res["village"] or {}).get("code"),
            (res["township"] or {}).get("code"), (res["district"] or {}).get("code"), bool(found.get("snapped")),
            float(found.get("distance_m") or 0.0), loc.reason, r.device_id, r.description, r.reporter_name,
            r.reporter_phone, t, now, t, res["deadline"], now, 1)


_NOTHING: dict[str, Any] = {}


# COPY's binary format: the header (signature, flags, no extension), a NULL field, the trailer.
_HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_NULL = b"\xff\xff\xff\xff"
_TRAILER = b"\xff\xff"
_PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)  # PostgreSQL's epoch: its times count microseconds from it
_PG_EPOCH_US = round(_PG_EPOCH.timestamp()) * 1_000_000  # the same in Unix microseconds
# The columns of a new case as _EventCopy writes them: the fixed-width ones first, then the route's, the place's and
# the report's.
COPY_COLUMNS = (
    "id", "occurred_at", "last_report_at", "received_at", "updated_at", "report_count", "snapped", "distance_m",
    "geom", "category", "grade", "platform", "status", "level", "unit_code", "deadline", "cell_code", "cell_name",
    "worker_id", "worker_name", "village_code", "township_code", "district_code", "source", "located_by",
    "external_id", "idempotency_key", "address", "reason", "device_id", "description", "reporter_name",
    "reporter_phone")
assert sorted(COPY_COLUMNS) == sorted(EVENT_COLUMNS)
# A row's fixed part (PostgreSQL's binary forms: big-endian, each value after its length), then its point as EWKB.
_FIXED = np.dtype([
    ("fields", ">i2"), ("n_id", ">i4"), ("id", ">i8"), ("n_occurred", ">i4"), ("occurred", ">i8"),
    ("n_last", ">i4"), ("last", ">i8"), ("n_received", ">i4"), ("received", ">i8"), ("n_updated", ">i4"),
    ("updated", ">i8"), ("n_count", ">i4"), ("count", ">i4"), ("n_snapped", ">i4"), ("snapped", "?"),
    ("n_distance", ">i4"), ("distance", ">f8"),
    ("n_geom", ">i4"), ("order", "u1"), ("type", "<u4"), ("srid", "<u4"), ("x", "<f8"), ("y", "<f8")])
_GEOM_AT = _FIXED.fields["n_geom"][1]  # type: ignore[index]
_EWKB_POINT_SRID = 0x20000001


def _field(v: str | None) -> bytes:
    """A text value as a field of COPY's binary format."""
    if v is None:
        return _NULL
    b = v.encode()
    return len(b).to_bytes(4, "big") + b


def _pg_time(t: dt.datetime | str | None) -> bytes:
    """A timestamptz as a field of COPY's binary format."""
    if t is None:
        return _NULL
    return b"\x00\x00\x00\x08" + _pg_us(dt.datetime.fromisoformat(t) if isinstance(t, str) else t).to_bytes(
        8, "big", signed=True)


def _pg_us(t: dt.datetime) -> int:
    """An aware time in PostgreSQL's microseconds."""
    return (t - _PG_EPOCH) // dt.timedelta(microseconds=1)


class _EventCopy:
    """New cases in COPY's binary format (COPY_COLUMNS), written here rather than by psycopg's write_row (adapting
    33 values a row was a quarter of the batch's Python), a block of cases at a time, column by column: the
    fixed-width values of all (id, times, point, …) are one numpy record each, a case's route and place repeat
    across a batch and are encoded once each, and the rows are joined by bytes.join in C. Binary rather than text:
    PostgreSQL parses no times, numbers or points (per 10,000 cases, ~10–15 ms less of its CPU), and Python
    formats none (~17 ms a batch for the blocks, against ~22 for the text)."""

    def __init__(self, now: dt.datetime, stamps: np.ndarray) -> None:
        self.now_us = _pg_us(now)
        # The reports' times to the microsecond (within 0.5 µs for any date this side of 2100).
        self.times = np.rint(stamps * 1e6).astype(np.int64) - _PG_EPOCH_US
        self.routes: dict[tuple[Any, ...], bytes] = {}
        self.places: dict[tuple[Any, ...], bytes] = {}
        self.texts = _Encoded(_field)  # values of few kinds (a source, a reason), encoded once each
        self._keep: list[Any] = []

    def blocks(self, cases: Iterable[tuple[int, int, Report, Located, dict[str, Any]]], size: int = 500
               ) -> Iterator[bytes]:
        """The data of the cases, `size` at a time, as they come (COPY sends each block while the rest is
        decided); the first block starts with the header, the trailer follows the last."""
        block: list[tuple[int, int, Report, Located, dict[str, Any]]] = []
        head = _HEADER
        for case in cases:
            block.append(case)
            if len(block) == size:
                yield head + self.block(block)
                block, head = [], b""
        if block:
            yield head + self.block(block)
        elif head:
            return  # no case: psycopg sends an empty COPY's header and trailer itself
        yield _TRAILER

    def block(self, rows: list[tuple[int, int, Report, Located, dict[str, Any]]]) -> bytes:
        n = len(rows)
        ks, eids, reps, locs, ress = zip(*rows, strict=True)
        nulls = (_NULL,) * n

        def of(attr: str, items: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(map(attrgetter(attr), items))

        def optional(values: tuple[str | None, ...]) -> Iterable[bytes]:
            return nulls if values.count(None) == n else map(_field, values)

        def repeated(values: tuple[str | None, ...]) -> Iterable[bytes]:
            return map(self.texts.__getitem__, values)

        fixed = np.zeros(n, _FIXED)
        fixed["fields"] = len(COPY_COLUMNS)
        fixed["id"] = eids
        t = self.times[list(ks)]
        fixed["occurred"] = t
        fixed["last"] = t
        fixed["received"] = fixed["updated"] = self.now_us
        fixed["count"] = 1
        for name, size in (("n_id", 8), ("n_occurred", 8), ("n_last", 8), ("n_received", 8), ("n_updated", 8),
                           ("n_count", 4), ("n_snapped", 1), ("n_distance", 8), ("n_geom", 25)):
            fixed[name] = size
        found = [loc.result or _NOTHING for loc in locs]
        fixed["snapped"] = [bool(f.get("snapped")) for f in found]
        fixed["distance"] = [float(f.get("distance_m") or 0.0) for f in found]
        fixed["order"] = 1
        fixed["type"] = _EWKB_POINT_SRID
        fixed["srid"] = 4490
        lon = of("lon", locs)
        nowhere = [j for j, v in enumerate(lon) if v is None]
        if nowhere:
            lon = tuple(np.nan if v is None else v for v in lon)
        fixed["x"] = lon
        fixed["y"] = [np.nan if v is None else v for v in of("lat", locs)] if nowhere else of("lat", locs)
        heads = _records(fixed)
        for j in nowhere:
            heads[j] = heads[j][:_GEOM_AT] + _NULL

        routes, places = self.routes, self.places
        route = []
        for r, res in zip(reps, ress, strict=True):
            key = (r.category, res["grade"], res["status"], res["deadline"])
            b = routes.get(key)
            if b is None:
                b = routes[key] = b"".join((
                    _field(r.category), b"\x00\x00\x00\x02" + int(res["grade"]).to_bytes(2, "big", signed=True),
                    _field(res["platform"]), _field(res["status"]), _field(res["level"]), _field(res["unit"]),
                    _pg_time(res["deadline"])))
            route.append(b)
        place = []
        for res in ress:
            # A place's dicts are shared by the answers of its reports (gis.locate.to_results): known by identity.
            cell, worker, village, township = res["cell"], res["worker"], res["village"], res["township"]
            key = (id(cell), id(worker), id(village), id(township))
            b = places.get(key)
            if b is None:
                cell, worker = cell or {}, worker or {}
                b = places[key] = b"".join(_field(v) for v in (
                    cell.get("code"), cell.get("name"), worker.get("id"), worker.get("name"),
                    (village or {}).get("code"), (township or {}).get("code"), (res["district"] or {}).get("code")))
                self._keep.append(res)  # the dicts whose identities key the places stay alive
            place.append(b)
        return b"".join(chain.from_iterable(zip(
            heads, route, place, repeated(of("source", reps)), repeated(of("how", locs)),
            optional(of("external_id", reps)), optional(of("idempotency_key", reps)), optional(of("address", reps)),
            repeated(of("reason", locs)), optional(of("device_id", reps)), optional(of("description", reps)),
            optional(of("reporter_name", reps)), optional(of("reporter_phone", reps)), strict=True)))


_ID_HEAD = np.dtype([("fields", ">i2"), ("n_id", ">i4"), ("id", ">i8")])


def _binary_rows(fields: int, ids: list[int], *rest: Iterable[bytes]) -> bytes:
    """Rows in COPY's binary format, header and trailer included: a bigint (`ids`), then fields already encoded
    (each item of `rest` may hold several; `fields` counts them all)."""
    head = np.empty(len(ids), _ID_HEAD)
    head["fields"], head["n_id"], head["id"] = fields, 8, ids
    return b"".join((_HEADER, *chain.from_iterable(zip(_records(head), *rest, strict=True)), _TRAILER))


def _records(records: np.ndarray) -> list[bytes]:
    """The bytes of each record of a record array."""
    data, width = records.tobytes(), records.dtype.itemsize
    return [data[j:j + width] for j in range(0, len(data), width)]


class _Encoded(dict[Any, bytes]):
    """Values encoded once each, made on first use: encoded[key] is make(key), or make(*key) for a tuple key."""

    def __init__(self, make: Callable[..., bytes]) -> None:
        super().__init__()
        self.make = make

    def __missing__(self, key: Any) -> bytes:
        b = self[key] = self.make(*key) if isinstance(key, tuple) else self.make(key)
        return b


def _jsonb(value: Any) -> bytes:
    """A jsonb value as a field of COPY's binary format (version 1: the JSON text)."""
    b = b"\x01" + orjson.dumps(value)
    return len(b).to_bytes(4, "big") + b


def _ewkt(loc: Located) -> str | None:
    return None if loc.lon is None else f"SRID=4490;POINT({loc.lon!r} {loc.lat!r})"
