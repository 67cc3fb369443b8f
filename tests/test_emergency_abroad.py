"""Patients abroad: the emergency number their texts name is the one where they live (the
country of their zone), not the clinic's; a coordinator enrolling a patient in a country with no
number configured is warned, not refused."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.config import ConfigError, load_settings
from bot.services.context import emergency_number_for, emergency_number_warning
from bot.store.models import Message, Patient
from tests.twilio_signing import sign
from tests.twilio_support import (  # noqa: F401 - fixtures
    AUTH_TOKEN,
    PUBLIC_URL,
    TWILIO_SETTINGS,
    WHATSAPP_FROM,
    fake_http,
    messenger,
    sent_to,
)

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Actor": "sam"}
INBOUND = "/webhooks/twilio/message"
RED_FLAG = "my legs gave way and I wet myself"
_n = iter(range(10**6))


@pytest.fixture
def settings_overrides():
    return {**TWILIO_SETTINGS, "admin_token": TOKEN}


def enrol_by_api(client, phone, zone, channel="sms", language="en", name="Ada Lovelace"):
    res = client.post("/api/patients", headers=AUTH, json={
        "phone": phone, "name": name, "timezone": zone, "channel": channel,
        "language": language})
    assert res.status_code == 201, res.get_json()
    return res.get_json()


def consent(rt, patient_id):
    with rt.transaction() as s:
        s.get(Patient, patient_id).consent_at = rt.clock.now()


def texted(client, body, sender, channel="sms"):
    prefix = "whatsapp:" if channel == "whatsapp" else ""
    to = WHATSAPP_FROM if channel == "whatsapp" else "+447700900999"
    params = {"MessageSid": f"SM{next(_n):032d}", "From": prefix + sender, "To": prefix + to,
              "Body": body}
    res = client.post(INBOUND, data=params, headers={
        "X-Twilio-Signature": sign(AUTH_TOKEN, PUBLIC_URL + INBOUND, params)})
    assert res.status_code == 200


def stored_bodies(rt, phone):
    with rt.transaction() as s:
        return s.scalars(select(Message.body).where(
            Message.address == phone, Message.direction == "out").order_by(Message.id)).all()


def emergency_reply(client, fake_http, phone, channel="sms", words=RED_FLAG):
    texted(client, words, phone, channel)
    [reply] = [d["Body"] for d in sent_to(fake_http, phone) if "Body" in d][-1:]
    return reply


# -- the acceptance cases ----------------------------------------------------------------------


def test_a_new_york_patient_enrolled_by_the_api_is_told_911_in_an_emergency(client, rt,
                                                                            fake_http):
    body = enrol_by_api(client, "+1 212 555 0123", "America/New_York", channel="whatsapp")
    assert body["warnings"] == []
    consent(rt, body["id"])
    reply = emergency_reply(client, fake_http, "+12125550123", channel="whatsapp")
    assert "If you can't get through, call 911." in reply
    assert "call 999" not in reply


def test_a_uk_patient_is_still_told_999(client, rt, fake_http):
    body = enrol_by_api(client, "+44 7700 900123", "Europe/London")
    assert body["warnings"] == []
    consent(rt, body["id"])
    reply = emergency_reply(client, fake_http, "+447700900123")
    assert "If you can't get through, call 999." in reply


@pytest.mark.parametrize(("phone", "zone", "language", "says"), [
    # A UK resident who kept a Spanish SIM: where they live counts, not the SIM.
    ("+34 612 345 678", "Europe/London", "en", "call 999."),
    ("+34 612 345 678", "Europe/Madrid", "es", "llame al 112."),
    ("+52 55 1234 5678", "America/Mexico_City", "es", "llame al 911."),
    ("+54 9 11 1234 5678", "America/Argentina/Buenos_Aires", "es", "llame al 107."),
    ("+54 9 387 123 4567", "America/Argentina/Salta", "es", "llame al 107."),
    ("+1 416 555 0123", "America/Toronto", "en", "call 911."),
    ("+353 85 123 4567", "Europe/Dublin", "en", "call 112."),
])
def test_the_emergency_text_names_the_number_where_the_patient_lives(client, rt, fake_http,
                                                                      phone, zone, language,
                                                                      says):
    body = enrol_by_api(client, phone, zone, language=language)
    assert body["warnings"] == []
    consent(rt, body["id"])
    reply = emergency_reply(client, fake_http, body["phone"])
    assert says in reply


def test_a_zone_with_no_number_configured_is_enrolled_with_a_warning(client, rt, fake_http):
    body = enrol_by_api(client, "+57 310 123 4567", "America/Bogota")
    [warning] = body["warnings"]
    assert "America/Bogota" in warning and "Colombia (CO)" in warning
    assert "999" in warning and "clinic.emergency_numbers_abroad" in warning
    with rt.transaction() as s:
        assert s.get(Patient, body["id"]).timezone == "America/Bogota"  # not refused
    consent(rt, body["id"])
    # What the warning says the texts will say: the clinic's number, until one is configured.
    assert "call 999." in emergency_reply(client, fake_http, "+573101234567")


def test_a_number_not_enrolled_keeps_the_clinics_number(client, rt, fake_http):
    reply = emergency_reply(client, fake_http, "+12125550199")
    assert "call 999." in reply and "911" not in reply


def test_a_timezone_change_moves_the_number_and_warns_where_there_is_none(client, rt,
                                                                          fake_http):
    body = enrol_by_api(client, "+44 7700 900123", "Europe/London")
    consent(rt, body["id"])
    res = client.patch(f"/api/patients/{body['id']}", headers=AUTH,
                       json={"timezone": "America/Lima"})
    assert res.status_code == 200
    [warning] = res.get_json()["warnings"]
    assert "Peru (PE)" in warning and "999" in warning
    res = client.patch(f"/api/patients/{body['id']}", headers=AUTH,
                       json={"timezone": "America/Chicago"})
    assert res.status_code == 200 and res.get_json()["warnings"] == []
    assert "call 911." in emergency_reply(client, fake_http, "+447700900123")
    # Another change that is not the zone says nothing about it.
    res = client.patch(f"/api/patients/{body['id']}", headers=AUTH, json={"name": "Ada L"})
    assert res.get_json()["warnings"] == []


def test_every_text_with_the_number_uses_the_patients(client, rt, fake_http):
    """HELP, a check-in's texts (flows) and the WhatsApp emergency template, not only the
    emergency instruction."""
    from bot.services.conversations import start_flow

    body = enrol_by_api(client, "+52 55 1234 5678", "America/Mexico_City")
    # The welcome (a flow) names the number that works there.
    welcome = " ".join(b for b in stored_bodies(rt, "+525512345678") if b)
    assert "In an emergency call 911." in welcome and "call 999" not in welcome
    consent(rt, body["id"])
    texted(client, "HELP", "+525512345678")
    assert "Emergency: 911." in sent_to(fake_http, "+525512345678")[-1]["Body"]
    before = len(sent_to(fake_http, "+525512345678"))
    with rt.transaction() as s:
        start_flow(s, rt.ctx, s.get(Patient, body["id"]), "checkin", rt.clock.now())
    rt.dispatcher.dispatch_due()
    checkin = " ".join(d["Body"] for d in sent_to(fake_http, "+525512345678")[before:])
    assert "or 911 in an emergency" in checkin and "or 999" not in checkin
    with rt.transaction() as s:
        assert rt.ctx.patient_values(s.get(Patient, body["id"]))["emergency_number"] == "911"


def test_a_whatsapp_emergency_template_carries_the_patients_number(client, rt, fake_http):
    import json

    from bot.services.outbox import PRIORITY_EMERGENCY, Draft, enqueue

    body = enrol_by_api(client, "+1 212 555 0123", "America/New_York", channel="whatsapp")
    with rt.transaction() as s:  # outside the 24 h window: the approved template goes
        p = s.get(Patient, body["id"])
        enqueue(s, Draft(to=p.phone, channel="whatsapp", body=rt.ctx.text_for(p, "emergency"),
                         kind="emergency", priority=PRIORITY_EMERGENCY, patient_id=p.id),
                rt.clock.now())
    rt.dispatcher.dispatch_due()
    data = [d for d in sent_to(fake_http, "+12125550123") if "ContentVariables" in d][-1]
    assert json.loads(data["ContentVariables"])["2"] == "911"


class TestTheCareTeamsAlert:
    """An alert goes to the care team, at the clinic: a template of it that names
    {emergency_number} keeps the clinic's, whoever the patient is."""

    @pytest.fixture
    def settings_overrides(self):
        return {**TWILIO_SETTINGS, "admin_token": TOKEN, "care_team": {"contacts": [
            {"id": "oncall", "name": "On-call nurse", "phone": "+447700900001",
             "channel": "whatsapp"},
            {"id": "coordinator", "name": "Coordinator", "phone": "+447700900002"},
            {"id": "consultant", "name": "Consultant", "phone": "+447700900003"}]},
            "twilio": {**TWILIO_SETTINGS["twilio"], "whatsapp_templates": {"alert": {
                "content_sid": "HX" + "4" * 32,
                "variables": {"1": "{ref}", "2": "{emergency_number}"}}}}}

    def test_it_keeps_the_clinics_number(self, client, rt, fake_http):
        import json

        body = enrol_by_api(client, "+1 212 555 0123", "America/New_York")
        consent(rt, body["id"])
        assert "call 911." in emergency_reply(client, fake_http, "+12125550123")
        [alert] = [d for d in sent_to(fake_http, "+447700900001") if "ContentVariables" in d]
        assert json.loads(alert["ContentVariables"])["2"] == "999"


