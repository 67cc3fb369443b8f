"""Escalations after the first alert: acknowledged ones, later red flags, the alert's text, ACK."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.domain import gsm7
from bot.domain.triage import level_for_flags
from bot.scheduler import tick
from bot.services.escalations import alert_details
from bot.store.models import Escalation
from tests.test_red_flags_e2e import PHONE, alerts, chain_phones, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    sent_to,
    settings_overrides,
)


def escalations(rt) -> list[Escalation]:
    with rt.transaction() as s:
        return list(s.scalars(select(Escalation).order_by(Escalation.id)))


def counts(fake_http, phones) -> list[int]:
    return [len(alerts(fake_http, p)) for p in phones]


def test_a_new_emergency_after_an_acknowledged_one_alerts_the_team_again(client, rt, fake_http,
                                                                         clock):
    enrol(rt)
    chain = chain_phones(rt)
    texted(client, "my legs gave way")
    [first] = escalations(rt)
    texted(client, f"ACK {first.ref}", sender=chain[0])
    assert escalations(rt)[0].status == "acknowledged"
    before = counts(fake_http, chain)

    clock.advance(days=3)  # acknowledged, never resolved; now new symptoms
    texted(client, "I wet myself and can't feel my bum")

    old, new = escalations(rt)
    assert (old.ref, old.status) == (first.ref, "acknowledged")
    assert (new.status, new.level, new.chain_position) == ("open", "emergency", 0)
    assert new.ref != old.ref
    after = counts(fake_http, chain)
    assert after == [before[0] + 1, before[1], before[2]]
    alert = alerts(fake_http, chain[0])[-1]
    assert f"ref {new.ref}" in alert and "wet myself" in alert
    # and it goes round the chain until someone acknowledges the new ref
    clock.advance(minutes=rt.settings.care_team.ack_timeout_minutes)
    tick(rt)
    assert counts(fake_http, chain)[1] == before[1] + 1
    texted(client, f"ack {new.ref}", sender=chain[1])
    assert escalations(rt)[1].status == "acknowledged"


def test_a_new_urgent_flag_after_an_acknowledged_urgent_one_is_alerted_and_answered(
        client, rt, fake_http, clock):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "back pain is 9/10 and wakes me every night")
    [first] = escalations(rt)
    assert first.level == "urgent"
    texted(client, f"ACK {first.ref}", sender=oncall)
    told = len(sent_to(fake_http, PHONE))
    alerted = len(alerts(fake_http, oncall))

    clock.advance(days=7)
    texted(client, "temperature 38.9 and shivering")

    assert len(escalations(rt)) == 2
    assert len(alerts(fake_http, oncall)) == alerted + 1
    replies = [d["Body"] for d in sent_to(fake_http, PHONE)][told:]
    assert replies == [rt.ctx.text_for(None, "urgent", name="Ada")]


def test_an_urgent_flag_during_an_acknowledged_emergency_alerts_but_does_not_undercut_it(
        client, rt, fake_http, clock):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "my legs gave way")
    [emergency] = escalations(rt)
    texted(client, f"ACK {emergency.ref}", sender=oncall)
    told = len(sent_to(fake_http, PHONE))

    clock.advance(hours=1)
    texted(client, "temperature 38.9 and shivering")

    assert [e.level for e in escalations(rt)] == ["emergency", "urgent"]
    assert "URGENT" in alerts(fake_http, oncall)[-1]
    # no "the team will call you today" while an emergency is being handled
    assert not any("today" in d["Body"] for d in sent_to(fake_http, PHONE)[told:])


def test_more_flags_before_anyone_acknowledges_join_the_open_escalation(client, rt, fake_http):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "my legs gave way")
    texted(client, "and I can't feel my bum")
    [esc] = escalations(rt)
    assert esc.status == "open"
    assert len(alerts(fake_http, oncall)) == 1  # same level: no second alert


def test_an_upgraded_alert_shows_the_new_words_and_the_emergency_flag_first(client, rt,
                                                                            fake_http):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "my back pain is 8 out of 10 today, it is worse at night and hurts "
                   "when I cough")
    texted(client, "now I cant feel my legs")
    upgrade = alerts(fake_http, oncall)[-1]
    assert upgrade.startswith("EMERGENCY")
    said = upgrade.split('Said: "', 1)[1]
    assert said.startswith("now I cant feel my legs")
    flags = upgrade.split("Flags: ", 1)[1].split(". Said", 1)[0]
    [esc] = escalations(rt)
    emergency_flags = [f for f in esc.flags
                       if level_for_flags([f], rt.ctx.vocabulary) == "emergency"]
    assert emergency_flags and flags.startswith(emergency_flags[0].replace("_", " "))


def test_flags_are_cut_between_names_and_say_how_many_were_left_out():
    flags = ["constipation", "cough_pain", "fever", "new_back_pain", "night_pain",
             "sensory_loss"]
    shown = alert_details(flags, "x")["flags"]
    assert shown.startswith("sensory loss, ")
    assert len(shown) <= 60
    assert shown.endswith(" more")
    names = shown.split(", ")
    assert int(names[-1].split()[0].lstrip("+")) == len(flags) - (len(names) - 1)
    assert all(n.replace(" ", "_") in flags for n in names[:-1])


def test_an_alert_in_another_script_still_fits_two_sms_segments(client, rt, fake_http):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    with rt.transaction() as s:
        from bot.store.models import Patient
        s.scalars(select(Patient)).one().name = "Ana Sofia Guadalupe de los Angeles Pereira"
    texted(client, "我的腿不能动了 my legs gave way " + "疼痛" * 40)
    [alert] = alerts(fake_http, oncall)
    assert gsm7.is_gsm7(alert)
    assert gsm7.segments(alert) <= 2


@pytest.mark.parametrize("reply", ["ACK {ref}.", "Ack: {ref}", "ACK {ref} thanks",
                                   "ack {lower}", "ACK  #{ref}", "Acknowledged {ref}"])
def test_acks_as_people_type_them(client, rt, fake_http, reply):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "my legs gave way")
    [esc] = escalations(rt)
    texted(client, reply.format(ref=esc.ref, lower=esc.ref.lower()), sender=oncall)
    assert escalations(rt)[0].status == "acknowledged"
    assert "acknowledged" in alerts(fake_http, oncall)[-1]


def test_a_care_team_text_that_is_not_an_ack_gets_the_usage_and_acknowledges_nothing(
        client, rt, fake_http):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "my legs gave way")
    texted(client, "on my way", sender=oncall)
    assert escalations(rt)[0].status == "open"
    assert "Reply ACK" in alerts(fake_http, oncall)[-1]


CARER = "+447700900555"


def test_an_emergency_from_a_number_that_is_not_enrolled_goes_round_the_chain(client, rt,
                                                                             fake_http, clock):
    chain = chain_phones(rt)
    texted(client, "this is his wife, he cant feel his legs", sender=CARER)
    [esc] = escalations(rt)
    assert (esc.patient_id, esc.phone, esc.level, esc.status) == (None, CARER, "emergency",
                                                                  "open")
    assert counts(fake_http, chain) == [1, 0, 0]
    [alert] = alerts(fake_http, chain[0])
    assert f"ref {esc.ref}" in alert and CARER in alert and f"ACK {esc.ref}" in alert
    assert gsm7.segments(alert) <= 2
    # the carer got the instruction
    [told] = [d["Body"] for d in sent_to(fake_http, CARER)]
    assert rt.settings.clinic.emergency_number in told

    texted(client, "he is worse now, he wet himself", sender=CARER)  # joins the open one
    assert len(escalations(rt)) == 1 and counts(fake_http, chain) == [1, 0, 0]

    clock.advance(minutes=rt.settings.care_team.ack_timeout_minutes)
    tick(rt)
    assert counts(fake_http, chain) == [1, 1, 0]
    texted(client, f"ACK {esc.ref}", sender=chain[1])
    assert escalations(rt)[0].status == "acknowledged"
    clock.advance(hours=2)
    tick(rt)
    assert counts(fake_http, chain) == [1, 2, 0]  # the ACK receipt, and no more alerts


def test_an_urgent_red_flag_from_a_number_that_is_not_enrolled_is_alerted_and_answered(
        client, rt, fake_http, clock):
    """A fever on chemotherapy texted from a new phone: the team hears of it, the sender is
    told the team will call today (with the hotline if it gets worse)."""
    chain = chain_phones(rt)
    texted(client, "on chemo and my temperature is 38.6", sender=CARER)
    [esc] = escalations(rt)
    assert (esc.patient_id, esc.phone, esc.level, esc.status) == (None, CARER, "urgent", "open")
    [alert] = alerts(fake_http, chain[0])
    assert alert.startswith("URGENT") and CARER in alert and f"ACK {esc.ref}" in alert
    [told] = alerts(fake_http, CARER)
    assert told == rt.ctx.text_for(None, "urgent", name="Hello")
    assert gsm7.segments(told) <= 2
    clock.advance(minutes=rt.settings.care_team.urgent_ack_timeout_minutes)
    tick(rt)
    assert counts(fake_http, chain) == [1, 1, 0]  # round the chain until acknowledged

    # more of the same joins the open escalation: no second alert, and a polite reply
    texted(client, "still 38.6", sender=CARER)
    assert len(escalations(rt)) == 1 and counts(fake_http, chain) == [1, 1, 0]
    assert alerts(fake_http, CARER)[-1] == rt.ctx.text_for(None, "not_enrolled")


def test_an_urgent_flag_after_an_emergency_from_the_same_number_does_not_undercut_it(
        client, rt, fake_http):
    """Told to call the hotline now, the carer must not then read "the team will call you
    today"."""
    chain = chain_phones(rt)
    texted(client, "he cant feel his legs", sender=CARER)
    [esc] = escalations(rt)
    texted(client, f"ACK {esc.ref}", sender=chain[0])
    texted(client, "and now a temperature of 38.5", sender=CARER)
    assert [e.level for e in escalations(rt)] == ["emergency", "urgent"]  # the team hears
    urgent_text = rt.ctx.text_for(None, "urgent", name="Hello")
    assert urgent_text not in alerts(fake_http, CARER)
    assert alerts(fake_http, CARER)[-1] == rt.ctx.text_for(None, "not_enrolled")


