"""What an alert says when it goes again: to the next contact of the chain because the one
before did not acknowledge in time (who that was, and when they were alerted, in the
clinic's zone), or to the same person again (a repeat); and the link to the red flag's
dashboard page when the deployment has a public URL. All within 2 SMS segments."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from bot.clock import FakeClock
from bot.domain import gsm7
from bot.scheduler import tick
from bot.services.escalations import LINK_ROOM, alert_not_delivered, answer_words, escalate
from bot.services.patients import Enrolment, enrol_patient
from bot.store.models import Escalation, Message, OutboxItem, Patient
from tests.test_dashboard import sign_in

PHONE = "+447700900123"
# 03:12 in London (BST, summer time): the clinic's zone, not UTC, is what the nurse reads.
START = datetime(2026, 7, 1, 2, 12, tzinfo=UTC)
LINKED = "https://checkin.spine-oncology.nhs.uk"  # a realistic public URL, 37 characters


@pytest.fixture
def clock():
    return FakeClock(START)


def _enrol(rt, name="Ada Lovelace", phone=PHONE):
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(phone, name, "Europe/London"), languages=["en"],
                          now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()
        return p.id


def _texted(client, body, phone=PHONE):
    res = client.post("/simulator/api/messages", json={"phone": phone, "body": body})
    assert res.status_code == 201, res.get_json()


def _phones(rt):
    team = rt.settings.care_team
    return [team.contact(cid).phone for cid in team.escalation_chain]


def _to(messenger, phone):
    return [m.body for m in messenger.sent if m.to == phone]


def _ref(rt):
    with rt.transaction() as s:
        return s.scalars(select(Escalation.ref)).one()


def _next_contact(rt, clock, minutes=15):
    clock.advance(minutes=minutes)
    tick(rt)


def test_each_next_contact_is_told_who_did_not_acknowledge_and_when(client, rt, messenger,
                                                                    clock):
    _enrol(rt)
    oncall, coordinator, consultant = _phones(rt)
    _texted(client, "my legs gave way")
    ref = _ref(rt)
    said = f'Ada Lovelace {PHONE}. Flags: limb weakness. Said: "my legs gave way" Reply ACK {ref} when you take it.'
    # the first alert is new: it says nothing of anyone before
    assert _to(messenger, oncall) == [f"EMERGENCY ref {ref}: {said}"]
    _next_contact(rt, clock)
    assert _to(messenger, coordinator) == [
        f"EMERGENCY ref {ref}: No ACK from On-call oncology nurse since 03:12 BST. {said}"]
    _next_contact(rt, clock)
    assert _to(messenger, consultant) == [
        f"EMERGENCY ref {ref}: No ACK from MSCC coordinator since 03:27 BST. {said}"]
    _next_contact(rt, clock)  # round the chain: the first contact again, told who was last
    assert _to(messenger, oncall)[1:] == [
        f"EMERGENCY ref {ref}: No ACK from Consultant clinical oncologist since 03:42 BST. "
        f"{said}"]
    for alert in messenger.sent:
        assert gsm7.is_gsm7(alert.body) and gsm7.segments(alert.body) <= 2


class TestOneContact:
    @pytest.fixture
    def settings_overrides(self):
        return {"care_team": {"escalation_chain": ["oncall"]}}

    def test_a_repeat_to_the_same_person_says_it_is_a_repeat(self, client, rt, messenger,
                                                             clock):
        _enrol(rt)
        [oncall] = _phones(rt)
        _texted(client, "my legs gave way")
        ref = _ref(rt)
        _next_contact(rt, clock)
        _next_contact(rt, clock)
        first, second, third = _to(messenger, oncall)
        assert first.startswith(f"EMERGENCY ref {ref}: Ada Lovelace ")
        assert second.startswith(
            f"EMERGENCY ref {ref}: REPEAT: no ACK since 03:12 BST. Ada Lovelace ")
        assert third.startswith(
            f"EMERGENCY ref {ref}: REPEAT: no ACK since 03:27 BST. Ada Lovelace ")
        for alert in (second, third):
            assert alert.endswith(f"Reply ACK {ref} when you take it.")


class TestPublicUrl:
    @pytest.fixture
    def settings_overrides(self):
        return {"public_url": LINKED + "/"}

    def test_each_alert_links_to_the_red_flags_dashboard_page(self, client, rt, messenger,
                                                              clock):
        _enrol(rt)
        oncall, coordinator, _ = _phones(rt)
        _texted(client, "my legs gave way")
        ref = _ref(rt)
        _next_contact(rt, clock)
        link = f"{LINKED}/dashboard/escalations/{ref}"
        [first] = _to(messenger, oncall)
        [again] = _to(messenger, coordinator)
        for alert in (first, again):
            assert alert.endswith(f"Reply ACK {ref} when you take it. {link}")
            assert gsm7.is_gsm7(alert) and gsm7.segments(alert) <= 2
        assert "No ACK from On-call oncology nurse since 03:12 BST." in again
        # the link is the red flag's page: sign-in first, then that page
        path = link.removeprefix(LINKED)
        res = client.get(path)
        assert res.status_code == 303
        assert res.headers["Location"].endswith(f"/dashboard/login?next={path}")
        sign_in(client, token=None)
        page = client.get(path)
        assert page.status_code == 200 and f"{ref}" in page.get_data(as_text=True)
        assert "my legs gave way" in page.get_data(as_text=True)


# -- the worst case: every field long, with the note and the link ----------------------------


LONG_NAME = "Maximilian-Alexander Worthington-Smythe"
LONG_PHONE = "+4915123456789"  # a German mobile: 14 characters
LONG_CONTACTS = [
    {"id": "oncall", "name": "On-call acute oncology nurse practitioner", "phone":
     "+44 7700 900001"},
    {"id": "coordinator", "name": "Metastatic spinal cord compression coordinator", "phone":
     "+44 7700 900002"},
    {"id": "consultant", "name": "Consultant clinical oncologist", "phone": "+44 7700 900003"},
]
FLAGS = ["limb_weakness", "sensory_loss", "saddle_anaesthesia", "bladder_dysfunction",
         "bowel_dysfunction", "gait_balance"]
WORDS = ("Hello, sorry to bother you so late, I hope you are well. Since this evening I "
         "cannot feel my legs properly and I wet myself twice, the numbness is spreading up "
         "from my feet and I keep falling over when I try to get to the bathroom.")


class TestWorstCase:
    @pytest.fixture
    def settings_overrides(self):
        return {"public_url": LINKED, "care_team": {"contacts": LONG_CONTACTS}}

    def _every_alert(self, rt, clock, words, patient=True, undelivered=False):
        """The first alert and one to each next contact, round the chain; with
        `undelivered`, each reported undelivered before the next goes (the longer note)."""
        with rt.transaction() as s:
            who = s.scalars(select(Patient)).one() if patient else None
            esc, _ = escalate(s, rt.ctx, who, "emergency", FLAGS, words, clock.now(),
                              phone=None if patient else LONG_PHONE)
            ref = esc.ref
        for _ in range(3):
            if undelivered:
                with rt.transaction() as s:
                    latest = s.scalars(select(Message).where(Message.kind == "alert")
                                       .order_by(Message.id.desc())).first()
                    alert_not_delivered(s, latest.escalation_id, clock.now(), "undelivered",
                                        message_id=latest.id, chain_length=3)
                    latest.status = "undelivered"
                clock.advance(seconds=5)  # the next contact is due at once
                tick(rt)
            else:
                _next_contact(rt, clock)
        with rt.transaction() as s:
            bodies = list(s.scalars(select(Message.body).where(Message.kind == "alert")
                                    .order_by(Message.id)))
        assert len(bodies) == 4
        return ref, bodies

    def _check(self, ref, bodies, linked=(True, True, True, True), undelivered=False):
        link = f" {LINKED}/dashboard/escalations/{ref}"
        ack = f" Reply ACK {ref} when you take it."
        note = "Could not reach " if undelivered else "No ACK from "
        for i, body in enumerate(bodies):
            assert gsm7.is_gsm7(body) and gsm7.segments(body) <= 2, (len(body), body)
            assert body.startswith(f"EMERGENCY ref {ref}")
            assert body.endswith(f"{ack}{link}" if linked[i] else ack), body
            assert (note in body) == (i > 0)
        # contact names are cut between words, like the patient's
        if undelivered:  # each alert goes at once after the one before fails
            assert "Could not reach On-call acute oncology nurse at 03:12 BST." in bodies[1]
            assert "Could not reach Metastatic spinal cord at 03:12 BST." in bodies[2]
            assert "Could not reach Consultant clinical oncologist at 03:12 BST." in bodies[3]
            return
        assert "No ACK from On-call acute oncology nurse since 03:12 BST." in bodies[1]
        assert "No ACK from Metastatic spinal cord since 03:27 BST." in bodies[2]
        assert "No ACK from Consultant clinical oncologist since 03:42 BST." in bodies[3]

    @staticmethod
    def _said(body):
        return body[body.index('Said: "') + 7:body.index('" ', body.index('Said: "'))]

    @pytest.mark.parametrize("undelivered", [False, True])
    def test_typed_words(self, rt, clock, undelivered):
        _enrol(rt, name=LONG_NAME, phone=LONG_PHONE)
        ref, bodies = self._every_alert(rt, clock, WORDS, undelivered=undelivered)
        self._check(ref, bodies, undelivered=undelivered)
        for body in bodies:
            assert (f"Maximilian-Alexander {LONG_PHONE}. Flags: bladder dysfunction, bowel "
                    "dysfunction, +4 more. Said: ") in body
            # the words shrink to the room left, still around what raised the flag
            said = self._said(body)
            assert len(said) >= LINK_ROOM and "cannot feel my" in said, said

    @pytest.mark.parametrize("undelivered", [False, True])
    def test_a_reply_to_a_question(self, rt, clock, undelivered):
        _enrol(rt, name=LONG_NAME, phone=LONG_PHONE)
        question = ("Since your last check-in, have you had any new numbness, tingling or pins "
                    "and needles in your arms, legs, buttocks or feet?")
        ref, bodies = self._every_alert(
            rt, clock, answer_words(question, "yes both legs since yesterday evening", "Yes"),
            undelivered=undelivered)
        self._check(ref, bodies, undelivered=undelivered)
        for body in bodies:
            assert " A: yes both legs" in body

    @pytest.mark.parametrize("undelivered", [False, True])
    def test_a_number_that_is_not_enrolled(self, rt, clock, undelivered):
        """Its alert is longer ("from a number that is not enrolled", "Please call them
        now."): with a long contact name too, the link gives way to the words."""
        ref, bodies = self._every_alert(rt, clock, WORDS, patient=False,
                                        undelivered=undelivered)
        self._check(ref, bodies, linked=(True, False, False, False), undelivered=undelivered)
        for body in bodies:
            assert f"not enrolled: {LONG_PHONE}." in body and "Please call them now." in body
            assert "cannot feel my legs" in self._said(body)


def test_a_pending_re_alert_rewritten_for_a_new_number_still_says_who_did_not_acknowledge(
        client, rt, messenger, clock):
    """A re-alert not sent yet when the patient's number changes is written again with the
    new number (patients._change_number): it still says it is an escalation."""
    from bot.services.patients import PatientChanges, update_patient

    pid = _enrol(rt)
    _texted(client, "my legs gave way")
    _next_contact(rt, clock)
    with rt.transaction() as s:
        again = s.scalars(select(Message).where(Message.kind == "alert")
                          .order_by(Message.id.desc())).first()
        s.scalars(select(OutboxItem).where(OutboxItem.message_id == again.id)).one() \
            .status = "pending"
        again_id = again.id
    with rt.transaction() as s:
        update_patient(s, s.get(Patient, pid), PatientChanges(phone="+447700900555"),
                       ctx=rt.ctx, now=clock.now(), actor="test")
    with rt.transaction() as s:
        body = s.get(Message, again_id).body
    assert "+447700900555" in body
    assert "No ACK from On-call oncology nurse since 03:12 BST." in body
