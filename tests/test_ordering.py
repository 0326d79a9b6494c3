"""What the CRM shows is what happened: session updates ordered by one clock at a
time, QR codes shown until the session moves on, outbound messages never filed
as inbound, whatever arrives first (docs/orchestrator.md, "Ordering")."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import SESSION_ID, SIGNING_KEY, Invoke, Lines, add_session, request, signed, use_backend
from test_logging_and_metrics import metrics_in

from whatsapp_ingest.config import settings
from whatsapp_ingest.store import shared_store

STATUS, QR, MESSAGE = "status_update/valid", "qr_update/valid", "messages_received/text"
NOW_MS = int(time.time() * 1000)
OWN = "5215500000009"


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat()


def status(status: str, **fields: Any) -> dict[str, Any]:
    return {"session_id": SESSION_ID, "status": status, **fields}


def qr(code: str, generated_ms: int) -> dict[str, Any]:
    return {"session_id": SESSION_ID, "qr_code": code, "timestamp": iso(generated_ms)}


def compared(stale_because: dict[str, Any]) -> dict[str, tuple[datetime, str]]:
    """stale_because with its times parsed: {update: (at, clock), newer: (at, clock)}."""
    return {side: (datetime.fromisoformat(t["at"]), t["clock"]) for side, t in stale_because.items()}


def at(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def session(db: Any, session_id: str = SESSION_ID) -> dict[str, Any]:
    row: dict[str, Any] = db.execute("select * from public.whatsapp_sessions where id = %s", (session_id,)).fetchone()
    return row


# ---------------------------------------------------------------------------
# The three sequences of the bug report
# ---------------------------------------------------------------------------


def test_qr_from_a_clock_one_second_slow_after_an_untimed_disconnect_is_shown(invoke: Invoke, db: Any) -> None:
    invoke(request(STATUS, status("disconnected"), received_ms=NOW_MS))
    result = invoke(request(QR, qr("2@first", NOW_MS - 1000), received_ms=NOW_MS + 500))

    assert result.body["message"] == "qr code stored"
    assert (session(db)["status"], session(db)["qr_code"]) == ("pending", "2@first")


def test_connected_with_an_old_last_seen_after_a_qr_is_applied_and_clears_the_qr(invoke: Invoke, db: Any) -> None:
    invoke(request(QR, qr("2@scan-me", NOW_MS), received_ms=NOW_MS))
    result = invoke(
        request(STATUS, status("connected", last_seen=iso(NOW_MS - 30 * 60_000)), received_ms=NOW_MS + 15_000)
    )

    assert result.body["data"]["stale"] is False
    stored = session(db)
    assert (stored["status"], stored["qr_code"], stored["qr_url"]) == ("connected", None, None)
    assert stored["last_seen"] == datetime.fromtimestamp((NOW_MS - 30 * 60_000) / 1000, UTC)


def test_an_unscanned_pairing_that_times_out_ends_disconnected_without_a_qr(invoke: Invoke, db: Any) -> None:
    t = NOW_MS - 120_000
    invoke(request(STATUS, status("connected", last_seen=iso(t)), received_ms=t))
    invoke(request(STATUS, status("disconnected", last_seen=iso(t + 30_000)), received_ms=t + 30_000))
    invoke(request(STATUS, status("pending"), received_ms=t + 35_000))
    invoke(request(QR, qr("2@a", t + 40_000), received_ms=t + 40_000))
    invoke(request(QR, qr("2@b", t + 60_000), received_ms=t + 60_000))
    result = invoke(request(STATUS, status("disconnected", last_seen=iso(t + 30_000)), received_ms=t + 80_000))

    assert result.body["data"]["stale"] is False
    assert (session(db)["status"], session(db)["qr_code"]) == ("disconnected", None)


# ---------------------------------------------------------------------------
# The rule, one clause at a time
# ---------------------------------------------------------------------------


def test_orchestrator_times_order_updates_against_each_other_whatever_the_arrival(invoke: Invoke, db: Any) -> None:
    invoke(request(STATUS, status("connected", timestamp=iso(NOW_MS)), received_ms=NOW_MS))
    late = invoke(request(STATUS, status("disconnected", timestamp=iso(NOW_MS - 5000)), received_ms=NOW_MS + 9000))

    assert late.body["data"]["stale"] is True
    assert compared(late.body["data"]["stale_because"]) == {
        "update": (at(NOW_MS - 5000), "orchestrator"),
        "newer": (at(NOW_MS), "orchestrator"),
    }
    assert session(db)["status"] == "connected"


def test_an_update_without_orchestrator_time_is_ordered_by_arrival(invoke: Invoke, db: Any) -> None:
    invoke(request(STATUS, status("connected"), received_ms=NOW_MS))
    replayed = invoke(request(STATUS, status("disconnected"), received_ms=NOW_MS - 1000))  # from the retry queue

    assert replayed.body["data"]["stale_because"]["update"]["clock"] == "arrival"
    assert session(db)["status"] == "connected"


def test_a_timed_update_that_arrived_before_an_untimed_one_is_stale(invoke: Invoke, db: Any) -> None:
    invoke(request(STATUS, status("expired"), received_ms=NOW_MS))
    replayed = invoke(request(STATUS, status("connected", timestamp=iso(NOW_MS)), received_ms=NOW_MS - 1000))

    assert replayed.body["data"]["stale"] is True
    assert session(db)["status"] == "expired"


def test_within_one_second_of_orchestrator_time_the_later_arrival_wins(invoke: Invoke, db: Any) -> None:
    second = NOW_MS // 1000 * 1000
    invoke(request(STATUS, status("pending", timestamp=iso(second + 900)), received_ms=NOW_MS))
    result = invoke(request(STATUS, status("connected", timestamp=iso(second + 100)), received_ms=NOW_MS + 50))

    assert result.body["data"]["stale"] is False
    assert session(db)["status"] == "connected"


def test_last_seen_is_stored_but_never_orders_updates(invoke: Invoke, db: Any) -> None:
    invoke(request(STATUS, status("connected", last_seen=iso(NOW_MS)), received_ms=NOW_MS))
    result = invoke(request(STATUS, status("expired", last_seen=iso(NOW_MS - 3_600_000)), received_ms=NOW_MS + 1))

    assert result.body["data"]["stale"] is False
    assert session(db)["status"] == "expired"


def test_a_qr_generated_before_the_session_connected_is_stale(invoke: Invoke, db: Any) -> None:
    invoke(request(STATUS, status("connected", timestamp=iso(NOW_MS)), received_ms=NOW_MS))
    result = invoke(request(QR, qr("2@old", NOW_MS - 20_000), received_ms=NOW_MS + 1000))

    assert result.body["data"]["session"]["stale"] is True
    assert (session(db)["status"], session(db)["qr_code"]) == ("connected", None)


def test_a_pending_status_never_makes_a_newer_qr_stale(invoke: Invoke, db: Any) -> None:
    invoke(request(STATUS, status("pending", timestamp=iso(NOW_MS)), received_ms=NOW_MS))
    result = invoke(request(QR, qr("2@fresh", NOW_MS - 300), received_ms=NOW_MS + 100))

    assert result.body["message"] == "qr code stored"
    assert session(db)["qr_code"] == "2@fresh"


def test_an_older_qr_is_stale_and_a_redelivered_qr_is_already_stored(invoke: Invoke, db: Any) -> None:
    invoke(request(QR, qr("2@second", NOW_MS), received_ms=NOW_MS))
    older = invoke(request(QR, qr("2@first", NOW_MS - 20_000), received_ms=NOW_MS + 1000))
    again = invoke(request(QR, qr("2@second", NOW_MS), received_ms=NOW_MS + 2000))

    assert older.body["message"].startswith("stale")
    assert again.body["message"] == "qr code already stored"
    assert again.body["data"]["session"]["duplicate"] is True
    assert session(db)["qr_code"] == "2@second"


def test_a_redelivered_qr_does_not_come_back_after_the_session_connected(invoke: Invoke, db: Any) -> None:
    invoke(request(QR, qr("2@used", NOW_MS), received_ms=NOW_MS))
    invoke(request(STATUS, status("connected"), received_ms=NOW_MS + 5000))
    again = invoke(request(QR, qr("2@used", NOW_MS), received_ms=NOW_MS + 9000))

    assert again.body["data"]["session"]["stale"] is True
    assert (session(db)["status"], session(db)["qr_code"]) == ("connected", None)


@pytest.mark.parametrize("ending", ["connected", "disconnected", "expired"])
def test_any_status_but_pending_clears_the_qr(invoke: Invoke, db: Any, ending: str) -> None:
    invoke(request(QR, {**qr("2@x", NOW_MS), "qr_url": "https://qr.example/x.png"}, received_ms=NOW_MS))
    invoke(request(STATUS, status(ending), received_ms=NOW_MS + 1000))

    assert (session(db)["qr_code"], session(db)["qr_url"]) == (None, None)


def test_every_stale_answer_logs_both_times_and_their_clocks_and_counts_stale(
    invoke: Invoke, db: Any, log_lines: Lines, capsys: pytest.CaptureFixture[str]
) -> None:
    invoke(request(STATUS, status("connected", timestamp=iso(NOW_MS)), received_ms=NOW_MS))
    capsys.readouterr()
    invoke(request(QR, qr("2@late", NOW_MS - 60_000), received_ms=NOW_MS + 1000))

    line = log_lines()[-1]
    assert line["message"] == "stale qr code ignored"
    assert compared(line["compared"]) == {
        "update": (at(NOW_MS - 60_000), "orchestrator"),
        "newer": (at(NOW_MS), "orchestrator"),
    }
    assert "stale" in metrics_in(capsys.readouterr().out)


# ---------------------------------------------------------------------------
# Replays of a signed request
# ---------------------------------------------------------------------------


@pytest.fixture
def signing(monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any) -> None:
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    monkeypatch.setenv("SIGNING_KEY", SIGNING_KEY)
    settings.cache_clear()
    shared_store.cache_clear()


def test_a_captured_status_update_replayed_within_the_signature_window_does_not_flip_the_session(
    handlers: Any, signing: None, db: Any
) -> None:
    from conftest import call_handler

    now = int(time.time())
    captured = signed(request(STATUS, status("connected"), received_ms=(now - 60) * 1000), at=now - 60)
    assert call_handler(handlers, captured).status == 200
    assert call_handler(handlers, signed(request(STATUS, status("disconnected"), received_ms=now * 1000))).status == 200

    captured["requestContext"]["timeEpoch"] = now * 1000 + 500  # the attacker's copy arrives now
    replayed = call_handler(handlers, captured)

    assert replayed.body["data"]["stale"] is True
    assert replayed.body["data"]["stale_because"]["update"]["clock"] == "orchestrator"
    assert session(db)["status"] == "disconnected"


# ---------------------------------------------------------------------------
# Outbound messages, whatever arrives first
# ---------------------------------------------------------------------------


@pytest.fixture
def new_session(db: Any) -> str:
    """A session the CRM just created: its own number is not known yet."""
    return add_session(db, str(uuid.uuid4()))


def message(session_id: str, message_id: str, sender: str, receiver: str, **extra: Any) -> dict[str, Any]:
    return {
        "session_id": session_id,
        "from": sender,
        "to": receiver,
        "timestamp": NOW_MS // 1000,
        "message_id": message_id,
        "message": {"type": "text", "text": message_id},
        **extra,
    }


def filed(db: Any, session_id: str) -> dict[str, tuple[str, str]]:
    """Each message id: its direction and the WhatsApp id of its chat's contact."""
    rows = db.execute(
        "select m.whatsapp_message_id, m.direction, c.wa_id from public.mensajes m"
        " join public.chats ch on ch.id = m.chat_id join public.contacts c on c.id = ch.contact_id"
        " where m.session_id = %s and m.contact_id = ch.contact_id",
        (session_id,),
    ).fetchall()
    return {row["whatsapp_message_id"]: (row["direction"], row["wa_id"]) for row in rows}


