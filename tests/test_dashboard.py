"""The care coordinators' dashboard (/dashboard), through Flask's test client."""

from __future__ import annotations

import html
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bot.domain.schedule import next_occurrence
from bot.services import escalations as esc_service
from bot.services.audit import audit
from bot.services.outbox import Draft, enqueue
from bot.services.patients import Enrolment, enrol_patient
from bot.services.schedules import save_schedule
from bot.store.models import (
    AuditLog,
    Conversation,
    Escalation,
    Message,
    OutboxItem,
    Patient,
    Schedule,
)
from tests.twilio_support import TWILIO_SETTINGS, fake_http  # noqa: F401 - fixture

TOKEN = "s3cret-admin-token"
CSRF_RE = re.compile(r'name="csrf" value="([^"]+)"')


# -- helpers ---------------------------------------------------------------------------------


def csrf_of(client, path: str = "/dashboard/login") -> str:
    res = client.get(path)
    match = CSRF_RE.search(res.get_data(as_text=True))
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client, name: str = "Jo", token: str | None = TOKEN):
    form = {"csrf": csrf_of(client), "name": name}
    if token is not None:
        form["token"] = token
    return client.post("/dashboard/login", data=form)


def post(client, path: str, **form):
    """A dashboard form, as the page sends it (with the CSRF token)."""
    return client.post(path, data={"csrf": csrf_of(client, "/dashboard/"), **form},
                       follow_redirects=True)


def page(client, path: str = "/dashboard/") -> str:
    res = client.get(path)
    assert res.status_code == 200, res.status_code
    return res.get_data(as_text=True)


def section(text: str, section_id: str) -> str:
    start = text.index(f'<section id="{section_id}"')
    return text[start:text.index("</section>", start)]


def enrol(rt, phone: str, name: str = "Ada Lovelace") -> int:
    with rt.transaction() as s:
        p = enrol_patient(s, Enrolment(phone, name, "Europe/London"), languages=["en", "es"],
                          now=rt.clock.now(), actor="test")
        p.consent_at = rt.clock.now()
        return p.id


def red_flag(rt, patient_id: int | None, level: str, words: str = "my legs gave way",
             phone: str | None = None) -> str:
    flags = ["limb_weakness"] if level == "emergency" else ["severe_pain"]
    with rt.transaction() as s:
        patient = s.get(Patient, patient_id) if patient_id else None
        esc, _ = esc_service.escalate(s, rt.ctx, patient, level, flags, words, rt.clock.now(),
                                      phone=phone)
        return esc.ref


def escalation(rt, ref: str) -> Escalation:
    with rt.transaction() as s:
        return s.scalars(select(Escalation).where(Escalation.ref == ref)).one()


def audits(rt, action: str) -> list[AuditLog]:
    with rt.transaction() as s:
        return list(s.scalars(select(AuditLog).where(AuditLog.action == action)
                              .order_by(AuditLog.id)))


def add_message(rt, patient_id: int | None, direction: str, body: str | None,
                status: str | None = None, phone: str = "+447700900123", **extra) -> int:
    now = rt.clock.now()
    with rt.transaction() as s:
        m = Message(patient_id=patient_id, direction=direction, channel="sms", address=phone,
                    body=body, kind="reply", status=status or (
                        "received" if direction == "in" else "delivered"),
                    created_at=now, updated_at=now, **extra)
        s.add(m)
        s.flush()
        return m.id


# -- access ----------------------------------------------------------------------------------