def test_the_cli_lists_an_escalation_from_a_number_that_is_not_enrolled(client, rt, fake_http,
                                                                        monkeypatch, settings):
    from click.testing import CliRunner

    from bot import cli

    texted(client, "he cant feel his legs", sender=CARER)
    monkeypatch.setenv("CHECKIN_DATABASE_URL", settings.database_url)
    res = CliRunner().invoke(cli.main, ["escalations", "list", "--open"])
    assert res.exit_code == 0, res.output
    assert "not enrolled" in res.output and CARER in res.output


def test_when_handling_fails_an_emergency_from_an_unknown_number_still_escalates(
        client, rt, fake_http, monkeypatch):
    import bot.services.inbound as inbound

    def broken(*args, **kwargs):
        raise RuntimeError("bug in handling")

    monkeypatch.setattr(inbound, "_act_on", broken)
    texted(client, "he cant feel his legs", sender=CARER)
    [esc] = escalations(rt)
    assert (esc.phone, esc.status) == (CARER, "open")
    assert len(alerts(fake_http, chain_phones(rt)[0])) == 1


def test_an_sms_ack_after_an_api_ack_is_told_who_took_it_and_changes_nothing(client, rt,
                                                                             fake_http):
    """The care team's ACK by text keeps its behaviour: a second one is answered, not applied."""
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "my legs gave way")
    [esc] = escalations(rt)
    res = client.post(f"/api/escalations/{esc.ref}/ack", json={"by": "Nurse Jo"},
                      headers={"X-Actor": "jo"})
    assert res.status_code == 403  # Twilio messenger, no admin token: the API is off
    from bot.services.escalations import acknowledge
    with rt.transaction() as s:
        acknowledge(s, esc.ref, "Nurse Jo", rt.clock.now(), actor="api:jo")
    texted(client, f"ACK {esc.ref}", sender=oncall)
    assert alerts(fake_http, oncall)[-1] == f"Alert {esc.ref} was already acknowledged by Nurse Jo."
    assert escalations(rt)[0].acknowledged_by == "Nurse Jo"


