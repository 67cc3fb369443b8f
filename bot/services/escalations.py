"""Escalations: a red flag opens one, the care team is alerted round the chain until someone
acknowledges, and every change is audited."""

from __future__ import annotations

import logging
import re
import secrets
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from bot.domain import gsm7
from bot.domain.triage import (
    LEVELS,
    Vocabulary,
    _default_vocabulary,
    detect,
    level_for_flags,
    max_level,
)
from bot.services import staff as staff_service
from bot.services import voice
from bot.services.audit import audit
from bot.services.context import ServiceContext
from bot.services.outbox import PRIORITY_EMERGENCY, Draft, enqueue
from bot.store.claims import claim_due
from bot.store.models import Escalation, Message, Patient
from bot.store.statuses import FAILED

log = logging.getLogger(__name__)

REF_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O or 1/I: read aloud on a phone
# The outbox kind of the phone call that goes with an emergency alert (see _alert).
ALERT_CALL = "alert_call"
# A resolution note's length: the dashboard's form, the API and the CLI all keep to it.
NOTE_CHARS = 2000


class EscalationNotFound(LookupError):
    pass


def new_ref(session: Session) -> str:
    while True:
        ref = "".join(secrets.choice(REF_ALPHABET) for _ in range(5))
        if session.scalars(select(Escalation.id).where(Escalation.ref == ref)).first() is None:
            return ref


def open_escalation_for(session: Session, patient_id: int | None,
                        phone: str | None = None) -> Escalation | None:
    """The newest escalation nobody has acknowledged yet, of the patient (or, for a number
    that is not enrolled, of that phone), locked for the caller's transaction. With both: the
    patient's, or one opened for their phone before they were enrolled (a red flag texted just
    before enrolment is the same person's)."""
    by_phone = Escalation.patient_id.is_(None) & (Escalation.phone == phone)
    if patient_id is None:
        who = by_phone
    elif phone:
        who = (Escalation.patient_id == patient_id) | by_phone
    else:
        who = Escalation.patient_id == patient_id
    # Locked (PostgreSQL), and read afresh: an ACK or a resolve committing meanwhile must not
    # leave a red flag added to (or an upgrade alerted for) an escalation someone has taken,
    # whose alerts the dispatcher then cancels. Waiting for their lock, this finds it taken.
    return session.scalars(
        select(Escalation).where(who, Escalation.status == "open")
        .order_by(Escalation.id.desc()).limit(1).with_for_update()
        .execution_options(populate_existing=True)
    ).first()


def _lock_number(session: Session, phone: str) -> None:
    """Serialise, per phone number, the escalations of a number that is not enrolled."""
    session.execute(select(func.pg_advisory_xact_lock(func.hashtext(f"escalation:{phone}"))))


def link_number_to_patient(session: Session, patient: Patient, now: datetime,
                           actor: str) -> list[str]:
    """Make the patient's the escalations not resolved yet that were opened for their number
    while it was not enrolled (a red flag texted just before enrolment, or from the new phone
    the patient's number was then changed to): the same person's. Else, once acknowledged,
    they would stay a stranger's, and what is decided from the patient's own escalations
    (has_unresolved_emergency: "the team will call you today" or not; the hotline again in
    answer to their texts) would not see them. Audited per escalation
    (`escalation.patient_linked`, by `actor`). Resolved ones stay as the team closed them.
    Returns their refs.

    On PostgreSQL the number's lock is taken first (see escalate): a red flag from the number
    being escalated right now is waited for, and linked too. (One whose webhook looked the
    number up before this committed, and escalates after it, stays the number's until the
    patient's next red flag finds it still open: see open_escalation_for.)"""
    if session.get_bind().dialect.name == "postgresql":
        _lock_number(session, patient.phone)
    found = list(session.scalars(
        select(Escalation).where(Escalation.patient_id.is_(None),
                                 Escalation.phone == patient.phone,
                                 Escalation.status != "resolved")
        .order_by(Escalation.id).with_for_update().execution_options(populate_existing=True)))
    for esc in found:
        esc.patient_id, esc.phone, esc.updated_at = patient.id, None, now
        audit(session, now, actor, "escalation.patient_linked", "escalation", esc.ref,
              patient_id=patient.id, status=esc.status)
    return [esc.ref for esc in found]


