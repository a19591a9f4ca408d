"""Every user-visible string of the dashboard, in one catalogue: zh-CN (default) and English.

Callbacks and layouts call `t(key, lang)`; nothing user-visible is written anywhere else. Numbers, percentages
and dates follow the language too (`fmt_int`, `fmt_pct`, `fmt_dt`).
"""

from __future__ import annotations

import datetime as dt

LANGS = ("zh", "en")
DEFAULT = "zh"

CATALOGUE: dict[str, tuple[str, str]] = {
    # chrome
    "app_title": ("网格化管理指挥中心", "Grid management command centre"),
    "nav_wall": ("大屏", "Wall"),
    "nav_hotspots": ("热点分析", "Hotspots"),
    "nav_villages": ("村社一览", "Villages"),
    "nav_planner": ("网格规划", "Grid planner"),
    "logout": ("退出", "Log out"),
    "switch_lang": ("English", "中文"),
    "html_lang": ("zh-CN", "en"),
    # login
    "login_title": ("登录", "Log in"),
    "username": ("用户名", "User name"),
    "password": ("密码", "Password"),
    "login_button": ("登录", "Log in"),
    "login_failed": ("用户名或密码错误", "Wrong user name or password"),
    # wall
    "wall_title": ("综合信息指挥中心", "Command centre"),
    "window": ("统计时段", "Window"),
    "win_today": ("今日", "Today"),
    "win_7d": ("近7天", "7 days"),
    "win_30d": ("近30天", "30 days"),
    "win_custom": ("自定义", "Custom"),
    "metric_km2": ("每平方公里事件数", "Events per km²"),
    "metric_1000": ("每千人事件数", "Events per 1,000 residents"),
    "legend": ("图例", "Legend"),
    "kpi_received": ("今日受理", "Received today"),
    "kpi_closed": ("今日办结", "Closed today"),
    "kpi_on_time": ("按期结案率", "On-time rate"),
    "col_closure": ("结案率", "Closure rate"),
    "kpi_open": ("在办", "Open"),
    "kpi_overdue": ("超期", "Overdue"),
    "platforms": ("四平台分布（今日）", "Platforms (today)"),
    "overdue_rank": ("超期案件最多的村社", "Villages with most overdue cases"),
    "ticker": ("最新事件", "Latest events"),
    "village_status": ("村社办理情况", "Handling status by village"),
    "col_village": ("村社", "Village"),
    "col_open": ("待办", "Open"),
    "col_in_progress": ("处置中", "In progress"),
    "col_overdue": ("超期", "Overdue"),
    "col_closed_today": ("今日办结", "Closed today"),
    "col_events": ("事件数", "Events"),
    "col_per_km2": ("每km²", "per km²"),
    "col_per_1000": ("每千人", "per 1,000"),
    "col_on_time": ("按期率", "On time"),
    "col_on_time_due": ("按期办结率", "On time of due"),
    "col_trend": ("趋势", "Trend"),
    "col_population": ("人口", "Population"),
    "col_area": ("面积(km²)", "Area (km²)"),
    "col_previous": ("上期", "Previous"),
    "col_cell": ("网格", "Cell"),
    "col_worker": ("网格员", "Grid worker"),
    "col_category": ("类别", "Category"),
    "col_status": ("状态", "Status"),
    "col_received": ("受理时间", "Received"),
    "col_id": ("编号", "No."),
    "unassigned": ("未定位", "not located"),
    "none_yet": ("暂无", "none yet"),
    "live": ("实时", "Live"),
    "updated": ("更新于", "Updated"),
    # hotspots
    "hotspots_title": ("领导驾驶舱 · 热点分析", "Leaders' cockpit · hotspots"),
    "filter_category": ("事件类别", "Category"),
    "filter_platform": ("平台", "Platform"),
    "all": ("全部", "All"),
    "aggregation": ("聚合方式", "Aggregation"),
    "agg_hex": ("六边形", "Hexagons"),
    "agg_cell": ("网格", "Grid cells"),
    "layer_density": ("事件密度", "Density"),
    "layer_gi": ("热点/冷点 (Getis-Ord Gi*)", "Hot and cold spots (Getis-Ord Gi*)"),
    "layer_recurring": ("反复发生的问题点位", "Recurring-problem places"),
    "significance": ("显著性水平", "Significance level"),
    "fdr": ("多重检验校正 (FDR)", "Multiple-testing correction (FDR)"),
    "min_local": ("热点须本单元及相邻单元合计至少 {n} 件事件",
                  "A hot spot needs {n} or more incidents in it and its neighbours"),
    "hot_99": ("热点 99%", "Hot spot 99%"),
    "hot_95": ("热点 95%", "Hot spot 95%"),
    "hot_90": ("热点 90%", "Hot spot 90%"),
    "cold_99": ("冷点 99%", "Cold spot 99%"),
    "cold_95": ("冷点 95%", "Cold spot 95%"),
    "cold_90": ("冷点 90%", "Cold spot 90%"),
    "gi_none": ("不显著", "Not significant"),
    "ranking": ("村社排名（与上期比较）", "Village ranking (vs. previous period)"),
    "drill_cells": ("网格", "Cells"),
    "drill_events": ("事件列表", "Events"),
    "hotspots_unavailable": ("热点分析模块尚未就绪", "Hotspot analytics are not available yet"),
    "recurring_times": ("次", "times"),
    "back": ("返回", "Back"),
    # villages
    "villages_title": ("村社办理情况与考核指标", "Villages: handling status and indicators"),
    "export_csv": ("导出 CSV", "Export CSV"),
    "open_map": ("地图", "Map"),
    # event page
    "event_title": ("案件", "Case"),
    "timeline": ("办理过程", "Timeline"),
    "photos": ("照片", "Photos"),
    "no_photos": ("无照片", "No photos"),
    "responsible": ("责任人/单位", "Responsible"),
    "at": ("时间", "Time"),
    "action": ("环节", "Step"),
    "actor": ("操作人", "By"),
    "note": ("说明", "Note"),
    "deadline": ("办理时限", "Deadline"),
    "address": ("地址", "Address"),
    "description": ("描述", "Description"),
    "source": ("来源", "Source"),
    "not_found": ("无此案件或无权查看", "No such case in your scope"),
    "unit": ("承办单位", "Handling unit"),
    # statuses
    "st_needs_location": ("待定位", "Needs location"),
    "st_reported": ("待受理", "Reported"),
    "st_accepted": ("已受理", "Accepted"),
    "st_rejected": ("不予受理", "Rejected"),
    "st_dispatched": ("已派遣", "Dispatched"),
    "st_in_progress": ("处置中", "In progress"),
    "st_feedback": ("已反馈", "Feedback"),
    "st_review": ("核查中", "Under review"),
    "st_closed": ("已办结", "Closed"),
    # actions (timeline)
    "act_report": ("上报", "Reported"),
    "act_accept": ("受理", "Accepted"),
    "act_reject": ("不予受理", "Rejected"),
    "act_locate": ("定位", "Located"),
    "act_dispatch": ("分流交办", "Dispatched"),
    "act_start": ("开始处置", "Started"),
    "act_return": ("退回", "Returned"),
    "act_assist_done": ("协办完成", "Assist done"),
    "act_feedback": ("信息反馈", "Feedback"),
    "act_review": ("核查", "Review"),
    "act_close": ("办结", "Closed"),
    "act_rework": ("返工", "Rework"),
    "act_escalate": ("上报上级", "Escalated"),
    "act_supervise": ("督办", "Supervised"),
    "act_merge": ("合并", "Merged"),
    # sources
    "src_grid_worker": ("网格员", "Grid worker"),
    "src_sensor": ("物联感知", "Sensor"),
    "src_camera": ("视频AI", "Camera"),
    "src_hotline": ("12345热线", "12345 hotline"),
    "src_assigned": ("上级交办", "Assigned from above"),
    "src_citizen": ("群众上报", "Citizen"),
    # devices
    "dev_camera": ("摄像头", "Camera"),
    "dev_sensor": ("传感器", "Sensor"),
    "trend_up": ("上升", "up"),
    "trend_down": ("下降", "down"),
    "trend_flat": ("持平", "flat"),
}


