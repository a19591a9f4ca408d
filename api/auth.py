"""Authentication: OAuth2 password flow → bearer JWT for people, X-Device-Key for sensors and cameras."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import APIRouter, Depends, Header, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from sqlalchemy import Engine

from gis import accounts
from gis.workflow import Actor

router = APIRouter(prefix="/api/v1/auth", tags=["auth"])
_bearer = OAuth2PasswordBearer(tokenUrl="/api/v1/auth/token", auto_error=False)
ALGORITHM = "HS256"


@dataclass
class Principal:
    """Who is calling: a person (actor) or a device (device_id)."""

    actor: Actor | None = None
    device_id: str | None = None


def issue_token(request: Request, actor: Actor) -> str:
    auth = request.app.state.auth
    exp = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=auth.token_minutes)
    claims = {"sub": actor.username, "role": actor.role, "scope": actor.scope_code, "exp": exp}
    return jwt.encode(claims, request.app.state.secret_key, algorithm=ALGORITHM)


@router.post("/token")
def token(request: Request, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> dict[str, Any]:
    actor = accounts.authenticate(request.app.state.engine, form.username, form.password)
    if actor is None:
        raise HTTPException(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    return {"access_token": issue_token(request, actor), "token_type": "bearer", "role": actor.role,
            "scope": actor.scope_code}


async def principal(request: Request, token: Annotated[str | None, Depends(_bearer)],
                    x_device_key: Annotated[str | None, Header()] = None) -> Principal:
    return await resolve(request, token, x_device_key)


async def principal_of(request: Request) -> Principal:
    """principal() for an endpoint that reads its own headers (the busiest one: no dependency to solve)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return await resolve(request, token if scheme.lower() == "bearer" else None, request.headers.get("x-device-key"))


async def resolve(request: Request, token: str | None, device_key: str | None) -> Principal:
    # Async on purpose: a cached answer costs a JWT check and a dict lookup, and a hop into the thread pool
    # would cost more than that. The database is read (in the pool) only when the cache has no fresh answer.
    if device_key:
        device = await _cached(request, "device", device_key, accounts.device_for_key)
        if device is None:
            raise HTTPException(401, "unknown or revoked device key")
        return Principal(device_id=device)
    if not token:
        raise HTTPException(401, "log in first: POST /api/v1/auth/token", headers={"WWW-Authenticate": "Bearer"})
    actor = await _cached(request, "user", _subject(request, token), accounts.actor_for)
    if actor is None:
        raise HTTPException(401, "the account no longer exists or is disabled")
    return Principal(actor=actor)


_tokens: dict[tuple[int, str], tuple[float, str]] = {}


def _subject(request: Request, token: str) -> str:
    """The username of a valid token. A verified token is remembered until it expires: checking the signature
    of the same token on every request of a session costs more than answering a small request."""
    k = (id(request.app), token)
    hit = _tokens.get(k)
    if hit is not None and time.time() < hit[0]:
        return hit[1]
    try:
        claims = jwt.decode(token, request.app.state.secret_key, algorithms=[ALGORITHM])
    except jwt.PyJWTError as exc:
        raise HTTPException(401, f"invalid token: {exc}", headers={"WWW-Authenticate": "Bearer"}) from exc
    if len(_tokens) > 10_000:
        _tokens.clear()
    _tokens[k] = (float(claims.get("exp", 0)), str(claims.get("sub")))
    return _tokens[k][1]


_TTL_S = 10.0  # a disabled account, a changed role or a revoked device key takes effect within this time
_cache: dict[tuple[int, str, str], tuple[float, Any]] = {}


async def _cached(request: Request, kind: str, key: str, load: Callable[[Engine, str], Any]) -> Any:
    """The account behind a token or the device behind a key, re-read at most every few seconds."""
    k = (id(request.app), kind, key)
    now = time.monotonic()
    hit = _cache.get(k)
    if hit is not None and now - hit[0] < _TTL_S:
        return hit[1]
    value = await run_in_threadpool(load, request.app.state.engine, key)
    if len(_cache) > 10_000:
        _cache.clear()
    _cache[k] = (now, value)
    return value


def _cached_actor(request: Request, username: str) -> Actor | None:
    """The account behind a username, through the same cache, for synchronous callers (the dashboard)."""
    k = (id(request.app), "user", username)
    now = time.monotonic()
    hit = _cache.get(k)
    if hit is not None and now - hit[0] < _TTL_S:
        return hit[1]
    actor = accounts.actor_for(request.app.state.engine, username)
    _cache[k] = (now, actor)
    return actor


async def person(p: Annotated[Principal, Depends(principal)]) -> Actor:
    if p.actor is None:
        raise HTTPException(403, "a device key can only post events for its own device")
    return p.actor


PrincipalDep = Annotated[Principal, Depends(principal)]
ActorDep = Annotated[Actor, Depends(person)]
