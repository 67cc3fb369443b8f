"""Settings: config/default.yaml, overridden by the file in CHECKIN_CONFIG, then by the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import phonenumbers
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CONFIG = REPO_ROOT / "config" / "default.yaml"
FLOWS_DIR = REPO_ROOT / "flows"

# Environment variable -> dotted settings key. Secrets exist only here.
ENV_KEYS = {
    "CHECKIN_DATABASE_URL": "database_url",
    "CHECKIN_MESSENGER": "messenger",
    "CHECKIN_PUBLIC_URL": "public_url",
    "CHECKIN_PROXY_FIX": "proxy_fix",
    "CHECKIN_FLOWS_DIR": "flows_dir",
    "CHECKIN_SPOOL_DIR": "spool_dir",
    "CHECKIN_ADMIN_TOKEN": "admin_token",
    "CHECKIN_SECRET_KEY": "secret_key",
    "TWILIO_ACCOUNT_SID": "twilio.account_sid",
    "TWILIO_AUTH_TOKEN": "twilio.auth_token",
    "TWILIO_FROM": "twilio.from_number",
    "TWILIO_MESSAGING_SERVICE_SID": "twilio.messaging_service_sid",
    "TWILIO_WHATSAPP_FROM": "twilio.whatsapp_from",
}
SECRET_KEYS = {"twilio.auth_token", "admin_token", "secret_key"}
SECRET_CHARS = 16  # at least, for CHECKIN_ADMIN_TOKEN and CHECKIN_SECRET_KEY


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line naming the key."""