# -- the dashboard and the command line ---------------------------------------------------------


def test_the_dashboard_warns_in_its_flash(client, rt):
    from tests.test_dashboard import post, sign_in

    sign_in(client, token=TOKEN)
    res = post(client, "/dashboard/patients/new", phone="+57 310 123 4567", name="Ana",
               timezone="America/Bogota", channel="sms", language="es")
    text = res.get_data(as_text=True)
    assert res.status_code == 200 and 'class="flash warn"' in text
    assert "Colombia (CO)" in text and "clinic.emergency_numbers_abroad" in text
    with rt.transaction() as s:
        pid = s.scalars(select(Patient.id)).one()
    res = post(client, f"/dashboard/patients/{pid}/details", phone="+57 310 123 4567",
               name="Ana", timezone="America/Caracas", channel="sms", language="es")
    text = res.get_data(as_text=True)
    assert 'class="flash warn"' in text and "Venezuela (VE)" in text


def test_the_command_line_prints_the_warning(cli):
    res = cli("patients", "add", "--phone", "+57 310 123 4567", "--name", "Ana",
              "--timezone", "America/Bogota")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "Colombia (CO)" in res.output
    assert "clinic.emergency_numbers_abroad" in res.output
    res = cli("patients", "update", "--phone", "+573101234567", "--timezone", "America/Lima")
    assert res.exit_code == 0, res.output
    assert "warning:" in res.output and "Peru (PE)" in res.output
    res = cli("patients", "add", "--phone", "+1 212 555 0123", "--name", "Bo",
              "--timezone", "America/New_York")
    assert res.exit_code == 0 and "warning" not in res.output