def test_messages_from_the_phone_stored_before_it_connected_are_repaired_when_it_does(
    invoke: Invoke, db: Any, new_session: str
) -> None:
    invoke(request(MESSAGE, message(new_session, "out-1", f"{OWN}@s.whatsapp.net", "5215511111111")))
    invoke(request(MESSAGE, message(new_session, "in-1", "5215511111111", f"{OWN}@s.whatsapp.net")))
    assert filed(db, new_session)["out-1"] == ("inbound", OWN)  # not knowable yet

    invoke(request(STATUS, {"session_id": new_session, "status": "connected", "phone_number": f"+{OWN}"}))

    assert filed(db, new_session) == {"out-1": ("outbound", "5215511111111"), "in-1": ("inbound", "5215511111111")}
    chats = db.execute(
        "select c.wa_id from public.chats ch join public.contacts c on c.id = ch.contact_id where ch.session_id = %s",
        (new_session,),
    ).fetchall()
    assert [row["wa_id"] for row in chats] == ["5215511111111"]
    redelivered = invoke(request(MESSAGE, message(new_session, "out-1", f"{OWN}@s.whatsapp.net", "5215511111111")))
    assert redelivered.body["data"]["message"]["direction"] == "outbound"


def test_the_same_deliveries_in_either_order_end_in_the_same_state(invoke: Invoke, db: Any) -> None:
    def run(order: list[int]) -> dict[str, tuple[str, str]]:
        session_id = add_session(db, str(uuid.uuid4()))
        deliveries = [
            request(MESSAGE, message(session_id, "h1", OWN, "5215522222222")),
            request(MESSAGE, message(session_id, "h2", "5215522222222", OWN)),
            request(
                STATUS, {"session_id": session_id, "status": "connected", "whatsapp_user_id": f"{OWN}:3@s.whatsapp.net"}
            ),
            request(MESSAGE, message(session_id, "h3", OWN, "5215533333333")),
        ]
        for index in order:
            assert invoke(deliveries[index]).status == 200
        return filed(db, session_id)

    assert (
        run([0, 1, 2, 3])
        == run([2, 3, 1, 0])
        == run([3, 0, 2, 1])
        == {
            "h1": ("outbound", "5215522222222"),
            "h2": ("inbound", "5215522222222"),
            "h3": ("outbound", "5215533333333"),
        }
    )