class DatabaseUnreachable(ConfigError):
    """The database cannot be reached (refused, down, a timeout): not a wrong setting as
    such, and perhaps gone by the next try."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _e164(value: str) -> str:
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(f"not a phone number in international form: {value!r}") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise ValueError(f"not a possible phone number: {value!r}")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _check_zone(value: str) -> str:
    """An IANA zone name, checked against the zones this host has (not by loading the name:
    "Europe" is a directory, "localtime" the host's own zone)."""
    from bot.services.patients import InvalidField, check_timezone

    try:
        return check_timezone(value)
    except InvalidField as exc:
        raise ValueError(exc.message) from None


_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
# The longest emergency number (clinic.emergency_number and each of emergency_numbers_abroad):
# the room every text naming {emergency_number} is checked with (bot.texts.VARIABLE_MAX,
# flows/variables.yaml), so each stays within 2 SMS. Emergency numbers are short (999, 112,
# 10177); the longest text naming it (the self-harm reply, with the crisis line at its 40
# characters) would still fit 2 SMS with up to 22, which leaves room to reword the texts.
EMERGENCY_NUMBER_DIGITS = 6
_EMERGENCY_NUMBER = re.compile(rf"[0-9]{{2,{EMERGENCY_NUMBER_DIGITS}}}")


def _crisis_line(value: str) -> str:
    from bot.domain import gsm7

    value = " ".join(value.split())
    if not gsm7.is_gsm7(value) or not any(c.isdigit() for c in value):
        raise ValueError("must be plain GSM-7 text with the line's number, e.g. "
                         "'Samaritans 116 123'")
    return value


class Clinic(_Strict):
    name: str = Field(min_length=1, max_length=30)
    phone: str
    acute_oncology_hotline: str
    # Digits only, as dialled in the clinic's country: 2 to EMERGENCY_NUMBER_DIGITS.
    emergency_number: str
    # A 24-hour crisis line, named with its number as patients should read it, in every
    # language (the self-harm texts: "You can also call Samaritans 116 123 ...").
    crisis_line: str = Field(default="Samaritans 116 123", min_length=3, max_length=40)

    # ... and for patients who live in another country (as emergency_numbers_abroad), by ISO
    # 3166 code; a country not here gets crisis_line.
    crisis_lines_abroad: dict[str, str] = {}

    @field_validator("emergency_number", mode="before")
    @classmethod
    def _emergency_number(cls, v: Any) -> str:
        if not isinstance(v, str) or not _EMERGENCY_NUMBER.fullmatch(v):
            raise ValueError("expected the number as dialled in the clinic's country, 2 to "
                             f"{EMERGENCY_NUMBER_DIGITS} digits in quotes (e.g. \"999\"; the "
                             "room every text naming it is checked with), got " + repr(v))
        return v

    @field_validator("crisis_line")
    @classmethod
    def _plain_text(cls, value: str) -> str:
        return _crisis_line(value)

    @field_validator("crisis_lines_abroad", mode="before")
    @classmethod
    def _crisis_abroad(cls, v: Any) -> dict[str, str]:
        from bot.domain.countries import is_country

        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise ValueError("expected a mapping of country codes to lines, e.g. "
                             "US: \"988 Lifeline\"")
        out = {}
        for code, line in v.items():
            key = code.strip().upper() if isinstance(code, str) else code
            if not isinstance(key, str) or not is_country(key):
                raise ValueError(f"{code!r} is not a two-letter ISO 3166 country code (in "
                                 "quotes if YAML could read it as yes/no: \"NO\")")
            if not isinstance(line, str) or not 3 <= len(line) <= 40:
                raise ValueError(f"{code}: expected the line's name and number, 3 to 40 "
                                 f"characters, got {line!r}")
            out[key] = _crisis_line(line)
        return out

    # For patients who live in another country (the country of their zone, see
    # bot.domain.countries): the emergency number their texts name, by ISO 3166 code
    # ({"US": "911"}). The clinic's own country always uses emergency_number. A country not
    # here gets emergency_number too, and enrolling a patient there warns the coordinator.
    emergency_numbers_abroad: dict[str, str] = {}

    _phones = field_validator("phone", "acute_oncology_hotline")(_e164)

    @field_validator("emergency_numbers_abroad", mode="before")
    @classmethod
    def _abroad(cls, v: Any) -> dict[str, str]:
        from bot.domain.countries import is_country

        if v is None:
            return {}
        if not isinstance(v, Mapping):
            raise ValueError("expected a mapping of country codes to numbers, e.g. US: \"911\"")
        out = {}
        for code, number in v.items():
            if isinstance(code, bool):  # YAML reads a bare NO (Norway) as false
                raise ValueError("a country code was read as yes/no: put it in quotes "
                                 "(\"NO\": \"113\")")
            key = code.strip().upper() if isinstance(code, str) else code
            if not isinstance(key, str) or not is_country(key):
                raise ValueError(f"{code!r} is not a two-letter ISO 3166 country code "
                                 "(e.g. US, ES; the United Kingdom is GB)")
            # Digits only, as dialled there, as clinic.emergency_number.
            if not isinstance(number, str) or not _EMERGENCY_NUMBER.fullmatch(number):
                raise ValueError(f"{code}: expected the number as dialled there, 2 to "
                                 f"{EMERGENCY_NUMBER_DIGITS} digits in quotes (e.g. \"911\"), "
                                 f"got {number!r}")
            out[key] = number
        return out


class Contact(_Strict):
    # "staff:<id>" names them in the audit log (80 characters).
    id: str = Field(pattern=r"^[a-z0-9_-]+$", max_length=40)
    # Recorded as who acknowledged an alert (escalations.acknowledged_by: 80 characters).
    name: str = Field(min_length=1, max_length=80)
    phone: str
    channel: Literal["sms", "whatsapp"] = "sms"
    # Also phone them (a voice call, press 1 to acknowledge) with each emergency alert.
    call: StrictBool = False

    _phone = field_validator("phone")(_e164)


class CareTeam(_Strict):
    contacts: list[Contact] = Field(min_length=1)
    escalation_chain: list[str] = Field(min_length=1)
    ack_timeout_minutes: float = Field(gt=0)
    urgent_ack_timeout_minutes: float = Field(gt=0)

    @model_validator(mode="after")
    def _chain_known(self) -> CareTeam:
        ids = [c.id for c in self.contacts]
        if len(set(ids)) != len(ids):
            raise ValueError("contact ids must be unique")
        for cid in self.escalation_chain:
            if cid not in ids:
                raise ValueError(f"escalation_chain names unknown contact {cid!r}")
        return self

    def contact(self, contact_id: str) -> Contact:
        return next(c for c in self.contacts if c.id == contact_id)

    def contact_by_phone(self, phone: str) -> Contact | None:
        return next((c for c in self.contacts if c.phone == phone), None)


class QuietHours(_Strict):
    start: str
    end: str

    @field_validator("start", "end")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"expected HH:MM, got {v!r}")
        return v


