"""Pure time rules: quiet hours and recurring schedules in the patient's own zone."""

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.domain.schedule import in_quiet_hours, next_occurrence, quiet_hours_end


def test_quiet_hours_cross_midnight_in_the_patients_zone():
    at_3am_london = datetime(2026, 3, 2, 3, 0, tzinfo=UTC)
    assert in_quiet_hours(at_3am_london, "Europe/London", "21:00", "08:00")
    assert not in_quiet_hours(at_3am_london, "Asia/Tokyo", "21:00", "08:00")  # noon there
    assert quiet_hours_end(at_3am_london, "Europe/London", "21:00", "08:00") == datetime(
        2026, 3, 2, 8, 0, tzinfo=UTC)


def test_a_new_weekly_schedule_starts_at_the_next_local_time():
    now = datetime(2026, 3, 2, 15, 30, tzinfo=UTC)  # 10:30 in New York
    assert next_occurrence(now, "America/New_York", "10:00", 7) == datetime(
        2026, 3, 3, 15, 0, tzinfo=UTC)


def test_a_running_schedule_keeps_its_weekday_across_a_dst_change():
    ran = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)  # Tue 10:00 EST
    nxt = next_occurrence(ran, "America/New_York", "10:00", 7, last=ran)
    assert nxt == datetime(2026, 3, 10, 14, 0, tzinfo=UTC)  # Tue 10:00 EDT


def test_after_downtime_a_schedule_catches_up_once():
    last = datetime(2026, 3, 3, 15, 0, tzinfo=UTC)
    now = datetime(2026, 3, 25, 12, 0, tzinfo=UTC)  # three weekly runs were missed
    nxt = next_occurrence(now, "America/New_York", "10:00", 7, last=last)
    assert nxt == datetime(2026, 3, 31, 14, 0, tzinfo=UTC)


@given(st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2030, 1, 1),
                    timezones=st.just(UTC)),
       st.sampled_from(["Europe/London", "America/New_York", "Australia/Sydney", "Asia/Kolkata"]),
       st.integers(min_value=1, max_value=30))
def test_next_occurrence_is_always_in_the_future_and_at_the_local_time(now, zone, every):
    from zoneinfo import ZoneInfo

    nxt = next_occurrence(now, zone, "10:00", every)
    assert nxt > now
    local = nxt.astimezone(ZoneInfo(zone))
    assert (local.hour, local.minute) == (10, 0)


def test_a_deferred_run_finds_the_slot_it_serves_and_keeps_the_rhythm():
    from bot.domain.schedule import previous_occurrence

    deferred = datetime(2026, 3, 3, 0, 20, tzinfo=UTC)  # 23:50 London deferred past midnight
    slot = previous_occurrence(deferred, "Europe/London", "23:50")
    assert slot == datetime(2026, 3, 2, 23, 50, tzinfo=UTC)
    assert next_occurrence(deferred, "Europe/London", "23:50", 7, last=slot) == datetime(
        2026, 3, 9, 23, 50, tzinfo=UTC)


def test_a_schedule_time_inside_quiet_hours_is_recognised():
    from bot.domain.schedule import time_in_quiet_hours

    assert time_in_quiet_hours("22:30", "21:00", "08:00")
    assert time_in_quiet_hours("07:59", "21:00", "08:00")
    assert not time_in_quiet_hours("08:00", "21:00", "08:00")
    assert not time_in_quiet_hours("10:00", "21:00", "08:00")



def test_a_replaced_schedule_counts_from_its_last_run_in_the_patients_zone():
    from bot.domain.schedule import next_occurrence_after_run

    ran = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # Mon 10:00 London
    now = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)  # moved to 14:00 an hour later
    assert next_occurrence_after_run(now, "Europe/London", "14:00", 7, ran) == datetime(
        2026, 3, 9, 14, 0, tzinfo=UTC)
    assert next_occurrence_after_run(now, "Europe/London", "14:00", 1, ran) == datetime(
        2026, 3, 3, 14, 0, tzinfo=UTC)  # never the same local day as the last run
    ran = datetime(2026, 3, 3, 4, 30, tzinfo=UTC)  # Mon 23:30 in New York (Tue in UTC)
    now = datetime(2026, 3, 3, 5, 0, tzinfo=UTC)
    assert next_occurrence_after_run(now, "America/New_York", "07:00", 1, ran) == datetime(
        2026, 3, 3, 12, 0, tzinfo=UTC)  # Tue 07:00 there
    later = datetime(2026, 3, 20, 12, 0, tzinfo=UTC)  # long after it ran: the next new time
    assert next_occurrence_after_run(later, "America/New_York", "14:00", 7, ran) == datetime(
        2026, 3, 20, 18, 0, tzinfo=UTC)


@pytest.mark.parametrize(("every_days", "weekday", "said"), [
    (1, None, "every day"),
    (3, None, "every 3 days"),
    (7, "monday", "every week on Mondays"),
    (14, "thursday", "every 2 weeks on Thursdays"),
    (7, None, "every week"),
    (10, None, "every 10 days"),
])
def test_a_rhythm_is_said_as_a_coordinator_says_it(every_days, weekday, said):
    from bot.domain.schedule import rhythm

    assert rhythm(every_days, weekday) == said