def has_unresolved_emergency(session: Session, patient_id: int | None,
                             phone: str | None = None) -> bool:
    """An emergency for this patient (or, with no patient, from this number that is not
    enrolled) that is still open or acknowledged (not resolved)."""
    whose = (Escalation.patient_id == patient_id if patient_id is not None
             else (Escalation.patient_id.is_(None) & (Escalation.phone == phone)))
    return session.scalars(
        select(Escalation.id).where(whose, Escalation.status != "resolved",
                                    Escalation.level == "emergency")
    ).first() is not None


def open_alerted_to(session: Session, phone: str) -> list[Escalation]:
    """The escalations nobody has acknowledged yet that alerted this care-team phone, oldest
    first. Only alerts that went to it: one the carrier refused, or not sent yet, never
    reached the person (a bare "ACK" from them is about an alert they read)."""
    return list(session.scalars(
        select(Escalation).where(Escalation.status == "open", Escalation.id.in_(_reached(phone)))
        .order_by(Escalation.id)))


def _reached(phone: str):
    """The escalations with an alert that went to this phone and was not refused."""
    return select(Message.escalation_id).where(
        Message.direction == "out", Message.kind == "alert", Message.address == phone,
        Message.provider_id.is_not(None),
        Message.status.not_in(("failed", "undelivered", "cancelled")))


# A bare ACK this long after someone else took an alert sent to the same contact is still
# answered about it (see taken_alerted_to); later it is a stray ACK.
TAKEN_RECENTLY = timedelta(hours=12)


def taken_alerted_to(session: Session, phone: str, now: datetime) -> Escalation | None:
    """The escalation most recently acknowledged (within TAKEN_RECENTLY) of those whose alert
    reached this care-team phone: what a bare "ACK" from them is about when none of theirs is
    open any more (someone else took it first)."""
    return session.scalars(
        select(Escalation).where(Escalation.status != "open",
                                 Escalation.acknowledged_at >= now - TAKEN_RECENTLY,
                                 Escalation.id.in_(_reached(phone)))
        .order_by(Escalation.acknowledged_at.desc(), Escalation.id.desc()).limit(1)).first()


def _timeout(ctx: ServiceContext, level: str) -> timedelta:
    t = ctx.settings.care_team
    minutes = t.ack_timeout_minutes if level == "emergency" else t.urgent_ack_timeout_minutes
    return timedelta(minutes=minutes)


# session.info key: the level of each escalate() call in this transaction, in order.
ESCALATED_INFO = "escalated_levels"


def escalate(
    session: Session,
    ctx: ServiceContext,
    patient: Patient | None,
    level: str,
    flags: list[str],
    words: str | None,
    now: datetime,
    phone: str | None = None,
) -> tuple[Escalation, list[int]]:
    """Add to the patient's escalation that nobody has acknowledged yet (alerting again only
    if this raises its level), or open a new one and alert.

    An escalation someone has acknowledged takes nothing more: a red flag reported after it
    opens a new escalation with its own ref and alert chain, so the team hears of it even if
    the acknowledged one was never resolved.

    `patient` is None for a number that is not enrolled; `phone` is then that number, and the
    escalation runs the same chain (its alert asks the team to call the number).

    Returns the escalation and the outbox ids of the alerts (and alert calls) written.
    """
    assert level in ("urgent", "emergency"), level
    assert patient is not None or phone, "an escalation needs a patient or a phone"
    # Noted for whoever handles the message that led here (inbound: InboundOutcome.escalated),
    # whatever path escalated: the text's red flag, or a check-in answer's.
    session.info.setdefault(ESCALATED_INFO, []).append(level)
    patient_id = patient.id if patient is not None else None
    if patient is not None:
        # Whatever the path (a text, a timeout, a late answer, a message handled after a
        # failure), two red flags of one patient at once find one escalation: the second
        # waits here for the first to commit. A no-op for a caller that locked the patient
        # first, as each path does (that order: patient, then conversation and escalation).
        session.execute(select(Patient.id).where(Patient.id == patient_id).with_for_update())
    elif session.get_bind().dialect.name == "postgresql":
        # No patient row to lock: two red flags from the same number at once must still find
        # one escalation, not open two chains. (SQLite takes one writer at a time.)
        _lock_number(session, phone)
    current = open_escalation_for(session, patient_id,
                                  patient.phone if patient is not None else phone)
    if current is not None:
        if current.patient_id is None and patient_id is not None:
            # Opened for this number before it was enrolled: it is this patient's now, and
            # its alerts name them.
            current.patient_id, current.phone = patient_id, None
            audit(session, now, "system", "escalation.patient_linked", "escalation",
                  current.ref, patient_id=patient_id)
        merged = sorted(set(current.flags) | set(flags))
        upgraded = LEVELS.index(level) > LEVELS.index(current.level)
        if words:  # newest first: an alert shows the start of this
            joined = f"{words} | {current.words}" if current.words else words
            current.words = joined[:2000]
        current.flags = merged
        current.updated_at = now
        if not upgraded:
            audit(session, now, "system", "escalation.add", "escalation", current.ref,
                  flags=flags, level=level)
            return current, []
        current.level = max_level(current.level, level)
        current.chain_position = 0
        audit(session, now, "system", "escalation.upgrade", "escalation", current.ref,
              level=level, flags=merged)
        return current, _alert(session, ctx, current, now)
    esc = Escalation(
        ref=new_ref(session), patient_id=patient_id, phone=None if patient else phone,
        level=level, flags=sorted(set(flags)),
        words=words[:2000] if words else None, status="open", chain_position=0, alerts_sent=0,
        created_at=now, updated_at=now,
    )
    session.add(esc)
    session.flush()
    audit(session, now, "system", "escalation.open", "escalation", esc.ref,
          patient_id=patient_id, level=level, flags=esc.flags)
    return esc, _alert(session, ctx, esc, now)