class TestWithAToken:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": TOKEN}

    def test_every_page_needs_a_sign_in(self, client):
        for path in ("/dashboard/", "/dashboard", "/dashboard/patients", "/dashboard/patients/1"):
            res = client.get(path)
            assert res.status_code == 303 and "/dashboard/login" in res.headers["Location"]
        assert 'name="token"' in page(client, "/dashboard/login")

    def test_a_wrong_token_is_refused_and_audited_without_the_token(self, client, rt, caplog):
        caplog.set_level(logging.INFO)
        res = sign_in(client, name="Mallory", token="not-the-token")
        assert res.status_code == 403
        assert "admin token is wrong" in res.get_data(as_text=True)
        assert client.get("/dashboard/").status_code == 303  # still not signed in
        [failed] = audits(rt, "dashboard.login_failed")
        assert failed.actor == "dashboard:Mallory"
        assert "not-the-token" not in repr(failed.details) + failed.actor
        assert "not-the-token" not in caplog.text
        assert audits(rt, "dashboard.login") == []

    def test_the_right_token_signs_in_with_a_strict_http_only_cookie(self, client, rt):
        res = sign_in(client, name="Nurse Jo")
        assert res.status_code == 303 and res.headers["Location"].endswith("/dashboard/")
        cookie = res.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert "Path=/dashboard" in cookie and "Secure" not in cookie  # plain http here
        text = page(client)
        assert "Needs attention" in text and "Signed in as Nurse Jo" in text
        [login] = audits(rt, "dashboard.login")
        assert login.actor == "dashboard:Nurse Jo"

    def test_over_https_the_cookie_is_secure(self, app):
        client = app.test_client()
        res = client.get("/dashboard/login", base_url="https://bot.example.org")
        assert "Secure" in res.headers["Set-Cookie"]

    @pytest.mark.parametrize(("base_url", "secure"), [
        ("http://bot.example.org", True),  # a TLS proxy in front: its public name, https
        ("http://BOT.example.org:8000", True),
        ("http://10.0.0.5:8000", False),  # reached on the inside, over plain http
    ])
    def test_behind_a_tls_proxy_without_proxy_fix_the_public_sites_cookie_is_secure(
            self, app, rt, base_url, secure):
        """CHECKIN_PUBLIC_URL says the bot is served over https at that name (the README
        asks for it with Twilio; CHECKIN_PROXY_FIX is optional): a cookie set on a request
        to that name is Secure even when the proxy's https is not passed on."""
        object.__setattr__(rt.settings, "public_url", "https://bot.example.org")
        res = app.test_client().get("/dashboard/login", base_url=base_url)
        assert ("Secure" in res.headers["Set-Cookie"]) is secure
        res = app.test_client().get("/dashboard/login", headers={"Host": "["})  # no host
        assert res.status_code == 200 and "Secure" not in res.headers["Set-Cookie"]

    def test_a_cookie_that_is_not_ours_is_ignored(self, client):
        client.set_cookie("checkin_dashboard", "eyJuYW1lIjoiRXZlIn0.forged.sig",
                          path="/dashboard")
        assert client.get("/dashboard/").status_code == 303

    def test_a_cookie_signed_with_another_token_is_ignored(self, client, rt):
        sign_in(client)
        assert client.get("/dashboard/").status_code == 200
        object.__setattr__(rt.settings, "admin_token", "a-new-token")  # the token was rotated
        assert client.get("/dashboard/").status_code == 303

    def test_log_out(self, client):
        sign_in(client)
        res = post(client, "/dashboard/logout")
        assert "Sign in" in res.get_data(as_text=True)
        assert client.get("/dashboard/").status_code == 303

    def test_a_copy_of_the_cookie_opens_nothing_after_log_out(self, app, client, rt):
        sign_in(client)
        copied = client.get_cookie("checkin_dashboard", path="/dashboard").value
        post(client, "/dashboard/logout")
        thief = app.test_client()
        thief.set_cookie("checkin_dashboard", copied, path="/dashboard")
        assert thief.get("/dashboard/").status_code == 303  # to the sign-in page
        with rt.transaction() as s:
            assert s.scalars(select(AuditLog.actor).where(
                AuditLog.action == "dashboard.logout")).all() == ["dashboard:Jo"]

    def test_rows_of_sessions_long_over_are_pruned_at_sign_in(self, app, client, rt, clock):
        from bot.store.models import DashboardSession
        from bot.web.dashboard import SESSION_SECONDS, SESSIONS_KEPT

        sign_in(client)
        clock.advance(seconds=SESSION_SECONDS + SESSIONS_KEPT.total_seconds() + 1)
        sign_in(app.test_client())
        with rt.transaction() as s:
            assert len(s.scalars(select(DashboardSession)).all()) == 1  # only the new one

    def test_a_session_ends_a_fixed_time_after_sign_in_however_busy(self, client, clock):
        from bot.web.dashboard import SESSION_SECONDS

        sign_in(client)
        for _ in range(3):  # in use all along: every page re-signs the cookie
            clock.advance(seconds=SESSION_SECONDS // 3 - 60)
            page(client)
        clock.advance(seconds=200)
        assert client.get("/dashboard/").status_code == 303

    def test_wrong_tokens_from_one_address_are_stopped_for_a_while(self, client, rt, clock):
        from bot.web import dashboard

        for _ in range(dashboard.LOGIN_FAILURES):
            assert sign_in(client, token="guess").status_code == 403
        res = sign_in(client)  # even the right token, for now
        assert res.status_code == 429 and "Too many wrong tokens" in res.get_data(as_text=True)
        with rt.transaction() as s:
            assert len(s.scalars(select(AuditLog).where(
                AuditLog.action == "dashboard.login_failed")).all()) == dashboard.LOGIN_FAILURES
        clock.advance(seconds=dashboard.LOGIN_WINDOW.total_seconds())
        assert sign_in(client).status_code == 303

    @pytest.mark.parametrize("target", ["/dashboard/../simulator", "/dashboard/../api/patients",
                                        "/dashboard/%2e%2e/simulator"])
    def test_after_sign_in_it_never_goes_outside_the_dashboard(self, client, target):
        form = {"csrf": csrf_of(client), "name": "Jo", "token": TOKEN, "next": target}
        assert client.post("/dashboard/login", data=form).headers["Location"].endswith(
            "/dashboard/")

    def test_after_sign_in_it_goes_back_to_the_page_asked_for_never_elsewhere(self, client):
        res = client.get("/dashboard/patients")
        assert "next=/dashboard/patients" in res.headers["Location"]
        form = {"csrf": csrf_of(client), "name": "Jo", "token": TOKEN,
                "next": "/dashboard/patients"}
        assert client.post("/dashboard/login", data=form).headers["Location"].endswith(
            "/dashboard/patients")
        form.update(next="https://evil.example.org/", csrf=csrf_of(client))  # a new one
        assert client.post("/dashboard/login", data=form).headers["Location"].endswith(
            "/dashboard/")


class TestTwilioWithoutAToken:
    @pytest.fixture
    def settings_overrides(self):
        return TWILIO_SETTINGS

    @pytest.fixture
    def messenger(self, fake_http):
        from bot.messaging.twilio_messenger import TwilioMessenger
        from tests.twilio_support import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER

        return TwilioMessenger.from_credentials(ACCOUNT_SID, AUTH_TOKEN, http_client=fake_http,
                                                from_number=FROM_NUMBER)

    def test_the_dashboard_is_off(self, client):
        for path in ("/dashboard/", "/dashboard/login", "/dashboard/patients"):
            res = client.get(path)
            assert res.status_code == 403
            assert "set CHECKIN_ADMIN_TOKEN" in res.get_data(as_text=True)
        assert client.post("/dashboard/login", data={"name": "Jo"}).status_code == 403


def test_without_a_token_on_the_dev_messenger_it_asks_only_for_a_name(client, rt):
    assert client.get("/dashboard/").status_code == 303
    login = page(client, "/dashboard/login")
    assert 'name="token"' not in login and 'name="name"' in login
    res = sign_in(client, name="   ", token=None)
    assert res.status_code == 400 and "Enter your name" in res.get_data(as_text=True)
    assert sign_in(client, name="Dev Dee", token=None).status_code == 303
    assert "Signed in as Dev Dee" in page(client)
    assert audits(rt, "dashboard.login")[0].actor == "dashboard:Dev Dee"


# -- needs attention -------------------------------------------------------------------------


@pytest.fixture
def signed_in(client, settings_overrides):
    sign_in(client, token=settings_overrides.get("admin_token"))
    return client


def test_an_empty_page_says_nothing_here_in_every_section(signed_in):
    text = page(signed_in)
    for sid in ("open", "acknowledged", "unprocessed", "to-read", "failed", "invalid",
                "abroad", "opted-out", "expired"):
        assert "Nothing here." in section(text, sid), sid
    assert "reloads itself every 30 seconds" in text
    assert '<meta http-equiv="refresh" content="30' in text


def test_the_health_reports_problems_come_first(signed_in):
    text = page(signed_in)  # no scheduler has ever run in a test
    assert "scheduler: has never run" in section(text, "problems")
    assert text.index('id="problems"') < text.index('id="open"')


def test_emergencies_come_first_oldest_first_then_urgent(signed_in, rt, clock):
    urgent = red_flag(rt, enrol(rt, "+447700900101", "Urgent Uma"), "urgent", "pain 8")
    clock.advance(minutes=10)
    first = red_flag(rt, enrol(rt, "+447700900102", "Em One"), "emergency")
    clock.advance(minutes=10)
    second = red_flag(rt, None, "emergency", phone="+447700900103")  # not enrolled
    clock.advance(minutes=5)
    text = section(page(signed_in), "open")
    assert text.index(first) < text.index(second) < text.index(urgent)
    card = text[text.index(second):text.index(urgent)]
    assert "not enrolled" in card and "+447700900103" in card
    first_card = text[text.index(first):text.index(second)]
    assert "Em One" in first_card and "+447700900102" in first_card
    assert "limb weakness" in first_card and "my legs gave way" in first_card
    assert "15 min ago" in first_card and "Alerts sent: 1" in first_card
    assert "Now alerting: On-call oncology nurse" in first_card


def test_the_number_to_call_is_a_readable_tap_to_call_link(signed_in, rt):
    """At 3 a.m. on a phone: the patient's number (or a number not enrolled) is a tel: link,
    grouped to read, on the red flag's card, its page, the patient's page and the list."""
    pid = enrol(rt, "+447700900123", "Ada Lovelace")
    ref = red_flag(rt, pid, "emergency")
    stranger = red_flag(rt, None, "emergency", phone="+447700900199")
    link = '<a class="phone" href="tel:+447700900123">+44 7700 900123</a>'
    call = '<a class="button call" href="tel:+447700900123">Call +44 7700 900123</a>'
    text = section(page(signed_in), "open")
    card = text[text.index(f'data-ref="{ref}"'):text.index(f'data-ref="{stranger}"')]
    assert link in card and call in card
    assert ('<a class="button call" href="tel:+447700900199">Call +44 7700 900199</a>'
            in text[text.index(f'data-ref="{stranger}"'):])
    text = page(signed_in, f"/dashboard/escalations/{ref}")
    assert link in text and call in text
    assert link in page(signed_in, f"/dashboard/patients/{pid}")
    assert link in page(signed_in, "/dashboard/patients")
    post(signed_in, f"/dashboard/escalations/{ref}/ack")
    assert call in section(page(signed_in), "acknowledged")  # taken: still to call


def test_the_card_says_who_is_alerted_next_and_when_and_when_that_is_overdue(signed_in, rt,
                                                                             clock):
    """"next contact 5 min ago" read as if the next contact had been alerted: it had not (the
    re-alert was overdue). Who comes next is named, and a time passed says overdue."""
    ref = red_flag(rt, enrol(rt, "+447700900123"), "emergency")
    clock.advance(minutes=3)

    def alerting() -> str:
        card = section(page(signed_in), "open")
        card = card[card.index(f'data-ref="{ref}"'):]
        return re.sub(r"\s+", " ", re.search(r"Now alerting:[^<]*", card).group(0)).strip()

    assert alerting() == "Now alerting: On-call oncology nurse; next: MSCC coordinator in 12 min."
    clock.advance(minutes=17)  # no re-alert has run (no scheduler here)
    assert alerting() == ("Now alerting: On-call oncology nurse; next: MSCC coordinator, "
                          "overdue by 5 min.")


def test_acknowledge_then_resolve_are_audited_with_the_signed_in_name(signed_in, rt, app,
                                                                     caplog):
    caplog.set_level(logging.DEBUG)
    ref = red_flag(rt, enrol(rt, "+447700900123"), "emergency", "I wet myself")
    text = post(signed_in, f"/dashboard/escalations/{ref}/ack").get_data(as_text=True)
    assert f"{ref} acknowledged by you (Jo)" in text
    assert ref in section(text, "acknowledged") and ref not in section(text, "open")
    esc = escalation(rt, ref)
    assert (esc.status, esc.acknowledged_by, esc.next_alert_at) == ("acknowledged", "Jo", None)
    [ack] = audits(rt, "escalation.ack")
    assert ack.actor == "dashboard:Jo" and ack.details == {"by": "Jo"}

    # Sam, in another browser, acknowledges the same one a moment later: nothing changes.
    sam = app.test_client()
    sign_in(sam, name="Sam")
    text = post(sam, f"/dashboard/escalations/{ref}/ack").get_data(as_text=True)
    assert f"{ref} was already acknowledged by Jo" in text and "Nothing was changed" in text
    esc = escalation(rt, ref)
    assert (esc.status, esc.acknowledged_by) == ("acknowledged", "Jo")
    [refused] = audits(rt, "escalation.ack_refused")
    assert refused.actor == "dashboard:Sam" and refused.details["acknowledged_by"] == "Jo"

    # Resolving needs a note.
    res = sam.post(f"/dashboard/escalations/{ref}/resolve",
                   data={"csrf": csrf_of(sam, "/dashboard/"), "note": "   "})
    assert res.status_code == 400 and "Write a note" in res.get_data(as_text=True)
    assert escalation(rt, ref).status == "acknowledged"
    assert ref in page(sam, f"/dashboard/escalations/{ref}")
    text = post(sam, f"/dashboard/escalations/{ref}/resolve",
                note="Called her; 999 sent.").get_data(as_text=True)
    assert f"{ref} resolved by you (Sam)" in text
    esc = escalation(rt, ref)
    assert (esc.status, esc.resolution_note, esc.acknowledged_by) == (
        "resolved", "Called her; 999 sent.", "Jo")
    [resolved] = audits(rt, "escalation.resolve")
    assert resolved.actor == "dashboard:Sam" and resolved.details["by"] == "Sam"
    assert ref not in section(text, "acknowledged")

    # Resolving it again: refused, says who and when; the first note stays.
    text = post(signed_in, f"/dashboard/escalations/{ref}/resolve",
                note="again").get_data(as_text=True)
    assert f"{ref} was already resolved by Sam" in text
    assert escalation(rt, ref).resolution_note == "Called her; 999 sent."
    assert audits(rt, "escalation.resolve_refused")[0].actor == "dashboard:Jo"
    # Names and refs only in the log: no phone numbers, no patients' words.
    assert "+447700900123" not in caplog.text and "wet myself" not in caplog.text


HIDDEN_RE = re.compile(r'<input type="hidden" name="([a-z]+)" value="([^"]*)">')


def hidden_fields(text: str) -> dict[str, str]:
    return {name: html.unescape(value) for name, value in HIDDEN_RE.findall(text)}


@pytest.mark.parametrize("cookie", ["still held", "dropped by the browser"])
def test_a_note_typed_as_the_sign_in_ran_out_is_kept_to_resolve_after_signing_in(
        signed_in, app, rt, clock, cookie):
    """Signed in at 15:00, resolving at 03:00: the session has ended (12 h). The note is not
    lost and nothing is saved: the sign-in page says so and holds it, and after signing in
    the red flag's page shows it, to resolve with one tap."""
    from bot.web.dashboard import SESSION_SECONDS

    ref = red_flag(rt, enrol(rt, "+447700900123"), "emergency")
    csrf = csrf_of(signed_in, f"/dashboard/escalations/{ref}")
    clock.advance(seconds=SESSION_SECONDS + 60)
    browser = signed_in if cookie == "still held" else app.test_client()
    note = 'Rang her: legs weak since 01:00. 999 called, "ambulance" on its way <A&E>'
    res = browser.post(f"/dashboard/escalations/{ref}/resolve",
                       data={"csrf": csrf, "note": note})
    text = res.get_data(as_text=True)
    assert res.status_code == 401
    assert ('<p class="flash error" role="alert" id="login-error">Your sign-in ran out before '
            f'this was saved, so {ref} is not resolved yet: sign in again and your note comes '
            'back to save.</p>') in text
    form = hidden_fields(text)
    assert (form["next"], form["note"]) == (f"/dashboard/escalations/{ref}", note)
    assert escalation(rt, ref).status == "open" and audits(rt, "escalation.resolve") == []

    res = browser.post("/dashboard/login", data={**form, "name": "Jo", "token": TOKEN})
    text = res.get_data(as_text=True)
    assert res.status_code == 200 and f"<h1>Red flag <span class=\"ref\">{ref}" in text
    kept = re.search(r'<textarea id="note" name="note" maxlength="2000" required>(.*?)'
                     r'</textarea>', text, re.S)
    assert html.unescape(kept.group(1)) == note
    assert "Not saved yet: check your note and press Resolve." in text
    assert escalation(rt, ref).status == "open"
    res = post(browser, f"/dashboard/escalations/{ref}/resolve", note=note)
    assert f"{ref} resolved by you (Jo)" in res.get_data(as_text=True)
    assert (escalation(rt, ref).status, escalation(rt, ref).resolution_note) == (
        "resolved", note)


def test_resolving_one_nobody_acknowledged_records_who_took_it(signed_in, rt):
    ref = red_flag(rt, enrol(rt, "+447700900123"), "urgent", "pain 9")
    post(signed_in, f"/dashboard/escalations/{ref}/resolve", note="Seen in clinic")
    esc = escalation(rt, ref)
    assert (esc.status, esc.acknowledged_by) == ("resolved", "Jo")


def test_a_post_without_the_csrf_token_is_400_and_changes_nothing(signed_in, rt):
    ref = red_flag(rt, enrol(rt, "+447700900123"), "emergency")
    message_id = add_message(rt, None, "in", "hello?", status="unprocessed")
    for form in ({}, {"csrf": "forged"}):
        res = signed_in.post(f"/dashboard/escalations/{ref}/ack", data=form)
        assert res.status_code == 400 and "Nothing was changed" in res.get_data(as_text=True)
        assert signed_in.post(f"/dashboard/escalations/{ref}/resolve",
                              data={**form, "note": "x"}).status_code == 400
        assert signed_in.post(f"/dashboard/messages/{message_id}/read",
                              data=form).status_code == 400
        assert signed_in.post("/dashboard/logout", data=form).status_code == 400
        assert signed_in.post("/dashboard/login",
                              data={**form, "name": "Eve"}).status_code == 400
    assert escalation(rt, ref).status == "open"
    with rt.transaction() as s:
        assert s.get(Message, message_id).status == "unprocessed"
    assert audits(rt, "escalation.ack") == [] and audits(rt, "inbound.read") == []
    assert "Signed in as Jo" in page(signed_in)


def _texted(rt, phone: str, body: str) -> None:
    """A patient's text through the bot's own inbound handling."""
    import uuid

    from bot.services.inbound import InboundMessage, handle_inbound_message

    with rt.transaction() as s:
        handle_inbound_message(s, rt.ctx, InboundMessage(
            "sms", phone, body, provider_id="SM" + uuid.uuid4().hex), rt.clock.now())


def test_free_text_the_patient_was_told_is_saved_for_the_team_is_listed_to_read(signed_in, rt):
    """"Your message has been saved for your care team" must mean someone sees it."""
    pid = enrol(rt, "+447700900123")
    _texted(rt, "+447700900123", "can you ring me please, I'm worried about my tablets")
    _texted(rt, "+447700900123", "CHECKIN")  # a keyword starts a flow: nothing to read
    with rt.transaction() as s:
        told = s.scalars(select(Message.kind).where(Message.direction == "out",
                                                    Message.patient_id == pid)).all()
    assert "received" in told
    text = section(page(signed_in), "to-read")
    assert "worried about my tablets" in text and "Ada Lovelace" in text
    assert "CHECKIN" not in text
    with rt.transaction() as s:
        message_id = s.scalars(select(Message.id).where(
            Message.body.like("%worried about my tablets%"))).one()
    text = post(signed_in, f"/dashboard/messages/{message_id}/read").get_data(as_text=True)
    assert f"Message {message_id} marked read by you (Jo)" in text
    assert "worried about my tablets" not in section(text, "to-read")
    [read] = audits(rt, "inbound.read")
    assert read.subject_id == str(message_id)


def test_the_patients_list_is_in_the_order_of_the_alphabet_whatever_the_case_or_accents(
        signed_in, rt):
    # Byte order (SQLite, PostgreSQL's C collation) put 'van Dijk' and 'Émile' after 'Zara'.
    for i, name in enumerate(["Zara Ali", "van Dijk, Anna", "Émile Zola", "Bob Ross",
                              "alice Hart"]):
        enrol(rt, f"+4477009001{i:02d}", name=name)
    listing = page(signed_in, "/dashboard/patients")
    shown = ["alice Hart", "Bob Ross", "Émile Zola", "van Dijk, Anna", "Zara Ali"]
    assert sorted(shown, key=listing.index) == shown


def test_the_patients_list_shows_their_last_message_and_whether_it_waits_to_be_read(
        signed_in, rt):
    enrol(rt, "+447700900123")
    with rt.transaction() as s:  # not consented yet
        enrol_patient(s, Enrolment("+447700900124", "Bea Quiet", "Europe/London"),
                      languages=["en", "es"], now=rt.clock.now(), actor="test")
    _texted(rt, "+447700900123", "first message")
    _texted(rt, "+447700900123", "please ring me about my tablets")
    text = page(signed_in, "/dashboard/patients")
    row = text[text.index("Ada Lovelace"):text.index("</tr>", text.index("Ada Lovelace"))]
    assert "please ring me about my tablets" in row and "(to read)" in row
    assert "first message" not in row
    quiet_row = text[text.index("Bea Quiet"):text.index("</tr>", text.index("Bea Quiet"))]
    assert "never" in quiet_row and "after consent" in quiet_row  # no check-in before YES


def test_the_transcript_says_when_a_held_message_was_sent(signed_in, rt, clock):
    from datetime import UTC, datetime

    from bot.services.outbox import PRIORITY_ROUTINE, Draft, enqueue

    pid = enrol(rt, "+447700900123")
    clock.set(datetime(2026, 3, 2, 23, 0, tzinfo=UTC))  # quiet hours in London
    with rt.transaction() as s:
        enqueue(s, Draft(to="+447700900123", channel="sms", body="Time for your check-in",
                         kind="checkin", routine=True, patient_id=pid,
                         priority=PRIORITY_ROUTINE), clock.now())
    rt.dispatcher.dispatch_due()
    clock.set(datetime(2026, 3, 3, 8, 0, tzinfo=UTC))
    assert rt.dispatcher.dispatch_due() == 1
    sign_in(signed_in, token=TOKEN)
    text = page(signed_in, f"/dashboard/patients/{pid}")
    assert "written then, sent Tue 03 Mar 08:00 GMT" in text


@pytest.mark.parametrize("path", ["/dashboard/patients/99999", "/dashboard/nonexistent",
                                  "/dashboard/escalations/ZZZZZ"])
def test_an_error_page_is_the_dashboards_own_with_who_is_signed_in(signed_in, path):
    res = signed_in.get(path)
    assert res.status_code == 404
    text = res.get_data(as_text=True)
    assert "Signed in as Jo" in text
    assert "Spine Oncology Clinic check-ins" in text  # the clinic's name in the title
    assert 'name="csrf" value=""' not in text  # Log out works from here too
    assert "Back to Needs attention" in text
    assert res.headers["Cache-Control"] == "no-store"
    assert "frame-ancestors 'none'" in res.headers["Content-Security-Policy"]


def test_an_error_page_for_someone_not_signed_in_shows_no_name(client):
    res = client.get("/dashboard/nonexistent")
    assert res.status_code == 404
    assert "Signed in as" not in res.get_data(as_text=True)


def test_a_late_answer_to_a_closed_check_in_is_listed_to_read(client, rt, clock,
                                                              settings_overrides):
    from bot.scheduler import tick
    from bot.services.conversations import start_flow

    pid = enrol(rt, "+447700900123")
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, pid), "checkin", clock.now())
    for _ in range(3):  # the reminder, then the check-in closes unanswered
        clock.advance(hours=25)
        tick(rt)
    with rt.transaction() as s:
        assert s.scalars(select(Conversation.status)).all() == ["completed"]
    _texted(rt, "+447700900123", "Sorry was asleep. Pain about 6")
    sign_in(client, token=settings_overrides.get("admin_token"))
    text = page(client)
    assert "Sorry was asleep" in section(text, "to-read")
    assert "wrote to us under a minute ago" in section(text, "expired")


