"""A review of the coordinators' API and dashboard, as two coordinators and a nurse meet it:
what one does while another works on the same patient."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from sqlalchemy import select

from bot.store.models import AuditLog, Patient
from tests.test_dashboard import csrf_of, enrol, sign_in


class _Form(HTMLParser):
    """The fields a browser would post from the form with id `form_id`: inputs with their
    value, and each select's selected option (buttons left out: the test says which)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.select = form_id, False, None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        elif not self.inside:
            return
        elif tag == "input" and a.get("name"):
            self.fields[a["name"]] = a.get("value") or ""
        elif tag == "select":
            self.select = a.get("name")
        elif tag == "option" and self.select and "selected" in a:
            self.fields[self.select] = a.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False
        elif tag == "select":
            self.select = None


def form_fields(client, path: str, form_id: str) -> dict[str, str]:
    res = client.get(path)
    assert res.status_code == 200
    parser = _Form(form_id)
    parser.feed(res.get_data(as_text=True))
    assert parser.fields, f"no form {form_id} on {path}"
    return parser.fields


@pytest.fixture
def two_coordinators(app):
    """Jo and Sam, each signed in to the dashboard in their own browser."""
    jo, sam = app.test_client(), app.test_client()
    sign_in(jo, name="Jo", token=None)
    sign_in(sam, name="Sam", token=None)
    return jo, sam


@pytest.mark.parametrize(("field", "theirs"), [
    ("phone", "+447700900789"),  # the patient's new mobile: the old one is dead
    ("timezone", "America/New_York"),  # they moved: their check-ins at their 10:00
    ("language", "es"),
])
def test_saving_details_does_not_undo_what_another_coordinator_changed_meanwhile(
        two_coordinators, rt, field, theirs):
    """Jo opens a patient's page; Sam then changes a detail (a new phone number); Jo corrects
    the name's spelling and saves. Jo's form still held the old value of the field Sam
    changed, and the save wrote it back: the new number undone without a word, texts and
    the team's call-backs going to the dead one. Only what Jo changed is to be saved."""
    jo, sam = two_coordinators
    pid = enrol(rt, "+447700900123", name="Ada Lovelase")
    path = f"/dashboard/patients/{pid}"
    jos_form = form_fields(jo, path, "details-form")  # Jo's page, as loaded

    sams_form = form_fields(sam, path, "details-form")
    res = sam.post(f"{path}/details", data={**sams_form, field: theirs})
    assert res.status_code == 303
    with rt.transaction() as s:
        assert getattr(s.get(Patient, pid), field) == theirs

    res = jo.post(f"{path}/details", data={**jos_form, "name": "Ada Lovelace"})
    assert res.status_code == 303
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        assert p.name == "Ada Lovelace"
        assert getattr(p, field) == theirs, f"Jo's save undid Sam's {field}"
        jos = s.scalars(select(AuditLog).where(AuditLog.action == "patient.update",
                                               AuditLog.actor == "dashboard:Jo")).one()
        assert jos.details["changes"] == {"name": {"from": "Ada Lovelase",
                                                   "to": "Ada Lovelace"}}


def test_a_detail_both_coordinators_changed_is_refused_to_look_at_again(two_coordinators, rt):
    """Sam saves the patient's new number; Jo, on a page loaded before, types another one.
    Neither silently wins: Jo's save is refused naming the phone and saying what it is now,
    and saving the form again (having checked) takes Jo's number."""
    jo, sam = two_coordinators
    pid = enrol(rt, "+447700900123")
    path = f"/dashboard/patients/{pid}"
    jos_form = form_fields(jo, path, "details-form")
    res = sam.post(f"{path}/details", data={**form_fields(sam, path, "details-form"),
                                            "phone": "+447700900789"})
    assert res.status_code == 303

    res = jo.post(f"{path}/details", data={**jos_form, "phone": "+447700900456"})
    assert res.status_code == 400
    body = res.get_data(as_text=True)
    assert 'data-field="phone"' in body and "changed by someone else" in body
    assert "+447700900789" in body and "Nothing was changed" in body
    with rt.transaction() as s:
        assert s.get(Patient, pid).phone == "+447700900789"

    parser = _Form("details-form")
    parser.feed(body)
    assert parser.fields["phone"] == "+447700900456"  # as Jo typed it
    again = jo.post(f"{path}/details", data={**parser.fields, "csrf": csrf_of(jo, path)})
    assert again.status_code == 303
    with rt.transaction() as s:
        assert s.get(Patient, pid).phone == "+447700900456"