FLAGS_CHARS = 60
WORDS_CHARS = 60
# A reply to a check-in question in an alert: "Q: <question> A: <reply> (<meaning>)", the
# question shortened to fit, the reply to ANSWER_REPLY_CHARS.
ANSWER_CHARS = 110
ANSWER_REPLY_CHARS = 40
MEANING_CHARS = 30
NAME_CHARS = 30
# The fewest characters of the patient's words (or of a reply with its question) an alert
# keeps when it makes room for the dashboard link; with less room left the link is left out.
LINK_ROOM = 20
# The red flag's page on the dashboard (bot.web.dashboard.escalation).
DASHBOARD_PAGE = "/dashboard/escalations/{ref}"
_ELLIPSIS = "..."
# Where each message of an escalation's words ends (newest first, see escalate).
_MESSAGE_SEPARATOR = " | "


def short_name(name: str | None, limit: int = NAME_CHARS) -> str:
    """A patient's name for a care-team text: plain GSM-7, at most `limit` characters, cut
    between words ("Maximilian-Alexander Worthington" -> "Maximilian-Alexander"), never
    inside one; a first word longer than that is cut with "..."."""
    name = " ".join(gsm7.to_gsm7(name or "").split())
    if len(name) <= limit:
        return name
    cut = name[:limit + 1].rsplit(" ", 1)[0]
    if " " in name[:limit + 1] and cut:
        return cut
    return name[:limit - len(_ELLIPSIS)] + _ELLIPSIS


# How an escalation keeps a reply to a question of a flow (see answer_words).
_ANSWER = re.compile(r"^Q: (?P<question>.+?) A: (?P<reply>.*?)(?: \((?P<meaning>[^()]*)\))?$",
                     re.DOTALL)


def answer_words(question: str, reply: str, meaning: str) -> str:
    """The words an escalation keeps for a reply to a question that raised a red flag, so
    that the care team reads it with its question: "Q: Any new numbness...? A: y (Yes)".
    The meaning is left out when the reply says it already ("yes"); "8 (on a scale of 0 to
    10)", not "8 (8 on a scale...)"."""
    reply = " ".join(reply.split())
    shown = f"Q: {' '.join(question.split())} A: {reply}"
    if meaning.casefold().startswith(f"{reply.casefold()} "):
        meaning = meaning[len(reply) + 1:]
    if meaning and meaning.casefold() != reply.casefold():
        shown += f" ({meaning})"
    return shown