def test_mark_read_as_the_cli_does(signed_in, rt, app, caplog):
    caplog.set_level(logging.DEBUG)
    pid = enrol(rt, "+447700900123")
    message_id = add_message(rt, pid, "in", "can I change my appointment to Friday",
                             status="unprocessed")
    stranger = add_message(rt, None, "in", "who is this", status="unprocessed",
                           phone="+447700900555")
    text = section(page(signed_in), "unprocessed")
    assert "can I change my appointment to Friday" in text and "Ada Lovelace" in text
    assert "not enrolled" in text and "+447700900555" in text
    text = post(signed_in, f"/dashboard/messages/{message_id}/read").get_data(as_text=True)
    assert f"Message {message_id} marked read by you (Jo)" in text
    assert "appointment to Friday" not in section(text, "unprocessed")
    assert "who is this" in section(text, "unprocessed")
    with rt.transaction() as s:
        assert s.get(Message, message_id).status == "read"
        assert s.get(Message, stranger).status == "unprocessed"
    [read] = audits(rt, "inbound.read")
    assert (read.actor, read.subject_id, read.details) == (
        "dashboard:Jo", str(message_id), {"by": "Jo"})
    other = app.test_client()
    sign_in(other, name="Sam")
    text = post(other, f"/dashboard/messages/{message_id}/read").get_data(as_text=True)
    assert f"Message {message_id} was already marked read by Jo" in text
    assert len(audits(rt, "inbound.read")) == 1
    assert "appointment" not in caplog.text and "+447700900123" not in caplog.text


