"""The planner page (/dashboard/planner): redraw the grid cells of one village in a draft, see the validation
problems and the effect of the draft as you edit, and publish it as a new grid version.

Every edit goes through gis/grid (drafts, snapping to the village boundary and the neighbouring cells, split,
merge, validation, preview, publish); this module only turns map gestures into those calls:

* draw a polygon → a new cell with a fresh code; the cells it is drawn over give that area up (so a new cell can be
  drawn in a village that is already covered), then it is snapped and clipped by `gis.grid.put_cell`;
* edit vertices → the edited cell is stored the same way (neighbours it grows into give the area up);
* draw a polyline → `gis.grid.split_cell` of the cell it crosses (the selected one when it crosses several);
* delete → `gis.grid.delete_cell`; select two cells (click) → merge; assign a grid worker to the selected cell.

Only planners and admins edit; other accounts see the live cells and a read-only notice. A draft is created on
the first edit (or with 新建草稿) and an open draft of the same village made by the same account is picked up
again. The map events are translated by dashboard/assets/planner.js (the cell code travels in the layer's
class name, so an edited or deleted layer is known by its cell).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any
from urllib.parse import parse_qs

import dash_leaflet as dl
import numpy as np
import shapely
from dash import ALL, Dash, Input, Output, State, ctx, dcc, html, no_update
from dash.backends._fastapi import get_current_request
from dash.exceptions import PreventUpdate
from shapely.geometry import mapping, shape
from sqlalchemy import Connection, Engine, text

from dashboard import i18n, server
from dashboard.data import villages_clause
from dashboard.server import DashboardSettings
from gis import grid
from gis.cases import Forbidden
from gis.errors import NotFound, WanggeError
from gis.gcj02 import gcj02_to_wgs84, wgs84_to_gcj02
from gis.intake import TZ
from gis.workflow import OPEN_SQL, Actor

WRITERS = ("planner", "admin")
SNAP_M = 5.0  # edges drawn within this many metres of the village boundary or a neighbour snap to it
TINY_DEG2 = 1e-12  # ≈ 0.01 m²: an overlap below this is rounding, not area to take from a neighbour
EMPTY_FC: dict[str, Any] = {"type": "FeatureCollection", "features": []}

STRINGS: dict[str, dict[str, str]] = {
    "zh": {
        "nav_planner": "网格规划",
        "planner_title": "网格规划 · 草稿与发布",
        "pl_village": "村社",
        "pl_pick_village": "选择村社",
        "pl_readonly": "只读：只有规划员和管理员可以修改网格。",
        "pl_new_draft": "新建草稿",
        "pl_discard": "放弃草稿",
        "pl_no_draft": "当前显示现行网格；第一次编辑时自动新建草稿。",
        "pl_live": "当前显示现行网格",
        "pl_draft_info": "草稿 #{id}（基于第 {base} 版，{cells} 个网格，已编辑 {edits} 次）",
        "pl_help": "画多边形：新建网格（从所覆盖的网格中划出）；画折线：沿线拆分网格；编辑：拖动顶点后保存；"
                   "删除：移除网格。点击网格可选中。边线自动吸附到村界和相邻网格。",
        "pl_selected": "已选网格",
        "pl_merge": "合并所选网格",
        "pl_worker": "网格员",
        "pl_assign": "指派给所选网格",
        "pl_effective": "生效日期",
        "pl_publish": "发布新版本",
        "pl_published": "已发布为第 {version} 版（{date} 起生效），{moved} 件在办案件已改派。",
        "pl_conflict": "发布冲突：本草稿创建后，已有涉及本村社的新版本发布。请放弃本草稿，基于现行网格新建草稿。",
        "pl_invalid": "草稿有 {n} 个问题，无法发布（见校验问题）。",
        "pl_rejected": "未能执行",
        "pl_forbidden": "无权执行此操作",
        "pl_created": "已新建网格 {code}",
        "pl_edited": "已保存网格 {codes}",
        "pl_deleted": "已删除网格 {codes}",
        "pl_split": "已拆分为 {codes}",
        "pl_merged": "已合并为 {code}",
        "pl_assigned": "已将网格 {code} 指派给 {worker}",
        "pl_draft_made": "已新建草稿 #{id}",
        "pl_discarded": "已放弃草稿 #{id}",
        "pl_select_two": "请先在地图上选中至少两个相邻网格",
        "pl_select_one": "请先选中一个网格并选择网格员",
        "pl_split_which": "折线穿过多个网格：请先选中要拆分的网格",
        "pl_split_none": "折线没有从一边到另一边完整穿过任何网格",
        "pl_need_date": "请选择生效日期",
        "pl_problems": "校验问题",
        "pl_no_problems": "未发现问题，可以发布",
        "pl_n_problems": "{errors} 个错误，{warnings} 个警告",
        "pl_preview": "影响预览（草稿与现行网格对比）",
        "pl_no_preview": "新建草稿后显示影响预览",
        "pl_col_code": "网格编码",
        "pl_col_name": "名称",
        "pl_col_change": "变化",
        "pl_col_area": "面积(m²)",
        "pl_col_households": "户数",
        "pl_col_population": "人口",
        "pl_col_events": "90天事件",
        "pl_col_open": "在办案件",
        "pl_col_worker": "网格员",
        "pl_status_added": "新增",
        "pl_status_removed": "删除",
        "pl_status_changed": "修改",
        "pl_status_unchanged": "未变",
        "pl_worker_changes": "网格员变更的网格",
        "pl_moving_cases": "将改派的在办案件",
        "pl_summary": "新增 {added} · 修改 {changed} · 删除 {removed} · 未变 {unchanged} · 改派案件 {moving}",
        "pl_legend": "近90天事件数",
        "pl_nobody": "（无）",
        "rule_outside-village": "超出村界",
        "rule_overlap": "网格重叠",
        "rule_gap": "网格间缝隙",
        "rule_invalid-geometry": "几何无效",
        "rule_sliver": "碎片网格",
        "rule_no-worker": "未配网格员",
        "rule_unknown-worker": "网格员不存在",
        "rule_code": "编码不规范",
        "rule_code-collision": "编码冲突",
        # Leaflet.draw's own texts (L.drawLocal paths), set by assets/planner.js from the page
        "leaflet:draw.toolbar.actions.title": "取消绘制",
        "leaflet:draw.toolbar.actions.text": "取消",
        "leaflet:draw.toolbar.finish.title": "完成绘制",
        "leaflet:draw.toolbar.finish.text": "完成",
        "leaflet:draw.toolbar.undo.title": "删除最后画的点",
        "leaflet:draw.toolbar.undo.text": "删除最后一点",
        "leaflet:draw.toolbar.buttons.polyline": "画折线：沿线拆分网格",
        "leaflet:draw.toolbar.buttons.polygon": "画多边形：新建网格",
        "leaflet:draw.toolbar.buttons.rectangle": "画矩形：新建网格",
        "leaflet:draw.handlers.polygon.tooltip.start": "点击开始绘制网格",
        "leaflet:draw.handlers.polygon.tooltip.cont": "点击继续绘制",
        "leaflet:draw.handlers.polygon.tooltip.end": "点击第一个点完成",
        "leaflet:draw.handlers.polyline.tooltip.start": "点击开始画拆分线",
        "leaflet:draw.handlers.polyline.tooltip.cont": "点击继续画线",
        "leaflet:draw.handlers.polyline.tooltip.end": "再次点击最后一个点完成",
        "leaflet:draw.handlers.polyline.error": "<strong>错误：</strong>边线不能交叉！",
        "leaflet:draw.handlers.rectangle.tooltip.start": "按住鼠标拖动画矩形",
        "leaflet:draw.handlers.simpleshape.tooltip.end": "松开鼠标完成",
        "leaflet:edit.toolbar.actions.save.title": "保存修改",
        "leaflet:edit.toolbar.actions.save.text": "保存",
        "leaflet:edit.toolbar.actions.cancel.title": "取消编辑，放弃所有修改",
        "leaflet:edit.toolbar.actions.cancel.text": "取消",
        "leaflet:edit.toolbar.actions.clearAll.title": "删除全部网格",
        "leaflet:edit.toolbar.actions.clearAll.text": "全部删除",
        "leaflet:edit.toolbar.buttons.edit": "编辑网格顶点",
        "leaflet:edit.toolbar.buttons.editDisabled": "没有可编辑的网格",
        "leaflet:edit.toolbar.buttons.remove": "删除网格",
        "leaflet:edit.toolbar.buttons.removeDisabled": "没有可删除的网格",
        "leaflet:edit.handlers.edit.tooltip.text": "拖动顶点修改网格，然后点“保存”",
        "leaflet:edit.handlers.edit.tooltip.subtext": "点“取消”放弃修改",
        "leaflet:edit.handlers.remove.tooltip.text": "点击要删除的网格",
    },
    "en": {
        "nav_planner": "Planner",
        "planner_title": "Grid planner · drafts and publishing",
        "pl_village": "Village",
        "pl_pick_village": "Pick a village",
        "pl_readonly": "Read-only: only planners and admins can change the grid.",
        "pl_new_draft": "New draft",
        "pl_discard": "Discard draft",
        "pl_no_draft": "Showing the live grid; a draft is created at your first edit.",
        "pl_live": "Showing the live grid",
        "pl_draft_info": "Draft #{id} (based on version {base}, {cells} cells, {edits} edits)",
        "pl_help": "Draw a polygon: a new cell (taken from the cells it covers); draw a line: split a cell along it; "
                   "edit: drag vertices, then save; delete: remove a cell. Click cells to select them. Edges snap "
                   "to the village boundary and the neighbouring cells.",
        "pl_selected": "Selected cells",
        "pl_merge": "Merge selected cells",
        "pl_worker": "Grid worker",
        "pl_assign": "Assign to selected cell",
        "pl_effective": "Effective date",
        "pl_publish": "Publish new version",
        "pl_published": "Published as version {version} (effective {date}); {moved} open cases reassigned.",
        "pl_conflict": "Publishing conflict: a newer version covering this village was published after this "
                       "draft was made. Discard this draft and start a new one from the live grid.",
        "pl_invalid": "The draft has {n} problems that block publishing (see the validation problems).",
        "pl_rejected": "Not done",
        "pl_forbidden": "You may not do this",
        "pl_created": "New cell {code}",
        "pl_edited": "Saved cell {codes}",
        "pl_deleted": "Deleted cell {codes}",
        "pl_split": "Split into {codes}",
        "pl_merged": "Merged into {code}",
        "pl_assigned": "Cell {code} assigned to {worker}",
        "pl_draft_made": "New draft #{id}",
        "pl_discarded": "Draft #{id} discarded",
        "pl_select_two": "Select at least two neighbouring cells on the map first",
        "pl_select_one": "Select one cell and a grid worker first",
        "pl_split_which": "The line crosses several cells: select the one to split first",
        "pl_split_none": "The line does not cross any cell from one edge to another",
        "pl_need_date": "Pick an effective date",
        "pl_problems": "Validation problems",
        "pl_no_problems": "No problems: ready to publish",
        "pl_n_problems": "{errors} errors, {warnings} warnings",
        "pl_preview": "Preview (draft against the live grid)",
        "pl_no_preview": "The preview appears once there is a draft",
        "pl_col_code": "Cell code",
        "pl_col_name": "Name",
        "pl_col_change": "Change",
        "pl_col_area": "Area (m²)",
        "pl_col_households": "Households",
        "pl_col_population": "Population",
        "pl_col_events": "Events (90 d)",
        "pl_col_open": "Open cases",
        "pl_col_worker": "Grid worker",
        "pl_status_added": "added",
        "pl_status_removed": "removed",
        "pl_status_changed": "changed",
        "pl_status_unchanged": "unchanged",
        "pl_worker_changes": "Cells whose grid worker changes",
        "pl_moving_cases": "Open cases that would move",
        "pl_summary": "added {added} · changed {changed} · removed {removed} · unchanged {unchanged} · "
                      "moving cases {moving}",
        "pl_legend": "Events, last 90 days",
        "pl_nobody": "(none)",
        "rule_outside-village": "Outside the village",
        "rule_overlap": "Overlapping cells",
        "rule_gap": "Gap between cells",
        "rule_invalid-geometry": "Invalid geometry",
        "rule_sliver": "Sliver",
        "rule_no-worker": "No grid worker",
        "rule_unknown-worker": "Unknown grid worker",
        "rule_code": "Malformed code",
        "rule_code-collision": "Code collision",
        # Leaflet.draw's own texts (L.drawLocal paths; the others keep Leaflet.draw's English)
        "leaflet:draw.toolbar.buttons.polyline": "Draw a line: split a cell along it",
        "leaflet:draw.toolbar.buttons.polygon": "Draw a polygon: a new cell",
        "leaflet:draw.toolbar.buttons.rectangle": "Draw a rectangle: a new cell",
        "leaflet:draw.handlers.polyline.tooltip.start": "Click to start the split line",
        "leaflet:edit.toolbar.buttons.edit": "Edit cell vertices",
        "leaflet:edit.toolbar.buttons.editDisabled": "No cells to edit",
        "leaflet:edit.toolbar.buttons.remove": "Delete cells",
        "leaflet:edit.toolbar.buttons.removeDisabled": "No cells to delete",
        "leaflet:edit.handlers.remove.tooltip.text": "Click a cell to delete it",
    },
}


def tr(key: str, lang: str, **values: Any) -> str:
    """A planner string (this module's catalogue first, then the dashboard's), formatted with `values`."""
    s = STRINGS.get(lang, STRINGS["zh"]).get(key)
    if s is None:
        s = i18n.t(key, lang) if key in i18n.CATALOGUE else key
    return s.format(**values) if values else s


# -- request context (the app's _Ctx is not imported: dashboard.app imports this module) -----------------------

class _Req:
    def __init__(self) -> None:
        request = get_current_request()
        self.engine: Engine = request.app.state.engine
        self.lang = server.lang_of(request)
        actor = server.actor_of(request)
        if actor is None:
            raise PreventUpdate
        self.actor: Actor = actor
        # A GCJ-02 basemap (AMap, Tencent): the map shows shifted coordinates, drawn shapes come back shifted.
        self.shift = DashboardSettings().gcj02

    @property
    def writer(self) -> bool:
        return self.actor.role in WRITERS


def _can_write(actor: Actor) -> bool:
    return actor.role in WRITERS


# -- map coordinates (WGS84/CGCS2000 in the database; GCJ-02 on an AMap or Tencent basemap) ----------------------

def _shifted(geometry: dict[str, Any], fn: Any) -> dict[str, Any]:
    def tf(xy: Any) -> Any:
        x, y = fn(xy[:, 0], xy[:, 1])
        return np.column_stack([x, y])

    return dict(mapping(shapely.transform(shape(geometry), tf)))


def to_map(geometry: dict[str, Any], shift: bool) -> dict[str, Any]:
    return _shifted(geometry, wgs84_to_gcj02) if shift else geometry


def from_map(geometry: dict[str, Any], shift: bool) -> dict[str, Any]:
    return _shifted(geometry, gcj02_to_wgs84) if shift else geometry


# -- queries of this page -----------------------------------------------------------------------------------------

def villages(engine: Engine, actor: Actor) -> list[dict[str, str]]:
    """The villages in the account's scope, by code."""
    clause, params = villages_clause(actor)
    with engine.connect() as conn:
        rows = conn.execute(text(f"""SELECT v.code, v.name FROM jurisdictions v
                                     WHERE v.level = 'village' AND {clause} ORDER BY v.code"""), params).all()
    return [{"code": r.code, "name": r.name} for r in rows]