def test_from_me_decides_the_direction_when_present(invoke: Invoke, db: Any, new_session: str) -> None:
    invoke(request(MESSAGE, message(new_session, "a", OWN, "5215544444444", from_me=True)))
    invoke(request(MESSAGE, message(new_session, "b", "5215544444444", OWN, from_me=False)))

    assert filed(db, new_session) == {"a": ("outbound", "5215544444444"), "b": ("inbound", "5215544444444")}


def test_from_me_must_be_a_boolean(invoke: Invoke, db: Any, new_session: str) -> None:
    result = invoke(request(MESSAGE, message(new_session, "a", OWN, "5215544444444", from_me="yes")))

    assert result.status == 400
    assert [error["field"] for error in result.body["data"]["errors"]] == ["from_me"]


def test_a_stale_status_update_still_teaches_a_session_its_own_number(
    invoke: Invoke, db: Any, new_session: str
) -> None:
    invoke(request(MESSAGE, message(new_session, "out", OWN, "5215555555555")))
    invoke(request(STATUS, {"session_id": new_session, "status": "disconnected"}, received_ms=NOW_MS))
    late = invoke(
        request(STATUS, {"session_id": new_session, "status": "connected", "phone_number": OWN}, received_ms=NOW_MS - 1)
    )

    assert late.body["data"]["stale"] is True
    assert session(db, new_session)["own_wa_id"] == OWN
    assert filed(db, new_session) == {"out": ("outbound", "5215555555555")}


