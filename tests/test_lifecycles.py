"""Property: session lifecycles as Baileys produces them, delivered as the network
delivers them, end in the state the ordering rule promises (docs/orchestrator.md, "Ordering").

Generated: pairings (a QR every ~20 s while pending, then a scan, or no scan and
a time-out), pairings given up and retried at once, disconnects and reconnects,
logouts; `last_seen` as the last contact, which lags; most status updates without
`timestamp`; history messages sent from the phone right after it connects, often
without `from_me`. Delivered: the orchestrator's clock 2 s slow to 2 s fast, each
request delayed 0-3 s on its way to API Gateway (so deliveries reorder), one in ten
held up to 45 s, and a given-up pairing's close and last QR held up to 30 s more (so
they arrive after the next attempt began), some delivered twice.

Checked: the stored status and QR after every delivery, and the answer to every
status update and QR (stale or not), equal what the rule computes (`Rule` below,
the words of docs/orchestrator.md as code: a close answered stale still ends the QRs generated
before it); the update that really happened last is never answered stale; every
message is filed by who really sent it (direction, contact, chat), whatever
arrived first. LIFECYCLE_EXAMPLES sets how many lifecycles (default 100).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest
from conftest import add_session, call_handler, request, use_backend
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from psycopg.rows import dict_row

from local import database

EXAMPLES = int(os.environ.get("LIFECYCLE_EXAMPLES", "100"))
OWN = "5215500000077"
PEERS = [f"52155100000{n:02d}" for n in range(1, 6)]
SAMPLES = {
    "status_update": "status_update/valid",
    "qr_update": "qr_update/valid",
    "messages_received": "messages_received/text",
}
START_MS = int(datetime.now(UTC).timestamp() * 1000) - 3 * 3600 * 1000


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


@dataclass
class Update:
    """Something the orchestrator sends: when it really happened, and what it sends."""

    endpoint: str  # status_update | qr_update | messages_received
    real_ms: int
    body: dict[str, Any]
    event_ms: int | None = None  # the orchestrator time it carries, if any
    truth: tuple[str, str] | None = None  # a message's real direction and other party
    hold_ms: int = 0  # held up on its way (a retry, a slow network), beyond the usual delay


@dataclass
class Delivery:
    update: Update
    arrival_ms: int
    first: bool


# ---------------------------------------------------------------------------
# The rule, as docs/orchestrator.md states it
# ---------------------------------------------------------------------------


@dataclass
class Mark:
    event: int | None = None
    received: int | None = None
    untimed: int | None = None
    event_received: int | None = None  # the latest arrival within event's second

    def newer_than(self, event: int | None, received: int) -> bool:
        """An update already applied is known to be newer than (event, received)."""
        if event is not None and self.event is not None and event // 1000 < self.event // 1000:
            return True
        if event is None and self.received is not None and received < self.received:
            return True
        same_second = event is not None and self.event is not None and event // 1000 == self.event // 1000
        if same_second and self.event_received is not None and received < self.event_received:
            return True
        return event is not None and self.untimed is not None and received < self.untimed

    def after(self, event: int | None, received: int) -> Mark:
        def latest(a: int | None, b: int | None) -> int | None:
            return max(x for x in (a, b) if x is not None) if a is not None or b is not None else None

        untimed = latest(self.untimed, received) if event is None else self.untimed
        event_received = self.event_received
        if event is not None and (self.event is None or event // 1000 > self.event // 1000):
            event_received = received
        elif event is not None and event // 1000 == self.event // 1000:  # type: ignore[operator]
            event_received = latest(self.event_received, received)
        return Mark(latest(self.event, event), latest(self.received, received), untimed, event_received)


@dataclass
class Rule:
    status: str = "pending"
    qr_code: str | None = None
    qr_generated: int | None = None
    qr_order: Mark = field(default_factory=Mark)  # the shown QR's own time and arrival
    state: Mark = field(default_factory=Mark)
    closed: Mark = field(default_factory=Mark)

    def apply(self, update: Update, received: int) -> bool | None:
        """Apply one delivery; True when it is stale (None for messages)."""
        if update.endpoint == "status_update":
            if self.state.newer_than(update.event_ms, received):
                # A late close is still a fact about the QR (a newer close recorded already did it).
                if update.body["status"] != "pending" and not self.closed.newer_than(update.event_ms, received):
                    if not self.qr_order.newer_than(update.event_ms, received):
                        self.qr_code = None
                    self.closed = self.closed.after(update.event_ms, received)
                return True
            self.status = update.body["status"]
            self.state = self.state.after(update.event_ms, received)
            if self.status != "pending":
                self.closed = self.closed.after(update.event_ms, received)
                self.qr_code = None
            return False
        if update.endpoint == "qr_update":
            generated, code = update.event_ms, update.body["qr_code"]
            assert generated is not None
            if generated == self.qr_generated and code == self.qr_code:
                return False  # already shown
            if self.qr_generated is not None and generated <= self.qr_generated:
                return True
            if self.closed.newer_than(generated, received):
                return True
            self.status, self.qr_code, self.qr_generated = "pending", code, generated
            self.qr_order = Mark().after(generated, received)
            self.state = self.state.after(generated, received)
            return False
        return None


# ---------------------------------------------------------------------------
# Lifecycles
# ---------------------------------------------------------------------------


@st.composite
def lifecycles(draw: Any, session_id: str) -> list[Delivery]:
    skew = draw(st.integers(-2000, 2000), label="orchestrator clock skew (ms)")
    now = START_MS
    updates: list[Update] = []
    connected = False
    qr_count = 0

    def later(low: int, high: int) -> int:
        nonlocal now
        now += draw(st.integers(low, high))
        return now

    def status(name: str, at: int, timed: bool | None = None, hold: int = 0, **fields: Any) -> None:
        if timed is None:
            timed = draw(st.integers(0, 4)) == 0  # most orchestrators send no timestamp
        body = {"session_id": session_id, "status": name, **fields}
        if timed:
            body["timestamp"] = iso(at + skew)
        if draw(st.booleans()):
            body["last_seen"] = iso(at + skew - draw(st.integers(0, 3_600_000)))  # the last contact: lags
        updates.append(Update("status_update", at, body, at + skew if timed else None, hold_ms=hold))

    def qr(at: int, hold: int = 0) -> None:
        nonlocal qr_count
        qr_count += 1
        body = {"session_id": session_id, "qr_code": f"2@qr{qr_count}", "timestamp": iso(at + skew)}
        updates.append(Update("qr_update", at, body, at + skew, hold_ms=hold))

    def message(at: int, outbound: bool) -> None:
        peer = draw(st.sampled_from(PEERS))
        own = draw(st.sampled_from([OWN, f"{OWN}@s.whatsapp.net", f"{OWN}:12@s.whatsapp.net"]))
        body = {
            "session_id": session_id,
            "from": own if outbound else f"{peer}@s.whatsapp.net",
            "to": f"{peer}@s.whatsapp.net" if outbound else own,
            "timestamp": (at + skew) // 1000,
            "message_id": f"M{len(updates)}",
            "message": {"type": "text", "text": "hola"},
        }
        if draw(st.integers(0, 2)) == 0:
            body["from_me"] = outbound
        updates.append(Update("messages_received", at, body, truth=("outbound" if outbound else "inbound", peer)))

    phases = draw(
        st.lists(st.sampled_from(["pair", "unscanned", "retry", "chat", "reconnect", "logout"]), min_size=1, max_size=6)
    )
    for phase in [draw(st.sampled_from(["pair", "retry"])), *phases]:
        if phase in ("pair", "unscanned") and not connected:
            if draw(st.booleans()):
                status("pending", later(1000, 5000))
            for _ in range(draw(st.integers(1, 4))):
                qr_count += 1
                at = later(1000, 3000) if qr_count == 1 else later(18_000, 22_000)
                code = f"2@qr{qr_count}"
                updates.append(
                    Update(
                        "qr_update",
                        at,
                        {"session_id": session_id, "qr_code": code, "timestamp": iso(at + skew)},
                        at + skew,
                    )
                )
            if phase == "pair":
                # Often just after a refresh: the QR and the scan then race on the network.
                at = now + draw(st.one_of(st.integers(300, 2500), st.integers(3000, 15_000)))
                now = at
                status("connected", at, phone_number=f"+{OWN}", whatsapp_user_id=f"{OWN}:12@s.whatsapp.net")
                connected = True
                for n in range(draw(st.integers(0, 4))):  # history sync: sent from the phone earlier
                    message(at + 10 + n, outbound=True)
            else:
                status("disconnected", later(18_000, 22_000))
        elif phase == "retry" and not connected:
            # The orchestrator gives up on a pairing and starts another at once; the close (and
            # the closed attempt's last QR) are held up and arrive after the new attempt began.
            status("pending", later(1000, 5000), timed=True)
            qr(later(1000, 3000))
            last = later(15_000, 19_000)
            qr(last, hold=draw(st.integers(0, 30_000)))
            status(
                draw(st.sampled_from(["disconnected", "expired"])),
                later(1000, 3000),
                timed=draw(st.integers(0, 3)) > 0,
                hold=draw(st.integers(0, 30_000)),
            )
            status("pending", later(300, 1500), timed=draw(st.integers(0, 3)) > 0)
            if draw(st.booleans()):
                qr(later(500, 2000))
        elif phase == "chat" and connected:
            for _ in range(draw(st.integers(1, 4))):
                message(later(1000, 10_000), outbound=draw(st.booleans()))
        elif phase == "reconnect" and connected:
            status("disconnected", later(1000, 60_000))
            status("connected", later(2000, 30_000), phone_number=f"+{OWN}")
        elif phase == "logout" and connected:
            status("expired", later(1000, 60_000))
            connected = False

    deliveries = []
    for update in updates:
        # Now and then a request is held up for long (a retry, a slow network): a close then
        # arrives after the next attempt's pending and QRs, and its attempt's last QR after it.
        slow = draw(st.integers(0, 9)) == 0
        arrival = update.real_ms + update.hold_ms + draw(st.integers(0, 45_000 if slow else 3000))
        deliveries.append(Delivery(update, arrival, first=True))
        if draw(st.integers(0, 7)) == 0:
            deliveries.append(Delivery(update, arrival + draw(st.integers(1000, 60_000)), first=False))
    return sorted(deliveries, key=lambda d: d.arrival_ms)  # API Gateway's order; sorted() is stable


# ---------------------------------------------------------------------------
# The property
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def conn(database_url: str) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    with pytest.MonkeyPatch.context() as patch:
        use_backend(patch, {"DATABASE_URL": database_url})
        with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as connection:
            connection.execute(database.SEED_SQL.read_text())  # the accounts the sessions belong to
            yield connection
        use_backend(patch, {})


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data())
def test_generated_lifecycles_end_in_the_state_the_rule_promises(data: Any, handlers: Any, conn: Any) -> None:
    session_id = str(uuid.uuid4())
    add_session(conn, session_id)
    deliveries = data.draw(lifecycles(session_id))
    rule = Rule()
    newest = max((d.update for d in deliveries if d.update.truth is None), key=lambda u: u.real_ms)

    for delivery in deliveries:
        update = delivery.update
        result = call_handler(handlers, request(SAMPLES[update.endpoint], update.body, delivery.arrival_ms))
        what = update.body.get("status", update.body.get("qr_code", ""))
        note(f"{update.endpoint} {what} at {delivery.arrival_ms}: {result.body['message']}")
        assert result.status == 200, result.body
        expected_stale = rule.apply(update, delivery.arrival_ms)
        if expected_stale is not None:
            stale = result.body["message"].startswith("stale")
            assert stale == expected_stale, f"{update.body} answered {result.body['message']!r}"
            assert not (stale and update is newest and delivery.first), "the newest update was answered stale"
            shown = conn.execute(
                "select status, qr_code from public.whatsapp_sessions where id = %s", (session_id,)
            ).fetchone()
            assert shown == {"status": rule.status, "qr_code": rule.qr_code}, "after each delivery, as the rule says"

    stored = conn.execute(
        "select status, qr_code from public.whatsapp_sessions where id = %s", (session_id,)
    ).fetchone()
    assert stored == {"status": rule.status, "qr_code": rule.qr_code}

    filed = conn.execute(
        "select m.whatsapp_message_id, m.direction, c.wa_id, ch.contact_id = m.contact_id as same_chat"
        " from public.mensajes m join public.contacts c on c.id = m.contact_id"
        " join public.chats ch on ch.id = m.chat_id"
        " where m.session_id = %s",
        (session_id,),
    ).fetchall()
    truth = {d.update.body["message_id"]: d.update.truth for d in deliveries if d.update.truth}
    assert {row["whatsapp_message_id"]: (row["direction"], row["wa_id"]) for row in filed} == truth
    assert all(row["same_chat"] for row in filed)
    chats_with_itself = conn.execute(
        "select count(*) as n from public.chats ch join public.contacts c on c.id = ch.contact_id"
        " where ch.session_id = %s and c.wa_id = %s",
        (session_id, OWN),
    ).fetchone()
    assert chats_with_itself["n"] == 0
