"""Address matching against the demo township's gazetteer (data/boundaries/demo-j-town/addresses.geojson)."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gis.gazetteer import Address, Gazetteer, Match, canonical_number, normalise, read_addresses, read_village_names

DEMO = Path(__file__).resolve().parent.parent / "data" / "boundaries" / "demo-j-town"
ADDRESSES = read_addresses(DEMO / "addresses.geojson")
VILLAGES = read_village_names(DEMO / "jurisdictions.geojson")
GAZ = Gazetteer(ADDRESSES, villages=VILLAGES)
BY_ROAD_NUMBER: dict[tuple[str, str], list[Address]] = defaultdict(list)
for _a in ADDRESSES:
    BY_ROAD_NUMBER[_a.road, _a.number].append(_a)
UNIQUE = [a for a in ADDRESSES if len(BY_ROAD_NUMBER[a.road, a.number]) == 1]
SHARED = [a for a in ADDRESSES if len(BY_ROAD_NUMBER[a.road, a.number]) > 1]


def full_width(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else "\u3000" if c == " " else c for c in s)


def chinese(n: int) -> str:
    """12 → 十二, 20 → 二十, 105 → 一百零五 (n < 1000)."""
    d = "零一二三四五六七八九"
    h, t, u = n // 100, n // 10 % 10, n % 10
    out = (d[h] + "百") if h else ""
    if t:
        out += ("" if t == 1 and not h else d[t]) + "十"
    elif h and u:
        out += "零"
    return out + (d[u] if u or not out else "")


def the(road: str, number: str) -> Address:
    (a,) = BY_ROAD_NUMBER[road, number]
    return a


def test_the_demo_gazetteer_is_loaded() -> None:
    assert 1500 <= len(GAZ) <= 3000
    assert {"横街", "文昌街"} <= {a.road for a in ADDRESSES}
    assert UNIQUE and SHARED


def test_exact_road_and_number() -> None:
    m = GAZ.match("横街12号")
    assert m == Match(the("横街", "12"), "exact")
    assert GAZ.match("横街12") == m
    assert m.address.village_code.startswith("330212101")


def test_exact_with_the_village_name() -> None:
    a = SHARED[0]
    m = GAZ.match(f"{VILLAGES[a.village_code]}{a.road}{a.number}号")
    assert m == Match(a, "exact")


@pytest.mark.parametrize("text", ["横街１２号", "横街　１２　号", "横 街 12 号", "横街十二号", "横街12號", "横街12#",
                                  "横街12号。", "【投诉】横街12号", "横街12号(菜市场东)", "“横街”12号"])
def test_variants_of_one_address(text: str) -> None:
    m = GAZ.match(text)
    assert m is not None and m.address == the("横街", "12"), text


@pytest.mark.parametrize("prefix", ["浙江省宁波市甬江区J镇", "宁波市甬江区", "浙江宁波甬江区J镇", "甬江区j镇",
                                    "N市Y区J镇", "中国浙江省"])
def test_administrative_prefixes_are_dropped(prefix: str) -> None:
    assert GAZ.match(prefix + "横街12号") == Match(the("横街", "12"), "exact")
    a = SHARED[0]
    assert GAZ.match(f"{prefix}{VILLAGES[a.village_code]}{a.road}{a.number}号") == Match(a, "exact")


def test_chinese_numerals_in_house_numbers() -> None:
    for a in UNIQUE[:300]:
        if "-" not in a.number:
            m = GAZ.match(f"{a.road}{chinese(int(a.number))}号")
            assert m is not None and m.address == a, a


def test_sub_numbers_and_building_variants() -> None:
    a = next(a for a in ADDRESSES if "-" in a.number)
    base, sub = a.number.split("-")
    village = VILLAGES[a.village_code]
    for text in [f"{a.road}{base}-{sub}号", f"{a.road}{base}之{sub}号", f"{a.road}{base}号之{chinese(int(sub))}",
                 f"{a.road}{base}—{sub}号", f"{a.road}{base}－{sub}號", f"{a.road}{base}号{sub}栋",
                 f"{a.road}{base}号{sub}棟", f"{a.road}{base}號{sub}座", f"{a.road}{base}号{sub}幢"]:
        m = GAZ.match(village + text)
        assert m is not None and m.address == a, text
    assert normalise("5栋") == normalise("5棟") == normalise("5座") == normalise("五幢") == "5幢"
    assert normalise("12號") == "12号" and normalise("学前巷") == "学前弄"
    assert normalise("3弄5号") == "3弄5号"  # a lane number is not a house number


def test_ambiguous_road_and_number_is_never_guessed() -> None:
    a = next(a for a in SHARED if a.road == "学前弄")
    assert len({b.village_code for b in BY_ROAD_NUMBER[a.road, a.number]}) > 1
    assert GAZ.match(f"{a.road}{a.number}号") is None
    assert GAZ.match(f"宁波市甬江区J镇{a.road}{a.number}号附近") is None
    village = VILLAGES[a.village_code]
    assert GAZ.match(f"{village}{a.road}{a.number}号") == Match(a, "exact")
    # The village's short name (李家村 → 李家) and trailing words still pin it down.
    stem = village.removesuffix("村").removesuffix("社区")
    assert GAZ.match(f"{stem}{a.road}{a.number}号门口") == Match(a, "road_number")
    # A village where that road + number does not exist: no match rather than another village's house.
    other = next(code for code in VILLAGES if code not in {b.village_code for b in BY_ROAD_NUMBER[a.road, a.number]})
    assert GAZ.match(f"{VILLAGES[other]}{a.road}{a.number}号") is None


def test_a_town_road_crosses_villages_and_its_numbers_stay_unique() -> None:
    villages = {a.village_code for a in ADDRESSES if a.road == "横街"}
    assert len(villages) >= 2
    for a in (a for a in ADDRESSES if a.road == "横街"):
        m = GAZ.match(f"{a.road}{a.number}号")
        assert m == Match(a, "exact")


def test_road_number_with_trailing_words() -> None:
    assert GAZ.match("横街12号附近") == Match(the("横街", "12"), "road_number")
    assert GAZ.match("J镇横街十二号门口") == Match(the("横街", "12"), "road_number")


def test_landmarks() -> None:
    landmarks = [a for a in ADDRESSES if a.name]
    assert any(a.name == "横街菜市场" for a in landmarks)
    for a in landmarks:
        assert GAZ.match(a.name or "") == Match(a, "landmark")
    market = next(a for a in landmarks if a.name == "横街菜市场")
    assert GAZ.match("浙江省宁波市甬江区J镇横街菜市场门口") == Match(market, "landmark")


@pytest.mark.parametrize("text", ["", "   ", "横街9999号", "火星路1号", "横街", "浙江省宁波市", "J镇", "横街12 3号",
                                  "横街1 2号", "横街12~14号", "横街12弄", "某某村委会", "新横街12号"])
def test_unknown_or_malformed_addresses_do_not_match(text: str) -> None:
    assert GAZ.match(text) is None


def test_without_village_names_only_unique_road_numbers_match() -> None:
    bare = Gazetteer(ADDRESSES)
    assert bare.match("横街12号") == Match(the("横街", "12"), "exact")
    a = SHARED[0]
    assert bare.match(f"{a.road}{a.number}号") is None


@pytest.mark.parametrize(("text", "expected"), [
    ("浙江省宁波市甬江区J镇横街十二號", "横街12号"),
    ("李家村 学前巷 ３之２ 号", "李家村学前弄3-2号"),
    ("横街12号之三", "横街12-3号"),
    ("横街一百零五号", "横街105号"),
    ("二十三弄", "23弄"),
    ("横街12号-3幢", "横街12号3幢"),
    ("3#楼", "3号楼"),
    ("第一小学", "第一小学"),
    ("J镇", "J镇"),
    ("ｊ镇文昌街８号", "文昌街8号"),
])
def test_normalise(text: str, expected: str) -> None:
    assert normalise(text) == expected


def test_canonical_number() -> None:
    assert canonical_number("012") == "12"
    assert canonical_number("12之3号") == "12-3"
    assert canonical_number("十二号三栋") == "12-3"
    assert canonical_number("东12") is None


def test_every_generated_address_matches_itself_from_its_canonical_text() -> None:
    for a in ADDRESSES:
        assert GAZ.match(GAZ.canonical_text(a)) == Match(a, "exact"), a


TRICKY = st.sampled_from([*"0123456789０１２３一二两三十百零〇号號弄巷幢栋棟座之",
                          *"-—－#~ \u3000()（）【】,.。省市区镇村路街J",
                          "浙江省", "宁波市", "甬江区", "J镇", "浙江", "宁波"])


@given(st.text() | st.lists(TRICKY, max_size=20).map("".join))
@settings(max_examples=600, deadline=None)
def test_normalise_is_idempotent(text: str) -> None:
    n = normalise(text)
    assert normalise(n) == n


@given(a=st.sampled_from(ADDRESSES), prefix=st.sampled_from(["", "浙江省宁波市甬江区J镇", "甬江区", "宁波市 "]),
       wide=st.booleans(), cn=st.booleans(), spaced=st.booleans(), trad=st.booleans())
@settings(max_examples=300, deadline=None)
def test_decorated_canonical_text_still_matches(a: Address, prefix: str, wide: bool, cn: bool, spaced: bool,
                                                trad: bool) -> None:
    base, _, sub = a.number.partition("-")
    number = (chinese(int(base)) if cn else base) + (f"之{sub}" if sub else "")
    text = f"{prefix}{VILLAGES[a.village_code]}{a.road}{number}{'號' if trad else '号'}"
    if spaced:  # spaces between characters, but not inside a number (1 2 is not 12)
        pairs = zip(text, text[1:] + " ", strict=True)
        text = "".join(c + ("" if c.isdigit() and d.isdigit() else " ") for c, d in pairs)
    m = GAZ.match(full_width(text) if wide else text)
    assert m is not None and m.address == a, text
