"""Load, counted exactly: 2,000 deliveries from 8 concurrent workers through the real
handlers to a real Postgres. Each worker is a separate process with its own
handlers and connection, as Lambda containers are."""

from __future__ import annotations

import multiprocessing
from typing import Any

import pytest
from conftest import REPO, SESSION_ID, add_session, call_handler, event_body, load_event, use_backend, with_body

from local import gateway

SECOND_SESSION = "9b2f6c1e-0a4d-4e8b-8c3f-2d1e0f9a8b7c"
WORKERS = 8
CONTACTS = 50
MESSAGES_PER_CONTACT = 10  # 5 with each session
DELIVERIES_PER_MESSAGE = 4


def worker(events: list[dict[str, Any]]) -> list[int]:
    """One container: its own handlers (and so its own database connection)."""
    handlers = {r.path: gateway.load_handler(r) for r in gateway.load_routes(REPO / "template.yaml")}
    return [call_handler(handlers, event).status for event in events]


def workload() -> list[list[dict[str, Any]]]:
    """Each message's deliveries go to different workers at the same position, so
    redeliveries race each other and every new contact's first messages arrive at once."""
    template = load_event("messages_received/text")
    base = event_body("messages_received/text")
    shares: list[list[dict[str, Any]]] = [[] for _ in range(WORKERS)]
    position = 0
    for n in range(MESSAGES_PER_CONTACT):
        for contact in range(CONTACTS):
            body = {
                **base,
                "session_id": SESSION_ID if n % 2 else SECOND_SESSION,
                "from": f"52155{4000_0000 + contact}@s.whatsapp.net",
                "message_id": f"load-{contact:02d}-{n:02d}",
                "message": {"type": "text", "text": f"{contact}/{n}"},
            }
            for copy in range(DELIVERIES_PER_MESSAGE):
                shares[(position + copy) % WORKERS].append(with_body(template, body))
            position += 1
    return shares


@pytest.mark.load
def test_2000_concurrent_deliveries_store_500_messages_50_contacts_and_100_chats_exactly(
    monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any
) -> None:
    add_session(db, SECOND_SESSION)
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    shares = workload()
    assert sum(map(len, shares)) == 2000

    with multiprocessing.get_context("spawn").Pool(WORKERS) as pool:
        statuses = [status for share in pool.map(worker, shares) for status in share]

    assert len(statuses) == 2000 and set(statuses) == {200}
    one = db.execute(
        """select (select count(*) from public.mensajes) as messages,
                  (select count(distinct (session_id, whatsapp_message_id)) from public.mensajes) as distinct_messages,
                  (select count(*) from public.contacts) as contacts,
                  (select count(distinct wa_id) from public.contacts) as phones,
                  (select count(*) from public.chats) as chats,
                  (select count(distinct (session_id, contact_id)) from public.chats) as pairs"""
    ).fetchone()
    assert one == {"messages": 500, "distinct_messages": 500, "contacts": 50, "phones": 50, "chats": 100, "pairs": 100}