def test_resolving_an_unacknowledged_escalation_does_not_record_the_channel_as_a_person(
        client, rt, fake_http):
    from bot.services.escalations import resolve
    from bot.store.models import AuditLog

    enrol(rt)
    texted(client, "my legs gave way")
    [esc] = escalations(rt)
    with rt.transaction() as s:
        assert resolve(s, esc.ref, "seen in clinic", rt.clock.now(), actor="cli:jo")[1]
    with rt.transaction() as s:
        stored = s.get(Escalation, esc.id)
        assert (stored.status, stored.acknowledged_by) == ("resolved", None)
        assert stored.acknowledged_at is not None  # the chain stopped
        audit = s.scalars(select(AuditLog).where(AuditLog.action == "escalation.resolve")).one()
        assert audit.actor == "cli:jo"
    with rt.transaction() as s:
        again, changed = resolve(s, esc.ref, "a second note", rt.clock.now(), actor="cli:sam",
                                 by="Sam")
        assert not changed
        assert (again.resolution_note, again.acknowledged_by) == ("seen in clinic", None)


# ACK by text as nurses type it in a hurry: no ref, a ref after the words, a ref mistyped.

def _enrol_another(rt, phone, name):
    from bot.services.patients import Enrolment, enrol_patient

    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(phone, name, "Europe/London"), languages=["en", "es"],
                          now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()