def words_to_read(words: str | None) -> str:
    """An escalation's words for a person to read (the dashboard): as kept, except that when
    some are replies to questions, each message is on a line of its own and each reply under
    its question ("Q: ..." then "A: ...")."""
    parts = (words or "").split(_MESSAGE_SEPARATOR)
    if not any(_ANSWER.match(part) for part in parts):
        return words or ""
    lines: list[str] = []
    for part in parts:
        found = _ANSWER.match(part)
        if found is None:
            lines.append(part)
        else:
            lines += [f"Q: {found['question']}", f"A: {part[found.start('reply'):]}"]
    return "\n".join(lines)


def _plain(text: str) -> str:
    return " ".join(gsm7.to_gsm7(text).split())


def _cut(text: str, limit: int) -> str:
    """At most `limit` characters of `text`, cut between words with "..." when too long."""
    if len(text) <= limit:
        return text
    cut = text[:max(limit - len(_ELLIPSIS), 0) + 1]
    cut = cut.rsplit(" ", 1)[0] if " " in cut else cut[:-1]
    return cut.rstrip(" ,;:") + _ELLIPSIS


def answer_for_alert(part: str, limit: int = ANSWER_CHARS) -> str | None:
    """One message of an escalation's words, when it is a reply to a question (see
    answer_words), as an alert shows it: at most `limit` characters of plain GSM-7, the
    question cut short before the reply or its meaning, ending with a full stop. None for
    words the patient wrote."""
    found = _ANSWER.match(part)
    if found is None:
        return None
    meaning = _cut(_plain(found["meaning"] or ""), MEANING_CHARS)
    tail = f" A: {_cut(_plain(found['reply']), ANSWER_REPLY_CHARS)}"
    if meaning:
        tail += f" ({meaning})"
    room = limit - len("Q: ") - len(tail) - 1  # 1: the full stop
    shown = f"Q: {_cut(_plain(found['question']), room)}{tail}"
    shown = shown if shown.endswith((".", "!", "?")) else f"{shown}."
    # A small room (an alert making room for more, see alert_body) can leave no room for
    # the reply and its meaning whole: cut the whole.
    return shown if len(shown) <= limit else _cut(shown, limit)


def alert_details(flags, words: str | None, vocabulary: Vocabulary | None = None,
                  answer_chars: int = ANSWER_CHARS,
                  words_chars: int = WORDS_CHARS) -> dict[str, str]:
    """The {flags} and {words} of a care-team alert, short enough for its 2 SMS segments.
    Or, when the newest of the words is a reply to a check-in question (see answer_words),
    {flags} and {answer}: the question and the reply (see answer_for_alert).

    Flags of the highest tier come first and are never cut mid-name ("+2 more" says what was
    left out); the words are made GSM-7 before they are shortened, as a transliterated
    character can become several letters. Words too long to quote whole are quoted around
    the phrases the red-flag detector matched (the highest tier first), not from their start:
    "Hello, hope you are well..." tells the nurse nothing.
    """
    order = {level: i for i, level in enumerate(reversed(LEVELS))}
    ranked = sorted(set(flags), key=lambda f: (order[_level_of(f, vocabulary)], f))
    names = [f.replace("_", " ") for f in ranked]
    shown: list[str] = []
    for i, name in enumerate(names):
        left = len(names) - i - 1
        line = ", ".join([*shown, name, *([f"+{left} more"] if left else [])])
        if shown and len(line) > FLAGS_CHARS:
            shown.append(f"+{left + 1} more")
            break
        shown.append(name)
    parts = (words or "").split(_MESSAGE_SEPARATOR)
    answer = answer_for_alert(parts[0], answer_chars)
    if answer is not None:
        return {"flags": ", ".join(shown), "answer": answer}
    # What the patient wrote, without replies to questions: those are not what they "said".
    free = _MESSAGE_SEPARATOR.join(part for part in parts if _ANSWER.match(part) is None)
    said = " ".join(gsm7.to_gsm7(free).split())
    if len(said) > words_chars:
        said = quote_around_flags(said, set(flags), vocabulary, words_chars)
    return {"flags": ", ".join(shown), "words": said}


