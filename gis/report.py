"""Standalone HTML map reports (folium) for leaders who read reports rather than dashboards.

`hotspots_report` covers the scope (the district by default) for a period: Getis-Ord Gi* hot and cold spots,
hexagon density, recurring-problem places, village outlines, a legend, the village ranking with trends, the
categories, the title and the time it was generated. `village_report` does the same for one village, with its
grid cells as the units. Both return one HTML document that opens offline: Leaflet's JS and CSS are inlined
(gis/report_assets, Leaflet 1.9.4), no tile layer is drawn (our own vector layers on a plain background), and no
URL to another host is referenced. Chinese by default, English with lang="en".
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import folium
from sqlalchemy import Engine

from gis import hotspots
from gis.intake import TZ
from gis.taxonomy import load_taxonomy
from gis.workflow import Actor

ASSETS = Path(__file__).resolve().parent / "report_assets"
LANGS = ("zh", "en")
GI_COLOURS = {"hot_99": "#d7191c", "hot_95": "#f4a259", "hot_90": "#fdd49e",
              "cold_90": "#c6dbef", "cold_95": "#6baed6", "cold_99": "#2166ac", "none": "#f7f7f7"}
DENSITY_COLOURS = ("#fff5eb", "#fdd0a2", "#fd8d3c", "#d94801", "#7f2704")
RECURRING_COLOUR = "#6a3d9a"

TEXT: dict[str, dict[str, str]] = {
    "zh": {
        "title_hotspots": "{area}事件热点分析报告", "title_village": "{area}事件分析报告",
        "period": "统计期间：{start} 至 {end}（不含）", "generated": "生成时间：{now}",
        "summary": "期间受理事件 {total} 件，上一同长期间 {previous} 件；热点单元 {hot} 个，冷点单元 {cold} 个，"
                   "重复发生点位 {recurring} 处。",
        "layer_gi": "热点/冷点（Gi*）", "layer_density": "事件密度（六边形）", "layer_cells": "网格事件数",
        "layer_recurring": "重复发生点位", "layer_villages": "村社边界",
        "legend_gi": "Getis-Ord Gi* 热点分析",
        "legend_method": "置换检验 {perm} 次，单侧伪 p 值，显著性水平 α = {alpha}",
        "legend_fdr": "Gi* z 值的正态 p 值经 Benjamini–Hochberg 多重检验校正 (FDR)，显著性水平 α = {alpha}",
        "legend_min_local": "；热点须其本身及相邻单元合计至少 {n} 件事件",
        "hot_99": "热点 99% 置信", "hot_95": "热点 95% 置信", "hot_90": "热点 90% 置信",
        "cold_99": "冷点 99% 置信", "cold_95": "冷点 95% 置信", "cold_90": "冷点 90% 置信", "none": "不显著",
        "legend_density": "事件数（每六边形，边长 {size} 米）", "legend_cells": "事件数（每网格）",
        "legend_recurring": "同类事件在 {radius} 米内反复发生（≥ {min} 次）",
        "villages": "村社排名", "rank": "序号", "village": "村社", "events": "事件数", "per_km2": "每平方公里",
        "per_1000": "每千人", "previous": "上期", "trend": "趋势", "open": "在办", "in_progress": "处置中",
        "overdue": "超期", "on_time_rate": "按期结案率",
        "categories": "事件类别", "category": "类别", "platform": "平台",
        "recurring": "重复发生点位", "count": "次数", "first": "首次", "last": "最近", "cell": "网格",
        "place": "位置", "none_found": "无", "unit_hex": "六边形", "unit_cell": "网格",
        "note": "说明：事件按受理时间统计；热点分析单元为{unit}，含零事件单元；趋势与上一同长期间比较。",
    },
    "en": {
        "title_hotspots": "{area}: incident hotspot report", "title_village": "{area}: incident report",
        "period": "Period: {start} to {end} (exclusive)", "generated": "Generated: {now}",
        "summary": "{total} incidents received in the period, {previous} in the previous period of the same length; "
                   "{hot} hot-spot units, {cold} cold-spot units, {recurring} recurring places.",
        "layer_gi": "Hot and cold spots (Gi*)", "layer_density": "Incident density (hexagons)",
        "layer_cells": "Incidents per grid cell", "layer_recurring": "Recurring places",
        "layer_villages": "Village boundaries",
        "legend_gi": "Getis-Ord Gi* hotspot analysis",
        "legend_method": "{perm} permutations, one-sided pseudo p-value, significance level α = {alpha}",
        "legend_fdr": "normal p-values of the Gi* z-scores, Benjamini–Hochberg corrected for multiple testing "
                      "(FDR), significance level α = {alpha}",
        "legend_min_local": "; a hot spot needs {n} or more incidents in it and its neighbours together",
        "hot_99": "Hot spot, 99% confidence", "hot_95": "Hot spot, 95% confidence",
        "hot_90": "Hot spot, 90% confidence", "cold_99": "Cold spot, 99% confidence",
        "cold_95": "Cold spot, 95% confidence", "cold_90": "Cold spot, 90% confidence",
        "none": "Not significant",
        "legend_density": "Incidents per hexagon (edge {size} m)", "legend_cells": "Incidents per grid cell",
        "legend_recurring": "Same category again and again within {radius} m (≥ {min} times)",
        "villages": "Village ranking", "rank": "#", "village": "Village", "events": "Incidents",
        "per_km2": "per km²", "per_1000": "per 1,000 residents", "previous": "Previous", "trend": "Trend",
        "open": "Open", "in_progress": "In progress", "overdue": "Overdue", "on_time_rate": "On-time rate",
        "categories": "Categories", "category": "Category", "platform": "Platform",
        "recurring": "Recurring places", "count": "Times", "first": "First", "last": "Last", "cell": "Grid cell",
        "place": "Place", "none_found": "none", "unit_hex": "hexagons", "unit_cell": "grid cells",
        "note": "Incidents are counted by the time they were received; the Gi* units are {unit}, empty ones "
                "included; trends compare with the previous period of the same length.",
    },
}
TREND = {1: "▲", 0: "—", -1: "▼"}
_CSS = """
body { font-family: "Noto Sans CJK SC", "Source Han Sans SC", "Microsoft YaHei", "PingFang SC", sans-serif;
       color: #222; background: #fff; }
.wg-head { padding: 14px 24px 6px; }
.wg-head h1 { font-size: 22px; margin: 0 0 6px; }
.wg-head p { margin: 2px 0; color: #444; font-size: 14px; }
.wg-body { padding: 8px 24px 32px; }
.wg-body h2 { font-size: 17px; margin: 22px 0 8px; }
.wg-body table { border-collapse: collapse; font-size: 13px; }
.wg-body th, .wg-body td { border-bottom: 1px solid #ddd; padding: 4px 10px; text-align: right; }
.wg-body th { background: #f3f3f3; }
.wg-body td.l, .wg-body th.l { text-align: left; }
.wg-up { color: #c0392b; } .wg-down { color: #1e7b34; }
.leaflet-container { background: #f4f2ec; }
.wg-legend { position: absolute; z-index: 1000; bottom: 50px; left: 10px; background: rgba(255,255,255,.93);
             padding: 8px 10px; border-radius: 4px; box-shadow: 0 1px 4px rgba(0,0,0,.3); font-size: 12px;
             max-width: 320px; }
.wg-legend b { display: block; margin: 4px 0 2px; }
.wg-legend i { display: inline-block; width: 14px; height: 14px; margin-right: 6px; vertical-align: -2px;
               border: 1px solid #999; }
.wg-legend .dot { border-radius: 50%; }
.wg-note { color: #666; font-size: 12px; margin-top: 18px; }
"""


def _t(lang: str) -> dict[str, str]:
    if lang not in LANGS:
        raise ValueError(f"unknown language {lang!r}: use zh or en")
    return TEXT[lang]


def _fmt_time(t: dt.datetime) -> str:
    return t.astimezone(TZ).strftime("%Y-%m-%d %H:%M")


def _fmt_period_end(t: dt.datetime) -> str:
    local = t.astimezone(TZ)
    return local.strftime("%Y-%m-%d") if local.time() == dt.time() else local.strftime("%Y-%m-%d %H:%M")


def _num(v: float | int | None, digits: int = 1, pct: bool = False) -> str:
    if v is None:
        return "–"
    if pct:
        return f"{v * 100:.1f}%"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:,.{digits}f}"


def _category_name(lang: str) -> Callable[[str], str]:
    tax = load_taxonomy()

    def name(code: str) -> str:
        c = tax.categories.get(code)
        return code if c is None else (c.name_zh if lang == "zh" else c.name_en)

    return name


def _platform_name(lang: str) -> Callable[[str], str]:
    tax = load_taxonomy()
    names = {k: (p.name_zh if lang == "zh" else p.name_en) for s in tax.platform_sets.values()
             for k, p in s.platforms.items()}
    return lambda key: names.get(key, key)


def _density_colour(n: int, top: int) -> str:
    if top <= 0:
        return DENSITY_COLOURS[0]
    k = min(len(DENSITY_COLOURS) - 1, int(len(DENSITY_COLOURS) * n / (top + 1)))
    return DENSITY_COLOURS[k]


def _density_breaks(top: int) -> list[tuple[str, str]]:
    n = len(DENSITY_COLOURS)
    out = []
    for k, colour in enumerate(DENSITY_COLOURS):
        lo = -(-k * (top + 1) // n)
        hi = -(-(k + 1) * (top + 1) // n) - 1
        if hi >= max(lo, 1):
            out.append((colour, f"{max(lo, 1)}–{hi}" if hi > max(lo, 1) else f"{hi}"))
    return out


def _inline_assets(doc: str) -> str:
    """Put Leaflet's CSS and JS into <head> and make sure nothing points at another host."""
    css = (ASSETS / "leaflet.css").read_text(encoding="utf-8")
    js = (ASSETS / "leaflet.js").read_text(encoding="utf-8")
    block = f"<style>{css}</style>\n<style>{_CSS}</style>\n<script>{js}</script>\n"
    doc = doc.replace("<head>", "<head>\n" + block, 1)
    remote = re.findall(r"""<(?:script|link)[^>]+(?:src|href)\s*=\s*["']?(?:https?:)?//""", doc)
    if remote:
        raise RuntimeError(f"the report still references remote assets: {remote[:3]}")
    return doc


def _new_map(bounds: list[list[float]]) -> folium.Map:
    m = folium.Map(tiles=None, width="100%", height=640, control_scale=True, prefer_canvas=False)
    m.default_js = []  # Leaflet is inlined by _inline_assets; nothing else of folium's CDN list is needed
    m.default_css = []
    m.fit_bounds(bounds)
    return m


def _legend(items: list[tuple[str, list[tuple[str, str, bool]]]], note: str) -> str:
    parts = ['<div class="wg-legend">']
    for title, rows in items:
        parts.append(f"<b>{html.escape(title)}</b>")
        for colour, label, dot in rows:
            parts.append(f'<div><i class="{"dot" if dot else ""}" style="background:{colour}"></i>'
                         f"{html.escape(label)}</div>")
    parts.append(f'<div style="color:#555;margin-top:4px">{html.escape(note)}</div></div>')
    return "".join(parts)


def _table(headers: list[tuple[str, bool]], rows: list[list[str]]) -> str:
    head = "".join(f'<th class="{"l" if left else ""}">{html.escape(h)}</th>' for h, left in headers)
    body = []
    for r in rows:
        cells = []
        for (_, left), v in zip(headers, r, strict=True):
            cells.append(f'<td class="{"l" if left else ""}">{v}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _trend_cell(trend: int) -> str:
    cls = {1: "wg-up", -1: "wg-down"}.get(trend, "")
    return f'<span class="{cls}">{TREND[trend]}</span>'


def _add_layers(m: folium.Map, tx: dict[str, str], gi: dict[str, Any], density: dict[str, Any] | None,
                recurring: list[dict[str, Any]], outlines: dict[str, Any], cat_name: Callable[[str], str],
                unit_label: str) -> None:
    significant = {"type": "FeatureCollection",
                   "features": [f for f in gi["features"] if f["properties"]["class"] != "none"]}
    for f in significant["features"]:
        f["properties"]["label"] = tx[f["properties"]["class"]]
    if density is not None:
        top = density["max_count"]
        folium.GeoJson(density, name=tx["layer_density"], show=False, style_function=lambda f: {
            "fillColor": _density_colour(f["properties"]["count"], top), "fillOpacity": 0.75, "color": "#888",
            "weight": 0.3},
            tooltip=folium.GeoJsonTooltip(["count"], aliases=[tx["events"]])).add_to(m)
    if gi["unit"] == "cell":
        top = max((f["properties"]["count"] for f in gi["features"]), default=0)
        folium.GeoJson(gi, name=tx["layer_cells"], style_function=lambda f: {
            "fillColor": _density_colour(f["properties"]["count"], top), "fillOpacity": 0.6, "color": "#777",
            "weight": 0.6},
            tooltip=folium.GeoJsonTooltip(["code", "name", "count"], aliases=[tx["cell"], "", tx["events"]])
        ).add_to(m)
    if significant["features"]:
        fields, aliases = ["label", "count", "gi_z", "p"], ["", tx["events"], "Gi* z", "p"]
        folium.GeoJson(significant, name=tx["layer_gi"], style_function=lambda f: {
            "fillColor": GI_COLOURS[f["properties"]["class"]], "fillOpacity": 0.7, "color": "#555",
            "weight": 0.4}, tooltip=folium.GeoJsonTooltip(fields, aliases=aliases)).add_to(m)
    folium.GeoJson(outlines, name=tx["layer_villages"], style_function=lambda f: {
        "fill": False, "color": "#333", "weight": 1.2}, tooltip=folium.GeoJsonTooltip(["name"], aliases=[""])
    ).add_to(m)
    if recurring:
        group = folium.FeatureGroup(name=tx["layer_recurring"])
        for r in recurring:
            label = (f"{cat_name(r['category'])}: {r['count']} {tx['count']} · {r['village_name'] or ''} · "
                     f"{r['first'][:10]} – {r['last'][:10]}")
            folium.CircleMarker([r["lat"], r["lon"]], radius=4 + min(10, r["count"]), color=RECURRING_COLOUR,
                                weight=2, fill=True, fill_opacity=0.5, tooltip=label).add_to(group)
        group.add_to(m)
    folium.LayerControl(collapsed=False).add_to(m)


def _document(m: folium.Map, head: str, body: str, lang: str, title: str, legend: str) -> str:
    doc = m.get_root().render()
    # The legend lives inside the map's container (position: relative), over the map's bottom-left corner.
    doc = doc.replace(f'id="{m.get_name()}" ></div>', f'id="{m.get_name()}" >{legend}</div>', 1)
    doc = doc.replace("<html>", f'<html lang="{"zh-CN" if lang == "zh" else "en"}">', 1)
    doc = doc.replace("<head>", f"<head>\n<title>{html.escape(title)}</title>", 1)
    doc = doc.replace("<body>", "<body>\n" + head, 1)
    doc = doc.replace("</body>", body + "\n</body>", 1)
    return _inline_assets(doc)


def _gi_legend(tx: dict[str, str], gi: dict[str, Any]) -> list[tuple[str, str, bool]]:
    shown = [c for c in ("hot_99", "hot_95", "hot_90", "cold_90", "cold_95", "cold_99")
             if int(c[-2:]) / 100 >= 1 - gi["alpha"] - 1e-9]
    return [(GI_COLOURS[c], f"{tx[c]} ({gi['counts'][c]})", False) for c in shown] + [
        (GI_COLOURS["none"], f"{tx['none']} ({gi['counts']['none']})", False)]


def hotspots_report(engine: Engine, start: dt.datetime, end: dt.datetime, *, lang: str = "zh",
                    actor: Actor | None = None, size_m: float = 250, alpha: float = 0.05, radius_m: float = 50,
                    min_count: int = 3, now: dt.datetime | None = None,
                    correction: Literal["none", "fdr"] = "none", min_local: int = hotspots.MIN_LOCAL) -> str:
    """The hotspot report of the scope (district when actor is None) for [start, end), as one HTML document."""
    tx = _t(lang)
    now = (now or dt.datetime.now(TZ)).astimezone(TZ)
    area = hotspots.area_bounds(engine, actor)
    stats = hotspots.village_stats(engine, start, end, actor=actor, now=now)
    gi = hotspots.getis_ord(engine, start, end, unit="hex", size_m=size_m, alpha=alpha, actor=actor,
                            correction=correction, min_local=min_local)
    density = hotspots.hex_density(engine, start, end, size_m=size_m, actor=actor)
    recurring = hotspots.recurring_places(engine, start, end, radius_m=radius_m, min_count=min_count, actor=actor)
    cats = hotspots.category_breakdown(engine, start, end, actor=actor)
    outlines = hotspots.village_outlines(engine, actor)
    title = tx["title_hotspots"].format(area=area["name"])
    return _render(tx, lang, title, area, stats, gi, density, recurring, cats, outlines, start, end, now,
                   size_m, radius_m, min_count)


def _method(tx: dict[str, str], gi: dict[str, Any]) -> str:
    """How the hot and cold spots were judged (the legend's and the head's line)."""
    key = "legend_fdr" if gi.get("correction") == "fdr" else "legend_method"
    return tx[key].format(perm=gi["permutations"], alpha=f"{gi['alpha']:g}") + tx["legend_min_local"].format(
        n=gi["min_local"])


def village_report(engine: Engine, village: str, start: dt.datetime, end: dt.datetime, *, lang: str = "zh",
                   actor: Actor | None = None, alpha: float = 0.05, radius_m: float = 50, min_count: int = 3,
                   now: dt.datetime | None = None) -> str:
    """The report of one village: its grid cells as the Gi* units and density, its recurring places, categories.
    NotFound for an unknown village (or one outside the actor's scope)."""
    tx = _t(lang)
    now = (now or dt.datetime.now(TZ)).astimezone(TZ)
    area = hotspots.area_bounds(engine, actor, village=village)
    # The village as a scope: its events, its villages (itself), its cells. The outer actor's limits still apply
    # through area_bounds above (NotFound outside them) and through the events it may see.
    scope = Actor(username=actor.username if actor else "report", role=actor.role if actor else "leader",
                  scope_code=village, unit_code=actor.unit_code if actor else None,
                  worker_id=actor.worker_id if actor else None)
    stats = hotspots.village_stats(engine, start, end, actor=scope, now=now)
    gi = hotspots.getis_ord(engine, start, end, unit="cell", alpha=alpha, actor=scope)
    recurring = hotspots.recurring_places(engine, start, end, radius_m=radius_m, min_count=min_count, actor=scope)
    cats = hotspots.category_breakdown(engine, start, end, actor=scope)
    outlines = hotspots.village_outlines(engine, scope, village=village)
    title = tx["title_village"].format(area=area["name"])
    return _render(tx, lang, title, area, stats, gi, None, recurring, cats, outlines, start, end, now, None,
                   radius_m, min_count)


def _render(tx: dict[str, str], lang: str, title: str, area: dict[str, Any], stats: list[dict[str, Any]],
            gi: dict[str, Any], density: dict[str, Any] | None, recurring: list[dict[str, Any]],
            cats: list[dict[str, Any]], outlines: dict[str, Any], start: dt.datetime, end: dt.datetime,
            now: dt.datetime, size_m: float | None, radius_m: float, min_count: int) -> str:
    cat_name, plat_name = _category_name(lang), _platform_name(lang)
    m = _new_map(area["bounds"])
    unit_label = tx["unit_hex"] if gi["unit"] == "hex" else tx["unit_cell"]
    _add_layers(m, tx, gi, density, recurring, outlines, cat_name, unit_label)
    legend_items: list[tuple[str, list[tuple[str, str, bool]]]] = [(tx["legend_gi"], _gi_legend(tx, gi))]
    if density is not None and size_m is not None:
        legend_items.append((tx["legend_density"].format(size=f"{size_m:g}"),
                             [(c, label, False) for c, label in _density_breaks(density["max_count"])]))
    if gi["unit"] == "cell":
        top = max((f["properties"]["count"] for f in gi["features"]), default=0)
        legend_items.append((tx["legend_cells"], [(c, label, False) for c, label in _density_breaks(top)]))
    legend_items.append((tx["layer_recurring"], [(RECURRING_COLOUR, tx["legend_recurring"].format(
        radius=f"{radius_m:g}", min=min_count), True)]))
    legend = _legend(legend_items, _method(tx, gi))

    total = sum(s["events"] for s in stats)
    previous = sum(s["previous"] for s in stats)
    hot = sum(v for k, v in gi["counts"].items() if k.startswith("hot"))
    cold = sum(v for k, v in gi["counts"].items() if k.startswith("cold"))
    summary = tx["summary"].format(total=f"{total:,}", previous=f"{previous:,}", hot=hot, cold=cold,
                                   recurring=len(recurring))
    method = _method(tx, gi)
    head = (f'<div class="wg-head"><h1>{html.escape(title)}</h1>'
            f"<p>{html.escape(tx['period'].format(start=_fmt_period_end(start), end=_fmt_period_end(end)))}</p>"
            f"<p>{html.escape(tx['generated'].format(now=_fmt_time(now)))}</p>"
            f"<p>{html.escape(summary)}</p></div>")
    village_rows = [[str(k + 1), html.escape(s["name"]), _num(s["events"]), _num(s["per_km2"]),
                     _num(s["per_1000"]), _num(s["previous"]), _trend_cell(s["trend"]), _num(s["open"]),
                     _num(s["overdue"]), _num(s["on_time_rate"], pct=True)] for k, s in enumerate(stats)]
    body = ['<div class="wg-body">', f"<h2>{html.escape(tx['villages'])}</h2>", _table(
        [(tx["rank"], False), (tx["village"], True), (tx["events"], False), (tx["per_km2"], False),
         (tx["per_1000"], False), (tx["previous"], False), (tx["trend"], False), (tx["open"], False),
         (tx["overdue"], False), (tx["on_time_rate"], False)], village_rows)]
    body.append(f"<h2>{html.escape(tx['categories'])}</h2>")
    body.append(_table([(tx["category"], True), (tx["platform"], True), (tx["events"], False),
                        (tx["previous"], False), (tx["trend"], False)],
                       [[html.escape(cat_name(c["category"])), html.escape(plat_name(c["platform"])),
                         _num(c["events"]), _num(c["previous"]), _trend_cell(c["trend"])] for c in cats]))
    body.append(f"<h2>{html.escape(tx['recurring'])}</h2>")
    if recurring:
        body.append(_table([(tx["category"], True), (tx["count"], False), (tx["village"], True), (tx["cell"], True),
                            (tx["first"], True), (tx["last"], True), (tx["place"], True)],
                           [[html.escape(cat_name(r["category"])), _num(r["count"]),
                             html.escape(r["village_name"] or ""), html.escape(r["cell_code"] or ""),
                             r["first"][:16].replace("T", " "), r["last"][:16].replace("T", " "),
                             f"{r['lon']:.5f}, {r['lat']:.5f}"] for r in recurring[:100]]))
    else:
        body.append(f"<p>{html.escape(tx['none_found'])}</p>")
    body.append(f'<p class="wg-note">{html.escape(tx["note"].format(unit=unit_label))} {html.escape(method)}</p>')
    body.append("</div>")
    return _document(m, head, "\n".join(body), lang, title, legend)


def write_report(doc: str, path: Path) -> Path:
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise FileNotFoundError(f"folder {path.parent} does not exist")
    path.write_text(doc, encoding="utf-8")
    return path
