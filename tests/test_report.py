"""Folium reports: one HTML file that opens offline with its title, map layers, legend and tables; the CLI's
`report` commands and their one-line errors."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright
from sqlalchemy import Engine, text

from gis import db, report
from gis.errors import NotFound
from gis.intake import TZ
from gis.workflow import Actor
from tests.browser import launch
from tests.conftest import create_database
from tests.test_hotspots import DAY, START, add_event, inner_point, offset

END = START + 30 * DAY
NOW = dt.datetime(2026, 7, 2, 9, 30, tzinfo=TZ)
REMOTE = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.I)
CSS_REMOTE = re.compile(r"""url\(\s*["']?\s*(?:https?:)?//""", re.I)


@pytest.fixture(scope="module")
def town(server_url: str, template_db: str) -> Iterator[tuple[str, Engine, str]]:
    url = create_database(server_url, "wangge_test_report", template=template_db)
    engine = db.engine_for(url)
    with engine.begin() as conn:
        village = conn.execute(text("SELECT code FROM jurisdictions WHERE level = 'village' ORDER BY code LIMIT 1"
                                    )).scalar_one()
        p = inner_point(conn, village)
        for k in range(30):
            add_event(conn, *offset(p, (k % 5) * 4, (k // 5) * 4), START + (k % 25) * DAY, category="street_vending")
        for code in conn.execute(text("SELECT code FROM jurisdictions WHERE level = 'village' ORDER BY code "
                                      "OFFSET 1 LIMIT 20")).scalars():
            add_event(conn, *inner_point(conn, code), START + 3 * DAY, category="road_damage")
    yield url, engine, village
    engine.dispose()


def assert_offline(doc: str) -> None:
    assert not REMOTE.findall(doc), REMOTE.findall(doc)[:3]
    assert not CSS_REMOTE.findall(doc)
    assert "L.map(" in doc and "Leaflet" in doc  # the map code and Leaflet itself are in the file


def test_hotspot_report_is_one_offline_file_with_title_legend_and_tables(town: tuple[str, Engine, str]) -> None:
    _, engine, village = town
    doc = report.hotspots_report(engine, START, END, now=NOW)
    assert_offline(doc)
    assert '<html lang="zh-CN">' in doc
    assert "<title>甬江区事件热点分析报告</title>" in doc and "<h1>甬江区事件热点分析报告</h1>" in doc
    assert "统计期间：2026-06-01 至 2026-07-01（不含）" in doc and "生成时间：2026-07-02 09:30" in doc
    assert "期间受理事件 50 件" in doc
    # Legend: the classes with their counts and the method; layers named for the layer switcher.
    assert "热点 99% 置信" in doc and "冷点 95% 置信" in doc and "置换检验 999 次" in doc
    for layer in ("热点/冷点（Gi*）", "事件密度（六边形）", "重复发生点位", "村社边界"):  # in the layer switcher
        assert json.dumps(layer)[1:-1] in doc
    # The village table: every village, the busiest first, with its events and a trend arrow.
    with engine.connect() as conn:
        name = conn.execute(text("SELECT name FROM jurisdictions WHERE code = :c"), {"c": village}).scalar_one()
    table = doc[doc.index("村社排名"):]
    table = table[:table.index("</table>")]
    assert table.count("<tr>") == 1 + 71
    first = table[table.index("<tbody>"):].split("</tr>")[0]
    assert name in first and ">30<" in first and "▲" in first
    assert "占道经营" in doc  # category names from the taxonomy, in Chinese
    assert "L.tileLayer(" not in doc  # no basemap: our own vector layers on a plain background


def test_english_village_report(town: tuple[str, Engine, str]) -> None:
    _, engine, village = town
    doc = report.village_report(engine, village, START, END, lang="en", now=NOW)
    assert_offline(doc)
    assert '<html lang="en">' in doc and "incident report</h1>" in doc
    assert "Period: 2026-06-01 to 2026-07-01 (exclusive)" in doc and "Generated: 2026-07-02 09:30" in doc
    assert "Incidents per grid cell" in doc and "Recurring places" in doc and "Street vending" in doc
    assert "30 incidents received" in doc
    assert "热点" not in doc  # no Chinese label left (place names stay as they are)
    with pytest.raises(NotFound):
        report.village_report(engine, "330212101999", START, END)
    with pytest.raises(NotFound):  # a village outside the account's scope is unknown to it
        report.village_report(engine, village, START, END, actor=Actor("x", "leader", "330212102000"))
    with pytest.raises(ValueError, match="language"):
        report.village_report(engine, village, START, END, lang="fr")


def test_report_opens_in_a_browser_without_the_network(town: tuple[str, Engine, str], tmp_path: Path) -> None:
    """Chromium draws the report from the file alone: no request leaves it, no script error, hexagons drawn."""
    _, engine, _ = town
    path = report.write_report(report.hotspots_report(engine, START, END, now=NOW), tmp_path / "r.html")
    with sync_playwright() as p:
        browser = launch(p)  # Debian's chromium; a missing browser fails the test, it is not skipped
        try:
            page = browser.new_page()
            errors: list[str] = []
            requests: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url) if not r.url.startswith(("file:", "data:")) else None)
            page.goto(path.as_uri())
            page.wait_for_selector("path.leaflet-interactive")
            assert errors == [] and requests == []
            assert page.locator("path.leaflet-interactive").count() > 71  # villages, hexagons, recurring places
            assert page.locator(".wg-legend").is_visible()
            assert page.locator(".leaflet-tile").count() == 0
            assert "热点/冷点（Gi*）" in page.locator(".leaflet-control-layers").inner_text()
        finally:
            browser.close()


def wangge(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANGGE_")} | {"WANGGE_DATABASE_URL": url}
    return subprocess.run([sys.executable, "-m", "api", *args], capture_output=True, text=True, env=env,
                          timeout=300, stdin=subprocess.DEVNULL)


def test_cli_writes_reports_and_refuses_bad_input_in_one_line(town: tuple[str, Engine, str],
                                                              tmp_path: Path) -> None:
    url, _, village = town
    out = tmp_path / "hotspots.html"
    ok = wangge(url, "report", "hotspots", "--from", "2026-06-01", "--to", "2026-07-01", "--out", str(out),
                "--lang", "en")
    assert ok.returncode == 0, ok.stderr
    assert str(out) in ok.stdout and out.exists()
    doc = out.read_text(encoding="utf-8")
    assert_offline(doc)
    assert "incident hotspot report" in doc and "50 incidents received" in doc
    assert "permutations, one-sided pseudo p-value" in doc and "Benjamini" not in doc
    fdr = tmp_path / "hotspots-fdr.html"
    ok = wangge(url, "report", "hotspots", "--from", "2026-06-01", "--to", "2026-07-01", "--out", str(fdr),
                "--lang", "en", "--fdr")
    assert ok.returncode == 0, ok.stderr
    assert "Benjamini–Hochberg corrected for multiple testing" in fdr.read_text(encoding="utf-8")
    assert "a hot spot needs 3 or more incidents" in doc
    loose = tmp_path / "hotspots-1.html"
    ok = wangge(url, "report", "hotspots", "--from", "2026-06-01", "--to", "2026-07-01", "--out", str(loose),
                "--lang", "en", "--min-local", "1")
    assert ok.returncode == 0, ok.stderr
    assert "a hot spot needs 1 or more incidents" in loose.read_text(encoding="utf-8")
    vout = tmp_path / "village.html"
    ok = wangge(url, "report", "village", village, "--from", "2026-06-01", "--to", "2026-07-01", "--out", str(vout))
    assert ok.returncode == 0, ok.stderr
    assert "事件分析报告" in vout.read_text(encoding="utf-8")

    bad = {
        ("village", "330212101999"): "no village 330212101999",
        ("village", "12ab"): "not a village code",
        ("hotspots", "--from", "2026-07-01", "--to", "2026-06-01"): "is not before --to",
        ("hotspots", "--from", "yesterday"): "is not a date",
        ("hotspots", "--lang", "fr"): "--lang",
        ("hotspots", "--min-local", "0"): "--min-local 0",
    }
    for args, message in bad.items():
        proc = wangge(url, "report", *args, "--out", str(tmp_path / "x.html"))
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 1 and len(lines) == 1 and message in lines[0], (args, proc.stderr)
    assert not (tmp_path / "x.html").exists()
    proc = wangge(url, "report", "hotspots", "--out", str(tmp_path / "missing" / "r.html"))
    assert proc.returncode == 1 and "does not exist" in proc.stderr