def test_patient_text_and_names_are_escaped(signed_in, rt):
    evil_name = "<script>alert(1)</script>"
    evil_body = '<img src=x onerror="alert(2)"><b>bold</b>'
    pid = enrol(rt, "+447700900123", evil_name)
    red_flag(rt, pid, "emergency", evil_body)
    add_message(rt, pid, "in", evil_body, status="unprocessed")
    for path in ("/dashboard/", "/dashboard/patients", f"/dashboard/patients/{pid}"):
        text = page(signed_in, path)
        assert evil_name not in text and "<img src=x" not in text and "<b>bold" not in text
        assert html.escape(evil_name, quote=False) in text
        if path != "/dashboard/patients":
            assert "&lt;img src=x onerror=" in text
    res = signed_in.get("/dashboard/")
    assert "script-src" not in res.headers["Content-Security-Policy"]  # no script at all
    assert res.headers["Cache-Control"] == "no-store"


def test_the_patient_page_shows_the_transcript_oldest_first(signed_in, rt, clock):
    pid = enrol(rt, "+447700900123")
    add_message(rt, pid, "out", "Welcome to the check-ins", status="delivered")
    clock.advance(minutes=1)
    add_message(rt, pid, "in", "YES please")
    clock.advance(minutes=1)
    add_message(rt, pid, "out", "Thank you, Ada", status="failed", error_code=30003)
    with rt.transaction() as s:
        save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7, clock.now(),
                      "test")
    ref = red_flag(rt, pid, "urgent", "pain 8")
    text = page(signed_in, f"/dashboard/patients/{pid}")
    transcript = text[text.index('id="transcript"'):]
    assert (transcript.index("Welcome to the check-ins") < transcript.index("YES please")
            < transcript.index("Thank you, Ada"))
    assert "delivered" in transcript and "error 30003" in transcript
    assert "10:00 Europe/London, every week" in text
    assert ref in text
    listing = page(signed_in, "/dashboard/patients")
    assert "Ada Lovelace" in listing and "+447700900123" in listing
    assert "1 min ago" in listing  # her last message, "YES please"
    assert "none" not in listing.split("Ada Lovelace")[1]  # a next check-in is shown
    assert signed_in.get("/dashboard/patients/999").status_code == 404
    assert signed_in.get(f"/dashboard/patients/{2**40}").status_code == 404


def test_failures_invalid_numbers_opt_outs_and_unanswered_checkins(signed_in, rt, clock):
    now = clock.now()
    bad = enrol(rt, "+447700900201", "Bad Number")
    gone = enrol(rt, "+447700900202", "Gone Quiet")
    silent = enrol(rt, "+447700900203", "Silent Sid")
    old = enrol(rt, "+447700900204", "Old Stopper")
    message_id = add_message(rt, bad, "out", "Your weekly check-in", status="failed",
                             phone="+447700900201", error_code=21211)
    with rt.transaction() as s:
        s.add(OutboxItem(message_id=message_id, patient_id=bad, to="+447700900201",
                         channel="sms", kind="checkin", status="failed", attempts=1,
                         next_attempt_at=now, last_error="invalid number", created_at=now))
        s.get(Patient, bad).number_invalid_at = now
        for pid, at in ((gone, now - timedelta(days=2)), (old, now - timedelta(days=30))):
            s.get(Patient, pid).status = "opted_out"
            audit(s, at, f"patient:{pid}", "patient.opt_out", "patient", pid, keyword="stop")
        for node, status in (("no_reply_end", "completed"), ("thanks", "completed")):
            s.add(Conversation(patient_id=silent, flow_id="checkin", flow_revision=1,
                               current_node=node, state={"answers": {}}, status=status,
                               started_at=now - timedelta(days=2),
                               updated_at=now - timedelta(days=1)))
    text = page(signed_in)
    failed = section(text, "failed")
    assert "Bad Number" in failed and "21211" in failed and "checkin" in failed
    assert "Bad Number" in section(text, "invalid")
    opted = section(text, "opted-out")
    assert "Gone Quiet" in opted and "replied <strong" in opted and "Old Stopper" not in opted
    expired = section(text, "expired")
    assert "Silent Sid" in expired and expired.count("Silent Sid") == 1


def test_an_opt_out_shows_the_word_the_patient_sent(signed_in, rt):
    """STOP, CANCEL, BAJA, a Spanish CANCELAR...: the list of opt-outs says which word did it
    (as the opt-out's audit record keeps it), so a mistaken one can be spotted and followed up;
    the carrier's opt-out (21610) still says so."""
    sent = {"+447700900211": ("Rosa Baja", "¡Baja!", "BAJA"),
            "+447700900212": ("Carl Cancel", "cancelar", "CANCELAR"),
            "+447700900213": ("Eve English", "Stop", "STOP"),
            "+447700900214": ("Una Unsubscribe", "UNSUBSCRIBE", "UNSUBSCRIBE")}
    for phone, (name, _, _) in sent.items():
        enrol(rt, phone, name)
    carrier = enrol(rt, "+447700900215", "Cora Carrier")
    for phone, (_, body, _) in sent.items():
        res = signed_in.post("/simulator/api/messages", json={"phone": phone, "body": body})
        assert res.status_code == 201, res.get_json()
    with rt.transaction() as s:
        s.get(Patient, carrier).status = "opted_out"
        audit(s, rt.clock.now(), "system", "patient.opted_out", "patient", carrier,
              error_code=21610)
    opted = section(page(signed_in), "opted-out")
    cards = {card.split("</a>", 1)[0].rsplit(">", 1)[1]: card
             for card in opted.split('<div class="card">')[1:]}
    assert set(cards) == {name for name, _, _ in sent.values()} | {"Cora Carrier"}
    for name, _, word in sent.values():
        assert re.search(rf"replied <strong[^>]*>{word}</strong>", cards[name]), cards[name]
        assert "STOP" not in cards[name] or word == "STOP"
    assert "carrier: opted out" in cards["Cora Carrier"]
    assert "replied" not in cards["Cora Carrier"]