def quote_around_flags(said: str, flags: set[str], vocabulary: Vocabulary | None,
                       budget: int) -> str:
    """At most `budget` characters of `said` (one line of words, single spaces): the words the
    detector matched as red flags, with as much of their surroundings as fits, "..." where
    words were left out. Without a match, the start of the words, cut between words."""
    words = [(m.start(), m.end()) for m in re.finditer(r"\S+", said)]
    if not words:
        return ""

    def fits(ranges: list[list[int]]) -> bool:
        return len(_render(said, words, ranges)) <= budget

    chosen: list[list[int]] = []
    # Whole phrases, the most important first; each kept only if it still fits.
    for first, last in _flag_spans(said, words, flags, vocabulary) or [(0, 0)]:
        trial = _merge([*chosen, [first, last]])
        if fits(trial):
            chosen = trial
        elif not chosen:  # even the first phrase alone is too long: as much of it as fits
            while last > first and not fits([[first, last]]):
                last -= 1
            chosen = [[first, last]]
    # Then the words around them: one more after each, one more before each, in turn.
    grown = True
    while grown:
        grown = False
        for side, step in ((1, 1), (0, -1)):
            for i in range(len(chosen)):
                if i >= len(chosen):
                    break
                edge = chosen[i][side] + step
                if not 0 <= edge < len(words):
                    continue
                trial = [list(r) for r in chosen]
                trial[i][side] = edge
                trial = _merge(trial)
                if fits(trial):
                    chosen, grown = trial, True
    text = _render(said, words, chosen)
    return text if len(text) <= budget else text[:budget - len(_ELLIPSIS)] + _ELLIPSIS


def _merge(ranges: list[list[int]]) -> list[list[int]]:
    """Word ranges [first, last] in order, touching or overlapping ones joined."""
    out: list[list[int]] = []
    for first, last in sorted(ranges):
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return out


def _render(said: str, words: list[tuple[int, int]], ranges: list[list[int]]) -> str:
    text = f" {_ELLIPSIS} ".join(said[words[first][0]:words[last][1]] for first, last in ranges)
    if ranges[0][0] > 0:
        text = f"{_ELLIPSIS}{text}"
    if ranges[-1][1] < len(words) - 1:
        text = f"{text}{_ELLIPSIS}"
    return text


def _flag_spans(said: str, words: list[tuple[int, int]], flags: set[str],
                vocabulary: Vocabulary | None) -> list[tuple[int, int]]:
    """(first word, last word) of each red-flag phrase the detector finds in `said`, the
    highest tier first, then in the order they were written (the newest message first).

    Each message of the escalation (see escalate) is read on its own, as it was when it came.
    The detector reports a match in its normalised form ("cant feel my legs"); it is found
    again among the words by normalising them one at a time."""
    vocab = vocabulary if vocabulary is not None else _default_vocabulary()
    tokens: list[tuple[str, int]] = []  # (normalised token, index of the word it came from)
    parts: list[tuple[int, int, int, int]] = []  # (first word, last word, first token, end)
    part_start, token_start = 0, 0
    for i, (start, end) in enumerate(words + [(len(said), len(said))]):
        separator = i == len(words) or said[start:end] == _MESSAGE_SEPARATOR.strip()
        if separator:
            if i > part_start:
                parts.append((part_start, i - 1, token_start, len(tokens)))
            part_start = i + 1
        else:
            tokens += [(t, i) for t in vocab.normalise(said[start:end]).split()]
        if separator:
            token_start = len(tokens)
    stream = [t for t, _ in tokens]
    order = {level: i for i, level in enumerate(reversed(LEVELS))}
    found: list[tuple[int, int, int]] = []  # (tier, first word, last word)
    for first_word, last_word, lo, hi in parts:
        result = detect(said[words[first_word][0]:words[last_word][1]], vocab)
        for match in result.matches:
            flag, _, phrase = match.partition(": ")
            if flags and flag not in flags:
                continue
            at = _find(stream[lo:hi], phrase.removesuffix(" (hypothetical)").split())
            if at is not None:
                found.append((order[_level_of(flag, vocab)], tokens[lo + at[0]][1],
                              tokens[lo + at[1]][1]))
    found.sort()
    return [(first, last) for _, first, last in found]