class Defaults(_Strict):
    timezone: str
    language: str
    # The country a number typed without its country code is read in ("07700 900123"), as
    # coordinators type them: ISO 3166 alpha-2 (GB). Unset: the country of clinic.phone.
    country: str | None = None
    checkin_every_days: int = Field(default=7, ge=0, le=366)
    checkin_at: str = "10:00"
    # A plain YES from a patient who answered the consent question without agreeing (NO, or
    # replies not understood) within this many days records consent; later, the welcome is
    # sent again first. 0 = always the welcome again.
    consent_yes_after_decline_days: int = Field(default=30, ge=0, le=366)

    _zone = field_validator("timezone")(_check_zone)

    @field_validator("country")
    @classmethod
    def _country(cls, v: str | None) -> str | None:
        if v is None:
            return None
        if v.upper() not in phonenumbers.SUPPORTED_REGIONS:
            raise ValueError(f"expected a two-letter country code such as GB, got {v!r}")
        return v.upper()

    @field_validator("checkin_at")
    @classmethod
    def _hhmm(cls, v: str) -> str:
        if not _HHMM.match(v):
            raise ValueError(f"expected HH:MM, got {v!r}")
        return v


class Template(_Strict):
    content_sid: str = Field(pattern=r"^HX[0-9a-fA-F]{32}$")
    variables: dict[str, str] = {}


class Twilio(_Strict):
    account_sid: str | None = None
    auth_token: str | None = None
    from_number: str | None = None
    messaging_service_sid: str | None = None
    whatsapp_from: str | None = None
    send_rate_per_second: float = Field(default=1.0, gt=0)
    sms_fallback_for_whatsapp: bool = True
    whatsapp_templates: dict[str, Template] = {}

    @field_validator("from_number", "whatsapp_from")
    @classmethod
    def _phone(cls, v: str | None) -> str | None:
        return None if v in (None, "") else _e164(v)


class Outbox(_Strict):
    # Transient failures (429, 5xx, network) are retried with backoff, doubling from
    # backoff_seconds up to max_backoff_seconds (longer if Twilio's Retry-After says so, up
    # to max_backoff_seconds):
    # routine messages and replies max_attempts times in all; emergency instructions, urgent
    # replies, care-team alerts and staff replies (priority 0) until urgent_retry_minutes
    # after they were written (and at least max_attempts times).
    max_attempts: int = Field(default=6, ge=1)
    backoff_seconds: float = Field(default=2.0, gt=0)
    max_backoff_seconds: float = Field(default=300, gt=0)
    urgent_retry_minutes: float = Field(default=120, gt=0)
    claim_seconds: float = Field(default=60, gt=0)
    # A claimed message is not sent once less than this is left of its claim (a send can take
    # the SDK's 10 s timeout twice over, connecting and then reading, and a claim that runs out
    # lets the sweep send it again); the sweep sends it when the claim has run out.
    send_margin_seconds: float = Field(default=25, gt=0)
    # Threads per web worker that send replies right after the request commits. Sends wait on
    # Twilio's API (about 0.1-0.5 s each), so several run at once; their outcomes are written
    # together (see dispatcher.GroupCommit).
    send_threads: int = Field(default=8, ge=1, le=64)
    # A routine message whose send had an unclear outcome (a read timeout: Twilio may have
    # taken it) is sent again only after this long without a status callback naming it (each
    # send's callback URL names its outbox row), so a check-in is not sent twice. Replies,
    # emergencies and alerts are retried at once: a duplicate is better than a delay.
    unclear_wait_seconds: float = Field(default=600, gt=0)

    @model_validator(mode="after")
    def _claim_outlasts_a_send(self) -> Outbox:
        if self.claim_seconds <= self.send_margin_seconds:
            raise ValueError("claim_seconds must be longer than send_margin_seconds")
        return self


