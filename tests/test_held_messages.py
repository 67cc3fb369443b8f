"""A patient enrolled at night: the welcome waits for the end of quiet hours. If the patient
writes first (told about the service in clinic), what was held must not ask again what they
just answered, nor be missing from the re-prompt that refers to it."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select

from bot.services.patients import Enrolment, onboard_patient
from bot.store.models import AuditLog, OutboxItem, Patient
from tests.test_webhooks import MEDIA_URL, PHONE, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    TWILIO_SETTINGS,
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)

NIGHT = datetime(2026, 3, 2, 23, 30, tzinfo=UTC)  # 23:30 in London: quiet hours
MORNING = datetime(2026, 3, 3, 8, 0, tzinfo=UTC)


def _enrol_at_night(rt, clock):
    clock.set(NIGHT)
    with rt.transaction() as s:
        patient, ids = onboard_patient(s, rt.ctx, Enrolment(PHONE, "Ada Lovelace",
                                                            "Europe/London"),
                                       clock.now(), actor="test")
        pid = patient.id
    rt.dispatch_soon(ids)
    return pid, ids


def _statuses(rt, ids):
    with rt.transaction() as s:
        return [s.get(OutboxItem, i).status for i in ids]


def test_the_welcome_is_held_until_morning(rt, fake_http, clock):
    _, ids = _enrol_at_night(rt, clock)
    assert ids and sent_to(fake_http, PHONE) == []
    assert set(_statuses(rt, ids)) == {"pending"}
    clock.set(MORNING)
    assert rt.dispatcher.dispatch_due() == len(ids)


def test_a_yes_before_the_held_welcome_went_cancels_it(client, rt, fake_http, clock):
    pid, ids = _enrol_at_night(rt, clock)
    texted(client, "YES")
    with rt.transaction() as s:
        assert s.get(Patient, pid).consent_at is not None
    [thanks] = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert "Thank you" in thanks
    assert set(_statuses(rt, ids)) == {"cancelled"}
    clock.set(MORNING)
    rt.dispatcher.dispatch_due()
    bodies = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert len(bodies) == 1, bodies  # no "Do you agree...?" after they agreed
    with rt.transaction() as s:
        reasons = s.scalars(select(AuditLog.details).where(
            AuditLog.action == "outbox.cancelled")).all()
    assert len(reasons) == len(ids)
    assert all("answered before it was sent" in r["reason"] for r in reasons)


def test_a_patient_who_writes_first_gets_the_held_question_before_the_re_prompt(
        client, rt, fake_http, clock):
    _, ids = _enrol_at_night(rt, clock)
    welcome = _bodies_of(rt, ids)
    texted(client, "Hi, the nurse said you would text me")
    bodies = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert bodies[:len(welcome)] == welcome  # the question itself, now
    assert len(bodies) == len(welcome) + 1 and "YES" in bodies[-1]  # then the re-prompt
    assert set(_statuses(rt, ids)) == {"sent"}
    clock.set(MORNING)
    assert rt.dispatcher.dispatch_due() == 0  # nothing left for the morning
    texted(client, "yes")
    assert "Thank you" in sent_to(fake_http, PHONE)[-1]["Body"]


def _bodies_of(rt, ids):
    from bot.store.models import Message

    with rt.transaction() as s:
        return [s.get(Message, s.get(OutboxItem, i).message_id).body for i in ids]


def test_a_question_written_before_the_held_welcome_went_is_listed_and_asks_nothing_twice(
        client, rt, fake_http, clock):
    # "Who is this?" before the welcome went: the welcome itself answers it, then the
    # re-prompt, as for any reply not understood; the question is not sent a second time in
    # place of the re-prompt. The words are listed for the team to read.
    from bot.services.health import messages_to_read

    _, ids = _enrol_at_night(rt, clock)
    welcome = _bodies_of(rt, ids)
    texted(client, "Hi, who is this?")
    bodies = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert bodies[:len(welcome)] == welcome
    assert len(bodies) == len(welcome) + 1 and bodies[-1].startswith("Sorry, we did not")
    with rt.transaction() as s:
        assert [m.body for m in messages_to_read(s)] == ["Hi, who is this?"]


def test_help_or_a_photo_before_the_held_welcome_went_does_not_ask_it_twice(
        client, rt, fake_http, clock):
    # The consent question is held for the morning: HELP (or a photo) gets its reply now,
    # and the question is not sent a second time, neither now nor in the morning.
    _, ids = _enrol_at_night(rt, clock)
    welcome = _bodies_of(rt, ids)
    texted(client, "HELP")
    texted(client, "", NumMedia="1", MediaUrl0=MEDIA_URL,
           MediaContentType0="image/jpeg")
    bodies = [d["Body"] for d in sent_to(fake_http, PHONE)]
    assert len(bodies) == 2 and bodies[0] == rt.ctx.text_for(None, "help")
    assert "can only read text" in bodies[1]
    clock.set(MORNING)
    assert rt.dispatcher.dispatch_due() == len(ids)
    assert [d["Body"] for d in sent_to(fake_http, PHONE)][2:] == welcome