def _status(rt, ref) -> str:
    return next(e.status for e in escalations(rt) if e.ref == ref)


@pytest.mark.parametrize("reply", ["Ack, calling him now", "Ack, calling now", "Ack - on it",
                                   "ack", "OK ACK", "Acknowledged, ringing her",
                                   "{ref} ack", "Thanks. {ref} ack, calling", "ACK {typo}"])
def test_an_ack_without_the_ref_takes_the_one_open_alert_sent_to_that_contact(
        client, rt, fake_http, clock, reply):
    enrol(rt)
    chain = chain_phones(rt)
    texted(client, "my legs gave way")
    [esc] = escalations(rt)
    typo = next(c for c in "ABCDEFGHJK" if c != esc.ref[-1])
    texted(client, reply.format(ref=esc.ref, typo=esc.ref[:-1] + typo), sender=chain[0])
    assert escalations(rt)[0].status == "acknowledged"
    receipt = alerts(fake_http, chain[0])[-1]
    # the receipt names the ref and the patient, so a wrong guess would show at once
    assert f"Alert {esc.ref} (Ada Lovelace, " in receipt and "acknowledged" in receipt
    clock.advance(hours=2)
    tick(rt)
    assert counts(fake_http, chain)[1:] == [0, 0]  # the chain stopped


def test_texts_that_do_not_say_ack_never_acknowledge_and_the_chain_goes_on(client, rt,
                                                                           fake_http, clock):
    enrol(rt)
    chain = chain_phones(rt)
    texted(client, "my legs gave way")
    [esc] = escalations(rt)
    for text in ["calling him now", "on it", f"{esc.ref} on my way", "backup needed",
                 f"can't ack {esc.ref}, in theatre", "Cannot ack - in theatre", "not ack",
                 "acknowledgement later", f"Re {esc.ref}: who is on call?", "ok",
                 "haven't ack'd it, pass to Sam", "Ack? No, can't - in theatre",
                 f"ack not me, {esc.ref} is Sam's"]:
        texted(client, text, sender=chain[0])
        assert escalations(rt)[0].status == "open", text
        assert "Reply ACK" in alerts(fake_http, chain[0])[-1], text
    clock.advance(minutes=rt.settings.care_team.ack_timeout_minutes)
    tick(rt)
    assert counts(fake_http, chain)[1] == 1  # nobody acknowledged: the next contact
    texted(client, "Ack, calling him now", sender=chain[1])
    assert escalations(rt)[0].status == "acknowledged"
    assert escalations(rt)[0].acknowledged_by == rt.settings.care_team.contact(
        rt.settings.care_team.escalation_chain[1]).name


