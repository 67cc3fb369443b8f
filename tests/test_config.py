"""Settings: defaults, file and environment overrides, one clear line for a bad value."""

import pytest

from bot.config import ConfigError, load_settings


def test_defaults_load_and_pick_the_dev_messenger_without_twilio_credentials():
    s = load_settings(env={})
    assert s.messenger_name == "dev"
    assert s.database_url.startswith("sqlite:///")
    assert s.care_team.contacts[0].phone.startswith("+")


def test_twilio_credentials_in_the_environment_select_the_twilio_messenger():
    s = load_settings(env={"TWILIO_ACCOUNT_SID": "AC" + "1" * 32, "TWILIO_AUTH_TOKEN": "t",
                           "TWILIO_FROM": "+447700900999"})
    assert s.messenger_name == "twilio"
    assert s.twilio.auth_token == "t"
    assert s.twilio.from_number == "+447700900999"


def test_twilio_without_a_sender_stops_startup():
    with pytest.raises(ConfigError, match="TWILIO_FROM"):
        load_settings(env={"CHECKIN_MESSENGER": "twilio", "TWILIO_ACCOUNT_SID": "AC1",
                           "TWILIO_AUTH_TOKEN": "t"})


def test_file_overrides_defaults_and_environment_overrides_the_file(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("clinic:\n  name: North Spine Unit\ndatabase_url: sqlite:///from-file.db\n")
    s = load_settings(env={"CHECKIN_CONFIG": str(f),
                           "CHECKIN_DATABASE_URL": "sqlite:///from-env.db"})
    assert s.clinic.name == "North Spine Unit"
    assert s.clinic.emergency_number == "999"  # untouched default survives the merge
    assert s.database_url == "sqlite:///from-env.db"


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"defaults": {"timezone": "Mars/Olympus"}},
         "config: defaults.timezone: unknown timezone 'Mars/Olympus'"),
        ({"quiet_hours": {"start": "25:00"}}, "config: quiet_hours.start: expected HH:MM"),
        ({"care_team": {"escalation_chain": ["nobody"]}},
         "config: care_team: escalation_chain names unknown contact 'nobody'"),
        ({"clinic": {"phone": "12345"}}, "config: clinic.phone: not a phone number in international form"),
        ({"colour": "blue"}, "config: colour: unknown setting"),
        ({"clinic": {"crisis_line": "Samaritans \u2013 116 123"}},
         "config: clinic.crisis_line: must be plain GSM-7 text with the line's number"),
        ({"clinic": {"crisis_line": "Samaritans"}},
         "config: clinic.crisis_line: must be plain GSM-7 text with the line's number"),
    ],
)
def test_a_bad_value_gives_one_line_naming_the_key(override, expected):
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, overrides=override)
    message = str(err.value)
    assert message.startswith(expected)
    assert "\n" not in message


def test_secrets_are_refused_in_a_settings_file(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("twilio:\n  auth_token: oops\n")
    with pytest.raises(ConfigError, match="only from the environment"):
        load_settings(env={"CHECKIN_CONFIG": str(f)})


SID = "AC" + "1" * 32


@pytest.mark.parametrize(("env", "missing"), [
    ({"TWILIO_ACCOUNT_SID": SID, "TWILIO_FROM": "+447700900999"}, "TWILIO_AUTH_TOKEN"),
    ({"TWILIO_AUTH_TOKEN": "t", "TWILIO_FROM": "+447700900999"}, "TWILIO_ACCOUNT_SID"),
    ({"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t"},
     "TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID"),
    ({"TWILIO_MESSAGING_SERVICE_SID": "MG" + "1" * 32},
     "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN"),
    ({"TWILIO_WHATSAPP_FROM": "+447700900998"},
     "TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN, TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID"),
])
def test_partial_twilio_settings_stop_startup_naming_what_is_missing(env, missing):
    """Not a silent fall back to the dev messenger, which sends nothing to real phones."""
    with pytest.raises(ConfigError) as err:
        load_settings(env=env)
    message = str(err.value)
    assert f"missing {missing};" in message, message
    assert "CHECKIN_MESSENGER=dev" in message and "\n" not in message
    with pytest.raises(ConfigError, match=missing):  # the same when twilio is asked for
        load_settings(env={**env, "CHECKIN_MESSENGER": "twilio"})


def test_partial_twilio_settings_in_a_file_stop_startup_too(tmp_path):
    f = tmp_path / "site.yaml"
    f.write_text("twilio:\n  from_number: '+447700900999'\n")
    with pytest.raises(ConfigError, match="TWILIO_ACCOUNT_SID, TWILIO_AUTH_TOKEN;"):
        load_settings(env={"CHECKIN_CONFIG": str(f)})


def test_the_dev_messenger_asked_for_by_name_ignores_partial_twilio_settings():
    s = load_settings(env={"CHECKIN_MESSENGER": "dev", "TWILIO_ACCOUNT_SID": SID,
                           "TWILIO_FROM": "+447700900999"})
    assert s.messenger_name == "dev"


def test_complete_twilio_settings_with_a_messaging_service_select_twilio():
    s = load_settings(env={"TWILIO_ACCOUNT_SID": SID, "TWILIO_AUTH_TOKEN": "t",
                           "TWILIO_MESSAGING_SERVICE_SID": "MG" + "1" * 32})
    assert s.messenger_name == "twilio"


@pytest.mark.parametrize("zone", ["Europe", "Etc", "a" * 300, "localtime", "../etc/passwd"])
def test_a_zone_that_is_not_an_iana_name_is_a_config_error(zone):
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, overrides={"defaults": {"timezone": zone}})
    assert str(err.value).startswith(
        f"config: defaults.timezone: unknown timezone {zone!r}"[:60])


