"""What a discharged patient's texts get: a red flag exactly as from anyone, STOP and HELP as
ever, and anything else one polite reply (no check-in starts) and a place among the messages
for the team to read."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.domain import gsm7
from bot.services.context import readable_phone
from bot.services.patients import discharge_patient
from bot.store.models import Conversation, Escalation, Message, OutboxItem, Patient
from tests.test_red_flags_e2e import PHONE, RED_FLAG, alerts, chain_phones, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)


def discharged(rt, status="active", language="en") -> int:
    pid = enrol(rt, status=status)
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        p.language = language
        discharge_patient(s, p, "Moved to hospice care", now=rt.clock.now(), actor="test")
    return pid


def told(fake_http) -> list[str]:
    return [d["Body"] for d in sent_to(fake_http, PHONE)]


def text_of(rt, key, language="en", name="Ada"):
    return rt.ctx.texts.render(key, language, **{**rt.ctx.patient_values(None), "name": name})


def last_inbound(rt) -> Message:
    with rt.transaction() as s:
        return s.scalars(select(Message).where(Message.direction == "in")
                         .order_by(Message.id.desc())).first()


def status_of(rt, pid):
    with rt.transaction() as s:
        return s.get(Patient, pid).status


def conversations_of(rt, pid):
    with rt.transaction() as s:
        return s.scalars(select(Conversation).where(Conversation.patient_id == pid)).all()


@pytest.mark.parametrize("language", ["en", "es"])
def test_the_reply_is_plain_short_and_names_whom_to_call(rt, language):
    body = text_of(rt, "discharged", language)
    assert gsm7.is_gsm7(body) and gsm7.segments(body) <= 2
    assert readable_phone(rt.settings.clinic.phone) in body
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in body
    assert "{" not in body


def test_an_emergency_from_a_discharged_patient_is_handled_as_from_anyone(client, rt,
                                                                          fake_http):
    discharged(rt)
    texted(client, RED_FLAG)
    [instruction] = told(fake_http)
    assert "Lie flat" in instruction
    assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in instruction
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert (esc.level, esc.status) == ("emergency", "open")
    assert alerts(fake_http, chain_phones(rt)[0]), "the on-call contact was alerted"


def test_an_urgent_red_flag_gets_the_urgent_instruction_only(client, rt, fake_http):
    discharged(rt)
    texted(client, "I have a temperature of 38.5")
    # The instruction alone: no "no longer receiving check-ins" beside it.
    assert told(fake_http) == [text_of(rt, "urgent")]
    with rt.transaction() as s:
        assert s.scalars(select(Escalation)).one().level == "urgent"
    assert last_inbound(rt).status == "to_read"


@pytest.mark.parametrize("body", ["Thank you all for your care", "CHECKIN", "yes"])
def test_any_other_text_gets_one_reply_and_is_listed_to_read(client, rt, fake_http, body):
    pid = discharged(rt)
    texted(client, body)
    assert told(fake_http) == [text_of(rt, "discharged")]
    assert last_inbound(rt).status == "to_read"
    assert conversations_of(rt, pid) == []  # CHECKIN starts nothing
    assert status_of(rt, pid) == "discharged"


def test_a_text_while_their_red_flag_is_unresolved_gets_the_hotline_again(client, rt,
                                                                          fake_http):
    discharged(rt)
    texted(client, RED_FLAG)
    texted(client, "ok I've called them")
    assert told(fake_http)[1:] == [text_of(rt, "after_emergency")]
    assert last_inbound(rt).status == "to_read"


def test_stop_wins_help_answers_and_start_is_no_readmission(client, rt, fake_http):
    pid = discharged(rt)
    texted(client, "HELP")
    assert told(fake_http) == [text_of(rt, "help")]
    texted(client, "STOP")
    assert status_of(rt, pid) == "opted_out"
    assert told(fake_http)[-1] == text_of(rt, "stopped")
    texted(client, "I feel a bit better today")  # opted out: recorded, no reply
    assert len(told(fake_http)) == 2
    texted(client, "START")
    assert status_of(rt, pid) == "discharged"
    assert told(fake_http)[-1] == text_of(rt, "discharged")
    assert conversations_of(rt, pid) == []


def test_start_after_stop_before_the_discharge_comes_back_to_discharged(client, rt, fake_http):
    pid = enrol(rt)
    texted(client, "STOP")
    with rt.transaction() as s:
        discharge_patient(s, s.get(Patient, pid), "Died", now=rt.clock.now(), actor="test")
    assert status_of(rt, pid) == "opted_out"
    texted(client, "YES")  # YES while opted out opts back in
    assert status_of(rt, pid) == "discharged"
    assert told(fake_http)[-1] == text_of(rt, "discharged")


def test_start_kept_after_a_failure_also_comes_back_to_discharged(rt):
    """When handling a message failed, STOP and START are still applied (record_after_failure):
    START from a discharged patient who had said STOP is no re-admission there either."""
    from bot.services.inbound import InboundMessage, record_after_failure

    pid = discharged(rt, status="opted_out")
    with rt.transaction() as s:
        out = record_after_failure(s, rt.ctx, InboundMessage("sms", PHONE, "START", "SM1"),
                                   rt.clock.now())
        [reply] = [s.get(Message, s.get(OutboxItem, i).message_id).body for i in out.outbox_ids]
    assert reply == text_of(rt, "discharged")
    assert status_of(rt, pid) == "discharged"


def test_discharge_is_kept_on_the_patient_not_read_back_from_the_audit_log(client, rt,
                                                                            fake_http):
    """The audit log records what happened; it is not where the bot keeps state. With the
    discharge's audit record gone, STOP then START still return the patient to discharged, and
    a re-admission clears the mark."""
    from sqlalchemy import delete

    from bot.services.patients import PatientChanges, update_patient
    from bot.store.models import AuditLog

    pid = discharged(rt)
    with rt.transaction() as s:
        assert s.get(Patient, pid).discharged_at == rt.clock.now()
        s.execute(delete(AuditLog).where(AuditLog.action == "patient.discharge"))
    texted(client, "STOP")
    texted(client, "START")
    assert status_of(rt, pid) == "discharged"
    with rt.transaction() as s:
        update_patient(s, s.get(Patient, pid), PatientChanges(status="active"),
                       ctx=rt.ctx, now=rt.clock.now(), actor="test")
    with rt.transaction() as s:
        assert s.get(Patient, pid).discharged_at is None
    texted(client, "STOP")
    texted(client, "START")
    assert status_of(rt, pid) == "active"
