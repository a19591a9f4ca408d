"""The planner page in a real browser (Debian's Chromium through Playwright) against a real PostGIS.

A planner picks a village, draws a new cell with the Leaflet draw toolbar (mouse clicks on the map), sees the
draft get the cell and the validation list name it (no grid worker yet), assigns a worker, and publishes the
draft with an effective date: a new grid version exists (database and `GET /api/v1/grid/versions`). A leader
sees the same page read-only. No console errors. Screenshots go to artifacts/screenshots/planner*.png.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from sqlalchemy import text

from api.app import create_app
from gis import accounts, db, grid
from gis.intake import TZ
from gis.workflow import Actor
from tests.browser import LiveServer, Watch, launch, login
from tests.conftest import create_database

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
TOWN = "330212101000"
VILLAGE = "330212101001"  # four cells, each with a grid worker
PASSWORD = "correct-horse-42"
VIEWPORT: ViewportSize = {"width": 1600, "height": 1000}


@dataclass
class Site:
    url: str
    db_url: str


@pytest.fixture(scope="module")
def site(server_url: str, template_db: str) -> Iterator[Site]:
    url = create_database(server_url, "wangge_test_planner", template=template_db)
    engine = db.engine_for(url)
    accounts.create_user(engine, "planner1", PASSWORD, "planner", TOWN)
    accounts.create_user(engine, "leader1", PASSWORD, "leader", TOWN)
    with LiveServer(create_app(url)) as live:
        yield Site(live.url, url)
    db.engine_for(url).dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


def shot(page: Page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"))


def pick(page: Page, dropdown: str, text_: str) -> None:
    """Choose an option of a dcc.Dropdown by typing part of its label."""
    settle(page)
    for attempt in range(3):  # the menu may still be opening when the first keys arrive: open it again
        page.click(dropdown)
        page.wait_for_selector("[role=option]")
        page.keyboard.type(text_)
        try:
            page.wait_for_function(f"""() => {{
                const os = [...document.querySelectorAll('[role=option]')];
                return os.length >= 1 && os.every(o => o.textContent.includes('{text_}')); }}""", timeout=5_000)
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.keyboard.press("Escape")
            settle(page)
    page.locator("[role=option]", has_text=text_).first.click()
    page.keyboard.press("Escape")
    page.wait_for_function(f"() => document.querySelector('{dropdown}').textContent.includes('{text_}')")


def settle(page: Page) -> None:
    """Wait until Dash has no callback in flight (components being updated carry data-dash-is-loading)."""
    page.wait_for_timeout(100)
    page.wait_for_function("() => !document.querySelector('[data-dash-is-loading]')", timeout=15_000)


def ready(page: Page) -> dict[str, str]:
    attrs: dict[str, str] = page.eval_on_selector("#pl-ready span", "s => ({...s.dataset})")
    return attrs


def wait_rev(page: Page, rev: int) -> None:
    page.wait_for_function(f"() => Number(document.querySelector('#pl-ready span')?.dataset.rev) >= {rev}",
                           timeout=15_000)


def draft_cells(site: Site, draft_id: int) -> dict[str, str | None]:
    with db.engine_for(site.db_url).connect() as conn:
        return {r.code: r.worker_id for r in conn.execute(
            text("SELECT code, worker_id FROM grid_draft_cells WHERE draft_id = :d"), {"d": draft_id})}


def cell_area(site: Site, draft_id: int, code: str) -> float:
    with db.engine_for(site.db_url).connect() as conn:
        area = conn.execute(text("""SELECT ST_Area(geom::geography) FROM grid_draft_cells
                                    WHERE draft_id = :d AND code = :c"""), {"d": draft_id, "c": code}).scalar_one()
    return float(area)


def test_a_planner_draws_a_cell_and_publishes_a_version(site: Site, browser: Browser) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watch = Watch().attach(page)
    try:
        planner_session(site, page, watch)
    except Exception:
        shot(page, "planner-failed")
        print("browser errors:", watch.errors[:1])
        raise
    finally:
        context.close()


def planner_session(site: Site, page: Page, watch: Watch) -> None:
    login(page, site.url, "planner1", PASSWORD, "/dashboard/planner")
    page.wait_for_selector("#pl-village")
    assert page.query_selector("#pl-readonly") is None

    # Pick the village: its four live cells appear, coloured by workload.
    pick(page, "#pl-village", VILLAGE)
    page.wait_for_function("() => document.querySelectorAll('path.pl-cell').length === 4", timeout=15_000)
    assert ready(page)["draft"] == ""
    page.wait_for_timeout(400)  # the map fits the village (no animation needed, but let tiles of layout settle)

    # Draw a new cell: a small square inside the largest cell, clicked out with the polygon tool.
    box = page.evaluate("""() => {
        const ps = [...document.querySelectorAll('path.pl-cell')].map(p => p.getBoundingClientRect());
        ps.sort((a, b) => b.width * b.height - a.width * a.height);
        const r = ps[0];
        return {x: r.x + r.width / 2, y: r.y + r.height / 2, w: r.width, h: r.height};
    }""")
    half = max(12.0, min(box["w"], box["h"]) * 0.12)
    corners = [(box["x"] - half, box["y"] - half), (box["x"] + half, box["y"] - half),
               (box["x"] + half, box["y"] + half), (box["x"] - half, box["y"] + half)]
    # The square must lie over one cell (checked at its corners before drawing).
    hits = [page.evaluate(f"() => document.elementFromPoint({x}, {y})?.getAttribute('class') || ''")
            for x, y in corners]
    assert all("pl-cell" in h for h in hits) and len({h.split()[1] for h in hits}) == 1, hits
    rev = int(ready(page)["rev"])
    assert page.get_attribute(".leaflet-draw-draw-polygon", "title") == "画多边形：新建网格"
    page.click(".leaflet-draw-draw-polygon")
    for x, y in [*corners, corners[0]]:
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.up()
        page.wait_for_timeout(120)
    page.wait_for_selector(".pl-done", timeout=15_000)
    wait_rev(page, rev + 1)
    page.wait_for_function("() => document.querySelectorAll('path.pl-cell').length === 5", timeout=15_000)
    draft_id = int(ready(page)["draft"])

    # The draft in the database has the new cell (a fresh code, no worker yet); the validation list says so.
    cells = draft_cells(site, draft_id)
    new = sorted(set(cells) - {f"{VILLAGE}00{i}" for i in range(1, 5)})
    assert new == [f"{VILLAGE}005"] and cells[new[0]] is None
    page.wait_for_selector(f'.pl-problem-item[data-rule="no-worker"][data-code="{new[0]}"]', timeout=10_000)
    assert not page.query_selector_all('.pl-problem-item[data-rule="overlap"], .pl-problem-item[data-rule="gap"]')
    assert page.query_selector(f'#pl-preview-table tr[data-code="{new[0]}"] .pl-st-added') is not None
    shot(page, "planner-draw")

    # The new cell is selected: give it the grid worker of the cell it was cut from; no problem is left.
    worker = next(w for c, w in cells.items() if c != new[0] and w)
    rev = int(ready(page)["rev"])
    pick(page, "#pl-worker", worker)
    page.click("#pl-assign")
    wait_rev(page, rev + 1)
    page.wait_for_selector("#pl-valid", timeout=10_000)
    assert draft_cells(site, draft_id)[new[0]] == worker

    # Split the new cell along a line drawn across it, then merge the two pieces again.
    rev = int(ready(page)["rev"])
    page.click(".leaflet-draw-draw-polyline")
    for x, y in [(box["x"], box["y"] - half - 6), (box["x"], box["y"] + half + 6), (box["x"], box["y"] + half + 6)]:
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.up()
        page.wait_for_timeout(150)
    wait_rev(page, rev + 1)
    page.wait_for_function("() => document.querySelectorAll('path.pl-cell').length === 6", timeout=15_000)
    assert sorted(set(draft_cells(site, draft_id)) - set(cells)) == [f"{VILLAGE}006"]  # 005 keeps the rest
    page.wait_for_selector(f'.pl-problem-item[data-rule="no-worker"][data-code="{VILLAGE}006"]', timeout=10_000)
    rev = int(ready(page)["rev"])
    page.click("#pl-merge")  # the two pieces are selected after the split
    wait_rev(page, rev + 1)
    page.wait_for_function("() => document.querySelectorAll('path.pl-cell').length === 5", timeout=15_000)
    assert set(draft_cells(site, draft_id)) == {*cells}
    page.wait_for_selector("#pl-valid", timeout=10_000)

    # Edit vertices: drag a corner of the new cell outwards and save; the cell it grows into gives way.
    before = cell_area(site, draft_id, new[0])
    rev = int(ready(page)["rev"])
    page.click(".leaflet-draw-edit-edit")
    x, y = corners[0]
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 15, y - 15, steps=5)
    page.mouse.up()
    page.click(".leaflet-draw-actions a:text('保存')")  # Leaflet.draw speaks the page language
    wait_rev(page, rev + 1)
    assert cell_area(site, draft_id, new[0]) > before * 1.05
    page.wait_for_selector("#pl-valid", timeout=10_000)

    # Meanwhile the same planner starts a second draft of the village elsewhere (based on version 0).
    stale = grid.create_draft(db.engine_for(site.db_url), Actor("planner1", "planner", TOWN), VILLAGE)["id"]

    # Publish from today: a new version with the new cell.
    today = dt.datetime.now(TZ).date().isoformat()
    page.fill("#pl-date", today)
    page.keyboard.press("Enter")
    page.click("#pl-publish")
    page.wait_for_selector(".pl-done >> text=/第 1 版/", timeout=15_000)
    shot(page, "planner-published")
    with db.engine_for(site.db_url).connect() as conn:
        v = conn.execute(text("SELECT id, draft_id, effective_date FROM grid_versions ORDER BY id")).all()
        live = set(conn.execute(text("""SELECT c.code FROM cells c JOIN jurisdictions v ON v.id = c.village_id
                                        WHERE v.code = :v AND c.valid_to IS NULL"""), {"v": VILLAGE}).scalars())
    assert [(r.id, r.draft_id, r.effective_date.isoformat()) for r in v] == [(1, draft_id, today)]
    assert new[0] in live and len(live) == 5
    token = httpx.post(f"{site.url}/api/v1/auth/token", data={"username": "planner1", "password": PASSWORD})
    r = httpx.get(f"{site.url}/api/v1/grid/versions",
                  headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert [x["version"] for x in r.json()["versions"]] == [0, 1]
    assert new[0] in r.json()["versions"][1]["summary"]["added"]

    # The second draft is now stale: publishing it is refused with a clear message, nothing changes.
    page.goto(f"{site.url}/dashboard/planner?village={VILLAGE}")
    page.wait_for_function(f"() => document.querySelector('#pl-ready span')?.dataset.draft === '{stale}'",
                           timeout=15_000)
    settle(page)  # the router renders the page once more when it first sees the URL
    page.wait_for_function(f"() => document.querySelector('#pl-ready span')?.dataset.draft === '{stale}'")
    page.click("#pl-publish")
    page.wait_for_selector(".pl-error >> text=/发布冲突/", timeout=15_000)
    shot(page, "planner-conflict")
    with db.engine_for(site.db_url).connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM grid_versions")).scalar_one() == 1
    assert watch.errors == []


def test_a_leader_sees_the_planner_read_only(site: Site, browser: Browser) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watch = Watch().attach(page)
    login(page, site.url, "leader1", PASSWORD, "/dashboard/planner")
    page.wait_for_selector("#pl-readonly")
    pick(page, "#pl-village", VILLAGE)
    page.wait_for_function("() => document.querySelectorAll('path.pl-cell').length >= 4", timeout=15_000)
    assert page.query_selector(".leaflet-draw-draw-polygon") is None
    assert not page.is_visible("#pl-publish")
    shot(page, "planner-readonly")
    page.click("#lang-switch")  # English
    page.wait_for_selector("#pl-readonly >> text=/Read-only/", timeout=15_000)
    page.click("#lang-switch")  # back to Chinese for the other tests of the session
    page.wait_for_selector("#pl-readonly >> text=/只读/", timeout=15_000)
    assert watch.errors == []
    context.close()


def test_shapes_drawn_on_a_gcj02_basemap_come_back_in_wgs84() -> None:
    """On an AMap/Tencent basemap the cells are shown shifted to GCJ-02 and drawn shapes are shifted back."""
    from dashboard.planner import from_map, to_map

    g = {"type": "Polygon", "coordinates": [[[121.55, 29.7], [121.56, 29.7], [121.56, 29.71], [121.55, 29.7]]]}
    shown = to_map(g, True)
    assert abs(shown["coordinates"][0][0][0] - 121.55) > 0.003  # a few hundred metres off
    back = from_map(shown, True)
    for (x, y), (x0, y0) in zip(back["coordinates"][0], g["coordinates"][0], strict=True):
        assert abs(x - x0) < 1e-7 and abs(y - y0) < 1e-7
    assert to_map(g, False) is g and from_map(g, False) is g