def test_secrets_are_refused_in_the_default_settings_file_too(tmp_path, monkeypatch):
    """config/default.yaml is a file a deployment edits (the clinic, its care team): a secret
    put there would be committed with it, so it is refused as in the CHECKIN_CONFIG file."""
    import bot.config

    f = tmp_path / "default.yaml"
    f.write_text(bot.config.DEFAULT_CONFIG.read_text(encoding="utf-8")
                 + "admin_token: oops-a-shared-secret\n")
    monkeypatch.setattr(bot.config, "DEFAULT_CONFIG", f)
    with pytest.raises(ConfigError, match="admin_token: secrets are read only from the env"):
        load_settings(env={})


def test_the_crisis_line_is_a_setting_put_in_the_self_harm_texts():
    from bot.services.context import clinic_values

    assert load_settings(env={}).clinic.crisis_line == "Samaritans 116 123"
    s = load_settings(env={}, overrides={"clinic": {"crisis_line": "Linea 024"}})
    assert clinic_values(s)["crisis_line"] == "Linea 024"


@pytest.mark.parametrize("number", ["+4420794609999", "1234567", "9" * 15, "99 9", "9"])
def test_an_emergency_number_longer_than_the_texts_room_for_it_stops_startup(number):
    """clinic.emergency_number took up to 16 characters ("+" and 15 digits) while the flows'
    texts are checked with at most 6 for it (flows/variables.yaml), as the numbers abroad are:
    a longer one went out unchecked. It is now 2 to 6 digits, as those are, one clear line
    naming the setting otherwise."""
    with pytest.raises(ConfigError) as err:
        load_settings(env={}, overrides={"clinic": {"emergency_number": number}})
    message = str(err.value)
    assert message.startswith("config: clinic.emergency_number: expected the number as "
                              "dialled in the clinic's country, 2 to 6 digits"), message
    assert "\n" not in message and repr(number) in message


def test_the_texts_are_checked_with_the_longest_emergency_number_the_settings_take():
    """config/messages.yaml (bot.texts.VARIABLE_MAX) was checked with 16 characters for
    {emergency_number}, the flows with 6: both now use the room the settings allow, and the
    longest number allowed, in every text naming it, keeps it within 2 SMS."""
    from bot.config import EMERGENCY_NUMBER_DIGITS
    from bot.runtime import load_flow_library
    from bot.texts import VARIABLE_MAX, load_texts

    settings = load_settings(env={}, overrides={
        "clinic": {"emergency_number": "9" * EMERGENCY_NUMBER_DIGITS}})
    room = load_flow_library(settings).variables["emergency_number"].max_length
    assert VARIABLE_MAX["emergency_number"] == room == EMERGENCY_NUMBER_DIGITS
    assert load_texts().problems() == []


@pytest.mark.parametrize(("variable", "setting", "value"), [
    ("emergency_number", "emergency_number", "999999"),
    ("clinic_name", "name", "Spine Oncology Clinic"),
])
def test_a_flows_folder_with_less_room_for_a_setting_than_it_has_stops_startup(
        tmp_path, variable, setting, value):
    """A deployment's own flows folder can give a variable less room than its setting takes;
    the flows' texts were then checked for 2 SMS with a shorter value than the bot sends."""
    import shutil

    import yaml

    from bot.runtime import load_flow_library

    flows = tmp_path / "flows"
    shutil.copytree("flows", flows)
    data = yaml.safe_load((flows / "variables.yaml").read_text())
    data["variables"][variable]["max_length"] = 3
    (flows / "variables.yaml").write_text(yaml.safe_dump(data))
    settings = load_settings(env={}, overrides={"flows_dir": str(flows),
                                                "clinic": {setting: value}})
    with pytest.raises(ConfigError) as err:
        load_flow_library(settings)
    assert variable in str(err.value) and f"clinic.{setting}" in str(err.value)
    assert "max_length 3" in str(err.value)
    load_flow_library(load_settings(env={}, overrides={"clinic": {setting: value}}))  # fits 6/30


@pytest.mark.parametrize("token", ["x", "admin", "s3cret-admin", "a" * 15])
def test_a_short_admin_token_stops_startup(token):
    """CHECKIN_ADMIN_TOKEN opens the whole API and, without CHECKIN_SECRET_KEY, is the key
    the dashboard's cookie is signed with; the sign-in page hands that cookie to anyone, so a
    short token could be found offline from it. At least 16 characters, as the secret key."""
    with pytest.raises(ConfigError) as err:
        load_settings(env={"CHECKIN_ADMIN_TOKEN": token})
    assert str(err.value) == ("config: admin_token: CHECKIN_ADMIN_TOKEN is too short: use at "
                              "least 16 random characters")


def test_an_admin_token_of_16_characters_or_more_is_taken_and_a_blank_one_is_none():
    assert load_settings(env={"CHECKIN_ADMIN_TOKEN": "k" * 16}).admin_token == "k" * 16
    assert load_settings(env={"CHECKIN_ADMIN_TOKEN": ""}).admin_token is None
