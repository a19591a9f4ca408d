"""The dashboard's plain HTTP side on the wangge FastAPI app: session login, language switch, the live feed for the
wall (server-sent events authenticated by the session cookie), CSV export, photos, and the page routes that hand
the Dash shell to logged-in users only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import html
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jwt
from dash.backends._fastapi import reset_current_request, set_current_request
from fastapi import APIRouter, FastAPI, Form, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import text
from starlette.middleware.gzip import GZipMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

from api.auth import ALGORITHM, _cached_actor, issue_token
from dashboard import data, i18n, snapshot, ticker
from dashboard.i18n import t
from gis import accounts, kpi
from gis.cases import get_event
from gis.errors import NotFound
from gis.intake import TZ
from gis.workflow import Actor

PREFIX = "/dashboard"
SESSION_COOKIE = "wangge_session"
LANG_COOKIE = "wangge_lang"
FEED_DETAIL = 50  # cases per feed message sent with their details (the newest of a burst)


class DashboardSettings(BaseSettings):
    """`WANGGE_BASEMAP_URL` (a tile URL template), `WANGGE_BASEMAP_ATTRIBUTION`, `WANGGE_BASEMAP_CRS`
    (`wgs84` for Tianditu/CGCS2000, `gcj02` for AMap/Tencent; guessed from the URL when unset)."""

    model_config = SettingsConfigDict(env_prefix="WANGGE_", env_file=".env", extra="ignore")
    basemap_url: str | None = None
    basemap_attribution: str = ""
    basemap_crs: str | None = None

    @property
    def gcj02(self) -> bool:
        if not self.basemap_url:
            return False
        if self.basemap_crs:
            return self.basemap_crs.lower().replace("-", "") == "gcj02"
        return any(h in self.basemap_url for h in ("autonavi", "amap", "gtimg", "qq.com", "map.qq"))


def lang_of(request: Request) -> str:
    return i18n.lang_of(request.query_params.get("lang") or request.cookies.get(LANG_COOKIE))


def actor_of(request: Request) -> Actor | None:
    """The logged-in account behind the session cookie (a bearer JWT), or None."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    try:
        claims = jwt.decode(token, request.app.state.secret_key, algorithms=[ALGORITHM])
    except jwt.PyJWTError:
        return None
    return _cached_actor(request, str(claims.get("sub")))


def _safe_next(target: str | None) -> str:
    return target if target and target.startswith(PREFIX + "/") and "//" not in target else f"{PREFIX}/wall"


_LOGIN_PAGE = """<!doctype html><html lang="{html_lang}"><head><meta charset="utf-8"><title>{title}</title>
<link rel="stylesheet" href="{prefix}/assets/dashboard.css"></head>
<body class="login-body"><form class="login" method="post" action="{prefix}/login">
<h1>{app_title}</h1><p class="login-error">{error}</p>
<input type="hidden" name="next" value="{next}">
<label>{username}<input name="username" autocomplete="username" required autofocus></label>
<label>{password}<input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">{login_button}</button>
<a class="lang-switch" href="{prefix}/lang/{other}?next={prefix}/login">{switch_lang}</a>
</form></body></html>"""


def login_page(lang: str, error: str = "", next_: str = "") -> str:
    esc = html.escape
    return _LOGIN_PAGE.format(
        html_lang=t("html_lang", lang), title=esc(t("login_title", lang)), prefix=PREFIX,
        app_title=esc(t("app_title", lang)), error=esc(error), next=esc(next_), username=esc(t("username", lang)),
        password=esc(t("password", lang)), login_button=esc(t("login_button", lang)),
        other="en" if lang == "zh" else "zh", switch_lang=esc(t("switch_lang", lang)))


