"""A patient's check-in answers over time: the dashboard's patient page (table and pain trend)
and GET /api/patients/<id>/checkins, with the answers that raised red flags marked."""

from __future__ import annotations

import re

import pytest

from bot.services.history import checkin_history
from tests.test_dashboard import page, sign_in, signed_in  # noqa: F401 - fixture

PHONE = "+447700900123"


def _text(client, body: str) -> None:
    res = client.post("/simulator/api/messages", json={"phone": PHONE, "body": body})
    assert res.status_code == 201, res.get_json()


def _patient_doing_two_checkins(client, clock) -> int:
    res = client.post("/simulator/api/patients", json={"phone": PHONE, "name": "Ada Lovelace"})
    pid = res.get_json()["patient"]["id"]
    _text(client, "yes")  # consent
    _text(client, "CHECKIN")
    for answer in ["3", "no", "no", "no", "no", "no", "no", "no", "no", "no", "no", "no", "no",
                   "2", "no thanks"]:
        _text(client, answer)
    clock.advance(days=7)
    _text(client, "CHECKIN")
    for answer in ["8", "yes", "no", "no", "no", "no", "yes"]:  # pain 8, new; then numbness
        _text(client, answer)
    return pid


def test_the_api_lists_each_checkins_answers_and_the_flags_they_raised(client, rt, clock):
    pid = _patient_doing_two_checkins(client, clock)
    res = client.get(f"/api/patients/{pid}/checkins")
    assert res.status_code == 200
    newest, oldest = res.get_json()
    assert newest["started_at"] > oldest["started_at"]
    assert oldest["status"] == newest["status"] == "completed"
    assert oldest["answers"]["worst_pain"] == {"value": 3, "flags": []}
    assert oldest["answers"]["fatigue"]["value"] == "a_little"
    assert oldest["answers"]["anything_else"] == {"value": "no thanks", "flags": []}
    assert all(not a["flags"] for a in oldest["answers"].values())
    assert newest["answers"]["worst_pain"] == {"value": 8, "flags": ["severe_pain"]}
    assert newest["answers"]["pain_new"] == {"value": "yes", "flags": ["new_back_pain"]}
    assert newest["answers"]["numbness"]["value"] == "yes"
    assert newest["answers"]["numbness"]["flags"] != []
    assert "weakness" not in newest["answers"]  # the check-in ended at the emergency

    assert client.get("/api/patients/999/checkins").status_code == 404


def _checkins_table(text: str):
    """The patient page's check-in table, and a function giving one question's row (its
    whitespace collapsed) by key."""
    table = text[text.index('<table id="checkins">'):]
    table = table[:table.index("</table>")]

    def row(key: str) -> str:
        return re.sub(r"\s+", " ", re.search(rf'<tr data-key="{key}">(.*?)</tr>', table,
                                             re.S).group(1))

    return table, row


def test_the_patient_page_shows_the_answers_newest_first_and_the_pain_trend(client, rt, clock):
    pid = _patient_doing_two_checkins(client, clock)
    sign_in(client, token=None)  # after the week the texts took: a fresh session
    text = page(client, f"/dashboard/patients/{pid}")
    table, row = _checkins_table(text)

    assert len(re.findall(r"<th data-conversation", table)) == 2
    assert row("worst_pain") == (
        '<th scope="row">Worst pain</th> <td class="answer urgent" title="red flag: severe pain">'
        '<span class="words">8</span> *</td><td><span class="words">3</span></td>')
    assert row("numbness").startswith('<th scope="row">Numbness</th> <td class="answer emergency"')
    assert row("weakness") == ('<th scope="row">Weakness</th> <td class="none">-</td>'
                               '<td><span class="words">no</span></td>')  # not asked: ended
    assert row("fatigue").endswith('<td><span class="words">a little</span></td>')
    # The trend: the two worst-pain answers, oldest first, the severe one marked.
    chart = text[text.index('<figure id="pain-trend">'):text.index("</figure>")]
    assert 'aria-label="Worst pain at each check-in, oldest first: 3, 8 (of 10)"' in chart
    assert chart.count("<circle") == 2 and chart.count('class="severe"') == 1


def test_a_patient_with_no_checkin_yet_has_none_to_show(signed_in, client, rt):  # noqa: F811
    res = client.post("/simulator/api/patients", json={"phone": PHONE, "name": "Ada Lovelace"})
    pid = res.get_json()["patient"]["id"]
    assert client.get(f"/api/patients/{pid}/checkins").get_json() == []
    text = page(signed_in, f"/dashboard/patients/{pid}")
    assert "No check-in answered yet." in text and 'id="pain-trend"' not in text
    with rt.transaction() as s:
        assert checkin_history(s, rt.ctx, pid).columns == []