# -- enrolling patients and setting schedules ------------------------------------------------

ADA = {"phone": "+44 7700 900123", "name": "Ada Lovelace", "timezone": "Europe/London",
       "channel": "sms", "language": "en"}


def patients_stored(rt) -> list[Patient]:
    with rt.transaction() as s:
        return list(s.scalars(select(Patient).order_by(Patient.id)))


def schedules_of(rt, patient_id: int, active: bool = True) -> list[Schedule]:
    with rt.transaction() as s:
        return list(s.scalars(select(Schedule).where(
            Schedule.patient_id == patient_id, Schedule.active.is_(active))
            .order_by(Schedule.id)))


def error_of(text: str) -> tuple[str, str]:
    """The form's error: (the field it names, its text)."""
    match = re.search(r'<p class="flash error"(?: role="alert")? id="[a-z-]+-error" '
                      r'data-field="([a-z_]+)">([^<]*)<', text)
    assert match, "no form error on the page"
    return match.group(1), html.unescape(match.group(2))


def test_enrolling_a_patient_does_what_the_api_does(signed_in, rt, client, messenger, caplog):
    caplog.set_level(logging.DEBUG)
    assert 'href="/dashboard/patients/new"' in page(signed_in, "/dashboard/patients")
    form = page(signed_in, "/dashboard/patients/new")
    assert 'name="timezone" value="Europe/London"' in form  # the default, filled in
    assert '<option value="whatsapp">' in form and '<option value="es">' in form
    res = post(signed_in, "/dashboard/patients/new", **ADA)
    text = res.get_data(as_text=True)
    [patient] = patients_stored(rt)
    assert res.request.path == f"/dashboard/patients/{patient.id}"
    assert f"Patient {patient.id} enrolled by you (Jo)" in text and "<h1>Ada Lovelace</h1>" in text
    assert (patient.phone, patient.name, patient.timezone, patient.channel, patient.language,
            patient.status, patient.consent_at) == (
        "+447700900123", "Ada Lovelace", "Europe/London", "sms", "en", "active", None)
    [enrolled] = audits(rt, "patient.enrol")
    assert enrolled.actor == "dashboard:Jo" and enrolled.subject_id == str(patient.id)
    # The welcome went out (dispatched as the API does), and is in the transcript.
    welcome = [m.body for m in messenger.sent if m.to == "+447700900123"]
    assert welcome and "Reply YES to agree" in welcome[-1]
    assert "Reply YES to agree" in section_of_transcript(text)

    # The same enrolment through the API: the same patient, the same welcome, the same audit.
    res = client.post("/api/patients", json={**ADA, "phone": "+44 7700 900124"},
                      headers={"X-Actor": "sam"})
    assert res.status_code == 201
    assert [m.body for m in messenger.sent if m.to == "+447700900124"] == welcome
    by_api = audits(rt, "patient.enrol")[1]
    assert by_api.actor == "api:sam" and by_api.details == enrolled.details
    with rt.transaction() as s:
        statuses = s.scalars(select(OutboxItem.status)).all()
    assert statuses == ["sent"] * 2 * len(welcome)
    assert "+447700900123" not in caplog.text and "Ada Lovelace" not in caplog.text


def section_of_transcript(text: str) -> str:
    return text[text.index('id="transcript"'):]


@pytest.mark.parametrize(("changes", "field", "says"), [
    ({"phone": "12345"}, "phone", "Phone: '12345' has the wrong number of digits"),
    ({"phone": "seven"}, "phone", "Phone: 'seven' is not a phone number (e.g. 07400 123456"),
    ({"phone": "+44 20 7946 0958 ext. 12"}, "phone", "has an extension"),
    ({"phone": "   "}, "phone", "Phone: required"),
    ({"timezone": "Mars/Olympus"}, "timezone", "Timezone: unknown timezone 'Mars/Olympus'"),
    ({"timezone": "Europe"}, "timezone", "unknown timezone"),
    ({"channel": "pigeon"}, "channel", "Channel: must be one of sms, whatsapp"),
    ({"language": "fr"}, "language", "Language: must be one of en, es"),
    ({"name": "Ada\x00Lovelace"}, "name", "Name: contains a control character (U+0000)"),
    ({"name": "A" * 81}, "name", "Name: must be 1 to 80 characters"),
])
def test_bad_enrolment_input_shows_the_form_again_naming_the_field(signed_in, rt, changes,
                                                                   field, says):
    res = signed_in.post("/dashboard/patients/new",
                         data={"csrf": csrf_of(signed_in, "/dashboard/"), **ADA, **changes})
    text = res.get_data(as_text=True)
    assert res.status_code == 400
    named, message = error_of(text)
    assert named == field and says in message and "Nothing was stored" in message
    assert f'name="{field}"' in text and 'aria-invalid="true"' in text
    for key, value in {**ADA, **changes}.items():  # what was typed is kept
        if key not in ("channel", "language") and value.strip() and "\x00" not in value:
            assert f'value="{html.escape(value)}"' in text, key
    assert patients_stored(rt) == [] and audits(rt, "patient.enrol") == []


def test_a_number_already_enrolled_is_refused(signed_in, rt, messenger):
    enrol(rt, "+447700900123", "Ada Lovelace")
    for phone in ("+44 7700 900123", "+447700900123", " +44 (0)7700-900-123 "):
        res = signed_in.post("/dashboard/patients/new", data={
            "csrf": csrf_of(signed_in, "/dashboard/"), **ADA, "phone": phone,
            "name": "Someone Else"})
        assert res.status_code == 400
        text = res.get_data(as_text=True)
        assert error_of(text) == (
            "phone", "Phone: a patient with this number is already enrolled. Nothing was stored.")
        assert 'value="Someone Else"' in text and f'value="{phone}"' in text
    assert [p.name for p in patients_stored(rt)] == ["Ada Lovelace"]
    assert len(audits(rt, "patient.enrol")) == 1 and messenger.sent == []


def test_a_number_enrolled_at_the_same_moment_elsewhere_is_refused_not_a_500(signed_in, rt,
                                                                             monkeypatch):
    # Another coordinator's enrolment commits between the service's check and the insert:
    # the unique index refuses it, and the form says so.
    import bot.services.patients as patients_service

    enrol(rt, "+447700900123", "Ada Lovelace")
    monkeypatch.setattr(patients_service, "find_patient", lambda session, phone: None)
    res = signed_in.post("/dashboard/patients/new",
                         data={"csrf": csrf_of(signed_in, "/dashboard/"), **ADA})
    assert res.status_code == 400
    assert error_of(res.get_data(as_text=True))[0] == "phone"
    assert "already enrolled" in error_of(res.get_data(as_text=True))[1]
    assert len(patients_stored(rt)) == 1 and len(audits(rt, "patient.enrol")) == 1


def test_dashboard_posts_need_the_csrf_token_and_a_sign_in(signed_in, rt, app):
    pid = enrol(rt, "+447700900123")
    with rt.transaction() as s:
        schedule_id = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7,
                                    rt.clock.now(), "test").schedule.id
    for form in ({}, {"csrf": "forged"}):
        res = signed_in.post("/dashboard/patients/new",
                             data={**form, **ADA, "phone": "+447700900124"})
        assert res.status_code == 400 and "Nothing was changed" in res.get_data(as_text=True)
        assert signed_in.post(f"/dashboard/patients/{pid}/schedules", data={
            **form, "flow": "checkin", "at": "14:00", "every_days": "7"}).status_code == 400
        assert signed_in.post(f"/dashboard/patients/{pid}/schedules", data={
            **form, "flow": "reminder", "reminder_text": "tablets", "at": "09:00",
            "every_days": "1"}).status_code == 400
        assert signed_in.post(f"/dashboard/schedules/{schedule_id}/remove",
                              data=form).status_code == 400
    # A browser that never signed in (its CSRF token from the sign-in page) is sent there.
    stranger = app.test_client()
    csrf = csrf_of(stranger)
    res = stranger.post("/dashboard/patients/new",
                        data={"csrf": csrf, **ADA, "phone": "+447700900124"})
    assert res.status_code == 303 and res.headers["Location"].endswith("/dashboard/login")
    res = stranger.post(f"/dashboard/schedules/{schedule_id}/remove", data={"csrf": csrf})
    assert res.status_code == 303
    assert stranger.get("/dashboard/patients/new").status_code == 303
    assert [p.id for p in patients_stored(rt)] == [pid]
    [sc] = schedules_of(rt, pid)
    assert (sc.id, sc.local_time, sc.every_days) == (schedule_id, "10:00", 7)
    assert [a.action for a in audits(rt, "schedule.change") + audits(rt, "schedule.remove")
            ] == []


