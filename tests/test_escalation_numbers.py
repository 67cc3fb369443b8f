"""An emergency texted from a number that is not enrolled, and the number then becomes a
patient's (enrolled, or given to a patient as their new number): the emergency is that
patient's. What the bot decides from "the patient has an unresolved emergency" (not telling
them "the team will call you today", answering their texts with the hotline) must see it."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.store.models import AuditLog, Escalation
from tests.test_red_flags_e2e import alerts, chain_phones, texted
from tests.test_webhooks import enrol
from tests.twilio_support import TWILIO_SETTINGS, fake_http, messenger  # noqa: F401 - fixtures

NEW = "+447700900456"
OLD = "+447700900123"
TOKEN = "s3cret-admin-token"


@pytest.fixture
def settings_overrides():
    return {**TWILIO_SETTINGS, "admin_token": TOKEN}


def _becomes_a_patients(client, rt, how) -> int:
    if how == "enrolled":
        return enrol(rt, phone=NEW)
    pid = enrol(rt, phone=OLD)
    res = client.patch(f"/api/patients/{pid}", json={"phone": NEW},
                       headers={"Authorization": f"Bearer {TOKEN}", "X-Actor": "Nurse Jo"})
    assert res.status_code == 200, res.get_json()
    return pid


@pytest.mark.parametrize("how", ["enrolled", "number_changed"])
def test_an_emergency_from_the_number_before_it_was_the_patients_is_theirs(
        client, rt, fake_http, how):
    oncall = chain_phones(rt)[0]
    texted(client, "I cant feel my legs", sender=NEW)  # not enrolled yet
    with rt.transaction() as s:
        ref = s.scalars(select(Escalation.ref)).one()
    texted(client, f"ACK {ref}", sender=oncall)  # taken; the team is on it, not resolved
    pid = _becomes_a_patients(client, rt, how)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert (esc.patient_id, esc.phone, esc.status) == (pid, None, "acknowledged")
        [linked] = s.scalars(select(AuditLog).where(
            AuditLog.action == "escalation.patient_linked")).all()
        assert (linked.subject_id, linked.details["patient_id"]) == (ref, pid)
        assert linked.actor == ("test" if how == "enrolled" else "api:Nurse Jo")
    told = len(alerts(fake_http, NEW))

    texted(client, "temperature 38.9 and shivering", sender=NEW)

    with rt.transaction() as s:
        assert [(e.patient_id, e.level, e.status) for e in s.scalars(
            select(Escalation).order_by(Escalation.id))] == [
            (pid, "emergency", "acknowledged"), (pid, "urgent", "open")]
    assert alerts(fake_http, oncall)[-1].startswith("URGENT")  # the team hears of it
    # Not "the team will call you today" while their emergency is unresolved: the hotline.
    assert alerts(fake_http, NEW)[told:] == [
        rt.ctx.text_for(None, "after_emergency", name="Ada")]


def test_a_resolved_emergency_of_the_number_stays_as_it_was(client, rt, fake_http):
    """Only what is not resolved becomes the patient's: a closed case about a number that was
    not enrolled is left as the team closed it."""
    oncall = chain_phones(rt)[0]
    texted(client, "I cant feel my legs", sender=NEW)
    with rt.transaction() as s:
        ref = s.scalars(select(Escalation.ref)).one()
    texted(client, f"ACK {ref}", sender=oncall)
    res = client.post(f"/api/escalations/{ref}/resolve", json={"note": "wrong number"},
                      headers={"Authorization": f"Bearer {TOKEN}", "X-Actor": "Nurse Jo"})
    assert res.status_code == 200, res.get_json()
    enrol(rt, phone=NEW)
    with rt.transaction() as s:
        esc = s.scalars(select(Escalation)).one()
        assert (esc.patient_id, esc.phone, esc.status) == (None, NEW, "resolved")
