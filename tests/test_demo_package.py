"""The demo township package: reproducible byte for byte, and shaped like the town in the paper."""

from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import DEMO, ROOT


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()
            and p.suffix in (".geojson", ".csv")}


def test_generator_reproduces_the_committed_files_byte_for_byte(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "data/boundaries/generate.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert _digests(tmp_path) == _digests(DEMO)


def test_demo_township_matches_the_paper() -> None:
    jur = [f["properties"] for f in json.loads((DEMO / "jurisdictions.geojson").read_text())["features"]]
    cells = [f["properties"] for f in json.loads((DEMO / "cells.geojson").read_text())["features"]]
    devices = json.loads((DEMO / "devices.geojson").read_text())["features"]
    workers = list(csv.DictReader((DEMO / "workers.csv").open(encoding="utf-8")))
    j_villages = {j["code"] for j in jur if j["parent_code"] == "330212101000"}
    assert len(j_villages) == 63
    assert sum(1 for j in jur if j["level"] == "township") == 3
    j_cells = [c for c in cells if c["village_code"] in j_villages]
    assert 190 <= len(j_cells) <= 215
    assert all(c["code"].startswith(c["village_code"]) and len(c["code"]) == 15 for c in cells)
    assert sum(w["role"] == "grid_worker" for w in workers) == len(cells)
    assert sum(w["role"] == "grid_leader" for w in workers) == sum(j["level"] == "village" for j in jur)
    assert 120 <= len(devices) <= 180
    assert {d["properties"]["subtype"] for d in devices} == {"smoke", "water_level", "gas", "video"}
    kinds = {j["kind"] for j in jur if j["level"] == "village"}
    assert {"村", "社区"} <= kinds
    assert all(c["population"] > 0 and c["households"] > 0 for c in cells)
