"""Races between real concurrent connections, as between Lambda containers: the
database's unique constraints decide, on both backends."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from conftest import call_handler, event_body, load_event, use_backend

from whatsapp_ingest.config import database_secrets, settings
from whatsapp_ingest.models import MessageReceived
from whatsapp_ingest.store import APPLICATION_NAME, build_store

RACERS = 12


def race(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Ingest every body at once, each from its own store (its own connection)."""
    stores = [build_store(settings(), database_secrets()) for _ in bodies]
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


def test_a_warm_container_reuses_its_database_connection(
    handlers: Any, monkeypatch: pytest.MonkeyPatch, database_url: str, db: Any
) -> None:
    def our_connections() -> list[Any]:
        rows = db.execute(
            "select backend_start from pg_stat_activity where application_name = %s", (APPLICATION_NAME,)
        ).fetchall()
        return [row["backend_start"] for row in rows]

    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    call_handler(handlers, load_event("messages_received/text"))
    first = our_connections()
    call_handler(handlers, load_event("messages_received/image"))
    call_handler(handlers, load_event("status_update/valid"))

    assert len(first) == 1
    assert our_connections() == first