def test_a_checkin_on_an_old_revision_with_a_flag_no_longer_known_still_shows(client, rt, clock):
    # The check-in ran on revision 3 of its flow, whose numbness question raised a flag the
    # red-flag vocabulary has since renamed: the page and the API show it (as an emergency,
    # the higher tier when unsure), not a 500 for every visit to this patient.
    from sqlalchemy import select

    from bot.store.models import Answer, Conversation, FlowRevision

    pid = _patient_doing_two_checkins(client, clock)
    with rt.transaction() as s:
        current = s.scalars(select(FlowRevision).where(FlowRevision.flow_id == "checkin")).one()
        old = {**current.definition, "revision": current.revision - 1}
        old["nodes"] = [dict(node) for node in old["nodes"]]
        for node in old["nodes"]:
            if node.get("save") == "numbness":
                node["cases"] = [{**node["cases"][0], "flags": ["numbness_renamed"]}]
        s.add(FlowRevision(flow_id="checkin", revision=old["revision"], definition=old,
                           loaded_at=clock.now()))
        newest = s.scalars(select(Conversation).where(Conversation.flow_id == "checkin")
                           .order_by(Conversation.id.desc())).first()
        newest.flow_revision = old["revision"]
        assert s.scalars(select(Answer.value).where(
            Answer.conversation_id == newest.id, Answer.question_key == "numbness")).one() == "yes"
    res = client.get(f"/api/patients/{pid}/checkins")
    assert res.status_code == 200
    assert res.get_json()[0]["answers"]["numbness"] == {"value": "yes",
                                                        "flags": ["numbness_renamed"]}
    sign_in(client, token=None)
    text = page(client, f"/dashboard/patients/{pid}")
    assert ('<tr data-key="numbness"><th scope="row">Numbness</th>\n    <td class="answer '
            'emergency" title="red flag: numbness renamed"><span class="words">yes</span> *</td>'
            ) in text


def test_the_pain_chart_says_each_value_and_the_first_and_last_day_without_hovering(client, rt,
                                                                                   clock):
    # On a phone nothing hovers: the values and the days must be on the chart itself.
    pid = _patient_doing_two_checkins(client, clock)
    sign_in(client, token=None)
    text = page(client, f"/dashboard/patients/{pid}")
    chart = text[text.index('<figure id="pain-trend">'):text.index("</figure>")]
    values = re.findall(r'class="value" text-anchor="middle">(\d+)</text>', chart)
    days = re.findall(r'class="axis" text-anchor="(?:start|end)">([^<]+)</text>', chart)
    assert values == ["3", "8"] and days == ["02 Mar", "09 Mar"]


def _patient_whose_replies_were_not_understood(client, rt, clock) -> int:
    """Check-in 1: pain 3; 'is it new?' never understood (its fallback raises new_back_pain);
    'worse at night?' never answered (it timed out). Check-in 2: the pain score never
    understood (severe_pain), then no reply: no understood answer at all."""
    from bot.scheduler import tick

    res = client.post("/simulator/api/patients", json={"phone": PHONE, "name": "Ada Lovelace"})
    pid = res.get_json()["patient"]["id"]
    _text(client, "yes")  # consent
    _text(client, "CHECKIN")
    for answer in ["3", "maybe", "dunno", "hmm"]:
        _text(client, answer)
    clock.advance(hours=25)
    tick(rt)  # the night-pain question times out: the check-in closes
    clock.advance(days=6)
    _text(client, "CHECKIN")
    for answer in ["hmm", "lots and lots and lots, more than I have ever had in my life, honestly",
                   "eh"]:
        _text(client, answer)
    clock.advance(hours=25)
    tick(rt)
    return pid


def test_the_api_tells_a_question_not_understood_or_unanswered_from_one_not_asked(client, rt,
                                                                                 clock):
    pid = _patient_whose_replies_were_not_understood(client, rt, clock)
    newest, oldest = client.get(f"/api/patients/{pid}/checkins").get_json()
    assert oldest["answers"]["worst_pain"] == {"value": 3, "flags": []}
    assert oldest["answers"]["pain_new"] == {
        "value": None, "flags": ["new_back_pain"], "unanswered": "not_understood",
        "reply": "hmm"}  # the last of the three replies
    assert oldest["answers"]["pain_night"] == {
        "value": None, "flags": [], "unanswered": "no_reply", "reply": None}
    assert "pain_cough" not in oldest["answers"]  # not asked
    # No understood answer at all, and still listed: the pain score raised severe_pain.
    assert newest["answers"]["worst_pain"] == {
        "value": None, "flags": ["severe_pain"], "unanswered": "not_understood", "reply": "eh"}
    assert newest["answers"]["pain_new"]["unanswered"] == "no_reply"
    assert set(newest["answers"]) == {"worst_pain", "pain_new"}