# -- the zone's country and the setting ---------------------------------------------------------


@pytest.mark.parametrize(("zone", "country"), [
    ("Europe/London", "GB"), ("Europe/Jersey", "JE"), ("America/New_York", "US"),
    ("America/Argentina/Salta", "AR"), ("Europe/Madrid", "ES"), ("Atlantic/Canary", "ES"),
    # Aliases (tzdata's "backward" links): the country of the place named, not of the zone it
    # now shares its clock with (Amsterdam keeps Brussels' time, but is in the Netherlands).
    ("Europe/Amsterdam", "NL"), ("US/Eastern", "US"), ("America/Buenos_Aires", "AR"),
    ("Asia/Calcutta", "IN"), ("Europe/Belfast", "GB"),
])
def test_a_zone_is_in_one_country(zone, country):
    from bot.domain.countries import zone_country

    assert zone_country(zone) == country


def test_every_zone_a_patient_can_be_given_is_in_a_country():
    from bot.domain.countries import country_name, zone_country
    from bot.services.patients import _is_place, known_timezones

    places = [z for z in known_timezones() if _is_place(z)]
    assert len(places) > 300
    assert [z for z in places if zone_country(z) is None] == []
    assert all(country_name(zone_country(z)) for z in places)


def test_the_number_for_a_zone(settings):
    assert emergency_number_for(settings, "Europe/London") == "999"
    assert emergency_number_for(settings, "America/New_York") == "911"
    assert emergency_number_for(settings, "Europe/Paris") == "112"
    assert emergency_number_for(settings, "Australia/Sydney") == "000"
    assert emergency_number_for(settings, "America/Bogota") == "999"  # none configured
    assert emergency_number_warning(settings, "Europe/Paris") is None
    assert emergency_number_warning(settings, "Europe/London") is None


