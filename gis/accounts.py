"""Accounts (argon2-hashed passwords, a role and a jurisdiction scope) and device API keys."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlalchemy import Engine, text

from gis.errors import NotFound, WanggeError
from gis.workflow import Actor

ROLES = ("grid_worker", "grid_leader", "unit_handler", "command_centre", "leader", "planner", "admin")
_hasher = PasswordHasher()


class AccountInvalid(WanggeError):
    """A user that cannot be created as asked (HTTP 422 / CLI exit 1)."""


def create_user(engine: Engine, username: str, password: str, role: str, scope_code: str,
                unit_code: str | None = None, worker_id: str | None = None, display_name: str | None = None,
                known_units: set[str] | None = None) -> Actor:
    if role not in ROLES:
        raise AccountInvalid(f"role {role!r} is not one of {', '.join(ROLES)}")
    if len(password) < 8:
        raise AccountInvalid("the password needs at least 8 characters")
    if role == "unit_handler" and not unit_code:
        raise AccountInvalid("a unit_handler needs --unit (the handling unit's code)")
    if unit_code and known_units is not None and unit_code not in known_units:
        raise AccountInvalid(f"unit {unit_code!r} is not in the taxonomy's units")
    with engine.begin() as conn:
        in_jur = conn.execute(text("SELECT level FROM jurisdictions WHERE code = :c"), {"c": scope_code}).first()
        in_cells = conn.execute(text("SELECT 1 FROM cells WHERE code = :c AND valid_to IS NULL"),
                                {"c": scope_code}).first()
        if not in_jur and not in_cells:
            raise AccountInvalid(f"scope {scope_code} names no jurisdiction or live grid cell")
        if role == "grid_worker" and worker_id is None and in_cells:
            worker_id = conn.execute(text("""SELECT a.worker_id FROM worker_assignments a
                                             JOIN cells c ON c.id = a.cell_id WHERE c.code = :c
                                             AND a.valid_to IS NULL ORDER BY a.worker_id LIMIT 1"""),
                                     {"c": scope_code}).scalar()
        if conn.execute(text("SELECT 1 FROM users WHERE username = :u"), {"u": username}).first():
            raise AccountInvalid(f"user {username!r} exists already")
        conn.execute(text("""INSERT INTO users (username, display_name, password_hash, role, scope_code, unit_code,
                             worker_id) VALUES (:u, :d, :h, :r, :s, :unit, :w)"""),
                     {"u": username, "d": display_name, "h": _hasher.hash(password), "r": role, "s": scope_code,
                      "unit": unit_code, "w": worker_id})
    return Actor(username, role, scope_code, unit_code, worker_id)


def _actor(row: Any) -> Actor:
    return Actor(row.username, row.role, row.scope_code, row.unit_code, row.worker_id)


def authenticate(engine: Engine, username: str, password: str) -> Actor | None:
    with engine.connect() as conn:
        row = conn.execute(text("""SELECT username, password_hash, role, scope_code, unit_code, worker_id
                                   FROM users WHERE username = :u AND active"""), {"u": username}).first()
    if row is None:
        _hasher.hash(password)  # spend the same time whether or not the user exists
        return None
    try:
        _hasher.verify(row.password_hash, password)
    except VerificationError:
        return None
    return _actor(row)


def actor_for(engine: Engine, username: str) -> Actor | None:
    with engine.connect() as conn:
        row = conn.execute(text("""SELECT username, role, scope_code, unit_code, worker_id FROM users
                                   WHERE username = :u AND active"""), {"u": username}).first()
    return None if row is None else _actor(row)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_device_key(engine: Engine, device_id: str) -> str:
    """A new API key for one device (shown once; only its hash is stored)."""
    key = "wgd_" + secrets.token_urlsafe(32)
    with engine.begin() as conn:
        if not conn.execute(text("SELECT 1 FROM devices WHERE id = :d"), {"d": device_id}).first():
            raise NotFound(f"no device {device_id}")
        conn.execute(text("INSERT INTO device_keys (device_id, key_hash) VALUES (:d, :h)"),
                     {"d": device_id, "h": _digest(key)})
    return key


def device_for_key(engine: Engine, key: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(text("SELECT device_id FROM device_keys WHERE key_hash = :h AND revoked_at IS NULL"),
                            {"h": _digest(key)}).scalar()