def test_the_patient_page_shows_not_understood_and_no_reply_and_dash_only_when_not_asked(
        client, rt, clock):
    pid = _patient_whose_replies_were_not_understood(client, rt, clock)
    sign_in(client, token=None)
    text = page(client, f"/dashboard/patients/{pid}")
    table, row = _checkins_table(text)

    assert len(re.findall(r"<th data-conversation", table)) == 2
    assert row("worst_pain") == (
        '<th scope="row">Worst pain</th> <td class="answer urgent unanswered" '
        'title="red flag: severe pain"><span class="words">not understood: &#34;eh&#34;</span>'
        ' *</td><td><span class="words">3</span></td>')
    assert row("pain_new") == (
        '<th scope="row">Pain new</th> <td class="unanswered"><span class="words">no reply'
        '</span></td><td class="answer urgent unanswered" title="red flag: new back pain">'
        '<span class="words">not understood: &#34;hmm&#34;</span> *</td>')
    assert row("pain_night") == (
        '<th scope="row">Pain night</th> <td class="none">-</td><td class="unanswered">'
        '<span class="words">no reply</span></td>')


def test_a_long_reply_never_understood_is_shortened(client, rt, clock):
    from bot.services.history import TEXT_CHARS

    pid = _patient_whose_replies_were_not_understood(client, rt, clock)
    _text(client, "CHECKIN")
    long_reply = "it is hard to say, some days it is bad and some days less so " * 3
    for _ in range(3):
        _text(client, long_reply)
    with rt.transaction() as s:
        cell = dict((k, c) for k, _label, c in checkin_history(s, rt.ctx, pid).rows)[
            "worst_pain"][0]
    assert cell.value is None and cell.unanswered == "not_understood"
    assert len(cell.shown) <= TEXT_CHARS + len('not understood: ""')
    assert cell.shown.startswith('not understood: "it is hard to say') and cell.shown.endswith(
        '..."')


def _at_the_pain_question(client) -> int:
    res = client.post("/simulator/api/patients", json={"phone": PHONE, "name": "Ada Lovelace"})
    _text(client, "yes")  # consent
    _text(client, "CHECKIN")
    return res.get_json()["patient"]["id"]


def _emergency(rt, pid):
    from sqlalchemy import select

    from bot.services.conversations import active_conversation
    from bot.store.models import Escalation

    with rt.transaction() as s:
        esc = s.scalars(select(Escalation).where(Escalation.patient_id == pid)).one()
        return esc.level, esc.words, active_conversation(s, pid)


@pytest.mark.parametrize("reply", [
    "3 and I can't feel my legs", "3, I can't feel my legs", "pain 3 but my legs went numb",
    "I can't feel my legs, pain 3", "my legs gave way. 3/10"])
def test_a_pain_score_beside_an_emergency_is_the_checkins_answer_too(client, rt, reply):
    # Before, "3 and I can't feel my legs" to the 0-10 question was in the escalation's words
    # only: the check-in history and the pain chart had no pain for that check-in.
    pid = _at_the_pain_question(client)
    _text(client, reply)
    level, words, open_conv = _emergency(rt, pid)
    assert level == "emergency" and reply in words and open_conv is None  # as before
    with rt.transaction() as s:
        history = checkin_history(s, rt.ctx, pid)
    # The pain chart's point, and the check-in table's cell.
    assert [value for _, value in history.series("worst_pain")] == [3]
    [(_, _, [cell])] = [row for row in history.rows if row[0] == "worst_pain"]
    assert cell.value == 3 and cell.shown == "3"


@pytest.mark.parametrize("reply", [
    "I can't feel my legs for 2 days", "3 and I can't feel my legs for 2 days",
    "I can't feel my legs", "15 and I can't feel my legs"])
def test_no_answer_is_taken_from_an_emergency_that_is_not_a_plain_score_beside_it(
        client, rt, reply):
    pid = _at_the_pain_question(client)
    _text(client, reply)
    assert _emergency(rt, pid)[0] == "emergency"
    with rt.transaction() as s:
        assert checkin_history(s, rt.ctx, pid).series("worst_pain") == []
