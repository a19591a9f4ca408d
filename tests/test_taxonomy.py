"""The incident taxonomy as data: the shipped files, the paper's routing cases and the validation of broken files."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from gis.errors import ConfigurationError, NotFound
from gis.taxonomy import DEFAULT_DIR, LEVELS, Taxonomy, TimeLimit, load_taxonomy


@pytest.fixture(scope="module")
def tax() -> Taxonomy:
    return load_taxonomy()


def test_shipped_data_loads(tax: Taxonomy) -> None:
    assert len(tax.categories) >= 32
    assert len(tax.units) >= 30
    assert tax.active == "original"
    assert list(tax.platform_set().platforms) == ["governance", "market", "enforcement", "services"]
    names = [p.name_zh for p in tax.platform_set("2022").platforms.values()]
    assert names == ["党建统领", "经济生态", "平安法治", "公共服务"]


def test_every_category_routes_in_both_sets_and_at_every_level(tax: Taxonomy) -> None:
    for code, cat in tax.categories.items():
        assert tax.platform_of(code).key == cat.platform
        assert tax.platform_of(code, "2022").key == cat.platform_2022
        assert tax.lead_unit(code, cat.level).level == cat.level
        for level in LEVELS:
            assert tax.lead_unit(code, level).level == level
        for grade in (1, 2, 3):
            assert tax.time_limit(code, grade).amount > 0
        assert all(u.code in tax.units for u in tax.assisting_units(code))


def test_every_platform_has_categories_and_units(tax: Taxonomy) -> None:
    for name in ("original", "2022"):
        for key in tax.platform_set(name).platforms:
            assert any(tax.platform_of(c, name).key == key for c in tax.categories), (name, key)
            assert any(key in u.platforms for u in tax.units.values()), (name, key)


def test_case_1_shop_fire_hazard_goes_to_market_supervision(tax: Taxonomy) -> None:
    # An early-warning alarm about a shop's fire hazard → market supervision platform → 市场监管所 inspects,
    # calls the fire brigade.
    cat = tax.category_for_device("electrical")
    assert cat.code == "fire_hazard_shop"
    assert tax.platform_of(cat.code).name_zh == "市场监管"
    assert tax.lead_unit(cat.code, "township").name_zh == "市场监管所"
    assert "fire_station" in cat.assisting
    assert "sensor" in cat.sources


def test_case_2_blocked_fire_passage_is_joint_enforcement(tax: Taxonomy) -> None:
    cat = tax.category("fire_passage_blocked")
    assert cat.name_zh == "消防通道堵塞"
    assert tax.platform_of(cat.code).name_zh == "综合执法"
    assert tax.lead_unit(cat.code, "township").name_zh == "消防救援站"
    assisting = {u.name_zh for u in tax.assisting_units(cat.code)}
    assert assisting == {"综治办", "派出所", "住建办"}
    assert tax.platform_of("illegal_building").name_zh == "综合执法"


def test_case_3_illegal_fishing_nets_go_to_the_environmental_squad(tax: Taxonomy) -> None:
    cat = tax.category("illegal_fishing")
    assert tax.platform_of(cat.code).name_zh == "综合执法"
    assert tax.lead_unit(cat.code, "township").code == "env_enforcement_squad"
    assert tax.lead_unit(cat.code, "village").code == "village_grid"
    assert "grid_worker" in cat.sources


@pytest.mark.parametrize(("subtype", "code"), [
    ("smoke", "smoke_alarm"), ("water_level", "water_level_alarm"), ("gas", "gas_leak"),
    ("video.street_vending", "street_vending"), ("video.garbage", "garbage_dumping"),
    ("VIDEO.Garbage ", "garbage_dumping"), ("video.something_new", "video_alert"), ("video", "video_alert"),
])
def test_device_subtypes_map_to_categories(tax: Taxonomy, subtype: str, code: str) -> None:
    assert tax.category_for_device(subtype).code == code


def test_lookups_name_what_is_missing(tax: Taxonomy) -> None:
    for call, needle in [
        (lambda: tax.category("no_such_case"), "no_such_case"),
        (lambda: tax.unit("no_such_unit"), "no_such_unit"),
        (lambda: tax.category_for_device("radar"), "radar"),
        (lambda: tax.platform_set("2019"), "2019"),
        (lambda: tax.lead_unit("noise", "province"), "province"),
        (lambda: tax.time_limit("noise", 4), "4"),
    ]:
        with pytest.raises(NotFound, match=needle):
            call()


def test_time_limits(tax: Taxonomy) -> None:
    assert str(tax.time_limit("gas_leak", 3)) == "1 hours"
    assert tax.time_limit("fire_hazard_shop", 2) == TimeLimit(amount=2, unit="working_days")
    assert TimeLimit.model_validate("1 working_day") == TimeLimit(amount=1, unit="working_days")
    for bad in ("five days", "3 days", "0 hours", "-1 hours", "24"):
        with pytest.raises(ValueError):
            TimeLimit.model_validate(bad)


@given(st.integers(1, 10_000), st.sampled_from(["hours", "working_days"]))
def test_time_limit_round_trips_through_text(amount: int, unit: str) -> None:
    limit = TimeLimit.model_validate(f"{amount} {unit}")
    assert TimeLimit.model_validate(str(limit)) == limit


# --- broken data files --------------------------------------------------------------------------------------------

def _copy(tmp_path: Path, file: str, change: Callable[[Any], None]) -> Path:
    folder = tmp_path / "taxonomy"
    shutil.copytree(DEFAULT_DIR, folder)
    data = yaml.safe_load((folder / file).read_text(encoding="utf-8"))
    change(data)
    (folder / file).write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")
    return folder


def _cat(code: str) -> Callable[[Any], dict[str, Any]]:
    return lambda d: next(c for c in d["categories"] if c["code"] == code)


def _unit(code: str) -> Callable[[Any], dict[str, Any]]:
    return lambda d: next(u for u in d["units"] if u["code"] == code)


C, U, P = "categories.yaml", "units.yaml", "platforms.yaml"
NOISE, POLICE = _cat("noise"), _unit("police_station")
BROKEN: list[tuple[str, Callable[[Any], None], list[str]]] = [
    (C, lambda d: NOISE(d).update(platform="nope"),
     ["'noise'", "platform", "unknown platform key 'nope'"]),
    (C, lambda d: NOISE(d).update(platform_2022="market"),
     ["'noise'", "platform_2022", "unknown platform key 'market' in set '2022'"]),
    (C, lambda d: NOISE(d)["units"].update(township="no_such_office"),
     ["'noise'", "units.township", "unknown unit code 'no_such_office'"]),
    (C, lambda d: NOISE(d)["units"].update(township="district_enforcement_bureau"),
     ["'noise'", "units.township", "district-level unit"]),
    (C, lambda d: NOISE(d)["units"].pop("district"), ["'noise'", "no lead unit for level district"]),
    (C, lambda d: NOISE(d).update(assisting=["ghost_unit"]),
     ["'noise'", "assisting", "unknown unit code 'ghost_unit'"]),
    (C, lambda d: d["categories"].append(dict(NOISE(d))), ["'noise'", "duplicate category code"]),
    (C, lambda d: NOISE(d)["time_limits"].pop(3), ["'noise'", "grade 3 has no time limit"]),
    (C, lambda d: NOISE(d)["time_limits"].update({4: "1 hours"}), ["'noise'", "unknown grade 4"]),
    (C, lambda d: NOISE(d)["time_limits"].update({2: "two days"}),
     ["'noise'", "time_limits.2", "malformed time limit 'two days'"]),
    (C, lambda d: NOISE(d).update(level="province"), ["'noise'", "level"]),
    (C, lambda d: NOISE(d).update(default_grade=5), ["'noise'", "default_grade"]),
    (C, lambda d: NOISE(d).update(colour="red"), ["'noise'", "colour", "Extra inputs"]),
    (C, lambda d: NOISE(d).update(sources=["pigeon"]), ["'noise'", "sources.0"]),
    (C, lambda d: NOISE(d).update(device_subtypes=["smoke"], sources=["sensor"]),
     ["'noise'", "'smoke_alarm'", "device subtype 'smoke' already maps to category"]),
    (C, lambda d: NOISE(d).update(device_subtypes=["radar"]), ["'noise'", "unknown subtype 'radar'"]),
    (C, lambda d: NOISE(d).update(device_subtypes=["video.noise"]),
     ["'noise'", "needs 'camera' among the sources"]),
    (C, lambda d: _cat("street_vending")(d).update(village_may_close=False),
     ["'street_vending'", "village_may_close is false"]),
    (U, lambda d: POLICE(d).update(platforms=["governance", "police"]),
     ["units.yaml", "'police_station'", "unknown platform key 'police'"]),
    (U, lambda d: POLICE(d).update(platforms=["governance"]),
     ["units.yaml", "'police_station'", "no platform of set '2022'"]),
    (U, lambda d: d["units"].append(dict(POLICE(d))), ["units.yaml", "duplicate unit code"]),
    (U, lambda d: POLICE(d).update(level="county"), ["units.yaml", "'police_station'", "level"]),
    (P, lambda d: d.update(active="2019"), ["platforms.yaml", "active", "'2019'"]),
    (P, lambda d: d["sets"].pop("2022"), ["platforms.yaml", "platform set '2022' is missing"]),
    (P, lambda d: d["sets"]["2022"].append({"key": "market", "name_zh": "M", "name_en": "M", "order": 5}),
     ["platforms.yaml", "'market'", "used by another set"]),
]


@pytest.mark.parametrize(("file", "change", "needles"), BROKEN, ids=[f"{b[0]}:{'|'.join(b[2][-1:])}" for b in BROKEN])
def test_broken_files_are_rejected_in_one_line(tmp_path: Path, file: str, change: Callable[[Any], None],
                                               needles: list[str]) -> None:
    folder = _copy(tmp_path, file, change)
    with pytest.raises(ConfigurationError) as err:
        load_taxonomy(folder)
    message = str(err.value)
    assert file in message
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_missing_and_unparsable_files(tmp_path: Path) -> None:
    folder = tmp_path / "taxonomy"
    shutil.copytree(DEFAULT_DIR, folder)
    (folder / "units.yaml").write_text("units: [code: x\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match=r"units\.yaml: not valid YAML"):
        load_taxonomy(folder)
    (folder / "units.yaml").unlink()
    with pytest.raises(ConfigurationError, match=r"units\.yaml: file not found"):
        load_taxonomy(folder)
    (folder / "units.yaml").write_text("- just a list\n", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="top-level 'units' key"):
        load_taxonomy(folder)


def test_active_set_and_folder_come_from_data_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _copy(tmp_path, "platforms.yaml", lambda d: d.update(active="2022"))
    monkeypatch.setenv("WANGGE_TAXONOMY_DIR", str(folder))
    tax = load_taxonomy()
    assert tax.active == "2022"
    assert tax.platform_of("fire_hazard_shop").name_zh == "平安法治"
    assert tax.platform_of("fire_hazard_shop", "original").name_zh == "市场监管"