def test_a_details_form_saved_unchanged_changes_nothing(two_coordinators, rt):
    jo, _ = two_coordinators
    pid = enrol(rt, "+447700900123")
    path = f"/dashboard/patients/{pid}"
    res = jo.post(f"{path}/details", data=form_fields(jo, path, "details-form"),
                  follow_redirects=True)
    assert "Nothing was changed" in res.get_data(as_text=True)
    with rt.transaction() as s:
        assert not s.scalars(select(AuditLog).where(
            AuditLog.action == "patient.update")).all()


def test_enrolling_a_number_that_texted_stop_says_so_in_the_apis_warnings(client, rt,
                                                                            messenger):
    """A number that texted STOP before it was enrolled starts opted out and gets no welcome.
    The dashboard says so at enrolment; the API answered 201 with no warning, as if the
    welcome were on its way, so a coordinator's tool showing `warnings` showed nothing."""
    from tests.simulator_support import texted_from

    texted_from(client, "+447700900123", "STOP")
    sent = len(messenger.sent)
    res = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"},
                      headers={"X-Actor": "Sam"})
    assert res.status_code == 201
    body = res.get_json()
    assert body["status"] == "opted_out" and len(messenger.sent) == sent
    assert any("STOP" in w and "START" in w for w in body["warnings"]), body["warnings"]


def test_a_number_from_another_country_than_the_zone_is_warned_of_at_enrolment(client):
    """A London clinic enrols a patient with a US mobile and no timezone (the API's default is
    the clinic's): 201 with no warning, and the patient, if they live in the US, is asked how
    they are at 5 a.m. and told to call 999. The enrolment is right (a patient may keep a
    foreign number), but the coordinator is told to check the zone. The dashboard's form,
    its zone left at the clinic's, says the same."""
    res = client.post("/api/patients", json={"phone": "+1 202 555 0143", "name": "Al"},
                      headers={"X-Actor": "Sam"})
    assert res.status_code == 201
    warnings = res.get_json()["warnings"]
    assert any("United States" in w and "Europe/London" in w and "timezone" in w
               for w in warnings), warnings
    same = client.post("/api/patients", json={"phone": "+1 202 555 0144", "name": "Bo",
                                              "timezone": "America/New_York"},
                       headers={"X-Actor": "Sam"})
    assert same.status_code == 201
    assert not any("United States" in w for w in same.get_json()["warnings"])
    # A zone given is taken as meant (a UK resident who kept a US number): no warning.
    kept = client.post("/api/patients", json={"phone": "+1 202 555 0145", "name": "Di",
                                              "timezone": "Europe/London"},
                       headers={"X-Actor": "Sam"})
    assert kept.status_code == 201 and kept.get_json()["warnings"] == []
    home = client.post("/api/patients", json={"phone": "+44 7700 900123", "name": "Cy"},
                       headers={"X-Actor": "Sam"})
    assert home.status_code == 201 and home.get_json()["warnings"] == []

    from tests.test_dashboard import post

    sign_in(client, name="Jo", token=None)
    text = post(client, "/dashboard/patients/new", phone="+1 202 555 0146", name="Ed",
                timezone="Europe/London", channel="sms", language="en").get_data(as_text=True)
    assert "Patient 5 enrolled" in text and "United States" in text


def test_the_same_correction_made_by_both_coordinators_is_no_conflict(two_coordinators, rt):
    """Sam and Jo both correct the same misspelt name to the same spelling: Jo's save, on a
    page loaded before Sam's, has nothing to check again (it was refused as a conflict)."""
    jo, sam = two_coordinators
    pid = enrol(rt, "+447700900123", name="Ada Lovelase")
    path = f"/dashboard/patients/{pid}"
    jos_form = form_fields(jo, path, "details-form")
    res = sam.post(f"{path}/details", data={**form_fields(sam, path, "details-form"),
                                            "name": "Ada Lovelace"})
    assert res.status_code == 303
    res = jo.post(f"{path}/details", data={**jos_form, "name": "Ada Lovelace"},
                  follow_redirects=True)
    assert res.status_code == 200
    assert "Nothing was changed: the details were already so" in res.get_data(as_text=True)
    with rt.transaction() as s:
        assert s.get(Patient, pid).name == "Ada Lovelace"


