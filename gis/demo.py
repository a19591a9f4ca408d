"""Demo accounts for the demo township: one password for all, kept in the data directory (mode 0600)."""

from __future__ import annotations

import secrets
from pathlib import Path

from sqlalchemy import Engine, text

from gis.accounts import create_user

TOWN = "330212101000"
DISTRICT = "330212000000"
# name, role, scope, unit
ACCOUNTS = [
    ("admin", "admin", DISTRICT, None),
    ("centre", "command_centre", TOWN, None),
    ("leader", "leader", TOWN, None),
    ("planner", "planner", TOWN, None),
    ("market", "unit_handler", TOWN, "market_supervision_office"),
    ("enforcement", "unit_handler", TOWN, "enforcement_squad"),
    ("env", "unit_handler", TOWN, "env_enforcement_squad"),
    ("fire", "unit_handler", TOWN, "fire_station"),
    ("governance", "unit_handler", TOWN, "governance_office"),
]


def ensure_demo_accounts(engine: Engine, data_dir: Path, known_units: set[str]) -> tuple[Path, str, bool]:
    """Create the demo accounts once; returns (credentials file, password, created now)."""
    path = data_dir / "demo-accounts.txt"
    with engine.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM users WHERE username = 'admin'")).first() is not None
    if exists and path.exists():
        return path, path.read_text().split("password:")[1].split()[0], False
    password = secrets.token_urlsafe(9)
    with engine.connect() as conn:
        first = conn.execute(text("""SELECT c.code AS cell, v.code AS village FROM cells c
                                     JOIN jurisdictions v ON v.id = c.village_id ORDER BY c.code LIMIT 1""")).first()
        conn.execute(text("DELETE FROM users WHERE username LIKE 'demo%' OR username = ANY(:n)"),
                     {"n": [a[0] for a in ACCOUNTS]})
        conn.commit()
    accounts = list(ACCOUNTS)
    if first is not None:
        accounts += [("village", "grid_leader", first.village, None), ("worker", "grid_worker", first.cell, None)]
    for name, role, scope, unit in accounts:
        if unit is not None and unit not in known_units:
            continue
        create_user(engine, name, password, role, scope, unit_code=unit)
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text("demo accounts: " + ", ".join(a[0] for a in accounts) + f"\npassword: {password}\n")
    path.chmod(0o600)
    return path, password, True
