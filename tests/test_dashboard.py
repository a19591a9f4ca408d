"""The Dash dashboard in a real browser (Debian's Chromium through Playwright) against a real PostGIS.

One server and one browser for the module: the wangge app with the dashboard mounted, served by uvicorn on a
free port, on the module's own copy of the demo database. Screenshots of every page go to artifacts/screenshots/
(git-ignored, kept by CI as artefacts). The README's pictures come from `bench/dashboard.py --screenshots docs`,
over a million cases rather than a test's few.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import shapely
from playwright.sync_api import Browser, Page, sync_playwright
from sqlalchemy import text

from api.app import create_app
from gis import accounts, db
from tests.browser import LiveServer, Watch, launch, login
from tests.conftest import create_database

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "artifacts" / "screenshots"
TOWN = "330212101000"
PASSWORD = "correct-horse-42"
VIEWPORT = {"width": 1920, "height": 1080}
BASE_FILL = "#24384f"  # a village without events (dashboard.app.PALETTE[0])
_external = itertools.count(1)


@dataclass
class Site:
    url: str
    db_url: str
    points: dict[str, tuple[float, float]]  # village code → a point inside one of its cells
    village: str  # the village of the grid leader account
    other: str  # another village of the same township

    def token(self, who: str) -> str:
        r = httpx.post(f"{self.url}/api/v1/auth/token", data={"username": who, "password": PASSWORD})
        r.raise_for_status()
        return str(r.json()["access_token"])

    def post_event(self, village: str, category: str, who: str = "centre") -> int:
        lon, lat = self.points[village]
        r = httpx.post(f"{self.url}/api/v1/events", headers={"Authorization": f"Bearer {self.token(who)}"},
                       json={"source": "hotline", "category": category, "lon": lon, "lat": lat,
                             "external_id": f"dash-{next(_external)}", "description": "dashboard test"})
        assert r.status_code in (200, 201), r.text
        return int(r.json()["id"])


@pytest.fixture(scope="module")
def site(server_url: str, template_db: str) -> Iterator[Site]:
    url = create_database(server_url, "wangge_test_dashboard", template=template_db)
    engine = db.engine_for(url)
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT DISTINCT ON (v.code) v.code, ST_AsBinary(c.geom) AS g FROM cells c
            JOIN jurisdictions v ON v.id = c.village_id
            WHERE v.parent_id = (SELECT id FROM jurisdictions WHERE code = :t) AND c.valid_to IS NULL
            ORDER BY v.code, c.code"""), {"t": TOWN}).all()
    points = {}
    for code, g in rows:
        p = shapely.from_wkb(g).representative_point()
        points[code] = (p.x, p.y)
    village, other = sorted(points)[:2]
    accounts.create_user(engine, "centre", PASSWORD, "command_centre", TOWN)
    accounts.create_user(engine, "village_leader", PASSWORD, "grid_leader", village)
    with LiveServer(create_app(url)) as live:
        yield Site(live.url, url, points, village, other)
    db.engine_for(url).dispose()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        b = launch(pw)
        yield b
        b.close()


@pytest.fixture(scope="module")
def centre_page(site: Site, browser: Browser) -> Iterator[tuple[Page, Watch]]:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watch = Watch().attach(page)
    login(page, site.url, "centre", PASSWORD)
    yield page, watch
    context.close()


def open_wall(page: Page, site: Site) -> None:
    page.goto(f"{site.url}/dashboard/wall")
    page.wait_for_selector("#wall-ready", state="attached", timeout=15_000)
    page.wait_for_selector(".leaflet-overlay-pane path", timeout=15_000)


def village_fills(page: Page) -> list[str]:
    # The village layer is the first GeoJSON layer drawn: its paths carry fill colours (outlines have none).
    fills: list[str] = page.eval_on_selector_all(
        ".leaflet-overlay-pane path", "ps => ps.map(p => p.getAttribute('fill')).filter(f => f && f !== 'none')")
    return fills


def shot(page: Page, name: str) -> Path:
    SHOTS.mkdir(parents=True, exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path))
    return path


def test_login_is_required_and_uses_the_accounts(site: Site, browser: Browser) -> None:
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.goto(f"{site.url}/dashboard/wall")
    assert "/dashboard/login" in page.url
    page.fill("input[name=username]", "centre")
    page.fill("input[name=password]", "wrong password")
    page.click("button[type=submit]")
    assert page.locator(".login-error").inner_text() == "用户名或密码错误"
    login(page, site.url, "centre", PASSWORD)
    page.wait_for_selector("#wall-ready", state="attached")
    context.close()