# Invisible characters that change how the text around them shows (right-to-left override,
# isolates) or hide in it (zero-width space, BOM): "Ada\u202eecalevoL" shows as "Ada
# Lovelace" backwards in an alert, an SMS or a list, and "Ada\u200b" is another name.
INVISIBLE = ["\u202e", "\u202d", "\u202a", "\u2066", "\u2067", "\u2068", "\u2069", "\u200b",
             "\ufeff", "\u2060"]


@pytest.mark.parametrize("ch", INVISIBLE)
def test_invisible_and_direction_changing_characters_are_refused_naming_the_field(
        client, rt, cli, ch):
    """Each way staff type free text refuses them, with a 400 (an exit 2) naming the field:
    a patient's name at enrolment and when corrected (API, dashboard, CLI), a reminder's
    text, a resolution note and a staff member's display name."""
    code = f"U+{ord(ch):04X}"
    res = client.post("/api/patients", json={"phone": "+447700900123", "name": f"Ada{ch}Bee"},
                      headers={"X-Actor": "Sam"})
    assert res.status_code == 400, res.get_json()
    assert res.get_json()["field"] == "name" and code in res.get_json()["error"]
    ok = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada Bee"},
                     headers={"X-Actor": "Sam"})
    pid = ok.get_json()["id"]
    res = client.patch(f"/api/patients/{pid}", json={"name": f"{ch}Ada"},
                       headers={"X-Actor": "Sam"})
    assert res.status_code == 400 and res.get_json()["field"] == "name"
    res = client.post(f"/api/patients/{pid}/schedules", headers={"X-Actor": "Sam"},
                      json={"flow": "reminder", "at": "09:00", "every_days": 1,
                            "reminder_text": f"Take your{ch} tablets"})
    assert res.status_code == 400 and res.get_json()["field"] == "reminder_text"
    with rt.transaction() as s:
        assert s.get(Patient, pid).name == "Ada Bee"
    from tests.test_api import _escalation

    ref = _escalation(client, phone="+447700900999", headers={"X-Actor": "Sam"})
    res = client.post(f"/api/escalations/{ref}/resolve", headers={"X-Actor": "Sam"},
                      json={"note": f"Called{ch} her back", "by": "Nurse Jo"})
    assert res.status_code == 400 and res.get_json()["field"] == "note"

    from tests.test_dashboard import post

    sign_in(client, name="Jo", token=None)
    text = post(client, "/dashboard/patients/new", phone="+447700900456", name=f"Bo{ch}b",
                timezone="Europe/London", channel="sms", language="en").get_data(as_text=True)
    assert 'data-field="name"' in text and code in text
    res = cli("patients", "add", "--phone", "+447700900789", "--name", f"Cy{ch}")
    assert res.exit_code == 2 and "name:" in res.output and code in res.output, res.output
    res = cli("staff", "add", "--username", "alice", "--name", f"Alice{ch}",
              "--password-stdin", input="correct horse battery\n")
    assert res.exit_code == 2 and "name:" in res.output and code in res.output, res.output
    with rt.transaction() as s:
        assert s.scalars(select(Patient.name).order_by(Patient.id)).all() == ["Ada Bee", "Ada"]


def test_a_whatsapp_address_enrols_on_whatsapp_and_contradicting_it_is_refused(client, rt, cli):
    """A number given as Twilio writes a WhatsApp sender, "whatsapp:+44...", with no channel,
    was enrolled on SMS: the welcome went by text to someone who asked for WhatsApp. It says
    WhatsApp, so it is enrolled on WhatsApp; with channel sms as well it is refused naming
    the channel (which of the two was meant is not for the bot to guess)."""
    hdr = {"X-Actor": "Sam"}
    res = client.post("/api/patients", json={"phone": "whatsapp:+447700900123", "name": "Ada"},
                      headers=hdr)
    assert res.status_code == 201, res.get_json()
    assert res.get_json()["phone"] == "+447700900123"
    assert res.get_json()["channel"] == "whatsapp"
    res = client.post("/api/patients", json={"phone": "whatsapp:+447700900456", "name": "Bo",
                                             "channel": "sms"}, headers=hdr)
    assert res.status_code == 400 and res.get_json()["field"] == "channel"
    assert "whatsapp:" in res.get_json()["error"]
    res = client.post("/api/patients", json={"phone": "whatsapp:+447700900456", "name": "Bo",
                                             "channel": "whatsapp"}, headers=hdr)
    assert res.status_code == 201 and res.get_json()["channel"] == "whatsapp"
    # A correction to a whatsapp: number moves the patient to WhatsApp too.
    cy = client.post("/api/patients", json={"phone": "+447700900789", "name": "Cy"},
                     headers=hdr).get_json()
    res = client.patch(f"/api/patients/{cy['id']}", json={"phone": "whatsapp:+447700900788"},
                       headers=hdr)
    assert res.status_code == 200 and res.get_json()["channel"] == "whatsapp"
    res = client.patch(f"/api/patients/{cy['id']}", json={"phone": "whatsapp:+447700900787",
                                                          "channel": "sms"}, headers=hdr)
    assert res.status_code == 400 and res.get_json()["field"] == "channel"
    res = cli("patients", "add", "--phone", "whatsapp:+447700900111", "--name", "Di")
    assert res.exit_code == 0, res.output
    with rt.transaction() as s:
        assert s.scalars(select(Patient.channel).where(
            Patient.phone == "+447700900111")).one() == "whatsapp"
        assert s.scalars(select(Patient.channel).where(
            Patient.phone == "+447700900788")).one() == "whatsapp"