def _in_scope(engine: Engine, actor: Actor, village: str | None) -> bool:
    return bool(village) and any(v["code"] == village for v in villages(engine, actor))


def village_boundary(db: Engine | Connection, village: str) -> tuple[dict[str, Any], list[list[float]], Any]:
    """(GeoJSON of the village, its Leaflet bounds, its shapely geometry)."""
    with grid.begin(db) as conn:
        r = conn.execute(text("""SELECT code, name, ST_AsBinary(geom) AS wkb FROM jurisdictions
                                 WHERE code = :c AND level = 'village'"""), {"c": village}).one()
    g = shapely.from_wkb(r.wkb)
    x0, y0, x1, y1 = g.bounds
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": mapping(g), "properties": {"code": r.code, "name": r.name}}]}
    return fc, [[y0, x0], [y1, x1]], g


def live_cells(engine: Engine, village: str, now: dt.datetime | None = None) -> list[dict[str, Any]]:
    """The live cells of a village with their grid worker and workload (events of 90 days, open cases)."""
    now = now or dt.datetime.now(TZ)
    with engine.connect() as conn:
        rows = conn.execute(text(f"""
            SELECT c.code, c.name, c.households, c.population, w.id AS worker_id, w.name AS worker_name,
                   ST_AsGeoJSON(c.geom, 7, 0) AS gj,
                   (SELECT count(*) FROM events e WHERE e.cell_code = c.code AND e.received_at >= :since)
                       AS events_90d,
                   (SELECT count(*) FROM events e WHERE e.cell_code = c.code AND e.status IN {OPEN_SQL})
                       AS open_cases
            FROM cells c JOIN jurisdictions v ON v.id = c.village_id
            LEFT JOIN LATERAL (SELECT wk.id, wk.name FROM worker_assignments a JOIN workers wk ON wk.id = a.worker_id
                               WHERE a.cell_id = c.id AND a.role = 'grid_worker' AND a.valid_to IS NULL
                               ORDER BY wk.id LIMIT 1) w ON true
            WHERE c.valid_to IS NULL AND v.code = :v ORDER BY c.code"""),
            {"v": village, "since": now - dt.timedelta(days=grid.RECENT_DAYS)}).all()
    return [{"code": r.code, "name": r.name, "worker_id": r.worker_id, "worker_name": r.worker_name,
             "households": r.households, "population": r.population, "events_90d": int(r.events_90d),
             "open_cases": int(r.open_cases), "geometry": json.loads(r.gj)} for r in rows]


