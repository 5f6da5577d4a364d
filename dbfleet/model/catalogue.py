"""The region catalogue: every Fly.io region with its country, residency zone and place.

Region codes in a fleet file are looked up here. The catalogue is plain data and has no
dependencies, so every layer (and the validator) agrees on what a region is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Mean Earth radius (IUGG); good to well under 1% for ranking regions by distance.
EARTH_RADIUS_KM = 6371.0088

# Countries whose regions belong to the EU residency zone: the EEA plus the UK (the UK
# keeps an adequacy decision, so data may live there under the same rules).
EU_COUNTRIES = frozenset(
    {
        "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR",
        "HU", "IE", "IT", "LT", "LU", "LV", "MT", "NL", "PL", "PT", "RO", "SE", "SI",
        "SK", "IS", "LI", "NO", "GB",
    }
)  # fmt: skip


@dataclass(frozen=True)
class Region:
    """One Fly.io region.

    `index` is the region's permanent number in the catalogue (1-based). It becomes the
    third octet of the region's loopback address, so it must never change or be reused.
    """

    code: str
    city: str
    country: str  # ISO 3166-1 alpha-2
    zone: str
    lat: float
    lon: float
    index: int


def _zone(country: str) -> str:
    if country == "US":
        return "US"
    if country in EU_COUNTRIES:
        return "EU"
    # Everywhere else residency is decided country by country.
    return country


def _region(index: int, code: str, city: str, country: str, lat: float, lon: float) -> Region:
    return Region(code, city, country, _zone(country), lat, lon, index)


# ORDER AND INDEXES ARE A CONTRACT. A region's index is baked into its network address
# (127.77.<index>.1) and so into deployed state. New regions are APPENDED at the end
# with the next unused index; never insert, renumber or reuse an index, even when Fly.io
# retires a region (delete the line and leave a gap).
_CATALOGUE: tuple[Region, ...] = (
    _region(1, "ams", "Amsterdam", "NL", 52.37, 4.90),
    _region(2, "arn", "Stockholm", "SE", 59.33, 18.07),
    _region(3, "atl", "Atlanta", "US", 33.75, -84.39),
    _region(4, "bog", "Bogotá", "CO", 4.71, -74.07),
    _region(5, "bom", "Mumbai", "IN", 19.08, 72.88),
    _region(6, "bos", "Boston", "US", 42.36, -71.06),
    _region(7, "cdg", "Paris", "FR", 48.86, 2.35),
    _region(8, "den", "Denver", "US", 39.74, -104.99),
    _region(9, "dfw", "Dallas", "US", 32.78, -96.80),
    _region(10, "ewr", "Secaucus", "US", 40.79, -74.06),
    _region(11, "eze", "Ezeiza", "AR", -34.82, -58.54),
    _region(12, "fra", "Frankfurt", "DE", 50.11, 8.68),
    _region(13, "gdl", "Guadalajara", "MX", 20.66, -103.35),
    _region(14, "gig", "Rio de Janeiro", "BR", -22.91, -43.17),
    _region(15, "gru", "São Paulo", "BR", -23.55, -46.63),
    _region(16, "hkg", "Hong Kong", "HK", 22.32, 114.17),
    _region(17, "iad", "Ashburn", "US", 39.04, -77.49),
    _region(18, "jnb", "Johannesburg", "ZA", -26.20, 28.05),
    _region(19, "lax", "Los Angeles", "US", 34.05, -118.24),
    _region(20, "lhr", "London", "GB", 51.51, -0.13),
    _region(21, "mad", "Madrid", "ES", 40.42, -3.70),
    _region(22, "mia", "Miami", "US", 25.76, -80.19),
    _region(23, "nrt", "Tokyo", "JP", 35.68, 139.69),
    _region(24, "ord", "Chicago", "US", 41.88, -87.63),
    _region(25, "otp", "Bucharest", "RO", 44.43, 26.10),
    _region(26, "phx", "Phoenix", "US", 33.45, -112.07),
    _region(27, "qro", "Querétaro", "MX", 20.59, -100.39),
    _region(28, "scl", "Santiago", "CL", -33.45, -70.67),
    _region(29, "sea", "Seattle", "US", 47.61, -122.33),
    _region(30, "sin", "Singapore", "SG", 1.35, 103.82),
    _region(31, "sjc", "San Jose", "US", 37.34, -121.89),
    _region(32, "syd", "Sydney", "AU", -33.87, 151.21),
    _region(33, "waw", "Warsaw", "PL", 52.23, 21.01),
    _region(34, "yul", "Montreal", "CA", 45.50, -73.57),
    _region(35, "yyz", "Toronto", "CA", 43.65, -79.38),
)

REGIONS: dict[str, Region] = {r.code: r for r in _CATALOGUE}

ZONES: frozenset[str] = frozenset(r.zone for r in _CATALOGUE)


def _check_catalogue() -> None:
    # Cheap guard at import: an edit that breaks the index contract fails immediately.
    indexes = [r.index for r in _CATALOGUE]
    if len(REGIONS) != len(_CATALOGUE):
        raise AssertionError("region codes in the catalogue must be unique")
    if indexes != sorted(set(indexes)) or not 1 <= indexes[0] <= indexes[-1] <= 255:
        raise AssertionError("region indexes must be unique, increasing and within 1..255")


_check_catalogue()


def distance_km(a: str | Region, b: str | Region) -> float:
    """Great-circle (haversine) distance between two regions, given by code or Region."""
    ra = a if isinstance(a, Region) else REGIONS[a]
    rb = b if isinstance(b, Region) else REGIONS[b]
    lat1, lon1, lat2, lon2 = map(math.radians, (ra.lat, ra.lon, rb.lat, rb.lon))
    h = (
        math.sin((lat2 - lat1) / 2) ** 2
        + math.cos(lat1) * math.cos(lat2) * math.sin((lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))