def _load(tmp_path, **abroad):
    return load_settings(env={}, overrides={
        "database_url": f"sqlite:///{tmp_path / 'x.db'}",
        "clinic": {"emergency_numbers_abroad": abroad}})


def test_the_setting_adds_to_the_defaults_and_is_checked(tmp_path):
    s = _load(tmp_path, co="123")  # any case
    assert s.clinic.emergency_numbers_abroad["CO"] == "123"
    assert s.clinic.emergency_numbers_abroad["US"] == "911"  # the defaults stay
    assert emergency_number_for(s, "America/Bogota") == "123"
    with pytest.raises(ConfigError, match=r"clinic\.emergency_numbers_abroad.*'UK'"):
        _load(tmp_path, UK="999")  # not a country code (GB is)
    with pytest.raises(ConfigError, match=r"clinic\.emergency_numbers_abroad"):
        _load(tmp_path, CO="1234567")  # longer than any text's room for it
    with pytest.raises(ConfigError, match=r"clinic\.emergency_numbers_abroad"):
        _load(tmp_path, CO="+57123")


def test_the_clinics_own_country_uses_clinic_emergency_number(tmp_path):
    s = load_settings(env={}, overrides={
        "database_url": f"sqlite:///{tmp_path / 'x.db'}",
        "clinic": {"emergency_number": "112", "emergency_numbers_abroad": {"GB": "999"}}})
    assert emergency_number_for(s, "Europe/London") == "112"
    assert emergency_number_for(s, "Europe/Jersey") == "999"


def test_every_configured_number_fits_the_room_the_text_checks_give_it(settings):
    """config/messages.yaml and the flows are checked (segments, GSM-7) with the longest value
    of {emergency_number} (bot.texts.VARIABLE_MAX, flows/variables.yaml): a number abroad
    longer than that could push an emergency text over 2 segments unchecked."""
    from bot.domain.gsm7 import is_gsm7
    from bot.runtime import load_flow_library
    from bot.texts import VARIABLE_MAX

    room = min(VARIABLE_MAX["emergency_number"],
               load_flow_library(settings).variables["emergency_number"].max_length)
    numbers = settings.clinic.emergency_numbers_abroad
    assert {"US", "CA", "MX", "AR", "ES", "GB", "IE", "FR", "DE"} <= set(numbers)
    assert all(len(n) <= room and is_gsm7(n) for n in numbers.values())


# -- the crisis line, for thoughts of self-harm, is the one where the patient lives too -------


@pytest.mark.parametrize(("phone", "zone", "line", "number"), [
    ("+12125550123", "America/New_York", "988 Lifeline", "911"),
    ("+34612345678", "Europe/Madrid", "Linea 024", "112"),
    ("+447700900123", "Europe/London", "Samaritans 116 123", "999"),
    # a country with no line of its own configured: the clinic's
    ("+33612345678", "Europe/Paris", "Samaritans 116 123", "112"),
])
def test_a_self_harm_reply_names_the_crisis_line_where_the_patient_lives(
        client, rt, fake_http, phone, zone, line, number):
    body = enrol_by_api(client, phone, zone)
    consent(rt, body["id"])
    reply = emergency_reply(client, fake_http, phone, words="I'm going to kill myself tonight")
    assert f"call {line}" in reply and f"call {number} now" in reply