def worker_choices(engine: Engine, village: str) -> list[dict[str, str]]:
    """The grid workers of the village (its cells' workers and its grid leaders), by name."""
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT DISTINCT wk.id, wk.name FROM worker_assignments a JOIN workers wk ON wk.id = a.worker_id
            LEFT JOIN cells c ON c.id = a.cell_id
            JOIN jurisdictions v ON v.id = coalesce(c.village_id, a.village_id)
            WHERE v.code = :v AND a.valid_to IS NULL ORDER BY wk.name, wk.id"""), {"v": village}).all()
    return [{"label": f"{r.name} ({r.id})", "value": r.id} for r in rows]


def open_draft(engine: Engine, actor: Actor, village: str) -> int | None:
    """The newest open draft of exactly this village made by this account, if any."""
    for d in grid.list_drafts(engine, actor, "open"):
        if d["scope_code"] == village and d["created_by"] == actor.username:
            return int(d["id"])
    return None


def _fresh_code(conn: Connection, village: str, draft_codes: list[str]) -> str:
    """A cell code never used in the village: above every serial of any version and of the draft."""
    used = set(conn.execute(text("SELECT code FROM cells WHERE code LIKE :p"), {"p": village + "%"}).scalars())
    used |= set(draft_codes)
    top = max((int(c[12:]) for c in used if c.startswith(village) and len(c) == 15 and c[12:].isdigit()), default=0)
    if top >= 999:
        raise grid.GeometryRejected(f"village {village} has no free cell serials left (up to 999)")
    return f"{village}{top + 1:03d}"


# -- edits ----------------------------------------------------------------------------------------------------------

def ensure_draft(engine: Engine, actor: Actor, village: str, draft_id: int | None) -> int:
    """The open draft to edit: the page's one if still open, else a new copy of the village's live cells."""
    if draft_id and any(x["id"] == draft_id and x["scope_code"] == village
                        for x in grid.list_drafts(engine, actor, "open")):
        return draft_id
    return int(grid.create_draft(engine, actor, village)["id"])


def _polygonal(g: Any) -> Any:
    parts = [p for p in shapely.get_parts(g) if p.geom_type in ("Polygon", "MultiPolygon") and not p.is_empty]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def place_cell(conn: Connection, actor: Actor, draft_id: int, code: str, geometry: dict[str, Any],
               properties: dict[str, Any] | None = None) -> str:
    """Store a drawn or edited cell, in the caller's transaction: the other cells of the draft give up the area it
    is drawn over (a cell wholly covered is removed), then gis.grid snaps it to the village boundary and its
    neighbours and clips it. If the cell is refused, its neighbours keep their area (the transaction rolls back)."""
    drawn = grid.parse_geometry(geometry, f"cell {code}")
    draft = grid.get_draft(conn, actor, draft_id, for_update=True)
    village = str((properties or {}).get("village_code") or draft["villages"][0])
    _, _, vg = village_boundary(conn, village)
    area = shapely.intersection(shapely.make_valid(drawn), vg)
    for f in draft["cells"]["features"]:
        other = f["properties"]["code"]
        if other == code:
            continue
        og = shapely.make_valid(shape(f["geometry"]))
        if shapely.area(shapely.intersection(og, area)) <= TINY_DEG2:
            continue
        rest = _polygonal(shapely.difference(og, area))
        if rest.is_empty or shapely.area(rest) <= TINY_DEG2:
            grid.delete_cell(conn, actor, draft_id, other)
        else:
            grid.put_cell(conn, actor, draft_id, other, mapping(rest), {})
    grid.put_cell(conn, actor, draft_id, code, geometry, properties or {}, snap_m=SNAP_M)
    return code


def new_cell(conn: Connection, actor: Actor, draft_id: int, geometry: dict[str, Any]) -> str:
    draft = grid.get_draft(conn, actor, draft_id, for_update=True)
    village = draft["villages"][0]
    code = _fresh_code(conn, village, [f["properties"]["code"] for f in draft["cells"]["features"]])
    return place_cell(conn, actor, draft_id, code, geometry, {"village_code": village})


def split_along(conn: Connection, actor: Actor, draft_id: int, line: dict[str, Any], selected: list[str]
                ) -> list[str]:
    """Split the cell the line crosses (the selected one when it crosses several)."""
    geom = shape(line)
    draft = grid.get_draft(conn, actor, draft_id, for_update=True)
    crossed = [f["properties"]["code"] for f in draft["cells"]["features"]
               if len(grid.split_polygon(shapely.make_valid(shape(f["geometry"])), geom)) >= 2]
    if not crossed:
        raise _UserError("pl_split_none")
    pick = [c for c in crossed if c in selected]
    if len(crossed) > 1 and len(pick) != 1:
        raise _UserError("pl_split_which")
    return grid.split_cell(conn, actor, draft_id, (pick or crossed)[0], line)


def assign_worker(engine: Engine, actor: Actor, draft_id: int, code: str, worker: str) -> None:
    with engine.begin() as conn:
        draft = grid.get_draft(conn, actor, draft_id, for_update=True)
        f = next((f for f in draft["cells"]["features"] if f["properties"]["code"] == code), None)
        if f is None:
            raise NotFound(f"draft {draft_id} has no cell {code}")
        grid.put_cell(conn, actor, draft_id, code, f["geometry"], {"worker_id": worker})


class _UserError(Exception):
    """A gesture that cannot be turned into an edit (a key of the planner's strings)."""


def apply_gesture(engine: Engine, actor: Actor, village: str, draft_id: int | None, action: dict[str, Any],
                  features: list[dict[str, Any]], selected: list[str]) -> tuple[int, str, list[str]]:
    """One map gesture (planner.js) → gis.grid; returns (draft id, message key + values as JSON, new selection).
    A gesture is one transaction: all of its edits are stored, or none (one cell refused keeps the others as
    they were)."""
    kind = str(action.get("type") or "")
    if kind not in ("draw:created", "draw:edited", "draw:deleted"):
        raise PreventUpdate
    draft_id = ensure_draft(engine, actor, village, draft_id)
    codes = [str(f["properties"]["code"]) for f in features if kind != "draw:created"]
    with engine.begin() as conn:
        if kind == "draw:created":
            f = features[0]
            if f["properties"].get("kind") == "polyline":
                codes = split_along(conn, actor, draft_id, f["geometry"], selected)
                return draft_id, _msg("pl_split", codes=", ".join(codes)), codes
            code = new_cell(conn, actor, draft_id, f["geometry"])
            return draft_id, _msg("pl_created", code=code), [code]
        if kind == "draw:edited":
            for f in features:
                place_cell(conn, actor, draft_id, str(f["properties"]["code"]), f["geometry"])
            return draft_id, _msg("pl_edited", codes=", ".join(codes)), codes
        for c in codes:
            grid.delete_cell(conn, actor, draft_id, c)
        return draft_id, _msg("pl_deleted", codes=", ".join(codes)), []


def _msg(key: str, **values: Any) -> str:
    return json.dumps({"key": key, "values": values}, ensure_ascii=False)


# -- rendering ------------------------------------------------------------------------------------------------------

def _positions(geometry: dict[str, Any]) -> list[Any]:
    """GeoJSON (Multi)Polygon → Leaflet [lat, lon] rings (nested once more for a MultiPolygon)."""
    def ring(r: list[list[float]]) -> list[list[float]]:
        return [[p[1], p[0]] for p in r[:-1]]

    if geometry["type"] == "Polygon":
        return [ring(r) for r in geometry["coordinates"]]
    polys = geometry["coordinates"]
    if len(polys) == 1:
        return [ring(r) for r in polys[0]]
    return [[ring(r) for r in p] for p in polys]


def edit_control(writer: bool) -> dl.EditControl:
    """The draw/edit toolbar (in the cells' FeatureGroup). A reader gets one without tools, so that the page's
    callbacks have the same components for every account; the server refuses their edits anyway."""
    if not writer:
        return dl.EditControl(id="pl-edit", position="topleft", disableDefaultEventHandlers=True,
                              draw={k: False for k in ("polygon", "polyline", "rectangle", "circle", "marker",
                                                        "circlemarker")},
                              edit={"edit": False, "remove": False})
    handlers = {e: {"variable": f"wanggePlanner.{n}"} for e, n in (
        ("draw:created", "created"), ("draw:edited", "edited"), ("draw:deleted", "deleted"))}
    return dl.EditControl(
        id="pl-edit", position="topleft", disableDefaultEventHandlers=True, eventHandlers=handlers,
        draw={"polygon": {"allowIntersection": False, "showArea": False,
                          "shapeOptions": {"color": "#ffd54f", "weight": 2}},
              "polyline": {"shapeOptions": {"color": "#ff5252", "weight": 3}},
              "rectangle": {"shapeOptions": {"color": "#ffd54f", "weight": 2}},
              "circle": False, "marker": False, "circlemarker": False},
        edit={"edit": {"selectedPathOptions": {"dashArray": "6 6", "fill": True, "fillOpacity": 0.2}},
              "remove": True})


def cell_layers(cells: list[dict[str, Any]], selected: list[str], lang: str) -> list[Any]:
    from dashboard.app import breaks, colour_for

    bounds = breaks([float(c["events_90d"]) for c in cells])
    out = []
    for c in cells:
        sel = c["code"] in selected
        label = (f"{c['name']} · {c['code']} · {tr('pl_col_worker', lang)}: {c.get('worker_name') or '–'} · "
                 f"{tr('pl_col_events', lang)}: {c['events_90d']} · {tr('pl_col_open', lang)}: {c['open_cases']}")
        out.append(dl.Polygon(
            id={"type": "pl-cell", "code": c["code"]}, positions=_positions(c["geometry"]),
            className=f"pl-cell pl-cell-{c['code']}" + (" pl-selected" if sel else ""),
            color="#ffd54f" if sel else "#c8d6e5", weight=3 if sel else 1,
            fillColor=colour_for(c["events_90d"], bounds), fillOpacity=0.6,
            children=[dl.Tooltip(label, sticky=True)]))
    return out


def legend(cells: list[dict[str, Any]], lang: str) -> list[Any]:
    from dashboard.app import PALETTE, breaks

    bounds = breaks([float(c["events_90d"]) for c in cells])
    rows = [html.Div(tr("pl_legend", lang), className="legend-title"),
            html.Div([html.Span(className="swatch", style={"background": PALETTE[0]}), "0"], className="legend-row")]
    low = 0.0
    for i, b in enumerate(bounds):
        rows.append(html.Div([html.Span(className="swatch", style={"background": PALETTE[i + 1]}),
                              f"{i18n.fmt_int(low, lang)} – {i18n.fmt_int(b, lang)}"], className="legend-row"))
        low = b
    return rows


def problem_markers(problems: list[dict[str, Any]], lang: str) -> list[Any]:
    return [dl.CircleMarker(center=[p["lat"], p["lon"]], radius=9, weight=3,
                            color="#ff5252" if p["severity"] == "error" else "#ffb74d", fillOpacity=0.35,
                            className="pl-problem",
                            children=[dl.Tooltip(f"{tr('rule_' + p['rule'], lang)} · {p['code']}")])
            for p in problems if p.get("lat") is not None]


def problem_list(result: dict[str, Any] | None, lang: str) -> list[Any]:
    if result is None:
        return []
    problems = result["problems"]
    if not problems:
        return [html.P(tr("pl_no_problems", lang), className="pl-ok", id="pl-valid")]
    items = [html.Li([html.Span(tr("rule_" + p["rule"], lang), className=f"pl-rule pl-{p['severity']}"),
                      html.Span(p["code"], className="pl-code"), html.Span(p["message"], className="pl-text")],
                     className="pl-problem-item", **{"data-rule": p["rule"], "data-code": p["code"]})
             for p in problems]
    return [html.P(tr("pl_n_problems", lang, errors=result["errors"], warnings=result["warnings"]),
                   className="bad" if result["errors"] else ""), html.Ul(items, className="pl-problems")]


def preview_table(pv: dict[str, Any] | None, names: dict[str, str], lang: str) -> list[Any]:
    if pv is None:
        return [html.P(tr("pl_no_preview", lang), className="muted")]
    cols = ("pl_col_code", "pl_col_name", "pl_col_change", "pl_col_area", "pl_col_households", "pl_col_population",
            "pl_col_events", "pl_col_open", "pl_col_worker")
    body = []
    for c in pv["cells"]:
        side = c["draft"] or c["live"] or {}
        live = c["live"] or {}

        def num(key: str, side: dict[str, Any] = side, live: dict[str, Any] = live, c: dict[str, Any] = c) -> str:
            v = i18n.fmt_int(side.get(key), lang)
            if c["status"] == "changed" and live.get(key) != side.get(key):
                v += f" ({i18n.fmt_int(live.get(key), lang)})"
            return v

        worker = side.get("worker_name") or side.get("worker_id") or "–"
        body.append(html.Tr([html.Td(c["code"]), html.Td(names.get(c["code"], "")),
                             html.Td(tr(f"pl_status_{c['status']}", lang), className=f"pl-st-{c['status']}"),
                             html.Td(num("area_m2")), html.Td(num("households")), html.Td(num("population")),
                             html.Td(num("events_90d")), html.Td(num("open_cases")), html.Td(worker)],
                            className=f"pl-row-{c['status']}", **{"data-code": c["code"]}))
    s = pv["summary"]
    out: list[Any] = [
        html.P(tr("pl_summary", lang, added=s["added"], changed=s["changed"], removed=s["removed"],
                  unchanged=s["unchanged"], moving=s["moving_cases"]), id="pl-summary"),
        html.Table([html.Thead(html.Tr([html.Th(tr(k, lang)) for k in cols])), html.Tbody(body)],
                   className="status-table pl-preview-table", id="pl-preview-table")]
    wn = {w["worker_id"]: w["worker_name"] for w in pv["workers"] if w["worker_id"]}
    if pv["worker_changes"]:
        out += [html.H3(tr("pl_worker_changes", lang)), html.Ul([
            html.Li(f"{w['code']}: {wn.get(w['from_worker'] or '', tr('pl_nobody', lang))} → "
                    f"{wn.get(w['to_worker'] or '', tr('pl_nobody', lang))}") for w in pv["worker_changes"]],
            className="pl-list")]
    if pv["moving_cases"]:
        out += [html.H3(tr("pl_moving_cases", lang)), html.Ul([
            html.Li(f"#{m['event_id']}: {m['from_cell'] or '–'} → {m['to_cell'] or '–'}")
            for m in pv["moving_cases"][:50]], className="pl-list")]
    return out


def state(engine: Engine, actor: Actor, village: str | None, draft_id: int | None,
          selected: list[str], lang: str) -> dict[str, Any]:
    """Everything the page shows for a village and its draft (or the live grid when there is none)."""
    if not village or not _in_scope(engine, actor, village):
        return {"cells": [], "boundary": EMPTY_FC, "bounds": None, "validation": None, "preview": None,
                "info": "", "workers": [], "names": {}}
    boundary, bounds, _ = village_boundary(engine, village)
    validation = preview = None
    info = tr("pl_no_draft" if _can_write(actor) else "pl_live", lang)
    if draft_id:
        d = grid.get_draft(engine, actor, draft_id)
        if d["status"] != "open":
            draft_id = None
    if draft_id:
        preview = grid.preview(engine, actor, draft_id)
        validation = grid.validate_draft(engine, actor, draft_id)
        rows = {c["code"]: c["draft"] for c in preview["cells"] if c["draft"]}
        cells = []
        for f in d["cells"]["features"]:
            p, r = f["properties"], rows.get(f["properties"]["code"]) or {}
            cells.append({"code": p["code"], "name": p["name"], "worker_id": p["worker_id"],
                          "worker_name": p["worker_name"], "events_90d": r.get("events_90d", 0),
                          "open_cases": r.get("open_cases", 0), "geometry": f["geometry"]})
        info = tr("pl_draft_info", lang, id=d["id"], base=d["base_version"], cells=len(cells), edits=d["edits"])
    else:
        cells = live_cells(engine, village)
    names = {c["code"]: c["name"] for c in cells}
    return {"cells": cells, "boundary": boundary, "bounds": bounds, "validation": validation, "preview": preview,
            "info": info, "workers": worker_choices(engine, village), "names": names}


def draw_local(lang: str) -> dict[str, Any]:
    """The draw toolbar's texts in the page language, as a data attribute read by assets/planner.js."""
    texts = {k.removeprefix("leaflet:"): v for k, v in STRINGS.get(lang, STRINGS["zh"]).items()
             if k.startswith("leaflet:")}
    return {"data-local": json.dumps(texts, ensure_ascii=False)}


def planner_page(c: Any, search: str | None = None) -> Any:
    """The page; `c` is the app's request context (engine, actor, lang, settings). `?village=` preselects."""
    from dashboard.app import basemap, nav

    lang = c.lang
    vs = villages(c.engine, c.actor)
    wanted = (parse_qs((search or "").lstrip("?")).get("village") or [""])[0]
    village = wanted if any(v["code"] == wanted for v in vs) else None
    writer = _can_write(c.actor)
    today = dt.datetime.now(TZ).date()
    group: list[Any] = [edit_control(writer)]
    tools: list[Any] = [
        html.Div(className="pl-row", children=[
            html.Label(tr("pl_selected", lang)),
            dcc.Dropdown(id="pl-selected", multi=True, options=[], value=[], className="dropdown pl-dd"),
            html.Button(tr("pl_merge", lang), id="pl-merge", className="button"),
        ]),
        html.Div(className="pl-row", children=[
            html.Label(tr("pl_worker", lang)),
            dcc.Dropdown(id="pl-worker", options=[], className="dropdown pl-dd"),
            html.Button(tr("pl_assign", lang), id="pl-assign", className="button"),
        ]),
        html.Div(className="pl-row", children=[
            html.Label(tr("pl_effective", lang)),
            dcc.DatePickerSingle(id="pl-date", date=today.isoformat(), display_format="YYYY-MM-DD"),
            html.Button(tr("pl_publish", lang), id="pl-publish", className="button pl-publish"),
        ]),
    ]
    return html.Div(className="planner", children=[
        html.Header(className="wall-head", children=[html.H1(tr("planner_title", lang)), nav(c, "planner")]),
        html.Div(className="pl-controls", children=[
            html.Label(tr("pl_village", lang)),
            dcc.Dropdown(id="pl-village", value=village, placeholder=tr("pl_pick_village", lang),
                         options=[{"label": f"{v['name']} ({v['code']})", "value": v["code"]} for v in vs],
                         className="dropdown pl-village", clearable=False),
            html.Button(tr("pl_new_draft", lang), id="pl-new", className="button", hidden=not writer),
            html.Button(tr("pl_discard", lang), id="pl-discard", className="button", hidden=not writer),
            html.Span(id="pl-info", className="muted"),
            *([] if writer else [html.Span(tr("pl_readonly", lang), id="pl-readonly", className="pl-readonly")]),
        ]),
        html.Div(className="pl-map", children=[
            # trackViewport off: nothing here needs the view, and a map torn down right after it was made (the page
            # is rendered again when the router first sees the URL) must not leave a timer asking for its centre.
            dl.Map(id="pl-map", center=[29.7, 121.55], zoom=13, className="map", zoomSnap=0.25, trackViewport=False,
                   attributionControl=False, children=[
                       *basemap(c),
                       dl.GeoJSON(id="pl-boundary", data=EMPTY_FC, style={"variable": "wangge.townStyle"},
                                  interactive=False),
                       dl.FeatureGroup(id="pl-group", children=group),
                       dl.LayerGroup(id="pl-problem-layer"),
                   ]),
            html.Div(id="pl-legend", className="legend"),
        ]),
        html.Aside(className="pl-side", children=[
            html.Div(id="pl-msg", className="pl-msg"),
            *([html.P(tr("pl_help", lang), className="muted pl-help")] if writer else []),
            html.Div(tools, hidden=not writer),
            html.H2(tr("pl_problems", lang)), html.Div(id="pl-problems"),
            html.H2(tr("pl_preview", lang)), html.Div(id="pl-preview"),
        ]),
        dcc.Store(id="pl-draft", data=open_draft(c.engine, c.actor, village) if village and writer else None),
        dcc.Store(id="pl-rev", data=0), dcc.Store(id="pl-sel", data=[]),
        html.Div(id="pl-draw-local", className="hidden", **draw_local(lang)),
        html.Div(id="pl-ready", className="hidden"),
    ])


# -- callbacks ------------------------------------------------------------------------------------------------------

def _message(r: _Req, raw: str | None, error: str | None = None) -> Any:
    if error:
        return html.Span(error, className="bad pl-error")
    if not raw:
        return ""
    m = json.loads(raw)
    return html.Span(tr(m["key"], r.lang, **m["values"]), className="pl-done")


def _error_text(r: _Req, exc: Exception) -> str:
    if isinstance(exc, _UserError):
        return tr(str(exc.args[0]), r.lang)
    if isinstance(exc, grid.DraftConflict):
        return f"{tr('pl_conflict', r.lang)} ({exc})"
    if isinstance(exc, grid.GridInvalid):
        return tr("pl_invalid", r.lang, n=len(exc.problems))
    if isinstance(exc, Forbidden):
        return f"{tr('pl_forbidden', r.lang)}: {exc}"
    return f"{tr('pl_rejected', r.lang)}: {exc}"


def register(dash_app: Dash, run: Any) -> None:
    """The planner's callbacks on the dashboard's Dash app; `run(fn, *args)` runs database work in a thread."""

    async def act_sync(fn: Any, *args: Any) -> Any:
        return await run(fn, *args)

    @dash_app.callback(
        Output("pl-draft", "data"), Output("pl-msg", "children"), Output("pl-rev", "data"),
        Output("pl-sel", "data", allow_duplicate=True),
        Input("pl-village", "value"), Input("pl-new", "n_clicks"), Input("pl-discard", "n_clicks"),
        Input("pl-edit", "action"), Input("pl-merge", "n_clicks"), Input("pl-assign", "n_clicks"),
        Input("pl-publish", "n_clicks"),
        State("pl-draft", "data"), State("pl-edit", "geojson"), State("pl-sel", "data"),
        State("pl-worker", "value"), State("pl-date", "date"), State("pl-rev", "data"),
        prevent_initial_call=True)
    async def act(village: str | None, _new: Any, _discard: Any, action: dict[str, Any] | None, _merge: Any,
                  _assign: Any, _publish: Any, draft_id: int | None, geojson: dict[str, Any] | None,
                  selected: list[str] | None, worker: str | None, date: str | None, rev: int | None) -> Any:
        r = _Req()
        trig = ctx.triggered_id
        selected = list(selected or [])
        rev = (rev or 0) + 1
        if trig == "pl-village":
            found = await act_sync(open_draft, r.engine, r.actor, village) if village and r.writer else None
            return found, "", rev, []
        if not village:
            raise PreventUpdate
        if not r.writer:
            return no_update, _message(r, None, tr("pl_readonly", r.lang)), rev, no_update
        try:
            if trig == "pl-new":
                if not _new:
                    raise PreventUpdate
                d = await act_sync(grid.create_draft, r.engine, r.actor, village)
                return d["id"], _message(r, _msg("pl_draft_made", id=d["id"])), rev, []
            if trig == "pl-discard":
                if not _discard or not draft_id:
                    raise PreventUpdate
                await act_sync(grid.discard_draft, r.engine, r.actor, draft_id)
                return None, _message(r, _msg("pl_discarded", id=draft_id)), rev, []
            if trig == "pl-edit":
                if not action:
                    raise PreventUpdate
                feats = [{**f, "geometry": from_map(f["geometry"], r.shift)}
                         for f in (geojson or {}).get("features") or []]
                if not feats:
                    raise PreventUpdate
                did, raw, sel = await act_sync(apply_gesture, r.engine, r.actor, village, draft_id, action, feats,
                                               selected)
                return did, _message(r, raw), rev, sel
            if trig == "pl-merge":
                if not _merge:
                    raise PreventUpdate
                if len(selected) < 2:
                    return no_update, _message(r, None, tr("pl_select_two", r.lang)), no_update, no_update
                did = await act_sync(ensure_draft, r.engine, r.actor, village, draft_id)
                kept = await act_sync(grid.merge_cells, r.engine, r.actor, did, selected)
                return did, _message(r, _msg("pl_merged", code=kept)), rev, [kept]
            if trig == "pl-assign":
                if not _assign:
                    raise PreventUpdate
                if len(selected) != 1 or not worker:
                    return no_update, _message(r, None, tr("pl_select_one", r.lang)), no_update, no_update
                did = await act_sync(ensure_draft, r.engine, r.actor, village, draft_id)
                await act_sync(assign_worker, r.engine, r.actor, did, selected[0], worker)
                return did, _message(r, _msg("pl_assigned", code=selected[0], worker=worker)), rev, no_update
            if trig == "pl-publish":
                if not _publish:
                    raise PreventUpdate
                if not date:
                    return no_update, _message(r, None, tr("pl_need_date", r.lang)), no_update, no_update
                did = await act_sync(ensure_draft, r.engine, r.actor, village, draft_id)
                v = await act_sync(grid.publish, r.engine, r.actor, did, dt.date.fromisoformat(date[:10]))
                return None, _message(r, _msg("pl_published", version=v["version"], date=v["effective_date"],
                                              moved=v["reassigned_cases"])), rev, []
        except (WanggeError, _UserError) as exc:
            return no_update, _message(r, None, _error_text(r, exc)), rev, no_update
        raise PreventUpdate

    @dash_app.callback(
        Output("pl-group", "children"), Output("pl-boundary", "data"), Output("pl-problem-layer", "children"),
        Output("pl-problems", "children"), Output("pl-preview", "children"), Output("pl-info", "children"),
        Output("pl-legend", "children"), Output("pl-selected", "options"), Output("pl-selected", "value"),
        Output("pl-worker", "options"), Output("pl-ready", "children"),
        Input("pl-rev", "data"), Input("pl-draft", "data"), Input("pl-village", "value"), Input("pl-sel", "data"))
    async def refresh(rev: int | None, draft_id: int | None, village: str | None, selected: list[str] | None) -> Any:
        r = _Req()
        s = await act_sync(state, r.engine, r.actor, village, draft_id, list(selected or []), r.lang)
        shown_cells = [{**c, "geometry": to_map(c["geometry"], r.shift)} for c in s["cells"]]
        group = [edit_control(r.writer), *cell_layers(shown_cells, list(selected or []), r.lang)]
        boundary = {**s["boundary"], "features": [{**f, "geometry": to_map(f["geometry"], r.shift)}
                                                   for f in s["boundary"]["features"]]}
        validation = s["validation"]
        problems = validation["problems"] if validation else []
        if r.shift:
            problems = [{**p, **dict(zip(("lon", "lat"), wgs84_to_gcj02(p["lon"], p["lat"]), strict=True))}
                        if p.get("lon") is not None else p for p in problems]
        options = [{"label": f"{c['name']} ({c['code']})", "value": c["code"]} for c in s["cells"]]
        shown = [c for c in (selected or []) if any(o["value"] == c for o in options)]
        attrs: dict[str, Any] = {"data-rev": str(rev or 0), "data-draft": str(draft_id or ""),
                                  "data-cells": str(len(s["cells"]))}
        ready = html.Span(**attrs)
        return (group, boundary, problem_markers(problems, r.lang), problem_list(validation, r.lang),
                preview_table(s["preview"], s["names"], r.lang) if village else [], s["info"],
                legend(s["cells"], r.lang) if s["cells"] else [], options, shown, s["workers"], ready)

    @dash_app.callback(Output("pl-map", "viewport"), Input("pl-village", "value"))
    async def zoom_to(village: str | None) -> Any:
        r = _Req()
        if not village or not await act_sync(_in_scope, r.engine, r.actor, village):
            raise PreventUpdate
        _, bounds, _ = await act_sync(village_boundary, r.engine, village)
        if r.shift:
            bounds = [[lat, lon] for lon, lat in (wgs84_to_gcj02(x, y) for y, x in bounds)]
        # No animation: layers replaced while Leaflet animates a zoom fail (`_leaflet_pos` of a removed layer).
        return {"bounds": bounds, "transition": "fitBounds", "options": {"animate": False}}

    @dash_app.callback(Output("pl-sel", "data", allow_duplicate=True),
                       Input({"type": "pl-cell", "code": ALL}, "n_clicks"), State("pl-sel", "data"),
                       prevent_initial_call=True)
    def pick(clicks: list[int | None], selected: list[str] | None) -> Any:
        trig = ctx.triggered_id
        if not isinstance(trig, dict) or not ctx.triggered or not ctx.triggered[0].get("value"):
            raise PreventUpdate
        code = str(trig["code"])
        sel = list(selected or [])
        return [c for c in sel if c != code] if code in sel else [*sel, code]


    @dash_app.callback(Output("pl-sel", "data", allow_duplicate=True), Input("pl-selected", "value"),
                       State("pl-sel", "data"), prevent_initial_call=True)
    def choose(value: list[str] | None, selected: list[str] | None) -> Any:
        # The list shows the selection (the store); a change made in the list itself becomes the selection.
        if list(value or []) == list(selected or []):
            raise PreventUpdate
        return list(value or [])


def install(dash_app: Dash) -> None:
    """Register the planner's callbacks on a Dash app with a plain thread runner (for use outside build())."""
    import asyncio

    async def run(fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    register(dash_app, run)