def test_set_and_change_the_checkin_as_the_service_does(signed_in, rt, clock, caplog):
    caplog.set_level(logging.DEBUG)
    pid = enrol(rt, "+447700900123")
    text = page(signed_in, f"/dashboard/patients/{pid}")
    assert 'id="checkin-at" name="at" value="10:00"' in text  # the default, filled in
    assert "Set check-in" in text
    res = post(signed_in, f"/dashboard/patients/{pid}/schedules", flow="checkin", at="14:00",
               every_days="7")
    text = res.get_data(as_text=True)
    assert res.request.path == f"/dashboard/patients/{pid}"
    [sc] = schedules_of(rt, pid)
    assert (sc.flow_id, sc.local_time, sc.every_days, sc.params) == ("checkin", "14:00", 7, {})
    due = next_occurrence(clock.now(), "Europe/London", "14:00", 7)
    assert sc.next_due_at == due
    assert 'class="flash ok"' in text
    assert "Check-in set by you (Jo): 14:00 in the patient&#39;s zone, every week on Mondays. " \
           "Next: Mon 02 Mar 14:00 GMT." in text
    assert "14:00 Europe/London, every week" in text
    assert 'id="checkin-at" name="at" value="14:00"' in text and "Change check-in" in text
    [added] = audits(rt, "schedule.add")
    assert added.actor == "dashboard:Jo" and added.subject_id == str(sc.id)
    assert added.details == {"patient_id": pid, "flow": "checkin", "at": "14:00",
                             "every_days": 7}

    # A time in quiet hours: saved, replacing the check-in, with the service's warning shown.
    text = post(signed_in, f"/dashboard/patients/{pid}/schedules", flow="checkin", at="22:30",
                every_days="14").get_data(as_text=True)
    [changed] = schedules_of(rt, pid)
    assert (changed.id, changed.local_time, changed.every_days) == (sc.id, "22:30", 14)
    assert changed.next_due_at == next_occurrence(clock.now(), "Europe/London", "22:30", 14)
    assert 'class="flash warn"' in text
    flash = html.unescape(text[text.index('id="flash"'):text.index("</p>",
                                                                    text.index('id="flash"'))])
    assert "Check-in changed by you (Jo): 22:30" in flash
    assert "It replaced 14:00 every week." in flash
    assert ("Warning: 22:30 is inside quiet hours (21:00 to 08:00): the messages will wait "
            "until 08:00 in the patient's zone.") in flash
    [change] = audits(rt, "schedule.change")
    assert change.actor == "dashboard:Jo"
    assert change.details["before"]["at"] == "14:00" and change.details["after"]["at"] == "22:30"
    assert "+447700900123" not in caplog.text


@pytest.mark.parametrize(("form", "field", "says"), [
    ({"at": "25:00"}, "at", "Time: expected HH:MM, got '25:00'"),
    ({"at": "noon"}, "at", "Time: expected HH:MM"),
    ({"at": ""}, "at", "Time: required"),
    ({"every_days": "0"}, "every_days", "Every N days: must be a whole number from 1 to 366"),
    ({"every_days": "1.5"}, "every_days", "Every N days: must be a whole number"),
    ({"every_days": "999"}, "every_days", "Every N days: must be a whole number"),
    ({"flow": "welcome"}, "flow", "cannot be scheduled"),
    ({"flow": "reminder", "reminder_text": "  "}, "reminder_text",
     "Reminder text: required for the reminder flow"),
    ({"flow": "reminder", "reminder_text": "x" * 101}, "reminder_text", "at most 100"),
    ({"flow": "reminder", "reminder_text": "tablets\x07"}, "reminder_text",
     "control character (U+0007)"),
])
def test_bad_schedule_input_shows_the_form_again_and_changes_nothing(signed_in, rt, form,
                                                                    field, says):
    pid = enrol(rt, "+447700900123")
    values = {"flow": "checkin", "at": "14:00", "every_days": "7", **form}
    res = signed_in.post(f"/dashboard/patients/{pid}/schedules",
                         data={"csrf": csrf_of(signed_in, "/dashboard/"), **values})
    text = res.get_data(as_text=True)
    assert res.status_code == 400
    named, message = error_of(text)
    assert named == field and says in message and "Nothing was changed" in message
    box = "reminder-form" if values["flow"] == "reminder" else "checkin-form"
    assert f'id="{box.replace("form", "error")}"' in text
    if field in ("at", "every_days"):
        assert 'aria-invalid="true"' in text and f'value="{values[field]}"' in text
    assert schedules_of(rt, pid) == [] and audits(rt, "schedule.add") == []


def test_a_checkin_from_a_first_day_keeps_its_weekday_on_the_page(signed_in, rt, clock):
    pid = enrol(rt, "+447700900123")  # the clock: Monday 2 March 2026, 10:00 London
    text = page(signed_in, f"/dashboard/patients/{pid}")
    assert 'id="checkin-first-day" name="first_day" value=""' in text
    assert '<option value="monday">' in text
    text = post(signed_in, f"/dashboard/patients/{pid}/schedules", flow="checkin", at="14:00",
                every_days="7", first_day="Thursday").get_data(as_text=True)
    [sc] = schedules_of(rt, pid)
    assert sc.next_due_at == datetime(2026, 3, 5, 14, 0, tzinfo=UTC)
    assert "Next: Thu 05 Mar 14:00 GMT." in html.unescape(text)
    assert "14:00 Europe/London, every week on Thursdays" in text
    [added] = audits(rt, "schedule.add")
    assert added.actor == "dashboard:Jo" and added.details["first_day"] == "Thursday"
    text = post(signed_in, f"/dashboard/patients/{pid}/schedules", flow="reminder",
                reminder_text="Take your tablets", at="09:00", every_days="1",
                first_day="2026-03-09").get_data(as_text=True)
    reminder = next(sc for sc in schedules_of(rt, pid) if sc.flow_id == "reminder")
    assert reminder.next_due_at == datetime(2026, 3, 9, 9, 0, tzinfo=UTC)
    assert "09:00 Europe/London, every day</td>" in text  # no weekday: not whole weeks


@pytest.mark.parametrize(("flow", "typed", "says"), [
    ("checkin", "someday", "First day: expected a weekday"),
    ("checkin", "2026-03-01", "First day: 2026-03-01 is in the past"),
    ("reminder", "2026-02-30", "First day: expected a weekday"),
])
def test_a_bad_first_day_shows_the_form_again_as_typed(signed_in, rt, flow, typed, says):
    pid = enrol(rt, "+447700900123")
    values = {"flow": flow, "at": "14:00", "every_days": "7", "first_day": typed}
    if flow == "reminder":
        values["reminder_text"] = "Take your tablets"
    res = signed_in.post(f"/dashboard/patients/{pid}/schedules",
                         data={"csrf": csrf_of(signed_in, "/dashboard/"), **values})
    text = res.get_data(as_text=True)
    assert res.status_code == 400
    named, message = error_of(text)
    assert named == "first_day" and says in message
    assert (f'id="{flow}-first-day" name="first_day" value="{typed}" list="weekdays" '
            f'autocomplete="off" aria-invalid="true"') in text
    assert schedules_of(rt, pid) == [] and audits(rt, "schedule.add") == []


def test_a_schedule_abroad_shows_its_next_time_in_the_patients_zone_and_the_clinics(
        signed_in, rt, clock):
    # Monday 2 March 2026, 12:00 GMT: 07:00 in New York (EST).
    pid = enrol(rt, "+447700900123")
    with rt.transaction() as s:
        s.get(Patient, pid).timezone = "America/New_York"
    text = html.unescape(post(signed_in, f"/dashboard/patients/{pid}/schedules",
                              flow="checkin", at="22:00", every_days="7").get_data(as_text=True))
    [sc] = schedules_of(rt, pid)
    assert sc.next_due_at == next_occurrence(clock.now(), "America/New_York", "22:00", 7)
    # 22:00 their time, as set, not the clinic's 03:00 the next day alone.
    assert "Next: Mon 02 Mar 22:00 EST (Tue 03 Mar 03:00 GMT)." in text
    row = text[text.index(f'data-id="{sc.id}"'):]
    row = row[:row.index("</tr>")]
    assert "Mon 02 Mar 22:00 EST (Tue 03 Mar 03:00 GMT)" in row
    # The patients list says the same.
    listed = html.unescape(page(signed_in, "/dashboard/patients"))
    assert "Mon 02 Mar 22:00 EST (Tue 03 Mar 03:00 GMT)" in listed
    # A patient in the clinic's zone: one time, as before.
    other = enrol(rt, "+447700900124")
    text = post(signed_in, f"/dashboard/patients/{other}/schedules", flow="checkin", at="22:00",
                every_days="7").get_data(as_text=True)
    assert "Next: Mon 02 Mar 22:00 GMT." in text