def test_each_page_renders_without_console_errors_or_failed_requests(site: Site,
                                                                     centre_page: tuple[Page, Watch]) -> None:
    page, watch = centre_page
    event_id = site.post_event(site.other, "noise")
    pages = {"wall": ("/dashboard/wall", "#wall-ready"),
             "hotspots": ("/dashboard/hotspots", "#hot-ranking table"),
             "villages": ("/dashboard/villages", "#vil-table table"),
             "event": (f"/dashboard/events/{event_id}", ".event-timeline table")}
    for name, (path, ready) in pages.items():
        watch.errors.clear()
        page.goto(f"{site.url}{path}")
        page.wait_for_selector(ready, state="attached", timeout=15_000)
        page.wait_for_timeout(1500)  # every callback of the page has answered
        shot(page, name)
        assert watch.errors == [], f"{name}: {watch.errors}"
        # Nothing scrolls on the wall-sized screen (the villages list is the one page meant to scroll).
        if name != "villages":
            overflow = page.evaluate("document.documentElement.scrollHeight > window.innerHeight"
                                     " || document.documentElement.scrollWidth > window.innerWidth")
            assert not overflow, f"{name} scrolls"
    assert page.locator(".event-timeline tbody tr").count() >= 1


def test_the_hotspot_map_can_be_corrected_for_multiple_testing(site: Site, centre_page: tuple[Page, Watch]) -> None:
    page, watch = centre_page
    page.goto(f"{site.url}/dashboard/hotspots")
    page.wait_for_selector("#hot-ranking table", state="attached", timeout=15_000)
    title = page.locator("#hot-legend .legend-title")
    title.wait_for(timeout=15_000)
    assert "FDR" not in title.inner_text()
    # and the legend says what a hot spot needs beyond significance
    assert "热点须本单元及相邻单元合计至少 3 件事件" in page.locator("#hot-legend").inner_text()
    page.get_by_text("多重检验校正 (FDR)").click()
    page.wait_for_function("document.querySelector('#hot-legend .legend-title').innerText.includes('FDR')",
                           timeout=15_000)
    assert watch.errors == []


def test_the_wall_shows_a_newly_posted_event_within_two_seconds(site: Site,
                                                               centre_page: tuple[Page, Watch]) -> None:
    page, watch = centre_page
    open_wall(page, site)
    page.wait_for_timeout(600)  # the live feed connects
    t0 = time.monotonic()
    event_id = site.post_event(site.village, "garbage_dumping")
    page.wait_for_selector(f'#ticker [data-id="{event_id}"]', timeout=2_000)
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0
    # It pulses on the map too (a live marker), without a page reload.
    page.wait_for_selector(".leaflet-marker-pane .pulse", timeout=2_000)
    assert page.evaluate("performance.getEntriesByType('navigation').length") == 1
    assert watch.errors == []


def test_village_colours_change_after_events_are_posted(site: Site, centre_page: tuple[Page, Watch]) -> None:
    page, _ = centre_page
    open_wall(page, site)
    before = village_fills(page)
    assert before
    coloured_before = sum(f != BASE_FILL for f in before)
    target = sorted(site.points)[3]  # a village no other test of the module reports in
    for category in ("illegal_building", "road_damage", "noise"):
        site.post_event(target, category)
    page.wait_for_function(
        f"""() => [...document.querySelectorAll('.leaflet-overlay-pane path')]
                  .filter(p => (p.getAttribute('fill') || 'none') !== 'none'
                               && p.getAttribute('fill') !== '{BASE_FILL}')
                  .length > {coloured_before}""", timeout=8_000)
    assert len(page.locator("#legend .legend-row").all()) >= 2  # a class beyond "0" now


def test_the_language_switch_changes_the_labels(site: Site, centre_page: tuple[Page, Watch]) -> None:
    page, _ = centre_page
    open_wall(page, site)
    assert page.locator(".wall-head h1").inner_text() == "综合信息指挥中心"
    assert "今日受理" in page.locator("#kpis").inner_text()
    page.click("#lang-switch")
    page.wait_for_selector("#wall-ready", state="attached")
    page.wait_for_function("(document.querySelector('.wall-head h1') || {}).innerText === 'Command centre'")
    assert "Received today" in page.locator("#kpis").inner_text()
    assert "Latest events" in page.locator(".wall-col").last.inner_text()
    shot(page, "wall-en")
    page.click("#lang-switch")
    page.wait_for_function("(document.querySelector('.wall-head h1') || {}).innerText === '综合信息指挥中心'")