def _find(stream: list[str], phrase: list[str]) -> tuple[int, int] | None:
    """Token positions (first, last) of `phrase` in `stream`: the whole phrase if it is there
    as it is, else from its first word to its last word soon after."""
    if not phrase:
        return None
    n = len(phrase)
    for i in range(len(stream) - n + 1):
        if stream[i:i + n] == phrase:
            return i, i + n - 1
    for i, token in enumerate(stream):
        if token == phrase[0]:
            ends = [j for j in range(i, min(len(stream), i + n + 8)) if stream[j] == phrase[-1]]
            return i, ends[0] if ends else i
    return None


def _level_of(flag: str, vocabulary: Vocabulary | None) -> str:
    try:
        return level_for_flags([flag], vocabulary)
    except ValueError:  # a flag this vocabulary no longer knows: show it, last
        return "routine"


def _alert(session: Session, ctx: ServiceContext, esc: Escalation, now: datetime) -> list[int]:
    """Alert the contact at the escalation's chain position and set the next re-alert."""
    team = ctx.settings.care_team
    contact = team.contact(team.escalation_chain[esc.chain_position % len(team.escalation_chain)])
    body = alert_body(session, ctx, esc)
    item = enqueue(session, Draft(to=contact.phone, channel=contact.channel, body=body,
                                  kind="alert", priority=PRIORITY_EMERGENCY,
                                  escalation_id=esc.id), now)
    ids = [item.id]
    calls = contact.call and esc.level == "emergency"
    if calls:
        # A text at 3 a.m. on a silenced phone is easy to miss: phone them too (after the
        # text, which has the details the call leaves out). Cancelled like the alert when
        # someone acknowledges first (see Dispatcher._prepare).
        twiml = voice.alert_call_twiml(
            ctx.settings.clinic.name, esc.ref,
            voice.ack_url(ctx.settings.public_url, esc.ref, contact.id))
        ids.append(enqueue(session, Draft(to=contact.phone, channel="voice", body=twiml,
                                          kind=ALERT_CALL, priority=PRIORITY_EMERGENCY,
                                          escalation_id=esc.id), now).id)
    esc.alerts_sent += 1
    esc.next_alert_at = now + _timeout(ctx, esc.level)
    audit(session, now, "system", "escalation.alert", "escalation", esc.ref,
          contact=contact.id, attempt=esc.alerts_sent, **({"call": True} if calls else {}))
    return ids


def alert_body(session: Session, ctx: ServiceContext, esc: Escalation,
               before: int | None = None) -> str:
    """The text of a care-team alert about `esc`, within 2 SMS segments, naming the patient's
    number as it is now.

    An alert that goes again because nobody acknowledged in time says so first (see
    resent_note); `before` is the id of the alert being written again, None for one about
    to be written. With CHECKIN_PUBLIC_URL set, and the dashboard open to sign in to (see
    staff.dashboard_usable: not with real phones and neither an admin token nor staff
    accounts), it ends with a link to the red flag's dashboard page. The words (or the reply with its question) get the room the rest leaves;
    the link is left out rather than leave them under LINK_ROOM characters."""
    note = resent_note(session, ctx, esc, before)
    values = {"level": esc.level.upper(), "ref": esc.ref, "resent": f"{note} " if note else "",
              "link": ""}
    if esc.patient_id is None:
        key = "alert_unknown"
        values["patient_phone"] = esc.phone
    else:
        patient = session.get(Patient, esc.patient_id)
        key = "alert"
        values.update(patient=short_name(patient.name), patient_phone=patient.phone)
    link = dashboard_link(ctx.settings.public_url, esc.ref)
    if link and not staff_service.dashboard_usable(session, ctx.settings):
        link = None  # the dashboard is off (403): the link would lead nowhere
    if link and gsm7.is_gsm7(link):
        body = _fitted(ctx, esc, key, {**values, "link": f" {link}"}, LINK_ROOM)
        if body is not None:
            return body
    return _fitted(ctx, esc, key, values, 0)