def test_add_a_reminder_and_remove_schedules(signed_in, rt, clock, app):
    pid = enrol(rt, "+447700900123")
    with rt.transaction() as s:
        checkin = save_schedule(s, rt.ctx, s.get(Patient, pid), "checkin", "10:00", 7,
                                clock.now(), "test").schedule.id
    text = post(signed_in, f"/dashboard/patients/{pid}/schedules", flow="reminder",
                reminder_text="Take your morning tablets", at="08:30",
                every_days="1").get_data(as_text=True)
    assert "Reminder added by you (Jo): 08:30" in text and "Warning" not in text
    reminder = next(sc for sc in schedules_of(rt, pid) if sc.flow_id == "reminder")
    assert (reminder.local_time, reminder.every_days, reminder.params) == (
        "08:30", 1, {"reminder_text": "Take your morning tablets"})
    assert reminder.next_due_at == next_occurrence(clock.now(), "Europe/London", "08:30", 1)
    assert '"Take your morning tablets"' in text and "08:30 Europe/London, every day" in text
    assert audits(rt, "schedule.add")[-1].actor == "dashboard:Jo"
    # A second reminder at another time is another schedule; the check-in stays.
    post(signed_in, f"/dashboard/patients/{pid}/schedules", flow="reminder",
         reminder_text="Take your evening tablets", at="20:00", every_days="1")
    assert [sc.flow_id for sc in schedules_of(rt, pid)] == ["checkin", "reminder", "reminder"]

    text = post(signed_in, f"/dashboard/schedules/{reminder.id}/remove").get_data(as_text=True)
    assert f"Schedule {reminder.id} (reminder) removed by you (Jo)" in text
    assert "morning tablets" not in text and "evening tablets" in text
    assert [sc.id for sc in schedules_of(rt, pid, active=False)] == [reminder.id]
    [removed] = audits(rt, "schedule.remove")
    assert (removed.actor, removed.subject_id) == ("dashboard:Jo", str(reminder.id))
    # Removing it again (another coordinator, a second click): nothing changes, says who.
    sam = app.test_client()
    sign_in(sam, name="Sam", token=None)
    text = post(sam, f"/dashboard/schedules/{reminder.id}/remove").get_data(as_text=True)
    assert f"Schedule {reminder.id} was already removed by Jo" in text
    assert "Nothing was changed" in text and len(audits(rt, "schedule.remove")) == 1
    post(signed_in, f"/dashboard/schedules/{checkin}/remove")
    assert [sc.flow_id for sc in schedules_of(rt, pid)] == ["reminder"]
    assert "none" in page(signed_in, "/dashboard/patients").split("Ada Lovelace")[1]
    res = signed_in.post("/dashboard/schedules/999/remove",
                         data={"csrf": csrf_of(signed_in, "/dashboard/")})
    assert res.status_code == 404
    res = signed_in.post("/dashboard/patients/999/schedules",
                         data={"csrf": csrf_of(signed_in, "/dashboard/"), "at": "10:00",
                               "every_days": "7"})
    assert res.status_code == 404


def test_a_coordinator_corrects_a_patients_details_and_pauses_them(signed_in, rt):
    pid = enrol(rt, "+447700900123", name="Mrs Ada Lovelace")
    text = post(signed_in, f"/dashboard/patients/{pid}/details", name="Ada Lovelace",
                timezone="america/new_york", channel="sms", language="en").get_data(as_text=True)
    assert "Changed by you (Jo): name Mrs Ada Lovelace -&gt; Ada Lovelace" in text
    assert "timezone Europe/London -&gt; America/New_York" in text
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        assert (p.name, p.timezone) == ("Ada Lovelace", "America/New_York")
    [update] = audits(rt, "patient.update")
    assert update.actor == "dashboard:Jo"

    bad = signed_in.post(f"/dashboard/patients/{pid}/details", data={
        "csrf": csrf_of(signed_in, "/dashboard/"), "name": "Ada", "timezone": "GMT",
        "channel": "sms", "language": "en"})
    assert bad.status_code == 400
    body = bad.get_data(as_text=True)
    assert 'id="details-error"' in body and "Nothing was changed" in body
    assert 'value="GMT"' in body  # the form as typed, to fix
    with rt.transaction() as s:
        assert s.get(Patient, pid).timezone == "America/New_York"

    text = post(signed_in, f"/dashboard/patients/{pid}/details", action="pause").get_data(
        as_text=True)
    assert "status active -&gt; paused" in text and 'id="resume"' in text
    text = post(signed_in, f"/dashboard/patients/{pid}/details", action="resume").get_data(
        as_text=True)
    assert "status paused -&gt; active" in text


def test_a_coordinator_changes_a_patients_phone_number(signed_in, rt):
    pid = enrol(rt, "+447700900123")
    other = enrol(rt, "+447700900456", name="Bob Byron")
    with rt.transaction() as s:  # written, not sent yet: goes to the new number
        item = enqueue(s, Draft(to="+447700900123", channel="sms", body="How are you?",
                                kind="checkin", routine=True, patient_id=pid), rt.clock.now())
        item_id = item.id
    assert 'id="details-phone"' in page(signed_in, f"/dashboard/patients/{pid}")
    form = {"name": "Ada Lovelace", "timezone": "Europe/London", "channel": "sms",
            "language": "en"}
    for number, words in (("+44 7700 900456", "already enrolled"),
                          ("+44 20 7946 0123", "is a landline"),
                          ("", "required")):
        bad = signed_in.post(f"/dashboard/patients/{pid}/details", data={
            "csrf": csrf_of(signed_in, "/dashboard/"), "phone": number, **form})
        assert bad.status_code == 400
        body = html.unescape(bad.get_data(as_text=True))
        assert 'data-field="phone"' in body and words in body and "Nothing was changed" in body
        assert f'value="{number}"' in body  # the form as typed, to fix
    with rt.transaction() as s:
        assert s.get(Patient, pid).phone == "+447700900123"
        assert s.get(Patient, other).phone == "+447700900456"
    assert audits(rt, "patient.update") == []

    text = post(signed_in, f"/dashboard/patients/{pid}/details", phone="+44 7700 900789",
                **form).get_data(as_text=True)
    assert "Changed by you (Jo): phone +447700900123 -&gt; +447700900789." in text
    assert "1 message(s) not sent yet now go to the new number" in text
    with rt.transaction() as s:
        assert s.get(Patient, pid).phone == "+447700900789"
        assert s.get(OutboxItem, item_id).to == "+447700900789"
    [update] = audits(rt, "patient.update")
    assert update.actor == "dashboard:Jo" and update.details["changes"] == {
        "phone": {"from": "+447700900123", "to": "+447700900789"}}


def test_a_patient_who_opted_out_cannot_be_resumed_from_the_dashboard(signed_in, rt):
    pid = enrol(rt, "+447700900123")
    with rt.transaction() as s:
        s.get(Patient, pid).status = "opted_out"
    text = post(signed_in, f"/dashboard/patients/{pid}/details", action="resume").get_data(
        as_text=True)
    assert "only the patient can opt back in" in text and "Nothing was changed" in text
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "opted_out"


@pytest.mark.parametrize(("form_id", "action", "form", "says"), [
    ("checkin-form", "schedules", {"flow": "checkin", "at": "25:00", "every_days": "7"},
     "Time: expected HH:MM, got '25:00'"),
    ("reminder-form", "schedules", {"flow": "reminder", "reminder_text": "x" * 101,
                                    "at": "09:00", "every_days": "1"}, "at most 100"),
    ("details-form", "details", {**ADA, "phone": "12345"},
     "Phone: '12345' has the wrong number of digits"),
    ("discharge-form", "discharge", {"reason": "   "}, "Reason: must be 1 to"),
])
def test_a_form_refused_on_a_patients_page_says_so_at_the_top(signed_in, rt, form_id, action,
                                                               form, says):
    """A patient's forms are far down the page (further on a phone): a refused one is said in
    the flash area at the top, where the page opens, with a link to the form to correct it;
    the form keeps its own message and the values typed."""
    pid = enrol(rt, "+447700900123")
    res = signed_in.post(f"/dashboard/patients/{pid}/{action}",
                         data={"csrf": csrf_of(signed_in, "/dashboard/"), **form})
    assert res.status_code == 400
    text = res.get_data(as_text=True)
    top = text[text.index("<main>"):text.index("<h1>")]
    alert = re.search(r'<p class="flash error" role="alert" id="form-alert">(.*?)</p>', top,
                      re.DOTALL)
    assert alert, top
    said = html.unescape(alert.group(1))
    assert says in said and "Nothing was changed" in said
    assert f'<a href="#{form_id}"' in said
    assert says in error_of(text)[1]  # and beside the field, in the form
    assert f'id="{form_id}"' in text
    # Said once to a screen reader: the top one is the alert, the form's own is not (two
    # role="alert" were both read out as the page opened).
    assert text.count('role="alert"') == 1 and 'role="alert" id="form-alert"' in text
    with rt.transaction() as s:
        assert s.get(Patient, pid).status == "active" and s.get(Patient, pid).phone == \
            "+447700900123"
    assert schedules_of(rt, pid) == []
    # The next page is the patient's own again, without it.
    assert 'id="form-alert"' not in page(signed_in, f"/dashboard/patients/{pid}")


