"""Numbers as a coordinator types them: "07700 900123" is read in the clinic's own country
(defaults.country, else the country of clinic.phone), in every place a coordinator gives one
(the API, the dashboard, the CLI, the simulator). Twilio's own numbers are E.164 already."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from bot.config import ConfigError, load_settings
from bot.services.patients import InvalidField, normalise_phone, phone_region
from bot.store.models import Patient
from tests.test_dashboard import ADA, csrf_of, patients_stored, signed_in  # noqa: F401


def test_the_clinics_country_comes_from_its_phone_unless_set():
    assert phone_region(load_settings(env={})) == "GB"  # clinic.phone +44 20 ...
    us = load_settings(env={}, overrides={"clinic": {"phone": "+1 650 253 0000"}})
    assert phone_region(us) == "US"
    set_ = load_settings(env={}, overrides={"defaults": {"country": "ie"}})
    assert phone_region(set_) == "IE"
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, overrides={"defaults": {"country": "Britain"}})
    assert str(err.value).startswith("config: defaults.country: ")


def test_a_national_number_is_read_in_the_given_country_and_an_international_one_as_it_is():
    assert normalise_phone("07700 900123", "GB") == "+447700900123"
    assert normalise_phone("+34 612 34 56 78", "GB") == "+34612345678"
    assert normalise_phone("0034 612 34 56 78", "GB") == "+34612345678"
    with pytest.raises(InvalidField) as err:
        normalise_phone("07700 900123")  # no country to read it in
    assert "international form" in err.value.message
    with pytest.raises(InvalidField) as err:
        normalise_phone("12345", "GB")
    assert err.value.field == "phone"


def test_the_api_enrols_and_corrects_a_national_number(client, rt):
    res = client.post("/api/patients", json={"phone": "07700 900123", "name": "Ada"})
    assert res.status_code == 201 and res.get_json()["phone"] == "+447700900123"
    pid = res.get_json()["id"]
    res = client.patch(f"/api/patients/{pid}", json={"phone": "07700 900456"})
    assert res.status_code == 200, res.get_json()
    with rt.transaction() as s:
        assert s.scalars(select(Patient.phone)).all() == ["+447700900456"]
    res = client.post("/api/patients", json={"phone": "07700 900456", "name": "Bob"})
    assert res.status_code == 400 and res.get_json()["field"] == "phone"


def test_the_dashboard_enrols_a_national_number(signed_in, rt):  # noqa: F811
    res = signed_in.post("/dashboard/patients/new", follow_redirects=True,
                         data={"csrf": csrf_of(signed_in, "/dashboard/"), **ADA,
                               "phone": "07700 900123"})
    assert res.status_code == 200
    assert [p.phone for p in patients_stored(rt)] == ["+447700900123"]


def test_the_cli_and_the_simulator_take_a_national_number(cli, client, rt):
    res = cli("patients", "add", "--phone", "07700 900123", "--name", "Ada Lovelace")
    assert res.exit_code == 0, res.output
    res = cli("schedules", "add", "--phone", "07700 900123", "--flow", "reminder",
              "--text", "Take your tablets", "--at", "09:00", "--every-days", "1")
    assert res.exit_code == 0, res.output
    res = cli("transcript", "--phone", "07700 900123")
    assert res.exit_code == 0 and "Take your tablets" not in res.output
    res = client.post("/simulator/api/patients", json={"phone": "07700 900124"})
    assert res.status_code == 201 and res.get_json()["patient"]["phone"] == "+447700900124"
    res = client.post("/simulator/api/messages", json={"phone": "07700 900124", "body": "yes"})
    assert res.status_code == 201
    res = client.get("/simulator/api/messages", query_string={"phone": "07700 900124"})
    assert [m["body"] for m in res.get_json()][-2] == "yes"


@pytest.mark.parametrize("typed", ["0770 HELLO", "+44 7700 CALLME"])
def test_letters_in_a_number_are_refused_not_read_as_a_keypads_digits(client, rt, typed):
    res = client.post("/api/patients", json={"phone": typed, "name": "Ada"})
    assert res.status_code == 400 and res.get_json()["field"] == "phone"
    assert "is not a phone number" in res.get_json()["error"]
    with rt.transaction() as s:
        assert s.scalars(select(Patient)).all() == []
