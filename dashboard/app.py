"""The Dash app on the wangge FastAPI server (one process, one port): `mount(app)` is all api/app.py calls.

Pages are rendered by one routing callback from the URL; each callback reads the account and the language from
the session cookies of its own request, so every figure is limited to what that account may see. Database work
runs in worker threads (`asyncio.to_thread`) so that the event loop keeps serving the API and the live feed.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import dash_leaflet as dl
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.backends._fastapi import get_current_request
from dash.exceptions import PreventUpdate
from fastapi import FastAPI
from sqlalchemy import Engine

from dashboard import data, i18n, server, snapshot, ticker
from dashboard.i18n import t
from dashboard.server import PREFIX, DashboardSettings
from gis.intake import TZ
from gis.workflow import Actor

ASSETS = Path(__file__).resolve().parent / "assets"
PALETTE = ("#24384f", "#fee08b", "#fdae61", "#f46d43", "#d73027", "#a50026")  # class 0 = no events
GI_COLOURS = {"hot_99": "#d7191c", "hot_95": "#f07c4a", "hot_90": "#fdc086", "cold_90": "#abd9e9",
              "cold_95": "#5fa2cf", "cold_99": "#2c7bb6", "none": "rgba(0,0,0,0)"}
EMPTY_FC: dict[str, Any] = {"type": "FeatureCollection", "features": []}
WINDOWS = {"today": 0, "7d": 7, "30d": 30}


# -- request context ---------------------------------------------------------------------------------------------

class _Ctx:
    def __init__(self) -> None:
        request = get_current_request()
        self.app = request.app
        self.engine: Engine = request.app.state.engine
        self.lang = server.lang_of(request)
        actor = server.actor_of(request)
        if actor is None:
            raise PreventUpdate
        self.actor: Actor = actor
        self.settings = DashboardSettings()
        self.taxonomy = request.app.state.taxonomy

    def category(self, code: str) -> str:
        try:
            c = self.taxonomy.category(code)
        except Exception:
            return code
        return str(c.name_en if self.lang == "en" else c.name_zh)

    def platforms(self) -> list[tuple[str, str]]:
        ps = self.taxonomy.platform_set()
        return [(k, p.name_en if self.lang == "en" else p.name_zh) for k, p in ps.platforms.items()]


_geo_cache: dict[tuple[str, ...], tuple[float, Any]] = {}


def _cached(key: tuple[str, ...], fn: Any, *args: Any, ttl: float = 600.0) -> Any:
    """Boundary layers change only with a package load: kept for ten minutes, per scope (bounded)."""
    now = time.monotonic()
    hit = _geo_cache.get(key)
    if hit and now - hit[0] < ttl:
        return hit[1]
    value = fn(*args)
    if len(_geo_cache) > 256:
        _geo_cache.clear()
    _geo_cache[key] = (now, value)
    return value


def _attrs(d: dict[str, str]) -> Any:
    """data-* attributes for Dash html components (not keyword identifiers)."""
    return d


def _centre(bounds: list[list[float]]) -> list[float]:
    return [(bounds[0][0] + bounds[1][0]) / 2, (bounds[0][1] + bounds[1][1]) / 2]


def _window(name: str | None, now: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
    days = WINDOWS.get(name or "today", 0)
    day = data.local_midnight(now)
    return (day if days == 0 else day - dt.timedelta(days=days - 1)), day + dt.timedelta(days=1)


# -- shared pieces -----------------------------------------------------------------------------------------------

def nav(c: _Ctx, current: str) -> html.Nav:
    pages = ("wall", "hotspots", "villages") + (("planner",) if c.actor.role in ("planner", "admin") else ())
    links: list[Any] = [dcc.Link(t(f"nav_{p}", c.lang), href=f"{PREFIX}/{p}",
                                 className="active" if p == current else "") for p in pages]
    other = "en" if c.lang == "zh" else "zh"
    links.append(html.A(t("switch_lang", c.lang), href=f"{PREFIX}/lang/{other}?next={PREFIX}/{current}",
                        id="lang-switch"))
    links.append(html.A(t("logout", c.lang), href=f"{PREFIX}/logout"))
    return html.Nav(links, className="nav")


def basemap(c: _Ctx) -> list[Any]:
    if not c.settings.basemap_url:
        return []
    return [dl.TileLayer(url=c.settings.basemap_url, attribution=c.settings.basemap_attribution)]


def geo(c: _Ctx, layer: str) -> Any:
    fn = {"villages": data.village_shapes, "townships": data.township_shapes, "water": data.water_shapes,
          "devices": data.device_points, "cells": data.cell_shapes}[layer]
    shift = c.settings.gcj02
    return _cached((layer, c.actor.scope_code, str(shift)), fn, c.engine, c.actor, shift)


def breaks(values: list[float]) -> list[float]:
    """Upper bounds of five classes over the non-zero values (quantiles, rounded to two significant digits)."""
    nz = sorted(v for v in values if v and v > 0)
    if not nz:
        return []
    out: list[float] = []
    for q in (0.2, 0.4, 0.6, 0.8, 1.0):
        v = nz[min(len(nz) - 1, int(q * len(nz)) - (1 if q == 1.0 else 0))]
        v = float(f"{v:.2g}") if v < nz[-1] else nz[-1]
        if not out or v > out[-1]:
            out.append(v)
    return out


def colour_for(v: float | None, bounds: list[float]) -> str:
    if not v:
        return PALETTE[0]
    for i, b in enumerate(bounds):
        if v <= b:
            return PALETTE[min(i + 1, len(PALETTE) - 1)]
    return PALETTE[-1]


def legend(c: _Ctx, bounds: list[float], metric: str) -> list[Any]:
    items = [html.Div(t("metric_km2" if metric == "km2" else "metric_1000", c.lang), className="legend-title"),
             html.Div([html.Span(className="swatch", style={"background": PALETTE[0]}), "0"], className="legend-row")]
    low = 0.0
    for i, b in enumerate(bounds):
        items.append(html.Div([html.Span(className="swatch", style={"background": PALETTE[i + 1]}),
                               f"{i18n.fmt_num(low, c.lang)} – {i18n.fmt_num(b, c.lang)}"], className="legend-row"))
        low = b
    return items


# -- the wall ----------------------------------------------------------------------------------------------------

def village_colours(c: _Ctx, window: str | None, metric: str | None) -> tuple[dict[str, Any], list[Any], list[Any],
                                                                            list[Any], list[dict[str, Any]]]:
    if window in (None, "today"):  # today's figures are shared by every screen of the scope
        stats = snapshot.wall(c.app.state, c.actor).result()["villages"]
    else:
        now = dt.datetime.now(TZ)
        start, end = _window(window, now)
        stats = data.village_stats(c.engine, c.actor, start, end, now=now)
    key = "per_1000" if metric == "1000" else "per_km2"
    bounds = breaks([s[key] or 0 for s in stats])
    colours = {s["code"]: colour_for(s[key], bounds) for s in stats}
    hideout = {"colors": colours, "default": PALETTE[0]}
    ranked = sorted((s for s in stats if s["overdue"]), key=lambda s: (-s["overdue"], s["code"]))[:8]
    rank = [html.Li([html.Span(s["name"], className="rank-name"), html.Span(i18n.fmt_int(s["overdue"], c.lang),
                                                                           className="rank-value")])
            for s in ranked] or [html.Li(t("none_yet", c.lang), className="muted")]
    busy = sorted(stats, key=lambda s: (-(s["open"] + s["in_progress"] + s["overdue"]), s["code"]))[:9]
    head = html.Tr([html.Th(t(k, c.lang)) for k in ("col_village", "col_open", "col_in_progress", "col_overdue",
                                                     "col_closed_today")])
    body = [html.Tr([html.Td(s["name"]), html.Td(s["open"]), html.Td(s["in_progress"]),
                     html.Td(s["overdue"], className="bad" if s["overdue"] else ""), html.Td(s["closed_today"])],
                    **_attrs({"data-code": s["code"]})) for s in busy]
    table = [html.Table([html.Thead(head), html.Tbody(body)], className="status-table")]
    return hideout, legend(c, bounds, metric or "km2"), rank, table, stats


def kpi_tiles(c: _Ctx) -> tuple[list[Any], list[Any]]:
    w = snapshot.wall(c.app.state, c.actor).result()
    f = w["totals"] | {"platforms": w["platforms"]}
    tiles = [("kpi_received", i18n.fmt_int(f["received"], c.lang), ""),
             ("kpi_closed", i18n.fmt_int(f["closed"], c.lang), ""),
             ("kpi_on_time", i18n.fmt_pct(f["on_time_rate"], c.lang), ""),
             ("kpi_open", i18n.fmt_int(f["open"], c.lang), ""),
             ("kpi_overdue", i18n.fmt_int(f["overdue"], c.lang), "bad" if f["overdue"] else "")]
    kpis = [html.Div([html.Div(v, className=f"kpi-value {cls}", id=f"kpi-{k}"), html.Div(t(k, c.lang),
                                                                                    className="kpi-label")],
                     className="kpi") for k, v, cls in tiles]
    total = max(sum(f["platforms"].values()), 1)
    bars = []
    for key, name in c.platforms():
        n = f["platforms"].get(key, 0)
        bars.append(html.Div([html.Span(name, className="bar-label"),
                              html.Div(html.Div(className="bar-fill", style={"width": f"{100 * n / total:.0f}%"}),
                                       className="bar-track"),
                              html.Span(i18n.fmt_int(n, c.lang), className="bar-value")], className="bar"))
    return kpis, bars


def ticker_entries(c: _Ctx) -> list[dict[str, Any]]:
    return [ticker.entry(e, c.lang, c.taxonomy) for e in data.latest_events(c.engine, c.actor, ticker.SIZE)]


def wall_page(c: _Ctx) -> Any:
    hideout, leg, rank, table, _ = village_colours(c, "today", "km2")
    kpis, bars = kpi_tiles(c)
    entries = ticker_entries(c)
    bounds = _cached(("bounds", c.actor.scope_code), data.scope_bounds, c.engine, c.actor)
    fmap = dl.Map(id="wall-map", bounds=bounds, center=_centre(bounds), zoom=13, zoomControl=False,
                  attributionControl=bool(c.settings.basemap_url),
                  zoomSnap=0.25, className="map", children=[
                      *basemap(c),
                      dl.GeoJSON(id="villages", data=geo(c, "villages"), hideout=hideout,
                                 style={"variable": "wangge.villageStyle"}, interactive=False),
                      dl.GeoJSON(id="townships", data=geo(c, "townships"), style={"variable": "wangge.townStyle"},
                                 interactive=False),
                      dl.GeoJSON(id="water", data=geo(c, "water"), style={"variable": "wangge.waterStyle"},
                                 interactive=False),
                      dl.GeoJSON(id="cells", data=EMPTY_FC, style={"variable": "wangge.cellStyle"},
                                 interactive=False),
                      dl.GeoJSON(id="devices", data=geo(c, "devices"), pointToLayer={"variable": "wangge.device"},
                                 interactive=False),
                      dl.GeoJSON(id="live-layer", data=EMPTY_FC, pointToLayer={"variable": "wangge.pulse"},
                                 interactive=False),
                  ])
    return html.Div(className="wall", children=[
        html.Header(className="wall-head", children=[
            html.H1(t("wall_title", c.lang)),
            html.Div(className="wall-controls", children=[
                dcc.RadioItems(id="wall-window", value="today", inline=True, className="radio",
                               options=[{"label": t(f"win_{k}", c.lang), "value": k} for k in WINDOWS]),
                dcc.RadioItems(id="wall-metric", value="km2", inline=True, className="radio",
                               options=[{"label": t("metric_km2", c.lang), "value": "km2"},
                                        {"label": t("metric_1000", c.lang), "value": "1000"}]),
            ]),
            html.Span(id="clock", className="clock", **_attrs({"data-lang": t("html_lang", c.lang)})),
            html.Span([html.Span(className="live-dot"), t("live", c.lang)], className="live"),
            nav(c, "wall"),
        ]),
        html.Div(className="wall-map", children=[fmap, html.Div(leg, id="legend", className="legend")]),
        html.Section(className="wall-col", children=[
            html.Div(kpis, id="kpis", className="kpis"),
            html.H2(t("platforms", c.lang)), html.Div(bars, id="platforms", className="bars"),
            html.H2(t("overdue_rank", c.lang)), html.Ol(rank, id="overdue-rank", className="rank"),
        ]),
        html.Section(className="wall-col", children=[
            html.H2(t("village_status", c.lang)), html.Div(table, id="village-table"),
            html.H2(t("ticker", c.lang)),
            html.Ul([ticker.item(x) for x in entries] or [html.Li(t("none_yet", c.lang), className="muted")],
                    id="ticker", className="ticker",
                    **_attrs({"data-entries": json.dumps(entries, ensure_ascii=False), "data-size": str(ticker.SIZE)})),
        ]),
        dcc.Interval(id="tick", interval=30_000),
        html.Div(id="wall-ready", className="hidden", **_attrs({"data-ready": "1"})),
    ])


# -- hotspots ----------------------------------------------------------------------------------------------------

def hotspots_page(c: _Ctx, village: str | None) -> Any:
    bounds = _cached(("bounds", c.actor.scope_code), data.scope_bounds, c.engine, c.actor)
    cats = sorted(c.taxonomy.categories.values(), key=lambda x: x.code) if hasattr(c.taxonomy, "categories") else []
    today = dt.datetime.now(TZ).date()
    return html.Div(className="hot", children=[
        html.Header(className="wall-head", children=[html.H1(t("hotspots_title", c.lang)), nav(c, "hotspots")]),
        html.Div(className="hot-controls", children=[
            html.Label(t("window", c.lang)),
            dcc.RadioItems(id="hot-window", value="30d", inline=True, className="radio",
                           options=[{"label": t(f"win_{k}", c.lang), "value": k}
                                    for k in ("today", "7d", "30d", "custom")]),
            dcc.DatePickerRange(id="hot-range", start_date=(today - dt.timedelta(days=29)).isoformat(),
                                end_date=today.isoformat(),
                                display_format="YYYY-MM-DD"),
            html.Label(t("filter_category", c.lang)),
            dcc.Dropdown(id="hot-category", multi=True, placeholder=t("all", c.lang), className="dropdown",
                         options=[{"label": c.category(x.code), "value": x.code} for x in cats]),
            html.Label(t("filter_platform", c.lang)),
            dcc.Dropdown(id="hot-platform", placeholder=t("all", c.lang), className="dropdown",
                         options=[{"label": n, "value": k} for k, n in c.platforms()]),
            html.Label(t("aggregation", c.lang)),
            dcc.RadioItems(id="hot-unit", value="hex", inline=True, className="radio",
                           options=[{"label": t("agg_hex", c.lang), "value": "hex"},
                                    {"label": t("agg_cell", c.lang), "value": "cell"}]),
            html.Label(t("significance", c.lang)),
            dcc.RadioItems(id="hot-alpha", value=0.05, inline=True, className="radio",
                           options=[{"label": "90%", "value": 0.1}, {"label": "95%", "value": 0.05},
                                    {"label": "99%", "value": 0.01}]),
            # Testing a thousand hexagons at 95 % marks about fifty by chance alone: the correction keeps the
            # expected share of false spots among those shown at α (gis.hotspots.getis_ord).
            dcc.Checklist(id="hot-fdr", value=[], className="radio",
                          options=[{"label": t("fdr", c.lang), "value": "fdr"}]),
        ]),
        html.Div(className="hot-map", children=[
            dl.Map(id="hot-map", bounds=bounds, center=_centre(bounds), zoom=13, zoomSnap=0.25, className="map",
                   attributionControl=bool(c.settings.basemap_url), children=[
                       *basemap(c),
                       dl.GeoJSON(id="hot-villages", data=geo(c, "villages"), style={"variable": "wangge.outline"},
                                  interactive=False),
                       dl.GeoJSON(id="hot-density", data=EMPTY_FC, style={"variable": "wangge.densityStyle"},
                                  hideout={"max": 1}, interactive=False),
                       dl.GeoJSON(id="hot-gi", data=EMPTY_FC, style={"variable": "wangge.giStyle"},
                                  hideout={"colors": GI_COLOURS}, interactive=False),
                       dl.GeoJSON(id="hot-cells", data=EMPTY_FC, style={"variable": "wangge.cellStyle"},
                                  interactive=False),
                       dl.GeoJSON(id="hot-recurring", data=EMPTY_FC, pointToLayer={"variable": "wangge.recurring"}),
                   ]),
            html.Div(id="hot-legend", className="legend"),
        ]),
        html.Section(className="hot-side", children=[
            html.H2(t("ranking", c.lang)), html.Div(id="hot-ranking", className="ranking"),
            html.Div(id="hot-drill", className="drill"),
        ]),
        dcc.Store(id="hot-village", data=village),
    ])


def _hot_window(window: str, start_date: str | None, end_date: str | None) -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(TZ)
    if window == "custom" and start_date and end_date:
        s = dt.datetime.combine(dt.date.fromisoformat(start_date[:10]), dt.time(), TZ)
        e = dt.datetime.combine(dt.date.fromisoformat(end_date[:10]), dt.time(), TZ) + dt.timedelta(days=1)
        return s, max(e, s + dt.timedelta(days=1))
    return _window(window, now)


def _shift(c: _Ctx, fc: dict[str, Any]) -> dict[str, Any]:
    return data.shift_fc(fc) if c.settings.gcj02 else fc


def hot_layers(c: _Ctx, start: dt.datetime, end: dt.datetime, cats: list[str] | None, platform: str | None,
               unit: str, alpha: float, fdr: bool = False) -> tuple[Any, Any, Any, list[Any]]:
    try:
        from gis import hotspots

        kw: dict[str, Any] = {"categories": cats or None, "platform": platform or None, "actor": c.actor}
        if unit == "cell":
            density = hotspots.cell_density(c.engine, start, end, **kw)
        else:
            density = hotspots.hex_density(c.engine, start, end, **kw)
        gi = hotspots.getis_ord(c.engine, start, end, unit=unit, alpha=alpha,  # type: ignore[arg-type]
                                correction="fdr" if fdr else "none", **kw)
        places = hotspots.recurring_places(c.engine, start, end, **kw)
    except (ImportError, NotImplementedError):
        return EMPTY_FC, EMPTY_FC, EMPTY_FC, [html.Div(t("hotspots_unavailable", c.lang), className="muted")]
    top = max([f["properties"].get("count", 0) for f in density.get("features", [])] or [1])
    recurring = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": {"type": "Point", "coordinates": [p["lon"], p["lat"]]},
         "properties": {"count": p.get("count"), "tooltip": f"{c.category(p.get('category', ''))} · "
                        f"{p.get('count')} {t('recurring_times', c.lang)}"}}
        for p in places if p.get("lon") is not None]}
    shown = ("hot_99", "hot_95", "hot_90", "cold_90", "cold_95", "cold_99")
    level = {0.01: "99", 0.05: "95", 0.1: "90"}.get(alpha, "95")
    leg = [html.Div(f"{t('layer_gi', c.lang)} · {t('significance', c.lang)} α = {alpha}"
                    + (f" · {t('fdr', c.lang)}" if fdr else ""), className="legend-title")]
    leg += [html.Div([html.Span(className="swatch", style={"background": GI_COLOURS[k]}), t(k, c.lang)],
                     className="legend-row") for k in shown if int(k[-2:]) >= int(level)]
    leg += [html.Div([html.Span(className="swatch ring"), t("layer_recurring", c.lang)], className="legend-row"),
            html.Div(t("min_local", c.lang).format(n=gi.get("min_local")), className="muted")]
    density["hideout_max"] = top
    return _shift(c, density), _shift(c, gi), _shift(c, recurring), leg


def ranking_table(c: _Ctx, stats: list[dict[str, Any]]) -> Any:
    arrows = {1: ("▲", "up", "trend_up"), -1: ("▼", "down", "trend_down"), 0: ("■", "flat", "trend_flat")}
    rows = []
    for i, s in enumerate(stats[:25], 1):
        a, cls, label = arrows[s["trend"]]
        rows.append(html.Tr([
            html.Td(i), html.Td(html.Button(s["name"], id={"type": "drill-village", "code": s["code"]},
                                            className="link")),
            html.Td(i18n.fmt_int(s["events"], c.lang)), html.Td(i18n.fmt_num(s["per_km2"], c.lang)),
            html.Td(html.Span(a, className=f"trend {cls}", title=t(label, c.lang))),
            html.Td(i18n.fmt_int(s["previous"], c.lang))]))
    head = html.Tr([html.Th("#"), *[html.Th(t(k, c.lang)) for k in ("col_village", "col_events", "col_per_km2",
                                                                    "col_trend", "col_previous")]])
    return html.Table([html.Thead(head), html.Tbody(rows)], className="status-table")


def drill_down(c: _Ctx, village: str, start: dt.datetime, end: dt.datetime) -> list[Any]:
    cells = data.village_cell_counts(c.engine, c.actor, village, start, end)
    events = data.village_events(c.engine, c.actor, village, start, end, limit=30)
    cell_rows = [html.Tr([html.Td(r["cell_name"] or r["cell_code"]), html.Td(r["worker_name"] or "–"),
                          html.Td(r["n"]), html.Td(r["open"])]) for r in cells]
    ev_rows = [html.Li(dcc.Link([html.Span(f"#{e['id']}", className="tick-id"),
                                 html.Span(c.category(e["category"]), className="tick-cat"),
                                 html.Span(i18n.status(e["status"], c.lang), className=f"tick-status st-{e['status']}"),
                                 html.Span(i18n.fmt_dt(e["received_at"].astimezone(TZ), c.lang),
                                           className="tick-time")],
                                href=f"{PREFIX}/events/{e['id']}"), className="tick") for e in events]
    return [html.H2(t("drill_cells", c.lang)),
            html.Table([html.Thead(html.Tr([html.Th(t(k, c.lang)) for k in ("col_cell", "col_worker", "col_events",
                                                                             "col_open")])),
                        html.Tbody(cell_rows)], className="status-table"),
            html.H2(t("drill_events", c.lang)), html.Ul(ev_rows or [html.Li(t("none_yet", c.lang))],
                                                        className="ticker")]


# -- villages ----------------------------------------------------------------------------------------------------

VILLAGE_SORT = ("name", "events", "per_km2", "per_1000", "open", "in_progress", "overdue", "closed_today",
                "on_time_rate", "on_time_rate_due", "closure_rate")


def villages_page(c: _Ctx) -> Any:
    return html.Div(className="villages", children=[
        html.Header(className="wall-head", children=[html.H1(t("villages_title", c.lang)), nav(c, "villages")]),
        html.Div(className="hot-controls", children=[
            dcc.RadioItems(id="vil-window", value="30d", inline=True, className="radio",
                           options=[{"label": t(f"win_{k}", c.lang), "value": k} for k in WINDOWS]),
            html.A(t("export_csv", c.lang), id="vil-csv", href=f"{PREFIX}/villages.csv?days=30", className="button"),
        ]),
        html.Div(id="vil-table", className="vil-table"),
        dcc.Store(id="vil-sort", data={"col": "overdue", "desc": True}),
    ])


def village_rows(c: _Ctx, window: str, sort: dict[str, Any]) -> Any:
    now = dt.datetime.now(TZ)
    start, end = _window(window, now)
    rows = server.village_table(c.engine, c.actor, start, end)
    col = str(sort.get("col")) if sort.get("col") in VILLAGE_SORT else "overdue"
    rows.sort(key=lambda r: (r.get(col) is None, r.get(col) or 0) if col != "name" else (False, r["name"]),
              reverse=bool(sort.get("desc")))
    labels = {"name": "col_village", "events": "col_events", "per_km2": "col_per_km2", "per_1000": "col_per_1000",
              "open": "col_open", "in_progress": "col_in_progress", "overdue": "col_overdue",
              "closed_today": "col_closed_today", "on_time_rate": "col_on_time", "on_time_rate_due": "col_on_time_due",
              "closure_rate": "col_closure"}
    head = [html.Th(html.Button(t(labels[k], c.lang) + (" ▼" if k == col and sort.get("desc") else
                                                        " ▲" if k == col else ""),
                                id={"type": "vil-sort", "col": k}, className="link")) for k in VILLAGE_SORT]
    head.append(html.Th(""))
    body = []
    for r in rows:
        cells = []
        for k in VILLAGE_SORT:
            v = r.get(k)
            txt = (i18n.fmt_pct(v, c.lang) if k in ("on_time_rate", "on_time_rate_due", "closure_rate") else
                   i18n.fmt_num(v, c.lang) if k.startswith("per_") else v if k == "name" else i18n.fmt_int(v, c.lang))
            cells.append(html.Td(txt, className="bad" if k == "overdue" and v else ""))
        cells.append(html.Td(dcc.Link(t("open_map", c.lang), href=f"{PREFIX}/hotspots?village={r['code']}")))
        body.append(html.Tr(cells, **_attrs({"data-code": r["code"]})))
    return html.Table([html.Thead(html.Tr(head)), html.Tbody(body)], className="status-table sortable")


# -- one case ----------------------------------------------------------------------------------------------------

def event_page(c: _Ctx, event_id: int) -> Any:
    from gis.cases import get_event
    from gis.errors import NotFound

    head = html.Header(className="wall-head", children=[html.H1(f"{t('event_title', c.lang)} #{event_id}"),
                                                          nav(c, "wall")])
    try:
        e = get_event(c.engine, event_id, c.actor)
    except NotFound:
        return html.Div(className="event", children=[head, html.P(t("not_found", c.lang), className="muted")])
    def fmt(s: str | None) -> str:
        return i18n.fmt_dt(dt.datetime.fromisoformat(s), c.lang) if s else "–"

    layers: list[Any] = [*basemap(c), dl.GeoJSON(data=geo(c, "villages"), style={"variable": "wangge.outline"},
                                                 interactive=False)]
    centre = [29.7, 121.55]
    if e["lon"] is not None:
        lon, lat = e["lon"], e["lat"]
        if c.settings.gcj02:
            from gis.gcj02 import wgs84_to_gcj02

            lon, lat = wgs84_to_gcj02(lon, lat)
        centre = [lat, lon]
        layers.append(dl.CircleMarker(center=centre, radius=10, color="#ff5252", fillOpacity=0.8))
    facts = [("col_category", c.category(e["category"])), ("col_status", i18n.status(e["status"], c.lang)),
             ("source", i18n.source(e["source"], c.lang)), ("col_received", fmt(e["received_at"])),
             ("deadline", fmt(e["deadline"])), ("col_cell", e["cell_name"] or e["cell_code"] or "–"),
             ("col_worker", e["worker_name"] or "–"), ("unit", _unit(c, e["unit_code"])),
             ("address", e["address"] or "–"), ("description", e["description"] or "–")]
    timeline = [html.Tr([html.Td(fmt(s["at"])), html.Td(i18n.action(s["action"], c.lang)),
                         html.Td(i18n.status(s["to_status"], c.lang)), html.Td(f"{s['actor']} ({s['role']})"),
                         html.Td(_unit(c, (s.get("data") or {}).get("unit")) if (s.get("data") or {}).get("unit")
                                 else "–"),
                         html.Td(s["note"] or "")]) for s in e["timeline"]]
    photos = [html.Img(src=a["url"] or f"{PREFIX}/photos/{a['id']}", className="photo") for a in e["attachments"]]
    return html.Div(className="event", children=[
        head,
        html.Div(className="event-map", children=dl.Map(center=centre, zoom=16, className="map", children=layers,
                                                         attributionControl=bool(c.settings.basemap_url))),
        html.Section(className="event-facts", children=[
            html.Dl([x for k, v in facts for x in (html.Dt(t(k, c.lang)), html.Dd(v))]),
            html.H2(t("photos", c.lang)),
            html.Div(photos or t("no_photos", c.lang), className="photos"),
        ]),
        html.Section(className="event-timeline", children=[
            html.H2(t("timeline", c.lang)),
            html.Table([html.Thead(html.Tr([html.Th(t(k, c.lang)) for k in ("at", "action", "col_status", "actor",
                                                                             "responsible", "note")])),
                        html.Tbody(timeline)], className="status-table")]),
    ])


def _unit(c: _Ctx, code: str | None) -> str:
    if not code:
        return "–"
    try:
        u = c.taxonomy.unit(code)
    except Exception:
        return code
    return str(u.name_en if c.lang == "en" else u.name_zh)


# -- the app -----------------------------------------------------------------------------------------------------

def render(c: _Ctx, pathname: str | None, search: str | None) -> Any:
    path = (pathname or "").removeprefix(PREFIX).strip("/")
    if path.startswith("events/"):
        try:
            event_id = int(path.split("/")[1])
        except ValueError:
            event_id = 0
        return event_page(c, event_id)
    if path == "hotspots":
        village = None
        if search and "village=" in search:
            village = search.split("village=")[1].split("&")[0] or None
        return hotspots_page(c, village)
    if path == "villages":
        return villages_page(c)
    if path == "planner":
        from dashboard import planner

        return planner.planner_page(c, search)
    return wall_page(c)


def _shell() -> Any:
    """The layout, with the first page already in it (the page the browser is on: the layout request's Referer),
    so that a cold load needs no extra callback round trip before the map can draw."""
    content: Any = None
    try:
        request = get_current_request()
        c = _Ctx()
        page = urlsplit(request.headers.get("referer") or str(request.url))
        if page.path.startswith(PREFIX):
            content = render(c, page.path, "?" + page.query if page.query else "")
    except (PreventUpdate, RuntimeError):
        content = None
    return html.Div([dcc.Location(id="url"), dcc.Store(id="feed-slow"),
                     html.Div(content, id="page", className="page")])


def build(app: FastAPI) -> Dash:
    options: dict[str, Any] = {
        "server": app, "backend": "fastapi", "url_base_pathname": f"{PREFIX}/", "assets_folder": str(ASSETS),
        "serve_locally": True, "title": "wangge", "update_title": None, "suppress_callback_exceptions": True,
        "compress": False,  # the dashboard's own gzip (server.DashboardGZip) leaves the API alone
        # dash-leaflet loads its GeoJSON layer as a lazy chunk: fetched with the other scripts instead of after the
        # first render, one round trip less before the map draws.
        "external_scripts": [f"{PREFIX}/_dash-component-suites/dash_leaflet/async-GeoJSON.js"],
    }
    dash_app = Dash(__name__, **options)
    dash_app.layout = _shell

    async def run(fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    @dash_app.callback(Output("page", "children"), Input("url", "pathname"), State("url", "search"),
                       prevent_initial_call=True)
    async def route(pathname: str | None, search: str | None) -> Any:
        # The first page comes with the layout; this follows in-app links (dcc.Link) without a reload.
        c = _Ctx()
        return await run(render, c, pathname, search)

    # The wall: the ticker and the live markers follow every change at once, in the browser (assets/dashboard.js
    # sets them from the live feed); the heavier figures at most every 2 s (feed-slow).
    @dash_app.callback(Output("kpis", "children"), Output("platforms", "children"),
                       Input("feed-slow", "data"), Input("tick", "n_intervals"), prevent_initial_call=True)
    async def kpis(_: Any, __: Any) -> Any:
        c = _Ctx()
        return await run(kpi_tiles, c)

    @dash_app.callback(Output("villages", "hideout"), Output("legend", "children"), Output("overdue-rank", "children"),
                       Output("village-table", "children"),
                       Input("feed-slow", "data"), Input("tick", "n_intervals"), Input("wall-window", "value"),
                       Input("wall-metric", "value"), prevent_initial_call=True)
    async def villages(_: Any, __: Any, window: str, metric: str) -> Any:
        c = _Ctx()
        hideout, leg, rank, table, _stats = await run(village_colours, c, window, metric)
        return hideout, leg, rank, table

    @dash_app.callback(Output("cells", "data"), Input("wall-map", "zoom"), prevent_initial_call=True)
    async def cells_on_zoom(zoom: float | None) -> Any:
        c = _Ctx()
        if zoom is None or zoom < 15:
            return EMPTY_FC
        return await run(geo, c, "cells")

    # Hotspots.
    @dash_app.callback(Output("hot-density", "data"), Output("hot-density", "hideout"), Output("hot-gi", "data"),
                       Output("hot-recurring", "data"), Output("hot-legend", "children"),
                       Output("hot-ranking", "children"),
                       Input("hot-window", "value"), Input("hot-range", "start_date"), Input("hot-range", "end_date"),
                       Input("hot-category", "value"), Input("hot-platform", "value"), Input("hot-unit", "value"),
                       Input("hot-alpha", "value"), Input("hot-fdr", "value"))
    async def hot(window: str, sd: str | None, ed: str | None, cats: list[str] | None, platform: str | None,
                  unit: str, alpha: float, fdr: list[str] | None) -> Any:
        c = _Ctx()
        start, end = _hot_window(window, sd, ed)
        density, gi, rec, leg = await run(hot_layers, c, start, end, cats, platform, unit, alpha, "fdr" in (fdr or []))
        stats = await run(data.village_stats, c.engine, c.actor, start, end)
        hide = {"max": density.pop("hideout_max", 1) if isinstance(density, dict) else 1}
        return density, hide, gi, rec, leg, ranking_table(c, stats)

    @dash_app.callback(Output("hot-drill", "children"), Output("hot-cells", "data"), Output("hot-village", "data"),
                       Input({"type": "drill-village", "code": ALL}, "n_clicks"), Input("hot-village", "data"),
                       State("hot-window", "value"), State("hot-range", "start_date"), State("hot-range", "end_date"))
    async def drill(_clicks: Any, village: str | None, window: str, sd: str | None, ed: str | None) -> Any:
        c = _Ctx()
        trig = ctx.triggered_id
        if isinstance(trig, dict) and trig.get("type") == "drill-village":
            if not any(_clicks or []):
                raise PreventUpdate
            village = trig["code"]
        if not village:
            return [], EMPTY_FC, no_update
        start, end = _hot_window(window, sd, ed)
        items = await run(drill_down, c, village, start, end)
        cells = await run(lambda: _shift(c, data.cell_shapes(c.engine, c.actor, False, village)))
        return items, cells, village

    from dashboard import planner  # the planners' grid redraws (issue 5): its callbacks on this app

    planner.register(dash_app, run)

    # Villages.
    @dash_app.callback(Output("vil-sort", "data"), Input({"type": "vil-sort", "col": ALL}, "n_clicks"),
                       State("vil-sort", "data"), prevent_initial_call=True)
    def sort_by(clicks: Any, sort: dict[str, Any]) -> Any:
        trig = ctx.triggered_id
        if not isinstance(trig, dict) or not any(clicks or []):
            raise PreventUpdate
        col = trig["col"]
        return {"col": col, "desc": not sort.get("desc") if sort.get("col") == col else True}

    @dash_app.callback(Output("vil-table", "children"), Output("vil-csv", "href"),
                       Input("vil-window", "value"), Input("vil-sort", "data"))
    async def village_list(window: str, sort: dict[str, Any]) -> Any:
        c = _Ctx()
        days = WINDOWS.get(window, 30) or 1
        return await run(village_rows, c, window, sort or {}), f"{PREFIX}/villages.csv?days={days}"

    return dash_app


def mount(app: FastAPI) -> Dash:
    """Serve the dashboard under /dashboard/ on this FastAPI app (login, live feed, pages)."""
    index: list[Any] = []
    app.state.snapshots = snapshot.Snapshots()
    page = server.install(app, lambda: str(index[0]()))  # before Dash's own routes, so that pages need a session
    dash_app = build(app)

    def page_html() -> str:
        # Dash finishes its set-up (asset files, script tags) on its first own request; a page may come first.
        dash_app._setup_server()
        return str(dash_app.index())

    index.append(page_html)
    server.install_fallback(app, page)  # after Dash's own routes: any other page under /dashboard/ needs a session too
    return dash_app