def test_a_crisis_line_abroad_must_be_a_country_and_plain_text_with_a_number(tmp_path):
    for bad, words in [({"UK": "Samaritans 116 123"}, "not a two-letter"),
                       ({"US": "Lifeline \u2013 988"}, "GSM-7"),
                       ({"US": "the lifeline"}, "number")]:
        config = tmp_path / "c.yaml"
        config.write_text(__import__("yaml").safe_dump({"clinic": {"crisis_lines_abroad": bad}}))
        with pytest.raises(ConfigError) as err:
            load_settings(env={"CHECKIN_CONFIG": str(config)})
        assert "crisis_lines_abroad" in str(err.value) and words in str(err.value)


# -- patients already enrolled where no number is configured ------------------------------------


def _enrol_abroad(rt, clock) -> dict[str, int]:
    """Ana in Colombia and Bea in Peru (no emergency number configured for either), Cy in New
    York (911 configured), Di in Colombia but discharged: their ids by name."""
    from bot.services.patients import Enrolment, enrol_patient

    ids = {}
    with rt.transaction() as s:
        for phone, name, zone in (("+573101234567", "Ana", "America/Bogota"),
                                  ("+51912345678", "Bea", "America/Lima"),
                                  ("+12125550123", "Cy", "America/New_York"),
                                  ("+573101234568", "Di", "America/Bogota")):
            patient = enrol_patient(s, Enrolment(phone, name, zone), languages=["en", "es"],
                                    now=clock.now(), actor="test")
            s.flush()
            ids[name] = patient.id
        s.get(Patient, ids["Di"]).status = "discharged"
    return ids


def test_patients_enrolled_where_no_emergency_number_is_configured_stay_listed(client, rt,
                                                                              clock):
    """Enrolling a patient in a country with no emergency number configured warned once, and
    then they were listed nowhere: a coordinator who missed the warning, or who inherited the
    patient, never learnt their texts give the clinic's 999. The dashboard's Needs attention
    now lists them (not the discharged), and the health report counts them by country."""
    from bot.services import health
    from tests.test_dashboard import page, section, sign_in

    ids = _enrol_abroad(rt, clock)
    with rt.transaction() as s:
        problems = health.report(s, rt.settings, clock.now())["problems"]
    [line] = [p for p in problems if "emergency number" in p]
    assert line.startswith("config: 2 patient(s) live in a country with no emergency number")
    assert "CO: 1, PE: 1" in line and "clinic.emergency_numbers_abroad" in line
    assert "Ana" not in line and "+57" not in line  # /healthz names no patient

    sign_in(client, token=TOKEN)
    text = page(client)
    listed = section(text, "abroad")
    assert "Patients abroad with no emergency number configured (2)" in listed
    for name, country in (("Ana", "Colombia (CO)"), ("Bea", "Peru (PE)")):
        card = listed[listed.index(f'href="/dashboard/patients/{ids[name]}"'):]
        card = card[:card.index("</div>")]
        assert country in card and "999" in card, card
    assert f"/dashboard/patients/{ids['Cy']}\"" not in listed
    assert f"/dashboard/patients/{ids['Di']}\"" not in listed
    assert "clinic.emergency_numbers_abroad" in listed
    assert text.index('id="problems"') < text.index('id="abroad"')


def test_the_health_command_names_the_countries_with_patients_and_no_number(cli):
    import json

    for phone, zone in (("+57 310 123 4567", "America/Bogota"),
                        ("+1 212 555 0123", "America/New_York")):
        res = cli("patients", "add", "--phone", phone, "--name", "Ana", "--timezone", zone)
        assert res.exit_code == 0, res.output
    res = cli("health")
    problems = json.loads(res.output)["problems"]
    assert [p for p in problems if p.startswith("config: 1 patient(s) live in a country "
                                                "with no emergency number configured (CO: 1)")]