def lang_of(value: str | None) -> str:
    return value if value in LANGS else DEFAULT


def t(key: str, lang: str) -> str:
    zh, en = CATALOGUE[key]
    return en if lang == "en" else zh


def status(code: str, lang: str) -> str:
    return t(f"st_{code}", lang) if f"st_{code}" in CATALOGUE else code


def action(code: str, lang: str) -> str:
    return t(f"act_{code}", lang) if f"act_{code}" in CATALOGUE else code


def source(code: str, lang: str) -> str:
    return t(f"src_{code}", lang) if f"src_{code}" in CATALOGUE else code


def fmt_int(n: int | float | None, lang: str) -> str:
    return "–" if n is None else f"{n:,.0f}"


def fmt_num(n: float | None, lang: str, digits: int = 1) -> str:
    return "–" if n is None else f"{n:,.{digits}f}"


def fmt_pct(x: float | None, lang: str) -> str:
    return "–" if x is None else f"{x * 100:.1f}%"


def fmt_dt(d: dt.datetime | None, lang: str, *, short: bool = False) -> str:
    if d is None:
        return "–"
    if short:
        return d.strftime("%H:%M:%S")
    if lang == "en":
        return d.strftime("%d %b %Y %H:%M")
    return f"{d.year}年{d.month}月{d.day}日 {d:%H:%M}"


def fmt_date(d: dt.date, lang: str) -> str:
    return d.strftime("%d %b %Y") if lang == "en" else f"{d.year}年{d.month}月{d.day}日"