class LoopGuard(_Strict):
    """Stop answering a number that gets more replies than a person could want (an
    auto-responder answering every message of ours would otherwise ping-pong forever)."""

    max_replies: int = Field(default=30, ge=1)
    window_minutes: float = Field(default=10, gt=0)


class DatabaseLimits(_Strict):
    """PostgreSQL only: how long a serving process waits before giving up (bot.store.db)."""

    connect_timeout_seconds: float = Field(default=3, ge=2, le=60)
    lock_timeout_seconds: float = Field(default=3, gt=0, le=600)
    statement_timeout_seconds: float = Field(default=5, gt=0, le=600)

    def as_limits(self):
        from bot.store.db import DatabaseLimits as Limits

        return Limits(connect_timeout=self.connect_timeout_seconds,
                      lock_timeout=self.lock_timeout_seconds,
                      statement_timeout=self.statement_timeout_seconds)


class Scheduler(_Strict):
    tick_seconds: float = Field(default=5, gt=0)
    dispatch_poll_seconds: float = Field(default=0.5, gt=0)


class Settings(_Strict):
    clinic: Clinic
    care_team: CareTeam
    quiet_hours: QuietHours
    defaults: Defaults
    languages: list[str] = ["en"]
    database_url: str
    database_limits: DatabaseLimits = DatabaseLimits()
    messenger: Literal["dev", "twilio"] | None = None
    public_url: str | None = None
    proxy_fix: int = Field(default=0, ge=0, le=5)
    flows_dir: str = str(FLOWS_DIR)
    # Inbound messages the database could not take wait here (per host) until it is back.
    spool_dir: str = "var/spool"
    admin_token: str | None = None  # bearer token for /api; only from CHECKIN_ADMIN_TOKEN
    # Signs the dashboard's session cookie when set (only from CHECKIN_SECRET_KEY); needed
    # with staff accounts on the Twilio messenger when there is no admin token.
    secret_key: str | None = None
    twilio: Twilio = Twilio()
    outbox: Outbox = Outbox()
    loop_guard: LoopGuard = LoopGuard()
    scheduler: Scheduler = Scheduler()

    @field_validator("secret_key", "admin_token")
    @classmethod
    def _long_enough(cls, v: str | None, info: ValidationInfo) -> str | None:
        """Both open the dashboard: the admin token opens /api too, and without the secret
        key it signs the session cookie, which the sign-in page gives anyone (a short one
        could be found offline from it)."""
        if v in (None, ""):
            return None
        if len(v) < SECRET_CHARS:
            var = {"secret_key": "CHECKIN_SECRET_KEY", "admin_token": "CHECKIN_ADMIN_TOKEN"}
            raise ValueError(f"{var[info.field_name]} is too short: use at least "
                             f"{SECRET_CHARS} random characters")
        return v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str) -> str:
        """SQLite or PostgreSQL (psycopg 3), the two databases the bot runs on; anything else
        would stop every command later with a traceback."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        from bot.store.db import normalise_url

        try:
            url = make_url(normalise_url(v))
        except ArgumentError:
            url = None
        if url is None or url.drivername not in ("sqlite", "sqlite+pysqlite",
                                                 "postgresql+psycopg"):
            raise ValueError("not a database URL: expected sqlite:///PATH or "
                             "postgresql://USER:PASSWORD@HOST/NAME")
        return v

    @field_validator("public_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v in (None, ""):
            return None
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"expected an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @model_validator(mode="after")
    def _messenger_ready(self) -> Settings:
        if self.defaults.language not in self.languages:
            raise ValueError(f"defaults.language {self.defaults.language!r} not in languages")
        if self.messenger_name == "twilio":
            t = self.twilio
            if not (t.account_sid and t.auth_token):
                raise ValueError(
                    "messenger is twilio but TWILIO_ACCOUNT_SID / TWILIO_AUTH_TOKEN are not set"
                )
            if not (t.from_number or t.messaging_service_sid):
                raise ValueError(
                    "messenger is twilio but neither TWILIO_FROM nor "
                    "TWILIO_MESSAGING_SERVICE_SID is set"
                )
            calling = [c.id for c in self.care_team.contacts if c.call]
            if calling and not t.from_number:
                raise ValueError(
                    f"care_team contact {calling[0]!r} has call: true but TWILIO_FROM is not "
                    "set (a call needs a number to call from; a Messaging Service cannot call)"
                )
            if calling and not self.public_url:
                raise ValueError(
                    f"care_team contact {calling[0]!r} has call: true but CHECKIN_PUBLIC_URL "
                    "is not set (pressing 1 on the call reaches the bot there)"
                )
        return self

    @property
    def messenger_name(self) -> str:
        """"dev" or "twilio". Without CHECKIN_MESSENGER: twilio when any Twilio credential or
        sender is set, dev when none is. Twilio settings that are there but incomplete (say the
        auth token's secret was not mounted) raise ValueError naming what is missing, so the
        bot does not start on the dev messenger, which sends nothing to real phones."""
        if self.messenger == "dev":
            return "dev"
        t = self.twilio
        given = [t.account_sid, t.auth_token, t.from_number, t.messaging_service_sid,
                 t.whatsapp_from]
        if self.messenger is None and not any(given):
            return "dev"
        missing = [name for name, value in (("TWILIO_ACCOUNT_SID", t.account_sid),
                                            ("TWILIO_AUTH_TOKEN", t.auth_token)) if not value]
        if not (t.from_number or t.messaging_service_sid):
            missing.append("TWILIO_FROM or TWILIO_MESSAGING_SERVICE_SID")
        if missing:
            why = "messenger is twilio" if self.messenger else "Twilio is partly configured"
            raise ValueError(f"{why} but missing {', '.join(missing)}; set "
                             f"{'it' if len(missing) == 1 else 'them'}, or set "
                             "CHECKIN_MESSENGER=dev to run without real phones")
        return "twilio"


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = data
    for p in parents:
        node = node.setdefault(p, {})
    node[last] = value


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path}: invalid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config: {path}: expected a mapping at the top level")
    return data


def _no_secrets_in_file(data: Mapping[str, Any], path: Path) -> None:
    for dotted in SECRET_KEYS:
        node: Any = data
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, Mapping) else None
        if node is not None:
            raise ConfigError(
                f"config: {dotted}: secrets are read only from the environment, not from {path}"
            )


def _format_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    key = ".".join(str(p) for p in err["loc"]) or "settings"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown setting"
    return f"config: {key}: {msg}"


def load_settings(
    env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Build validated Settings; raise ConfigError with one line naming the bad key."""
    env = os.environ if env is None else env
    data = _read_yaml(DEFAULT_CONFIG)
    _no_secrets_in_file(data, DEFAULT_CONFIG)
    extra_path = env.get("CHECKIN_CONFIG")
    if extra_path:
        extra = _read_yaml(Path(extra_path))
        _no_secrets_in_file(extra, Path(extra_path))
        data = _deep_merge(data, extra)
    for var, dotted in ENV_KEYS.items():
        if env.get(var) not in (None, ""):
            _set_dotted(data, dotted, env[var])
    if overrides:
        data = _deep_merge(data, overrides)
    try:
        return Settings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc)) from None