def _fitted(ctx: ServiceContext, esc: Escalation, key: str, values: dict[str, str],
            least: int) -> str | None:
    """The alert `key` with `values` and the escalation's flags and words (or the reply with
    its question, in alert_answer), these given the room its 2 SMS segments leave (the words
    at most WORDS_CHARS); None when that room is under `least` characters."""
    details = alert_details(esc.flags, esc.words, ctx.vocabulary)
    field = "answer" if "answer" in details else "words"
    if field == "answer" and key == "alert":
        key = "alert_answer"
    room = 2 * gsm7.GSM7_PART - len(ctx.texts.render(key, "en", **values,
                                                     **{**details, field: ""}))
    while True:
        if least and room < least:
            return None
        shown = alert_details(esc.flags, esc.words, ctx.vocabulary, answer_chars=max(room, 0),
                              words_chars=max(min(room, WORDS_CHARS), 0))
        body = ctx.texts.render(key, "en", **values, **shown)
        # Characters of GSM-7's extension table ("[", "~") take two places each.
        over = sum(2 if c in gsm7.EXTENSION_CHARS else 1 for c in body) - 2 * gsm7.GSM7_PART
        if gsm7.segments(body) <= 2 or room <= 0:
            return body
        room -= max(over, 1)


def resent_note(session: Session, ctx: ServiceContext, esc: Escalation,
                before: int | None = None) -> str:
    """What an alert that goes again because nobody acknowledged in time says first: who was
    alerted before and when, in the clinic's zone (alert_escalated), or, to the same person
    again, that it is a repeat (alert_repeat). When that alert could not be delivered (and
    the chain moved on at once, see alert_not_delivered), that it did not reach them
    (alert_unreached, alert_repeat_unreached): they never knew. "" for an escalation's first
    alert, and the first after an upgrade (the chain starts again: a new level, new flags)."""
    if esc.chain_position == 0:
        return ""
    team = ctx.settings.care_team
    chain = team.escalation_chain
    previous = team.contact(chain[(esc.chain_position - 1) % len(chain)])
    current = team.contact(chain[esc.chain_position % len(chain)])
    query = select(Message.created_at, Message.status).where(Message.escalation_id == esc.id,
                                                             Message.kind == "alert")
    if before is not None:
        query = query.where(Message.id < before)
    last = session.execute(query.order_by(Message.id.desc()).limit(1)).first()
    if last is None:
        return ""
    local = last.created_at.astimezone(ZoneInfo(ctx.settings.defaults.timezone))
    time = f"{local:%H:%M} {local.tzname() or ''}".strip()
    unreached = "_unreached" if last.status in FAILED else ""
    if previous.phone == current.phone:
        return ctx.texts.render(f"alert_repeat{unreached}", "en", time=time)
    key = "alert_unreached" if unreached else "alert_escalated"
    return ctx.texts.render(key, "en", contact=short_name(previous.name), time=time)


def dashboard_link(public_url: str | None, ref: str) -> str | None:
    """The red flag's dashboard page at the deployment's public URL; None without one."""
    return f"{public_url}{DASHBOARD_PAGE.format(ref=ref)}" if public_url else None


def alert_not_delivered(session: Session, escalation_id: int, now: datetime,
                        reason: str, message_id: int | None = None,
                        chain_length: int | None = None, copy_follows: bool = False) -> bool:
    """An alert could not reach its contact: if nobody has acknowledged, the next contact is
    due now (the scheduler's next tick), not after the acknowledgement timeout.

    Only for the escalation's latest alert (`message_id`, when known): a late report about an
    earlier contact must not cut short the time the current one has. And only on the first lap
    of the chain (`chain_length`, when known): if every contact fails, the chain goes on at the
    normal pace rather than every tick. Not when another try at the same contact follows
    (`copy_follows`: a template, an SMS copy): the chain moves on if that fails too, as it does
    when the dispatcher switches a refused WhatsApp alert to SMS; else two contacts would be
    paged within seconds for one red flag.

    Returns whether this was the current alert of an escalation still open: only then is it
    worth another try to the same contact (a template, an SMS copy). A copy of an alert the
    chain has moved past would become the escalation's latest alert and blur the rule above.
    """
    esc = session.get(Escalation, escalation_id, with_for_update=True)
    if esc is None or esc.status != "open":
        return False
    latest = message_id is None or message_id == session.scalar(
        select(func.max(Message.id)).where(Message.escalation_id == esc.id,
                                           Message.kind == "alert"))
    # The first lap of the chain since it (re)started: an upgrade from urgent to emergency
    # starts it again at the first contact.
    first_lap = chain_length is None or esc.chain_position < chain_length
    moved_on = latest and first_lap and not copy_follows
    if moved_on:
        esc.next_alert_at = now
        esc.updated_at = now
    audit(session, now, "system", "escalation.alert_failed", "escalation", esc.ref,
          reason=reason, chain_position=esc.chain_position, moved_on=moved_on,
          copy_follows=copy_follows)
    return latest


