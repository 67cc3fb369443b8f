"""Review of the inbound path (webhook to reply): what a patient sends that the bot mishandled."""

from __future__ import annotations

from sqlalchemy import func, select

from bot.services.conversations import active_conversation, start_flow
from bot.store.models import Escalation, Message, Patient
from tests.test_webhooks import bodies, enrol, texted
from tests.twilio_support import (  # noqa: F401 - fixtures
    fake_http,
    messenger,
    settings_overrides,
)


def _expected(rt, key, name="Ada"):
    return rt.ctx.texts.render(key, "en", **{**rt.ctx.patient_values(None), "name": name})


def _escalations(rt) -> int:
    with rt.transaction() as s:
        return s.scalar(select(func.count()).select_from(Escalation))


# -- CHECKIN while a conversation waits --------------------------------------------------------

def test_checkin_while_a_reminder_waits_starts_a_check_in(client, rt, fake_http):
    # The bot tells patients "Reply CHECKIN to start a check-in" / "text CHECKIN at any time";
    # with a reminder waiting for 1 or 2 it was taken as a wrong answer to the reminder.
    pid = enrol(rt)
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), "reminder", rt.clock.now(),
                   params={"reminder_text": "Take your tablets"})
    fake_http.requests.clear()
    texted(client, "CHECKIN")
    told = bodies(fake_http)
    assert not any(b.startswith("Sorry") for b in told), told
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        assert (conv.flow_id, conv.current_node) == ("checkin", "pain")


def test_checkin_texted_during_a_check_in_never_counts_as_an_unclear_answer(
        client, rt, fake_http, clock):
    # Three CHECKINs at "any new numbness?" used to run out its retries: an emergency alert
    # (sensory loss) for the team and "call the hotline now, lie flat" for the patient.
    pid = enrol(rt)
    texted(client, "CHECKIN")
    texted(client, "0")  # no pain: on to the numbness question
    with rt.transaction() as s:
        assert active_conversation(s, pid).current_node == "numbness"
    clock.advance(hours=2)
    fake_http.requests.clear()
    for _ in range(3):
        texted(client, "CHECKIN")
    assert _escalations(rt) == 0
    told = bodies(fake_http)
    assert not any(b.startswith("Sorry") for b in told), told
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        assert (conv.flow_id, conv.current_node) == ("checkin", "pain")  # afresh


def test_checkin_before_consent_still_gets_the_consent_question(client, rt, fake_http):
    pid = enrol(rt, consented=False)
    texted(client, "hello")  # the welcome starts
    fake_http.requests.clear()
    texted(client, "CHECKIN")
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        assert (conv.flow_id, conv.current_node) == ("welcome", "consent")
        assert s.get(Patient, pid).consent_at is None
    assert len(bodies(fake_http)) == 1  # the consent re-prompt


def test_an_answer_in_a_check_in_is_still_an_answer(client, rt):
    pid = enrol(rt)
    texted(client, "CHECKIN")
    texted(client, "3")
    with rt.transaction() as s:
        assert active_conversation(s, pid).current_node == "pain_new"
        assert s.scalar(select(func.count()).select_from(Message)
                        .where(Message.direction == "in")) == 2


# -- a WhatsApp location -----------------------------------------------------------------------

LOCATION = {"Latitude": "51.5033", "Longitude": "-0.1276", "Label": "Home",
            "Address": "10 Downing St, London"}


def test_a_whatsapp_location_is_kept_and_the_patient_asked_for_words(client, rt, fake_http):
    # Twilio sends a shared location as Latitude/Longitude/Address/Label with an empty Body
    # and no media: it was stored as an empty message, and the patient told it was "saved for
    # your care team" when nothing of it was.
    pid = enrol(rt, channel="whatsapp")
    texted(client, "hi", channel="whatsapp")  # inside the WhatsApp window
    fake_http.requests.clear()
    texted(client, "", channel="whatsapp", **LOCATION)
    with rt.transaction() as s:
        inbound = s.scalars(select(Message).where(Message.direction == "in")
                            .order_by(Message.id.desc())).first()
        assert inbound.patient_id == pid
        [place] = inbound.media
        assert place["content_type"] == "location"
        assert place["url"].startswith("geo:51.5033,-0.1276")
        assert "Home" in place["url"] and "Downing" in place["url"]
    assert bodies(fake_http) == [_expected(rt, "media_unreadable")]
    assert "location" in _expected(rt, "media_unreadable")


