"""The append-only case log (the database refuses UPDATE and DELETE on it) and the change feed."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Connection, text

CHANNEL = "wangge_events"


def append(conn: Connection, event_id: int, at: dt.datetime, actor: str, role: str, action: str,
           from_status: str | None, to_status: str, note: str | None, data: dict[str, Any] | None = None) -> None:
    conn.execute(
        text("""INSERT INTO event_log (event_id, at, actor, role, action, from_status, to_status, note, data)
                VALUES (:e, :at, :actor, :role, :action, :frm, :to, :note, CAST(:data AS jsonb))"""),
        {"e": event_id, "at": at, "actor": actor, "role": role, "action": action, "frm": from_status,
         "to": to_status, "note": note, "data": json.dumps(data or {}, ensure_ascii=False, default=str)},
    )


def notify(conn: Connection, ids: list[int]) -> None:
    """Tell listeners (the change feed) which events changed; delivered when the transaction commits."""
    literal = _payloads(ids)
    if literal is not None:
        conn.execute(text("SELECT pg_notify(:c, p) FROM unnest(CAST(:p AS text[])) p"), {"c": CHANNEL, "p": literal})


def notify_statement(ids: list[int]) -> tuple[str, dict[str, Any]] | None:
    """notify() as a statement for psycopg (gis/intake_io); None when there is nothing to tell."""
    literal = _payloads(ids)
    if literal is None:
        return None
    return "SELECT pg_notify(%(c)s, p) FROM unnest(CAST(%(p)s AS text[])) p", {"c": CHANNEL, "p": literal}


def _payloads(ids: list[int]) -> str | None:
    unique = sorted(set(ids))
    if not unique:
        return None
    # A NOTIFY payload holds at most 8,000 bytes: chunks of 500 ids, all sent in one statement.
    payloads = [json.dumps({"ids": unique[start : start + 500]}) for start in range(0, len(unique), 500)]
    return "{" + ",".join('"' + p.replace('"', '\\"') + '"' for p in payloads) + "}"