def realert_due(session: Session, ctx: ServiceContext, now: datetime, limit: int = 50,
                failures: list[str] | None = None) -> list[int]:
    """Move every unacknowledged escalation whose wait ran out to the next contact.

    Each in its own savepoint: one escalation whose alert cannot be written (whatever the
    reason) must not hold up the re-alerts of all the others. It stays due, so the next tick
    tries it again; its ref goes into `failures` for the caller to report."""
    due = claim_due(session, Escalation, Escalation.status == "open",
                    Escalation.next_alert_at <= now, order_by=Escalation.next_alert_at,
                    limit=limit)
    ids: list[int] = []
    for esc in due:
        ref = esc.ref
        try:
            with session.begin_nested():
                esc.chain_position += 1
                esc.updated_at = now
                written = _alert(session, ctx, esc, now)
        except Exception:
            log.exception("re-alert of escalation %s failed; the others go on", ref)
            if failures is not None:
                failures.append(ref)
            continue
        ids += written
    return ids


def find_by_ref(session: Session, ref: str) -> Escalation:
    esc = session.scalars(
        select(Escalation).where(Escalation.ref == ref.strip().upper()).with_for_update()
    ).first()
    if esc is None:
        raise EscalationNotFound(ref)
    return esc


def acknowledge(session: Session, ref: str, by: str, now: datetime, actor: str,
                how: str | None = None) -> tuple[Escalation, bool]:
    """Mark acknowledged and stop the chain. Returns (escalation, changed); one someone already
    took is left as it is, and the attempt audited (`escalation.ack_refused`). `how`, when
    given, goes into the audit record (an ACK by text that named no ref)."""
    esc = find_by_ref(session, ref)
    if esc.status != "open":
        audit(session, now, actor, "escalation.ack_refused", "escalation", esc.ref, by=by,
              status=esc.status, acknowledged_by=esc.acknowledged_by)
        return esc, False
    esc.status = "acknowledged"
    esc.acknowledged_by = by
    esc.acknowledged_at = now
    esc.next_alert_at = None
    esc.updated_at = now
    audit(session, now, actor, "escalation.ack", "escalation", esc.ref, by=by,
          **({"how": how} if how else {}))
    return esc, True


def resolve(session: Session, ref: str, note: str, now: datetime, actor: str,
            by: str | None = None) -> tuple[Escalation, bool]:
    """Close the escalation with a note. Returns (escalation, changed); one already resolved
    is left as it is (its first note stays) and the attempt audited
    (`escalation.resolve_refused`).

    Resolving one nobody acknowledged also stops its chain: it counts as acknowledged now,
    by `by` (a person's name; None when not given: `actor` names a channel such as
    "api:..." or "cli:...", not who took the alert, and stays in the audit record).
    """
    esc = find_by_ref(session, ref)
    if esc.status == "resolved":
        audit(session, now, actor, "escalation.resolve_refused", "escalation", esc.ref,
              note=note, **({"by": by} if by else {}))
        return esc, False
    if esc.acknowledged_at is None:
        esc.acknowledged_at = now
        esc.acknowledged_by = by
    esc.status = "resolved"
    esc.resolved_at = now
    esc.resolution_note = note
    esc.next_alert_at = None
    esc.updated_at = now
    audit(session, now, actor, "escalation.resolve", "escalation", esc.ref, note=note,
          **({"by": by} if by else {}))
    return esc, True


def list_escalations(session: Session, open_only: bool = False,
                     before: tuple[datetime, int] | None = None,
                     limit: int | None = None) -> list[Escalation]:
    """Newest first; a page of them: those after `before` (the created_at and id of the last
    one of the page before) in that order, at most `limit`."""
    query = select(Escalation).order_by(Escalation.created_at.desc(), Escalation.id.desc())
    if open_only:
        query = query.where(Escalation.status != "resolved")
    if before is not None:
        at, esc_id = before
        query = query.where(or_(Escalation.created_at < at,
                                and_(Escalation.created_at == at, Escalation.id < esc_id)))
    return list(session.scalars(query.limit(limit)))