def build_router(index_html: Callable[[], str]) -> APIRouter:
    router = APIRouter(prefix=PREFIX, include_in_schema=False)

    @router.get("/login")
    def login_form(request: Request, next: str = "") -> HTMLResponse:
        return HTMLResponse(login_page(lang_of(request), next_=next))

    @router.post("/login")
    def login(request: Request, username: str = Form(...), password: str = Form(...),
              next: str = Form("")) -> Response:
        actor = accounts.authenticate(request.app.state.engine, username, password)
        lang = lang_of(request)
        if actor is None:
            return HTMLResponse(login_page(lang, t("login_failed", lang), next), status_code=401)
        resp = RedirectResponse(_safe_next(next), status_code=303)
        minutes = request.app.state.auth.token_minutes
        resp.set_cookie(SESSION_COOKIE, issue_token(request, actor), max_age=minutes * 60, httponly=True,
                        samesite="lax", path="/")
        return resp

    @router.get("/logout")
    def logout() -> Response:
        resp = RedirectResponse(f"{PREFIX}/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    @router.get("/lang/{lang}")
    def switch_language(lang: str, next: str = "") -> Response:
        resp = RedirectResponse(_safe_next(next) if next != f"{PREFIX}/login" else next, status_code=303)
        resp.set_cookie(LANG_COOKIE, i18n.lang_of(lang), max_age=365 * 86400, samesite="lax", path="/")
        return resp

    async def page(request: Request) -> Response:
        actor = await asyncio.to_thread(actor_of, request)
        if actor is None:
            return RedirectResponse(f"{PREFIX}/login?next={quote(request.url.path)}", status_code=303)
        if request.url.path.rstrip("/") in (PREFIX, f"{PREFIX}/wall"):
            # The wall's figures are computed while the browser loads the scripts; the layout request picks them up.
            snapshot.wall(request.app.state, actor)
        token = set_current_request(request)  # Dash builds its index from the current request
        try:
            return HTMLResponse(index_html())
        finally:
            reset_current_request(token)

    for path in ("", "/", "/wall", "/hotspots", "/villages", "/planner", "/events/{event_id}"):
        router.add_api_route(path, page, methods=["GET"])
    router.page = page  # type: ignore[attr-defined]  # for install_fallback

    @router.get("/feed")
    async def feed(request: Request) -> Response:
        """The wall's live feed: changed cases in the session's scope, pushed as they commit (LISTEN/NOTIFY)."""
        actor = actor_of(request)
        if actor is None:
            raise HTTPException(401, "log in first")
        hub = request.app.state.feed
        shift = DashboardSettings().gcj02
        engine = request.app.state.engine
        lang, taxonomy = lang_of(request), request.app.state.taxonomy

        def rows_for(ids: list[int]) -> list[dict[str, Any]]:
            rows = data.changed_events(engine, actor, ids, shift)
            return [{k: r[k] for k in ("id", "status", "lon", "lat", "new")}
                    | {"entry": ticker.entry(r, lang, taxonomy)} for r in rows]

        # A mass update (a supervision sweep marking thousands overdue) must not flood the wall: the newest cases
        # are what the ticker and the markers show; the rest only triggers a refresh.
        return hub.sse(request, rows_for, newest=FEED_DETAIL, retry_ms=2000)

    @router.get("/villages.csv")
    def villages_csv(request: Request, days: int = 30) -> Response:
        actor = actor_of(request)
        if actor is None:
            raise HTTPException(401, "log in first")
        now = dt.datetime.now(TZ)
        rows = village_table(request.app.state.engine, actor, now - dt.timedelta(days=days), now)
        lang = lang_of(request)
        cols = VILLAGE_COLUMNS
        lines = [",".join(t(label, lang) for _, label in cols)]
        for r in rows:
            lines.append(",".join(_csv(r.get(k)) for k, _ in cols))
        name = f"villages-{now:%Y%m%d}.csv"
        return Response("\ufeff" + "\n".join(lines) + "\n", media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})

    @router.get("/photos/{attachment_id}")
    def photo(request: Request, attachment_id: int) -> Response:
        actor = actor_of(request)
        if actor is None:
            raise HTTPException(401, "log in first")
        with request.app.state.engine.connect() as conn:
            row = conn.execute(text("SELECT event_id, path, content_type FROM attachments WHERE id = :i"),
                               {"i": attachment_id}).first()
        if row is None or not row.path:
            raise HTTPException(404, "no such photo")
        try:
            get_event(request.app.state.engine, row.event_id, actor)
        except NotFound as exc:
            raise HTTPException(404, "no such photo") from exc
        return FileResponse(Path(row.path), media_type=row.content_type)

    return router


