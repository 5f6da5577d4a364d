"""The region catalogue: codes, zones, the index contract and distances."""

from __future__ import annotations

import dataclasses
import re

import pytest

from dbfleet.model.catalogue import EU_COUNTRIES, REGIONS, ZONES, Region, distance_km

FLY_CODES = [
    "ams", "arn", "atl", "bog", "bom", "bos", "cdg", "den", "dfw", "ewr", "eze", "fra",
    "gdl", "gig", "gru", "hkg", "iad", "jnb", "lax", "lhr", "mad", "mia", "nrt", "ord",
    "otp", "phx", "qro", "scl", "sea", "sin", "sjc", "syd", "waw", "yul", "yyz",
]  # fmt: skip

# The index of a region is part of its address (127.77.<index>.1) and so of deployed
# state. This table pins it: a change here must be deliberate (append, never renumber).
PINNED_INDEXES = {code: i for i, code in enumerate(FLY_CODES, start=1)}


def test_every_fly_region_is_in_the_catalogue() -> None:
    assert set(FLY_CODES) <= set(REGIONS)


def test_region_indexes_are_pinned() -> None:
    assert {code: REGIONS[code].index for code in PINNED_INDEXES} == PINNED_INDEXES


def test_indexes_follow_catalogue_order_and_fit_an_octet() -> None:
    indexes = [r.index for r in REGIONS.values()]
    assert indexes == sorted(indexes)
    assert len(set(indexes)) == len(indexes)
    assert min(indexes) >= 1 and max(indexes) <= 255


def test_keys_match_region_codes() -> None:
    assert all(code == region.code for code, region in REGIONS.items())


def test_countries_and_coordinates_are_plausible() -> None:
    for region in REGIONS.values():
        assert re.fullmatch(r"[A-Z]{2}", region.country), region
        assert -90 <= region.lat <= 90 and -180 <= region.lon <= 180, region
        assert region.city


@pytest.mark.parametrize(
    ("code", "zone"),
    [
        ("iad", "US"),
        ("ord", "US"),
        ("sjc", "US"),
        ("fra", "EU"),
        ("lhr", "EU"),  # UK counts as EU for residency
        ("arn", "EU"),
        ("otp", "EU"),
        ("waw", "EU"),
        ("yyz", "CA"),
        ("yul", "CA"),
        ("gru", "BR"),
        ("gig", "BR"),
        ("nrt", "JP"),
        ("sin", "SG"),
        ("syd", "AU"),
        ("bom", "IN"),
        ("jnb", "ZA"),
        ("gdl", "MX"),
        ("qro", "MX"),
        ("scl", "CL"),
        ("bog", "CO"),
        ("eze", "AR"),
        ("hkg", "HK"),
    ],
)
def test_residency_zone(code: str, zone: str) -> None:
    assert REGIONS[code].zone == zone


def test_zone_rules_hold_for_every_region() -> None:
    for region in REGIONS.values():
        if region.country == "US":
            assert region.zone == "US"
        elif region.country in EU_COUNTRIES:
            assert region.zone == "EU"
        else:
            assert region.zone == region.country
    assert "GB" in EU_COUNTRIES


def test_zones_are_exactly_the_catalogue_zones() -> None:
    assert frozenset(r.zone for r in REGIONS.values()) == ZONES
    others = {"CA", "BR", "JP", "SG", "AU", "IN", "ZA", "MX", "CL", "CO", "AR", "HK"}
    assert {"US", "EU"} | others <= ZONES


def test_region_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        REGIONS["fra"].zone = "US"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("a", "b", "km"),
    [
        ("fra", "lhr", 640),
        ("fra", "arn", 1190),
        ("iad", "ord", 910),
        ("iad", "sjc", 3850),
        ("lhr", "syd", 16990),
    ],
)
def test_distance_matches_real_geography(a: str, b: str, km: float) -> None:
    assert distance_km(a, b) == pytest.approx(km, rel=0.03)


def test_distance_is_symmetric_zero_on_self_and_accepts_regions() -> None:
    assert distance_km("iad", "iad") == 0
    assert distance_km("iad", "nrt") == pytest.approx(distance_km("nrt", "iad"))
    assert distance_km(REGIONS["fra"], "lhr") == pytest.approx(distance_km("fra", "lhr"))


def test_distance_obeys_triangle_inequality() -> None:
    assert distance_km("sjc", "fra") <= distance_km("sjc", "iad") + distance_km("iad", "fra")


def test_distance_of_unknown_code_raises() -> None:
    with pytest.raises(KeyError):
        distance_km("iad", "xyz")


def test_region_constructor_keeps_documented_field_order() -> None:
    region = Region("xxx", "Nowhere", "US", "US", 1.0, 2.0, 99)
    assert (region.code, region.lat, region.lon, region.index) == ("xxx", 1.0, 2.0, 99)