def test_repairs_leave_other_sessions_messages_alone(invoke: Invoke, db: Any, new_session: str) -> None:
    # The seeded session talks to OWN as an ordinary contact: it is a contact there.
    invoke(request(MESSAGE, message(SESSION_ID, "theirs", OWN, "5215500000001")))
    invoke(request(MESSAGE, message(new_session, "mine", OWN, "5215566666666")))
    invoke(request(STATUS, {"session_id": new_session, "status": "connected", "phone_number": OWN}))

    assert filed(db, SESSION_ID) == {"theirs": ("inbound", OWN)}
    assert filed(db, new_session) == {"mine": ("outbound", "5215566666666")}


def test_late_status_is_compared_on_the_same_clock_even_across_days(invoke: Invoke, db: Any) -> None:
    # A day-old orchestrator time is not "older than the arrival" of anything: only of other orchestrator times.
    yesterday = datetime.fromtimestamp(NOW_MS / 1000, UTC) - timedelta(days=1)
    invoke(request(STATUS, status("disconnected"), received_ms=NOW_MS))
    result = invoke(request(STATUS, status("connected", timestamp=yesterday.isoformat()), received_ms=NOW_MS + 10))

    assert result.body["data"]["stale"] is False
    assert session(db)["status"] == "connected"


def test_within_one_second_the_tie_is_broken_by_the_arrival_of_that_seconds_updates_only(
    invoke: Invoke, db: Any
) -> None:
    # A (12:00:10) arrives at 10; G (12:00:15.0), a replay, kept its arrival 2; H (12:00:15.7) arrives at 5.
    # H is newer than A (later second) and than G (same second, later arrival): it applies.
    base = NOW_MS // 1000 * 1000 - 60_000
    invoke(request(STATUS, status("connected", timestamp=iso(base + 10_000)), received_ms=base + 10))
    invoke(request(STATUS, status("pending", timestamp=iso(base + 15_000)), received_ms=base + 2))
    result = invoke(request(STATUS, status("disconnected", timestamp=iso(base + 15_700)), received_ms=base + 5))

    assert result.body["data"]["stale"] is False
    assert session(db)["status"] == "disconnected"


def test_a_qr_stamped_far_ahead_of_our_clock_does_not_make_later_qrs_stale(invoke: Invoke, db: Any) -> None:
    invoke(request(QR, qr("2@from-a-wrong-clock", NOW_MS + 86_400_000), received_ms=NOW_MS))
    invoke(request(STATUS, status("disconnected"), received_ms=NOW_MS + 1000))
    result = invoke(request(QR, qr("2@right-clock", NOW_MS + 2000), received_ms=NOW_MS + 2000))

    assert result.body["message"] == "qr code stored"
    assert (session(db)["status"], session(db)["qr_code"]) == ("pending", "2@right-clock")
