"""Races between real concurrent connections, as between Lambda containers: the
database's unique constraints decide, on both backends."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conftest import event_body

from whatsapp_ingest.config import settings
from whatsapp_ingest.models import MessageReceived
from whatsapp_ingest.store import build_store

RACERS = 12


def race(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ingest every body at once, each from its own store (its own connection)."""
    stores = [build_store(settings()) for _ in bodies]
    start = threading.Barrier(len(bodies))

    def ingest(index: int) -> dict[str, Any]:
        received = MessageReceived.model_validate(bodies[index])
        start.wait()
        return stores[index].ingest_message(received)

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(ingest, range(len(bodies))))


def count(db: Any, table: str) -> int:
    return int(db.execute(f"select count(*) as n from public.{table}").fetchone()["n"])


def test_racing_first_messages_from_one_new_contact_make_one_contact_and_one_chat(backend: str, db: Any) -> None:
    album = [{**event_body("messages_received/image"), "message_id": f"album-{i}"} for i in range(RACERS)]

    results = race(album)

    assert len({r["contact_id"] for r in results}) == 1
    assert len({r["chat_id"] for r in results}) == 1
    assert count(db, "contacts") == 1 and count(db, "chats") == 1 and count(db, "mensajes") == RACERS


def test_racing_redeliveries_of_one_message_store_it_once(backend: str, db: Any) -> None:
    same = [event_body("messages_received/text") for _ in range(RACERS)]

    results = race(same)

    assert len({r["message"]["id"] for r in results}) == 1
    assert sorted(r["duplicate"] for r in results) == [False] + [True] * (RACERS - 1)
    assert count(db, "mensajes") == 1 and count(db, "contacts") == 1 and count(db, "chats") == 1