def test_a_user_scoped_to_one_village_sees_only_that_village(site: Site, browser: Browser) -> None:
    mine = site.post_event(site.village, "stray_dogs")
    theirs = site.post_event(site.other, "stray_dogs")
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watch = Watch().attach(page)
    login(page, site.url, "village_leader", PASSWORD)
    page.wait_for_selector("#wall-ready", state="attached")
    page.wait_for_selector(".leaflet-overlay-pane path")
    codes = page.eval_on_selector_all("#village-table tr[data-code]", "rs => rs.map(r => r.dataset.code)")
    assert codes == [site.village]
    ids = page.eval_on_selector_all("#ticker [data-id]", "rs => rs.map(r => Number(r.dataset.id))")
    assert mine in ids and theirs not in ids
    page.goto(f"{site.url}/dashboard/villages")
    page.wait_for_selector("#vil-table table")
    assert page.eval_on_selector_all("#vil-table tr[data-code]", "rs => rs.map(r => r.dataset.code)") == [
        site.village]
    page.goto(f"{site.url}/dashboard/events/{theirs}")
    page.wait_for_selector(".event p.muted")
    assert "无此案件" in page.inner_text(".event")
    shot(page, "village-scope")
    assert watch.errors == []
    context.close()


def test_villages_csv_export_follows_the_scope(site: Site) -> None:
    r = httpx.post(f"{site.url}/dashboard/login", data={"username": "village_leader", "password": PASSWORD})
    cookies: Any = r.cookies
    csv = httpx.get(f"{site.url}/dashboard/villages.csv", cookies=cookies)
    assert csv.status_code == 200
    lines = csv.text.lstrip("\ufeff").strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith(site.village)
    assert lines[0].split(",")[-2:] == ["结案率", "按期办结率"]  # the evaluation indicators of the village


def test_scripts_come_compressed_and_the_same_for_every_browser(site: Site) -> None:
    page = httpx.get(f"{site.url}/dashboard/login")
    css = f"{site.url}/dashboard/assets/dashboard.css"
    first, second = (httpx.get(css, headers={"Accept-Encoding": "gzip"}) for _ in range(2))
    assert page.status_code == 200 and first.status_code == second.status_code == 200
    assert first.headers["content-encoding"] == second.headers["content-encoding"] == "gzip"
    assert first.content == second.content and b".wall" in first.content  # httpx decompresses
    plain = httpx.get(css, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == first.content
    # Pages and data are never served from that store: the wall needs a session, whatever was fetched before.
    assert httpx.get(f"{site.url}/dashboard/wall", headers={"Accept-Encoding": "gzip"}).status_code in (303, 307)


def test_the_wall_stays_bounded_under_a_stream_of_new_cases(site: Site, browser: Browser) -> None:
    """A wall runs for days: however many cases arrive, the ticker keeps its 10 lines and the map at most 100 live
    markers (dashboard.js LIVE_MAX), so the page does not grow."""
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    watch = Watch().attach(page)
    login(page, site.url, "centre", PASSWORD)
    open_wall(page, site)
    page.wait_for_timeout(600)  # the live feed connects
    # 120 new cases: distinct (village, category) pairs, so that none merges into another.
    categories = ("neighbour_dispute", "land_dispute", "labour_dispute", "sanitation", "street_lighting",
                  "illegal_parking", "elderly_welfare", "drainage_flooding")  # none that other tests here post
    pairs = [(v, c) for c in categories for v in sorted(site.points)][:120]
    assert len(pairs) == 120
    headers = {"Authorization": f"Bearer {site.token('centre')}"}
    with httpx.Client(base_url=site.url, headers=headers) as client:
        for village, category in pairs:
            lon, lat = site.points[village]
            r = client.post("/api/v1/events", json={"source": "hotline", "category": category, "lon": lon, "lat": lat,
                                                    "external_id": f"dash-{next(_external)}"})
            assert r.status_code == 201, r.text
            last = r.json()["id"]
    page.wait_for_selector(f'#ticker [data-id="{last}"]', timeout=5_000)
    page.wait_for_timeout(1_000)
    markers = page.locator(".leaflet-marker-pane .pulse").count()
    assert 50 <= markers <= 100
    assert page.locator("#ticker li.tick").count() == 10
    assert watch.errors == []
    context.close()
