"""Pure time rules: quiet hours and the next due time of a recurring schedule, per patient zone."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


def parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def in_quiet_hours(now: datetime, zone: str, start: str, end: str) -> bool:
    """True when `now` (aware) falls in [start, end) local time; the window may cross midnight."""
    local = now.astimezone(ZoneInfo(zone)).time()
    s, e = parse_hhmm(start), parse_hhmm(end)
    if s == e:
        return False
    if s < e:
        return s <= local < e
    return local >= s or local < e


def quiet_hours_end(now: datetime, zone: str, start: str, end: str) -> datetime:
    """The first moment at or after `now` outside quiet hours, in UTC."""
    if not in_quiet_hours(now, zone, start, end):
        return now
    tz = ZoneInfo(zone)
    local = now.astimezone(tz)
    e = parse_hhmm(end)
    candidate = datetime.combine(local.date(), e, tzinfo=tz)
    if candidate <= local:
        candidate = datetime.combine(local.date() + timedelta(days=1), e, tzinfo=tz)
    return candidate.astimezone(UTC)


def next_occurrence(after: datetime, zone: str, local_time: str, every_days: int,
                    last: datetime | None = None) -> datetime:
    """Next time strictly after `after` at `local_time` in `zone`.

    Without `last` (a new schedule): the next such local time. With `last` (the occurrence
    that just ran): `every_days` after it, skipping occurrences missed during downtime.
    """
    tz = ZoneInfo(zone)
    at = parse_hhmm(local_time)
    base = last.astimezone(tz).date() + timedelta(days=every_days) if last else (
        after.astimezone(tz).date()
    )
    candidate = datetime.combine(base, at, tzinfo=tz)
    # A new schedule starts at the next `local_time`; a running one keeps its rhythm.
    step = timedelta(days=every_days if last else 1)
    while candidate.astimezone(UTC) <= after:
        candidate = datetime.combine(candidate.date() + step, at, tzinfo=tz)
    # Normalise across a DST gap: zoneinfo keeps the wall time, which UTC conversion resolves.
    return candidate.astimezone(UTC)
