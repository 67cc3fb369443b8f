"""Pure time rules: quiet hours and the next due time of a recurring schedule, per patient zone."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


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


def next_occurrence_after_run(after: datetime, zone: str, local_time: str, every_days: int,
                              last_run: datetime) -> datetime:
    """A schedule replaced (a new time or rhythm) after it has run: the first `local_time`
    strictly after `after`, on a local day at least `every_days` after the local day of
    `last_run`. So never the same local day as the last run, and never sooner than the rhythm;
    if the last run was long ago, simply the next such local time."""
    tz = ZoneInfo(zone)
    at = parse_hhmm(local_time)
    day = max(last_run.astimezone(tz).date() + timedelta(days=every_days),
              after.astimezone(tz).date())
    candidate = datetime.combine(day, at, tzinfo=tz)
    while candidate.astimezone(UTC) <= after:
        candidate = datetime.combine(candidate.date() + timedelta(days=1), at, tzinfo=tz)
    return candidate.astimezone(UTC)


def previous_occurrence(at: datetime, zone: str, local_time: str) -> datetime:
    """The latest time at or before `at` that is `local_time` in `zone`, in UTC.

    A schedule deferred from its slot (10:00 to 10:30, say) finds the slot it is serving with
    this, so that its next time keeps the original rhythm.
    """
    tz = ZoneInfo(zone)
    t = parse_hhmm(local_time)
    day = at.astimezone(tz).date()
    candidate = datetime.combine(day, t, tzinfo=tz).astimezone(UTC)
    if candidate > at:
        candidate = datetime.combine(day - timedelta(days=1), t, tzinfo=tz).astimezone(UTC)
    return candidate


def time_in_quiet_hours(local_time: str, start: str, end: str) -> bool:
    """True when the wall-clock time `local_time` (HH:MM) falls in [start, end)."""
    t, s, e = parse_hhmm(local_time), parse_hhmm(start), parse_hhmm(end)
    if s == e:
        return False
    if s < e:
        return s <= t < e
    return t >= s or t < e


def parse_first_day(value: str) -> int | date:
    """A schedule's first day: a weekday ("monday", or "mon"; any case) as 0 (Monday) to 6,
    or a date YYYY-MM-DD. ValueError otherwise."""
    text = value.strip().lower()
    for number, name in enumerate(WEEKDAYS):
        if text in (name, name[:3]):
            return number
    if not _ISO_DATE.match(text):
        raise ValueError(value)
    return date.fromisoformat(text)


def first_occurrence(after: datetime, zone: str, local_time: str, first_day: int | date,
                     not_on: date | None = None) -> datetime:
    """The first run of a schedule given its first day, in UTC: for a weekday (0 Monday to
    6 Sunday) its first `local_time` strictly after `after` on that weekday, never on the
    local day `not_on`; for a date, `local_time` that day (ValueError if that has passed).
    Later runs count on from it (next_occurrence), so a weekly schedule keeps the weekday."""
    tz = ZoneInfo(zone)
    at = parse_hhmm(local_time)
    if isinstance(first_day, date):
        candidate = datetime.combine(first_day, at, tzinfo=tz)
        if candidate.astimezone(UTC) <= after:
            raise ValueError(f"{first_day.isoformat()} at {local_time} has passed")
        return candidate.astimezone(UTC)
    day = after.astimezone(tz).date()
    day += timedelta(days=(first_day - day.weekday()) % 7)
    candidate = datetime.combine(day, at, tzinfo=tz)
    while candidate.astimezone(UTC) <= after or candidate.date() == not_on:
        candidate = datetime.combine(candidate.date() + timedelta(days=7), at, tzinfo=tz)
    return candidate.astimezone(UTC)


def rhythm(every_days: int, weekday: str | None = None) -> str:
    """How often, as a coordinator says it: "every day", "every week on Mondays", "every 2
    weeks on Thursdays", "every 3 days" (`weekday` as weekday_of gives it)."""
    if every_days == 1:
        return "every day"
    if every_days % 7 == 0:
        weeks = every_days // 7
        said = "every week" if weeks == 1 else f"every {weeks} weeks"
        return f"{said} on {weekday.capitalize()}s" if weekday else said
    return f"every {every_days} days"


def weekday_of(next_due_at: datetime, zone: str, local_time: str, every_days: int) -> str | None:
    """The weekday ("monday") a schedule runs on when its rhythm is whole weeks, else None:
    the weekday of the slot its next time serves (a run deferred past midnight keeps it)."""
    if every_days % 7:
        return None
    slot = previous_occurrence(next_due_at, zone, local_time)
    return WEEKDAYS[slot.astimezone(ZoneInfo(zone)).weekday()]