def test_an_ack_without_a_ref_with_several_open_alerts_lists_them_and_takes_none(
        client, rt, fake_http):
    enrol(rt)
    _enrol_another(rt, "+447700900124", "Grace Hopper")
    oncall = chain_phones(rt)[0]
    texted(client, "my legs gave way")
    texted(client, "I can't feel my feet and I wet myself", sender="+447700900124")
    texted(client, "this is his wife, he cant feel his legs", sender=CARER)
    ada, grace, carer = escalations(rt)
    texted(client, "Ack, calling now", sender=oncall)
    assert [e.status for e in escalations(rt)] == ["open", "open", "open"]
    listing = alerts(fake_http, oncall)[-1]
    assert f"{ada.ref} (Ada)" in listing and f"{grace.ref} (Grace)" in listing
    assert f"{carer.ref} (not enrolled)" in listing
    assert "Nothing was acknowledged" in listing and gsm7.segments(listing) <= 2
    texted(client, f"ACK {grace.ref}", sender=oncall)
    assert [e.status for e in escalations(rt)] == ["open", "acknowledged", "open"]
    assert "Grace Hopper" in alerts(fake_http, oncall)[-1]
    # a named ref already taken is answered as such, never guessed onto another alert
    texted(client, f"{grace.ref} ack", sender=oncall)
    assert alerts(fake_http, oncall)[-1].startswith(f"Alert {grace.ref} was already")
    assert [e.status for e in escalations(rt)] == ["open", "acknowledged", "open"]


def test_an_ack_naming_two_refs_takes_both_each_with_its_receipt(client, rt, fake_http):
    """"ACK ABCDE FGHJK": the nurse takes two alerts in one text. Before, only the first was
    taken and the other's chain went on paging with no word to her."""
    enrol(rt)
    _enrol_another(rt, "+447700900124", "Grace Hopper")
    oncall = chain_phones(rt)[0]
    texted(client, "my legs gave way")
    texted(client, "I can't feel my feet and I wet myself", sender="+447700900124")
    ada, grace = escalations(rt)
    texted(client, f"ACK {ada.ref} {grace.ref}", sender=oncall)
    assert [e.status for e in escalations(rt)] == ["acknowledged", "acknowledged"]
    receipts = alerts(fake_http, oncall)[-2:]
    assert [ada.ref in receipts[0], grace.ref in receipts[1]] == [True, True]
    assert "Ada Lovelace" in receipts[0] and "Grace Hopper" in receipts[1]


def test_an_ack_without_a_ref_when_no_open_alert_went_to_that_contact_says_so(client, rt,
                                                                              fake_http):
    enrol(rt)
    oncall, coordinator, _ = chain_phones(rt)
    texted(client, "Ack, calling him now", sender=oncall)
    assert alerts(fake_http, oncall)[-1].startswith("No open alert was sent to this number")
    texted(client, "my legs gave way")
    # the coordinator has not been alerted yet: nothing of theirs to guess
    texted(client, "Ack - on it", sender=coordinator)
    assert escalations(rt)[0].status == "open"
    assert alerts(fake_http, coordinator)[-1].startswith("No open alert was sent to this")


def test_a_care_team_phone_enrolled_as_a_patient_can_ack_without_the_ref(client, rt,
                                                                         fake_http):
    enrol(rt)
    oncall = chain_phones(rt)[0]
    _enrol_another(rt, oncall, "Nurse Jo")  # a nurse trying the bot on her own phone
    texted(client, "my legs gave way")
    texted(client, "Ack, calling him now", sender=oncall)
    assert escalations(rt)[0].status == "acknowledged"
    assert "Ada Lovelace" in alerts(fake_http, oncall)[-1]


def test_a_care_team_reply_that_is_not_an_ack_says_nothing_was_acknowledged(client, rt,
                                                                            fake_http):
    """"On it" at 3 a.m. is not an ACK: the reply must not read as a receipt."""
    enrol(rt)
    oncall = chain_phones(rt)[0]
    texted(client, "my legs gave way")
    texted(client, "On it", sender=oncall)
    assert escalations(rt)[0].status == "open"
    assert alerts(fake_http, oncall)[-1] == (
        "This number is for care-team alerts. Nothing was acknowledged and the alerts go on. "
        "Reply ACK followed by the alert ref to take it.")