def test_a_number_changed_to_another_countrys_is_warned_of_as_at_enrolment(
        client, rt, two_coordinators):
    """A patient on the clinic's zone whose number is corrected (PATCH, the dashboard's Save
    details) to a US one: enrolled with it, the coordinator would have been told to check the
    zone; corrected to it, nothing was said. The same warning now; none when the zone is
    given with it (taken as meant) or the new number is the clinic's country's."""
    hdr = {"X-Actor": "Sam"}
    pid = client.post("/api/patients", json={"phone": "+447700900123", "name": "Ada"},
                      headers=hdr).get_json()["id"]
    res = client.patch(f"/api/patients/{pid}", json={"phone": "+1 202 555 0143"}, headers=hdr)
    assert res.status_code == 200
    warnings = res.get_json()["warnings"]
    assert any("United States" in w and "Europe/London" in w and "timezone" in w
               for w in warnings), warnings
    res = client.patch(f"/api/patients/{pid}", json={"phone": "+1 202 555 0144",
                                                     "timezone": "Europe/London"}, headers=hdr)
    assert res.status_code == 200 and res.get_json()["warnings"] == []
    res = client.patch(f"/api/patients/{pid}", json={"phone": "+447700900124"}, headers=hdr)
    assert res.status_code == 200 and res.get_json()["warnings"] == []

    jo, _ = two_coordinators
    path = f"/dashboard/patients/{pid}"
    res = jo.post(f"{path}/details", data={**form_fields(jo, path, "details-form"),
                                           "phone": "+1 202 555 0145"}, follow_redirects=True)
    text = res.get_data(as_text=True)
    assert res.status_code == 200 and "United States" in text and "Warning" in text
    with rt.transaction() as s:
        assert s.get(Patient, pid).phone == "+12025550145"


def test_the_same_new_number_typed_in_another_format_is_no_conflict(two_coordinators, rt):
    """Sam saves the patient's new number as dialled here, "07700 900456"; Jo, on a page
    loaded before, types the same number in international form. The save compared the typed
    text, so Jo was refused as if Sam had typed another number. The numbers are compared, so
    there is nothing left to do; and the number shown, retyped the national way beside a
    name correction, is no change of the number either."""
    jo, sam = two_coordinators
    pid = enrol(rt, "+447700900123", name="Ada Lovelase")
    path = f"/dashboard/patients/{pid}"
    jos_form = form_fields(jo, path, "details-form")
    res = sam.post(f"{path}/details", data={**form_fields(sam, path, "details-form"),
                                            "phone": "07700 900456"})
    assert res.status_code == 303
    res = jo.post(f"{path}/details", data={**jos_form, "phone": "+44 7700 900456"},
                  follow_redirects=True)
    assert res.status_code == 200, res.get_data(as_text=True)
    assert "Nothing was changed: the details were already so" in res.get_data(as_text=True)

    jos_form = form_fields(jo, path, "details-form")  # shows +447700900456
    res = sam.post(f"{path}/details", data={**form_fields(sam, path, "details-form"),
                                            "phone": "+447700900789"})
    assert res.status_code == 303
    res = jo.post(f"{path}/details", data={**jos_form, "phone": "07700 900456",
                                           "name": "Ada Lovelace"})
    assert res.status_code == 303, res.get_data(as_text=True)
    with rt.transaction() as s:
        p = s.get(Patient, pid)
        assert (p.phone, p.name) == ("+447700900789", "Ada Lovelace")
