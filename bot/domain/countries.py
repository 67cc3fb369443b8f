"""Which country a time zone is in, from the tables the `tzdata` package ships.

zone.tab names one country per zone (zone1970.tab may name several: Europe/Berlin is also
Denmark's, Norway's and Sweden's clock), including the old names kept as links (NL
Europe/Amsterdam, though Amsterdam now keeps Brussels' clock). A zone in neither, an alias such
as US/Eastern or America/Buenos_Aires, is followed through tzdata.zi's links ("L
America/New_York US/Eastern") to a zone zone.tab names. iso3166.tab gives each country's name.
"""

from __future__ import annotations

from functools import cache
from importlib import resources


def _table(name: str) -> list[list[str]]:
    text = resources.files("tzdata.zoneinfo").joinpath(name).read_text(encoding="utf-8")
    return [line.split("\t") for line in text.splitlines() if line and not line.startswith("#")]


@cache
def _country_by_zone() -> dict[str, str]:
    return {row[2]: row[0] for row in _table("zone.tab")}


@cache
def _links() -> dict[str, str]:
    """Alias -> the zone it names, from tzdata.zi's "L TARGET ALIAS" lines."""
    text = resources.files("tzdata.zoneinfo").joinpath("tzdata.zi").read_text(encoding="utf-8")
    out = {}
    for line in text.splitlines():
        if line.startswith("L "):
            _, target, alias = line.split()
            out[alias] = target
    return out


@cache
def _countries() -> dict[str, str]:
    return {row[0]: row[1] for row in _table("iso3166.tab")}


@cache
def zone_country(zone: str) -> str | None:
    """The ISO 3166 code of the country the IANA zone `zone` is in ("America/New_York" ->
    "US"), or None for a zone of no country (UTC, Etc/GMT+1) or an unknown name."""
    seen = set()
    while zone not in _country_by_zone():
        if zone in seen or zone not in _links():
            return None
        seen.add(zone)
        zone = _links()[zone]
    return _country_by_zone()[zone]


def country_name(code: str) -> str | None:
    """"CO" -> "Colombia"; None for a code that is no country's."""
    return _countries().get(code)


def is_country(code: str) -> bool:
    return code in _countries()
