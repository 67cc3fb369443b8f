"""End to end in a real headless browser: the phone simulator texts the bot and shows replies."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from sqlalchemy import select
from werkzeug.serving import make_server

from bot.services.context import readable_phone
from bot.store.models import Answer, Patient

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium installed (Debian package "
                       "'chromium'); .ci/run installs it"),
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "var" / "screenshots"


@pytest.fixture
def server(app, rt):
    rt.dispatch_mode = "background"  # as under `checkin-bot serve`
    srv = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.server_port}"
    srv.shutdown()


@pytest.fixture
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        pg = browser.new_page(viewport={"width": 390, "height": 844})  # a phone screen
        pg.set_default_timeout(10_000)
        yield pg
        browser.close()


def sign_in(page, server, path: str = "/dashboard/") -> None:
    """Open `path` and sign in with the admin token, as Nurse Jo."""
    page.goto(server + path)
    page.fill("#token", "s3cret-admin-token")
    page.fill("#name", "Nurse Jo")
    page.click("#sign-in")


def _bot_says(page, text: str) -> None:
    page.locator(".msg.out", has_text=text).first.wait_for()


def test_a_new_patient_is_welcomed_consents_and_checks_in(page, server, rt):
    page.goto(server + "/simulator")
    page.fill("#phone", "+44 7700 900123")
    page.fill("#name", "Ada Lovelace")
    page.click("#use")
    _bot_says(page, "Reply YES to agree")  # the welcome flow's consent question
    page.fill("#text", "yes")
    page.click("#send")
    _bot_says(page, "Thank you, Ada")
    page.fill("#text", "CHECKIN")
    page.click("#send")
    _bot_says(page, "what was your worst pain")
    page.fill("#text", "2")
    page.click("#send")
    _bot_says(page, "Is this pain new")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "simulator-checkin.png"), full_page=True)
    with rt.transaction() as s:
        patient = s.scalars(select(Patient)).one()
        assert patient.phone == "+447700900123" and patient.consent_at is not None
        keys = s.scalars(select(Answer.question_key)).all()
    assert "consent" in keys and "worst_pain" in keys


def test_a_red_flag_typed_in_the_simulator_gets_the_emergency_instruction(page, server, rt):
    page.goto(server + "/simulator")
    page.fill("#phone", "+44 7700 900124")
    page.click("#use")
    _bot_says(page, "Reply YES to agree")
    page.fill("#text", "my legs gave way and I wet myself")
    page.click("#send")
    _bot_says(page, readable_phone(rt.settings.clinic.acute_oncology_hotline))
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "simulator-emergency.png"), full_page=True)


def test_the_simulator_says_what_the_bot_did_with_a_red_flag_or_a_question(page, server, rt):
    """Someone trying the bot sees that a question got only the safety net (nobody alerted),
    and that a red flag was escalated."""
    page.goto(server + "/simulator")
    page.fill("#phone", "+44 7700 900126")
    page.click("#use")
    _bot_says(page, "Reply YES to agree")
    page.fill("#text", "what if my legs go numb, what do I do?")
    page.click("#send")
    _bot_says(page, "Don't wait")
    said = page.locator("#outcome")
    said.filter(has_text="safety net").wait_for()
    assert "emergency" not in said.inner_text().lower()
    assert "Nobody was alerted" in said.inner_text()
    page.fill("#text", "my legs have gone numb")
    page.click("#send")
    said.filter(has_text="Emergency").wait_for()
    assert "care team alerted" in said.inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "simulator-outcome.png"), full_page=True)


def test_the_outcome_line_follows_every_text_a_checkin_answer_and_a_blank_one(page, server,
                                                                               rt):
    """A check-in answer that raised a red flag (YES to "any new numbness?") showed a blank
    line, as did a routine text, and a blank text left the last text's line on screen. Now
    the line shows the level the handling reached for each text, routine too, and a blank
    text clears it."""
    page.goto(server + "/simulator")
    page.fill("#phone", "+44 7700 900127")
    page.click("#use")
    _bot_says(page, "Reply YES to agree")
    said = page.locator("#outcome")

    def text(body: str, line: str, reply: str) -> None:
        page.fill("#text", body)
        page.click("#send")
        said.filter(has_text=line).wait_for()
        _bot_says(page, reply)

    text("yes", "Routine", "Thank you")
    text("CHECKIN", "Routine", "what was your worst pain")
    text("2", "Routine", "Is this pain new")
    for question in ("worse at night", "cough, sneeze", "shoot down", "painkillers"):
        text("no", "Routine", question)
    text("no", "Routine", "numbness, tingling")
    text("yes", "Emergency", "Lie flat")
    assert "care team alerted" in said.inner_text()
    page.fill("#text", "   ")
    page.click("#send")
    page.wait_for_function("document.getElementById('outcome').textContent === ''")


class TestWithAnAdminToken:
    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": "s3cret-admin-token"}

    def test_the_page_asks_for_the_token_once_and_then_works(self, page, server, rt):
        asked: list[str] = []

        def answer(dialog):
            asked.append(dialog.message)
            dialog.accept("wrong" if len(asked) == 1 else "s3cret-admin-token")

        page.on("dialog", answer)
        page.goto(server + "/simulator")
        page.fill("#phone", "+44 7700 900125")
        page.click("#use")
        _bot_says(page, "Reply YES to agree")
        assert len(asked) == 2 and "token" in asked[0].lower()  # a wrong one is asked again
        page.fill("#text", "yes")
        page.click("#send")
        _bot_says(page, "Thank you")
        assert len(asked) == 2
        assert page.evaluate("sessionStorage.getItem('checkin-admin-token')") == "s3cret-admin-token"
        with rt.transaction() as s:
            assert s.scalars(select(Patient.phone)).all() == ["+447700900125"]


class TestDashboard:
    """The care coordinators' dashboard in a real browser: sign in, see, acknowledge."""

    @pytest.fixture
    def settings_overrides(self):
        return {"admin_token": "s3cret-admin-token"}

    def test_a_coordinator_signs_in_and_acknowledges_the_emergency_at_the_top(self, page,
                                                                             server, rt, clock):
        from bot.services.escalations import escalate
        from bot.services.patients import Enrolment, enrol_patient
        from bot.store.models import Escalation

        refs = {}
        for phone, name, level, flags, words in (
                ("+447700900131", "Urgent Uma", "urgent", ["severe_pain"], "pain is 8 today"),
                ("+447700900132", "Emma Emergency", "emergency",
                 ["limb_weakness", "bladder_dysfunction"], "my legs gave way and I wet myself"),
        ):
            with rt.transaction() as s:
                patient = enrol_patient(s, Enrolment(phone, name, "Europe/London"),
                                        languages=["en", "es"], now=clock.now(), actor="test")
                refs[level] = escalate(s, rt.ctx, patient, level, flags, words,
                                       clock.now())[0].ref
            clock.advance(minutes=5)  # the urgent one is older, and still comes second

        sign_in(page, server)
        cards = page.locator("#open .card")
        cards.first.wait_for()
        assert cards.count() == 2
        assert cards.first.get_attribute("data-ref") == refs["emergency"]
        assert "Emma Emergency" in cards.first.inner_text()
        assert page.locator("#acknowledged .empty").inner_text() == "Nothing here."
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-needs-attention.png"), full_page=True)

        cards.first.locator("button.ack").click()
        taken = page.locator(f'#acknowledged .card[data-ref="{refs["emergency"]}"]')
        taken.wait_for()
        assert "Nurse Jo" in taken.locator(".taken-by").inner_text()
        assert "acknowledged by you (Nurse Jo)" in page.locator("#flash").inner_text()
        assert [c.get_attribute("data-ref") for c in page.locator("#open .card").all()] == [
            refs["urgent"]]
        page.screenshot(path=str(ARTIFACTS / "dashboard-acknowledged.png"), full_page=True)
        with rt.transaction() as s:
            esc = s.scalars(select(Escalation).where(Escalation.ref == refs["emergency"])).one()
            assert (esc.status, esc.acknowledged_by) == ("acknowledged", "Nurse Jo")

    def test_a_staff_account_signs_in_with_its_password_and_acknowledges(self, page, server,
                                                                         rt, clock):
        from bot.services.escalations import escalate
        from bot.services.patients import Enrolment, enrol_patient
        from bot.services.staff import add_staff
        from bot.store.models import AuditLog, Escalation

        with rt.transaction() as s:
            add_staff(s, "alice", "Alice Nurse", "correct horse battery", clock.now(),
                      actor="test")
            patient = enrol_patient(s, Enrolment("+447700900133", "Emma Emergency",
                                                 "Europe/London"),
                                    languages=["en", "es"], now=clock.now(), actor="test")
            ref = escalate(s, rt.ctx, patient, "emergency", ["limb_weakness"],
                           "my legs gave way", clock.now())[0].ref

        page.goto(server + "/dashboard/")
        assert page.locator("#token").count() == 0  # the shared token no longer opens it
        page.fill("#username", "alice")
        page.fill("#password", "a wrong password")
        page.click("#sign-in")
        page.locator("#login-error", has_text="Wrong username or password").wait_for()
        page.fill("#username", "alice")
        page.fill("#password", "correct horse battery")
        page.click("#sign-in")
        card = page.locator(f'#open .card[data-ref="{ref}"]')
        card.wait_for()
        card.locator("button.ack").click()
        taken = page.locator(f'#acknowledged .card[data-ref="{ref}"]')
        taken.wait_for()
        assert "acknowledged by you (Alice Nurse)" in page.locator("#flash").inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-staff-acknowledged.png"),
                        full_page=True)
        with rt.transaction() as s:
            esc = s.scalars(select(Escalation).where(Escalation.ref == ref)).one()
            assert (esc.status, esc.acknowledged_by) == ("acknowledged", "Alice Nurse")
            actors = {a.action: a.actor for a in s.scalars(select(AuditLog))}
        assert actors["dashboard.login"] == actors["escalation.ack"] == "user:alice"

    def test_a_coordinator_enrols_a_patient_and_sets_their_checkin(self, page, server, rt,
                                                                  clock):
        from bot.domain.schedule import next_occurrence
        from bot.store.models import AuditLog, Schedule

        sign_in(page, server, "/dashboard/patients")
        page.click("#enrol")
        assert page.input_value("#timezone") == "Europe/London"  # the default, filled in
        page.fill("#phone", "+44 7700 900140")
        page.fill("#name", "Grace Hopper")
        page.click("#enrol-submit")
        page.locator("h1", has_text="Grace Hopper").wait_for()
        assert "enrolled by you (Nurse Jo)" in page.locator("#flash").inner_text()
        _bot_says(page, "Reply YES to agree")  # the welcome, in the transcript
        with rt.transaction() as s:
            patient = s.scalars(select(Patient)).one()
            assert (patient.phone, patient.name) == ("+447700900140", "Grace Hopper")

        page.fill("#checkin-at", "14:30")
        page.fill("#checkin-every", "7")
        page.click("#save-checkin")
        page.locator("#flash", has_text="Check-in set by you (Nurse Jo)").wait_for()
        row = page.locator('#schedules tr[data-flow="checkin"]')
        assert "14:30 Europe/London, every week" in row.inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-enrol-checkin.png"), full_page=True)
        with rt.transaction() as s:
            sc = s.scalars(select(Schedule).where(Schedule.active.is_(True))).one()
            assert (sc.patient_id, sc.flow_id, sc.local_time, sc.every_days) == (
                patient.id, "checkin", "14:30", 7)
            assert sc.next_due_at == next_occurrence(clock.now(), "Europe/London", "14:30", 7)
            actors = {a.action: a.actor for a in s.scalars(select(AuditLog))}
        assert actors["patient.enrol"] == actors["schedule.add"] == "dashboard:Nurse Jo"

    def test_what_a_nurse_taps_at_night_is_big_enough_on_a_phone(self, page, server, rt,
                                                                 clock):
        """Call, Acknowledge, Resolve, the header's links and Log out: at least 44 px high
        (the size a thumb hits at 3 a.m.), and nothing wider than the screen."""
        from bot.services.escalations import escalate
        from bot.services.patients import Enrolment, enrol_patient

        with rt.transaction() as s:
            patient = enrol_patient(s, Enrolment("+447700900134", "Emma Emergency",
                                                 "Europe/London"),
                                    languages=["en", "es"], now=clock.now(), actor="test")
            ref = escalate(s, rt.ctx, patient, "emergency", ["limb_weakness"],
                           "my legs gave way", clock.now())[0].ref

        sign_in(page, server)
        page.locator("#open .card").first.wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-tap-targets.png"))

        def heights(selector: str) -> dict[str, float]:
            return {el.inner_text().strip(): el.bounding_box()["height"]
                    for el in page.locator(selector).all()}

        def assert_tappable(selector: str) -> None:
            found = heights(selector)
            assert found and all(h >= 44 for h in found.values()), found

        assert_tappable("header a, header button")
        assert_tappable("#open .card .actions a, #open .card .actions button")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.goto(server + f"/dashboard/escalations/{ref}")
        assert_tappable("main .actions a, main .actions button, #resolve")

    def test_a_patients_red_flags_show_who_took_them_and_the_note_on_a_phone(self, page,
                                                                            server, rt, clock):
        """The patient's page at 390 px: each red flag's taken-by and note are on the screen,
        not in columns past its right edge."""
        from bot.services.escalations import acknowledge, escalate, resolve
        from bot.services.patients import Enrolment, enrol_patient

        with rt.transaction() as s:
            patient = enrol_patient(s, Enrolment("+447700900135", "Emma Emergency",
                                                 "Europe/London"),
                                    languages=["en", "es"], now=clock.now(), actor="test")
            ref = escalate(s, rt.ctx, patient, "emergency", ["limb_weakness"],
                           "my legs gave way", clock.now())[0].ref
            acknowledge(s, ref, "Nurse Jo", clock.now(), actor="test")
            resolve(s, ref, "Rang her; 999 called", clock.now(), actor="test", by="Nurse Jo")
            pid = patient.id

        page.goto(server + f"/dashboard/patients/{pid}")
        page.fill("#token", "s3cret-admin-token")
        page.fill("#name", "Nurse Jo")
        page.click("#sign-in")
        row = page.locator("#escalations tr", has_text=ref)
        row.wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.locator("#escalations").screenshot(path=str(ARTIFACTS / "patient-red-flags.png"))
        for text in ("Nurse Jo", "Rang her; 999 called"):
            cell = row.locator("td", has_text=text)
            box = cell.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (text, box)

    def test_on_a_phone_the_first_open_red_flag_is_on_screen_with_the_bots_problems_listed(
            self, page, server, rt, clock):
        """A bad night: five problems with the bot and two open red flags, on a 390x844 phone.
        The first red flag's patient and Call button are on the first screen, without
        scrolling; the problems are still on the page, each in full, none behind a tap, and
        that first screen says there are some."""
        from sqlalchemy import update

        from bot.services import health
        from bot.services.inbound import InboundMessage, handle_inbound_message
        from bot.services.outbox import Draft, enqueue
        from bot.services.patients import Enrolment, enrol_patient
        from bot.store.models import Message, OutboxItem

        def texts(phone: str, body: str) -> None:
            with rt.transaction() as s:
                handle_inbound_message(s, rt.ctx, InboundMessage("sms", phone, body),
                                       clock.now())

        for phone, name in (("+447700900136", "Emma Emergency"),
                            ("+447700900137", "Eve Second")):
            with rt.transaction() as s:
                enrol_patient(s, Enrolment(phone, name, "Europe/London"), languages=["en"],
                              now=clock.now(), actor="test").consent_at = clock.now()
            texts(phone, "my legs gave way and I wet myself")
            clock.advance(minutes=1)
        texts("+447700900136", "can someone ring me about my tablets")
        with rt.transaction() as s:  # every send refused, one never picked up, one unhandled
            s.execute(update(OutboxItem).where(OutboxItem.kind.in_(("alert", "emergency")))
                      .values(status="failed"))
            enqueue(s, Draft(to="+447700900137", channel="sms", body="Hello"), clock.now())
            s.execute(update(Message).where(Message.body.like("%tablets%"))
                      .values(status="unprocessed"))
        clock.advance(minutes=5)  # and the scheduler has never run
        with rt.transaction() as s:
            problems = health.report(s, rt.settings, clock.now())["problems"]
        assert len(problems) == 5, problems

        sign_in(page, server)
        first = page.locator("#open .card").first
        first.wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-problems-and-red-flags.png"))
        assert page.evaluate("window.scrollY") == 0
        for part in (first.locator("a.patient", has_text="Emma Emergency"),
                     first.locator("a.button.call")):
            box = part.bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 844, box
        notice = page.locator("#problems-notice")
        box = notice.bounding_box()
        assert box and box["y"] + box["height"] <= 844, box
        assert "5 problems with the bot" in notice.inner_text()
        listed = page.locator("#problems li")
        assert [li.inner_text() for li in listed.all()] == problems
        assert all(li.is_visible() for li in listed.all())
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

        page.set_viewport_size({"width": 1280, "height": 800})  # a desk: problems stay first
        assert not notice.is_visible()
        assert (page.locator("#problems").bounding_box()["y"]
                < page.locator("#open").bounding_box()["y"])

    def test_the_patients_page_pages_and_a_search_finds_a_patient_on_a_later_page(
            self, page, server, rt, clock):
        """More patients than a page holds: Next shows the rest, Previous the first page
        again, and the search finds one on the second page from the first."""
        from bot.services.patients import Enrolment, enrol_patient
        from bot.web.dashboard import PATIENTS_PAGE

        with rt.transaction() as s:
            for i in range(PATIENTS_PAGE + 3):
                enrol_patient(s, Enrolment(f"+447700{900300 + i:06d}", f"Patient {i:03d}",
                                           "Europe/London"),
                              languages=["en", "es"], now=clock.now(), actor="test")
        last = f"Patient {PATIENTS_PAGE + 2:03d}"
        sign_in(page, server, "/dashboard/patients")
        rows = page.locator("#patients tr", has_text="Patient ")
        page.locator("#patients tr", has_text="Patient 000").wait_for()
        assert rows.count() == PATIENTS_PAGE and page.locator("#previous").count() == 0
        page.click("#next")
        page.locator("#patients tr", has_text=last).wait_for()
        assert rows.count() == 3 and page.locator("#next").count() == 0
        page.click("#previous")
        page.locator("#patients tr", has_text="Patient 000").wait_for()
        assert rows.count() == PATIENTS_PAGE
        page.fill("#q", last.lower())
        page.click("#find")
        page.locator("#clear").wait_for()
        assert rows.count() == 1 and last in rows.first.inner_text()
        # the name searched is nowhere in the address (history, access logs), nor in a link
        assert page.url == server + "/dashboard/patients"
        hrefs = page.eval_on_selector_all("a[href], form[action]", "els => els.map("
                                          "e => e.getAttribute('href') || e.getAttribute('action'))")
        assert hrefs and not [h for h in hrefs if "q=" in h or "patient 1" in h.lower()], hrefs
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-patients-search.png"), full_page=True)
        page.reload()  # kept for this session, on every load, still out of the address
        page.locator("#clear").wait_for()
        assert rows.count() == 1 and page.url == server + "/dashboard/patients"
        page.click("#clear")
        page.locator("#patients tr", has_text="Patient 000").wait_for()
        assert rows.count() == PATIENTS_PAGE and page.locator("#clear").count() == 0
        assert page.input_value("#q") == "" and page.url == server + "/dashboard/patients"

    def test_text_boxes_and_drop_downs_are_big_enough_to_tap_on_a_phone(self, page, server,
                                                                        rt, clock):
        """Every field to type in or choose from (sign-in, enrol, a patient's page) is at
        least 44 px high at 390 px wide, as the buttons are."""
        def assert_tappable() -> None:
            fields = page.locator("main input:not([type=hidden]), main select, main textarea")
            found = {el.get_attribute("id"): el.bounding_box()["height"] for el in fields.all()}
            assert found and all(h >= 44 for h in found.values()), found

        page.goto(server + "/dashboard/patients")
        assert_tappable()  # the sign-in form
        page.fill("#token", "s3cret-admin-token")
        page.fill("#name", "Nurse Jo")
        page.click("#sign-in")
        page.click("#enrol")
        assert_tappable()
        page.fill("#phone", "+44 7700 900141")
        page.fill("#name", "Grace Hopper")
        page.click("#enrol-submit")
        page.locator("h1", has_text="Grace Hopper").wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-patient-fields.png"), full_page=True)
        assert_tappable()

    def test_the_patients_list_and_schedules_show_status_and_next_times_on_a_phone(
            self, page, server, rt, clock):
        """At 390 px, each patient's status and next check-in, and each schedule's next time,
        are on the screen, not in columns past its right edge."""
        from bot.services.patients import Enrolment, enrol_patient
        from bot.services.schedules import save_schedule

        with rt.transaction() as s:
            patient = enrol_patient(s, Enrolment("+447700900136", "Bartholomew Featherstone",
                                                 "America/New_York"),
                                    languages=["en", "es"], now=clock.now(), actor="test")
            patient.consent_at, patient.status = clock.now(), "paused"
            save_schedule(s, rt.ctx, patient, "checkin", "22:00", 7, clock.now(), "test")
            pid = patient.id

        sign_in(page, server, "/dashboard/patients")
        row = page.locator("#patients tr", has_text="Bartholomew Featherstone")
        row.wait_for()
        for text in ("paused", "03:00 GMT"):
            box = row.locator("td", has_text=text).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (text, box)
        page.goto(server + f"/dashboard/patients/{pid}")
        row = page.locator("#schedules tr", has_text="every week")
        row.wait_for()
        box = row.locator("td", has_text="EST (").bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= 390, box

    def test_a_patients_audit_trail_reads_on_a_phone(self, page, server, rt, clock):
        """From a patient's page at 390 px: their audit trail, each record's who, action and
        details on the screen, the number grouped, nothing past the right edge."""
        from bot.services.patients import Enrolment, PatientChanges, enrol_patient, update_patient

        with rt.transaction() as s:
            patient = enrol_patient(s, Enrolment("+447700900137", "Bartholomew Featherstone",
                                                 "Europe/London"),
                                    languages=["en", "es"], now=clock.now(), actor="test")
            s.flush()
            clock.advance(minutes=3)
            update_patient(s, patient, PatientChanges(phone="+447700900138"), ctx=rt.ctx,
                           now=clock.now(), actor="user:alice")
            pid = patient.id

        page.goto(server + f"/dashboard/patients/{pid}")
        page.fill("#token", "s3cret-admin-token")
        page.fill("#name", "Nurse Jo")
        page.click("#sign-in")
        page.click("#audit-trail")
        row = page.locator("#audit tr", has_text="patient.update")
        row.wait_for()
        for text in ("alice", "patient.update", "+44 7700 900137 -> +44 7700 900138"):
            box = row.locator("td", has_text=text).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (text, box)
        assert page.locator("#audit tr.audit-row").count() == 2  # and the enrolment
        assert page.evaluate("document.documentElement.scrollWidth") <= 390

    def test_a_form_refused_on_a_patients_page_is_seen_at_once_on_a_phone(self, page, server,
                                                                        rt, clock):
        """At 375x740, each of a patient's forms filled in wrongly (a reminder of 101
        characters, a check-in at 25:00, details with a short number, a discharge with a
        blank reason): the page that comes back shows the error on its first screen, and its
        link goes to the form, whose own message is then on the screen. Nothing is saved."""
        from bot.services.patients import Enrolment, enrol_patient
        from bot.store.models import Schedule

        with rt.transaction() as s:
            patient = enrol_patient(s, Enrolment("+447700900142", "Grace Hopper",
                                                 "Europe/London"),
                                    languages=["en", "es"], now=clock.now(), actor="test")
            patient.consent_at = clock.now()
            pid = patient.id
        page.set_viewport_size({"width": 375, "height": 740})
        page.goto(server + f"/dashboard/patients/{pid}")
        page.fill("#token", "s3cret-admin-token")
        page.fill("#name", "Nurse Jo")
        page.click("#sign-in")
        page.locator("h1", has_text="Grace Hopper").wait_for()

        def on_screen(locator) -> bool:
            box = locator.bounding_box()
            return bool(box) and box["y"] >= 0 and box["y"] + box["height"] <= 740

        for form, fill, button, says in (
                ("reminder", {"#reminder-text": "x" * 101}, "#add-reminder", "at most 100"),
                ("checkin", {"#checkin-at": "25:00"}, "#save-checkin", "expected HH:MM"),
                ("details", {"#details-phone": "12345"}, "#save-details", "number of digits"),
                ("discharge", {"#discharge-reason": "   "}, "#discharge", "Reason: must be 1 to")):
            page.goto(server + f"/dashboard/patients/{pid}")
            for field, value in fill.items():
                page.fill(field, value)
            page.locator(button).scroll_into_view_if_needed()
            with page.expect_navigation():
                page.click(button)
            alert = page.locator("#form-alert")
            alert.wait_for()
            assert says in alert.inner_text() and "Nothing was changed" in alert.inner_text()
            assert page.locator("[role=alert]").count() == 1  # read out once, not twice
            assert page.evaluate("window.scrollY") == 0
            assert on_screen(alert), (form, alert.bounding_box())
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"patient-{form}-refused.png"))
            inline = page.locator(f"#{form}-error")
            assert not on_screen(inline), form  # far down: why the top must say it
            link = alert.locator("a")
            assert link.bounding_box()["height"] >= 44  # a thumb's size, as every button
            link.click()
            page.wait_for_function("window.scrollY > 0")
            assert on_screen(inline), (form, inline.bounding_box())
            assert says in inline.inner_text()
        with rt.transaction() as s:
            kept = s.get(Patient, pid)
            assert (kept.status, kept.phone) == ("active", "+447700900142")
            assert s.scalars(select(Schedule)).all() == []

    def test_a_long_message_leaves_the_first_red_flags_call_button_on_a_phones_first_screen(
            self, page, server, rt, clock):
        """At 375x740, a patient's message of about 1,000 characters ending "my legs gave
        way": the first red flag's card quotes it around those words, so its Call button is
        on the first screen; the whole message is one tap away on the card."""
        from bot.services.inbound import InboundMessage, handle_inbound_message
        from bot.services.patients import Enrolment, enrol_patient
        from tests.test_dashboard import LONG_MESSAGE

        with rt.transaction() as s:
            enrol_patient(s, Enrolment("+447700900143", "Emma Emergency", "Europe/London"),
                          languages=["en"], now=clock.now(), actor="test").consent_at = \
                clock.now()
        with rt.transaction() as s:
            handle_inbound_message(s, rt.ctx, InboundMessage("sms", "+447700900143",
                                                             LONG_MESSAGE), clock.now())
        page.set_viewport_size({"width": 375, "height": 740})
        sign_in(page, server)
        first = page.locator("#open .card").first
        first.wait_for()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-long-message.png"))
        assert page.evaluate("window.scrollY") == 0
        assert "my legs gave way" in first.locator(".words").first.inner_text()
        call = first.locator("a.button.call")
        box = call.bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 740, box
        whole = first.locator("details")
        summary = whole.locator("summary")
        assert summary.bounding_box()["height"] >= 44  # tapped with a thumb
        assert not whole.locator(".words").is_visible()
        summary.click()
        assert whole.locator(".words").inner_text() == LONG_MESSAGE
        assert page.evaluate("document.documentElement.scrollWidth") <= 375

    def test_a_long_message_to_read_leaves_its_mark_read_button_on_the_lists_first_screen(
            self, page, server, rt, clock):
        """At 375x740, a message of about 1,000 characters the bot could not handle and
        another to read. Scrolled to either list, its first card's Mark read button is on
        that screen: the card quotes the message short, around its red-flag words as a red
        flag's card does (printed whole, it was more than a screen). The whole message is one
        tap away on the card, and a link opens it in the patient's transcript."""
        from bot.services.patients import Enrolment, enrol_patient
        from bot.store.models import Message
        from tests.test_dashboard import LONG_MESSAGE

        with rt.transaction() as s:
            patient = enrol_patient(s, Enrolment("+447700900144", "Lena Long", "Europe/London"),
                                    languages=["en"], now=clock.now(), actor="test")
            for status in ("to_read", "unprocessed"):
                s.add(Message(patient_id=patient.id, direction="in", channel="sms",
                              address=patient.phone, body=LONG_MESSAGE, kind="reply",
                              status=status, created_at=clock.now(), updated_at=clock.now()))
        page.set_viewport_size({"width": 375, "height": 740})
        sign_in(page, server)
        first = page.locator("#unprocessed .card").first
        first.wait_for()
        for sid in ("to-read", "unprocessed"):
            page.locator(f"#{sid}").evaluate("e => e.scrollIntoView()")
            box = page.locator(f"#{sid} .card button.read").first.bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 740, (sid, box)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-long-messages-to-read.png"))
        whole = first.locator("details")
        assert not whole.locator(".words").is_visible()
        whole.locator("summary").click()
        assert whole.locator(".words").inner_text() == LONG_MESSAGE
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        link = first.locator("a.transcript")
        assert link.bounding_box()["height"] >= 44  # tapped with a thumb
        link.click()
        page.locator("h1", has_text="Lena Long").wait_for()
        message = page.locator(page.url[page.url.index("#"):])
        assert message.locator(".body").inner_text() == LONG_MESSAGE
        box = message.bounding_box()
        assert box and 0 <= box["y"] < 740, box  # opened at the message