VILLAGE_COLUMNS = (("code", "col_id"), ("name", "col_village"), ("population", "col_population"),
                   ("area_km2", "col_area"), ("events", "col_events"), ("previous", "col_previous"),
                   ("per_km2", "col_per_km2"), ("per_1000", "col_per_1000"), ("open", "col_open"),
                   ("in_progress", "col_in_progress"), ("overdue", "col_overdue"),
                   ("closed_today", "col_closed_today"), ("on_time_rate", "col_on_time"),
                   ("closure_rate", "col_closure"), ("on_time_rate_due", "col_on_time_due"))


def _csv(v: Any) -> str:
    s = "" if v is None else str(v)
    return f'"{s}"' if any(c in s for c in ',"\n') else s


def village_table(engine: Any, actor: Actor, start: dt.datetime, end: dt.datetime) -> list[dict[str, Any]]:
    """Village stats for the window, completed with the closure rate and the on-time rate over the cases due
    (按期办结率) of the evaluation indicators."""
    rows = data.village_stats(engine, actor, start, end)
    indicators = {r["key"]: r for r in kpi.kpis(engine, actor, start, end, "village")}
    for r in rows:
        k = indicators.get(r["code"], {})
        r["closure_rate"], r["on_time_rate_due"] = k.get("closure_rate"), k.get("on_time_rate_due")
    return rows


class DashboardGZip:
    """Gzip for the dashboard's pages, scripts and callbacks only (the API and the feed are left as they are).

    Scripts and style sheets (Dash's component suites, our assets) are the same bytes for every browser: the
    compressed response is kept (by path and query, which carry the version) instead of compressing about 1.4 MB
    again for every page load.
    """

    STATIC = (f"{PREFIX}/_dash-component-suites/", f"{PREFIX}/assets/")
    MAX_CACHED = 64

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gzip = GZipMiddleware(app, minimum_size=800)
        self.cache: dict[tuple[str, bytes], tuple[dict[str, Any], list[dict[str, Any]]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or not path.startswith(PREFIX) or path == f"{PREFIX}/feed":
            await self.app(scope, receive, send)
            return
        static = scope.get("method") == "GET" and path.startswith(self.STATIC) and _accepts_gzip(scope)
        if not static:
            await self.gzip(scope, receive, send)
            return
        key = (path, scope.get("query_string", b""))
        hit = self.cache.get(key)
        if hit is not None:
            await send(hit[0])
            for body in hit[1]:
                await send(body)
            return
        messages: list[dict[str, Any]] = []

        async def keep(message: Any) -> None:
            messages.append(message)
            await send(message)

        await self.gzip(scope, receive, keep)
        if messages and messages[0].get("type") == "http.response.start" and messages[0].get("status") == 200:
            if len(self.cache) >= self.MAX_CACHED:
                self.cache.clear()
            self.cache[key] = (messages[0], messages[1:])


def _accepts_gzip(scope: Scope) -> bool:
    return any(k == b"accept-encoding" and b"gzip" in v for k, v in scope.get("headers", []))


def install_fallback(app: FastAPI, page: Callable[..., Any]) -> None:
    """Any other GET under /dashboard/ (registered after Dash's routes, so those match first) is a page too."""
    app.add_api_route(PREFIX + "/{rest:path}", page, methods=["GET"], include_in_schema=False)


def install(app: FastAPI, index_html: Callable[[], str]) -> Callable[..., Any]:
    """The dashboard's routes and gzip; returns the page handler (for install_fallback)."""
    router = build_router(index_html)
    app.include_router(router)
    app.add_middleware(DashboardGZip)
    return router.page  # type: ignore[attr-defined]