def test_a_location_in_a_check_in_uses_up_no_try(client, rt, fake_http):
    pid = enrol(rt, channel="whatsapp")
    texted(client, "CHECKIN", channel="whatsapp")
    for _ in range(3):
        texted(client, "", channel="whatsapp", **LOCATION)
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        assert (conv.current_node, conv.state["tries"]) == ("pain", 0)


def test_coordinates_that_are_not_numbers_are_no_location(client, rt, fake_http):
    enrol(rt, channel="whatsapp")
    texted(client, "hello", channel="whatsapp", Latitude="north", Longitude="")
    with rt.transaction() as s:
        inbound = s.scalars(select(Message).where(Message.direction == "in")).one()
        assert inbound.media is None


# -- a message with nothing in it --------------------------------------------------------------

def test_blank_messages_in_a_check_in_are_no_answer_and_raise_no_alarm(client, rt, fake_http):
    # An empty Body with no media (a WhatsApp message type Twilio does not pass on, a blank
    # text) used to count as a reply not understood: three at "any new numbness?" alerted the
    # team as an emergency and told the patient to call the hotline now and lie flat.
    pid = enrol(rt)
    texted(client, "CHECKIN")
    texted(client, "0")
    fake_http.requests.clear()
    for body in ("", "  ", "\n"):
        texted(client, body)
    assert _escalations(rt) == 0
    with rt.transaction() as s:
        conv = active_conversation(s, pid)
        assert (conv.current_node, conv.state["tries"]) == ("numbness", 0)
    # Each time the question again after it (no try used), so they see what to answer.
    numbness = rt.ctx.flows.get("checkin").node("numbness").text["en"]
    assert bodies(fake_http) == [_expected(rt, "blank"), numbness] * 3


def test_a_blank_message_outside_a_conversation_is_not_said_to_be_saved_for_the_team(
        client, rt, fake_http):
    enrol(rt)
    texted(client, " ")
    assert bodies(fake_http) == [_expected(rt, "blank")]
    with rt.transaction() as s:
        assert s.scalars(select(Message.status).where(Message.direction == "in")).one() \
            == "received"  # nothing in it to read


def test_the_blank_reply_is_plain_short_and_gives_the_hotline(rt):
    from bot.domain import gsm7
    from bot.services.context import readable_phone

    for language in ("en", "es"):
        text = rt.ctx.texts.render("blank", language, **{**rt.ctx.patient_values(None),
                                                         "name": "x" * 20})
        assert gsm7.is_gsm7(text) and gsm7.segments(text) <= 2
        assert readable_phone(rt.settings.clinic.acute_oncology_hotline) in text


# -- a NUL character -----------------------------------------------------------------------------

def test_a_nul_character_does_not_keep_a_red_flag_out_of_the_database(client, rt, fake_http):
    # PostgreSQL's text columns refuse U+0000: the message went to the local spool as if the
    # database were down, failed every replay, and the team was never alerted.
    enrol(rt)
    assert texted(client, "hello\x00 my legs gave way").status_code == 200
    assert rt.spool.pending() == []
    with rt.transaction() as s:
        assert s.scalars(select(Message.body).where(Message.direction == "in")).one() \
            == "hello my legs gave way"
    assert _escalations(rt) == 1


# -- flow files --------------------------------------------------------------------------------

def _lint_reminder_with(tmp_path, old: str, new: str) -> list[str]:
    from pathlib import Path

    from bot.domain.flow_lint import lint_paths

    shipped = Path(__file__).resolve().parents[1] / "flows"
    (tmp_path / "flow.yaml").write_text((shipped / "reminder.yaml").read_text()
                                        .replace(old, new))
    return lint_paths([tmp_path / "flow.yaml"],
                      variables_file=shipped / "variables.yaml").errors


def test_a_flow_id_too_long_for_a_message_kind_is_refused(tmp_path):
    # A message a flow writes is of the flow's kind (messages.kind, 20 characters): with a
    # longer id ("post_radiotherapy_reminder") the linter passed it, and on PostgreSQL every
    # message of the flow then failed to insert (the patient's keyword left unprocessed).
    assert _lint_reminder_with(tmp_path, "id: reminder", "id: appointment_reminder") == []
    errors = _lint_reminder_with(tmp_path, "id: reminder", "id: post_radiotherapy_reminder")
    assert errors and "at most 20 characters" in errors[0]


def test_a_node_id_or_answer_key_too_long_for_its_column_is_refused(tmp_path):
    long = "r" * 65  # conversations.current_node and answers.question_key: 64 characters
    assert _lint_reminder_with(tmp_path, "save: reminder_reply", "save: " + long)
    assert _lint_reminder_with(tmp_path, "thanks_done", long)