LONG_MESSAGE = (
    "Hello, sorry to write so much, I know you are all busy. " * 6
    + "The district nurse came on Tuesday and changed the dressing, and my daughter has been "
      "staying with me since the weekend, which helps a lot with the shopping and the dog. "
    + "I have been sleeping badly and the tablets make me feel a bit sick in the mornings, "
      "so I take them with toast now as the pharmacist said. " * 2
    + "I also wanted to ask about my next appointment, the letter said the 14th but the "
      "phone message said the 16th, so I am not sure which one it is. Anyway I went to stand "
      "up from the sofa this morning to let the dog out and my legs gave way")


def test_a_long_message_is_quoted_around_its_red_flag_on_the_first_page(signed_in, rt):
    """A red flag's card on the first page quotes a long message around the words that raised
    it, as the SMS alert does (quote_around_flags), not whole: on a phone a message of 1,000
    characters would push the Call button off the first screen. The whole message is one tap
    away on the card (a <details>), and whole on the red flag's own page."""
    from bot.web.dashboard import CARD_WORDS_CHARS

    assert 950 <= len(LONG_MESSAGE) <= 1100
    pid = enrol(rt, "+447700900123")
    ref = red_flag(rt, pid, "emergency", words=LONG_MESSAGE)
    short = red_flag(rt, enrol(rt, "+447700900124", "Bob Byron"), "emergency",
                     words="my legs gave way")
    card = section(page(signed_in), "open")
    card = card[card.index(f'data-ref="{ref}"'):]
    card = card[:card.index('<div class="card', 1)] if '<div class="card' in card[1:] else card
    shown = re.search(r'<div class="words excerpt">([^<]*)</div>', card)
    assert shown, card
    excerpt = html.unescape(shown.group(1))
    assert "my legs gave way" in excerpt and excerpt.startswith("...")
    assert len(excerpt) <= CARD_WORDS_CHARS
    assert excerpt == esc_service.quote_around_flags(
        LONG_MESSAGE, {"limb_weakness"}, rt.ctx.vocabulary, CARD_WORDS_CHARS)
    whole = re.search(r"<details[^>]*>\s*<summary>([^<]*)</summary>\s*"
                      r'<div class="words">([^<]*)</div>', card)
    assert whole, card
    assert f"{len(LONG_MESSAGE)} characters" in whole.group(1)
    assert html.unescape(whole.group(2)) == LONG_MESSAGE
    # A message short enough is shown whole, as before, with nothing to open.
    other = section(page(signed_in), "open")
    other = other[other.index(f'data-ref="{short}"'):]
    assert '<div class="words">my legs gave way</div>' in other.split("</div>\n</div>")[0]
    assert "<details" not in other.split("</div>\n</div>")[0]
    # The red flag's page has it whole.
    assert html.escape(LONG_MESSAGE, quote=False) in page(signed_in, f"/dashboard/escalations/{ref}")
    # Acknowledged, it is quoted the same way there.
    with rt.transaction() as s:
        esc_service.acknowledge(s, ref, "Jo", rt.clock.now(), actor="test")
    taken = section(page(signed_in), "acknowledged")
    assert f'<div class="words excerpt">{html.escape(excerpt, quote=False)}</div>' in taken


@pytest.mark.parametrize(("utc_time", "zone", "held", "goes"), [
    ((10, 0), "Europe/London", False, None),  # 10:00 in London: not quiet hours
    ((17, 34), "Europe/London", False, None),
    ((23, 0), "Europe/London", True, "Tue 03 Mar 08:00 GMT"),  # 23:00: held until 08:00
    ((10, 0), "America/New_York", True, "Mon 02 Mar 08:00 EST (Mon 02 Mar 13:00 GMT)"),
    ((23, 30), "Asia/Tokyo", False, None),  # 08:30 in Tokyo while the clinic sleeps
])
def test_the_enrolment_says_after_quiet_hours_only_when_the_welcome_waits_for_them(
        client, settings_overrides, rt, clock, messenger, utc_time, zone, held, goes):
    """The welcome is routine: the dispatcher holds it while it is quiet hours in the
    patient's zone. The confirmation says it waits (and until when) only then; otherwise that
    it is on its way."""
    clock.set(datetime(2026, 3, 2, *utc_time, tzinfo=UTC))
    signed_in = sign_in(client, token=settings_overrides.get("admin_token")) and client
    text = html.unescape(post(signed_in, "/dashboard/patients/new",
                              **{**ADA, "timezone": zone}).get_data(as_text=True))
    flash = text[text.index('id="flash"'):]
    flash = flash[:flash.index("</p>")]
    assert "enrolled by you (Jo)" in flash
    sent = [m for m in messenger.sent if m.to == "+447700900123"]
    if held:
        assert "waits for the end of quiet hours in their zone" in flash
        assert f"goes {goes}" in flash and "on its way" not in flash
        assert sent == []  # the dispatcher held it, as the page said
    else:
        assert "is on its way." in flash and "quiet hours" not in flash
        assert sent and "Reply YES to agree" in sent[-1].body


def _message_card(text: str, message_id: int) -> str:
    """The card of one message on the first page (up to the next card or the section's end)."""
    card = text[text.index(f'data-message="{message_id}"'):]
    return card[:card.index('<div class="card', 1)] if '<div class="card' in card[1:] else card


def test_a_long_message_to_read_or_not_handled_is_quoted_short_on_its_card(signed_in, rt):
    """The cards of messages the bot could not handle and of messages to read printed a
    message of 1,000 characters whole, pushing their buttons (and every card below) off a
    phone's screen. As a red flag's card, they now quote it (at most CARD_WORDS_CHARS, around
    any red-flag words, else its start), the whole one tap away on the card and, for an
    enrolled patient, in their transcript, which the card links to."""
    from bot.web.dashboard import CARD_WORDS_CHARS

    pid = enrol(rt, "+447700900123")
    ids = {"unprocessed": add_message(rt, pid, "in", LONG_MESSAGE, status="unprocessed"),
           "to-read": add_message(rt, None, "in", LONG_MESSAGE, status="to_read",
                                  phone="+447700900555")}
    short = add_message(rt, pid, "in", "can you ring me", status="to_read")
    chatty = add_message(rt, pid, "in", "Hello,\nsorry to write so much. " * 30,
                         status="to_read")
    text = page(signed_in)
    for sid, message_id in ids.items():
        card = _message_card(section(text, sid), message_id)
        shown = re.search(r'<div class="words excerpt">([^<]*)</div>', card)
        assert shown, card
        excerpt = html.unescape(shown.group(1))
        assert len(excerpt) <= CARD_WORDS_CHARS and "my legs gave way" in excerpt
        assert excerpt == esc_service.quote_around_flags(LONG_MESSAGE, set(),
                                                         rt.ctx.vocabulary, CARD_WORDS_CHARS)
        assert html.escape(LONG_MESSAGE, quote=False) not in card.split("<details")[0]
        whole = re.search(r"<details[^>]*>\s*<summary>([^<]*)</summary>\s*"
                          r'<div class="words">([^<]*)</div>', card)
        assert whole, card
        assert f"{len(LONG_MESSAGE)} characters" in whole.group(1)
        assert html.unescape(whole.group(2)) == LONG_MESSAGE
        assert card.index("Mark read") < card.index("<details")  # the button first
    # The enrolled patient's card links to the message in their transcript, whole there.
    link = f'href="/dashboard/patients/{pid}#message-{ids["unprocessed"]}"'
    assert link in _message_card(section(text, "unprocessed"), ids["unprocessed"])
    transcript = page(signed_in, f"/dashboard/patients/{pid}")
    at = transcript[transcript.index(f'id="message-{ids["unprocessed"]}"'):]
    body = re.search(r'<div class="body">([^<]*)</div>', at)
    assert body and html.unescape(body.group(1)) == LONG_MESSAGE
    # Without a red flag in it, its start.
    card = _message_card(section(text, "to-read"), chatty)
    assert '<div class="words excerpt">Hello, sorry to write so much. Hello, sorry' in card
    # A short one is shown whole, with nothing to open.
    card = _message_card(section(text, "to-read"), short)
    assert '<div class="words">can you ring me</div>' in card and "<details" not in card
