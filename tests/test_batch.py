"""POST /api/whatsapp/messages/batch: history sync in one request and one set-based
SQL call, with the single path's guarantees, on the real database."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import ACCOUNT_A, SESSION_ID, Invoke, call_handler, event_body, request, use_backend
from psycopg.rows import dict_row

from whatsapp_ingest.models import MAX_BATCH_BYTES, MAX_BATCH_ITEMS

BATCH = "messages_batch/valid"
OWN = "5215500000001"  # the seeded session's own number


def item(n: int, sender: str | None = None, **extra: Any) -> dict[str, Any]:
    """A messages/received body without session_id: message n from contact n % 10."""
    return {
        "from": sender or f"52155300000{n % 10:02d}",
        "to": OWN,
        "timestamp": 1795840000 + n,
        "message_id": f"H{n:05d}",
        "message": {"type": "text", "text": f"historia {n}"},
        **extra,
    }


def batch(items: list[Any], session_id: str = SESSION_ID) -> dict[str, Any]:
    return {"session_id": session_id, "messages": items}


def counts(db: Any) -> dict[str, int]:
    row = db.execute(
        "select (select count(*) from public.mensajes) as messages, (select count(*) from public.contacts) as contacts,"
        " (select count(*) from public.chats) as chats"
    ).fetchone()
    return dict(row)


def test_a_batch_stores_every_item_with_its_contact_and_chat(invoke: Invoke, db: Any) -> None:
    result = invoke(request(BATCH, batch([item(n) for n in range(30)])))

    assert result.status == 200, result.body
    assert result.body["data"] == {"stored": 30, "duplicates": 0, "rejected": 0, "rejections": []}
    assert result.body["message"] == "30 stored, 0 duplicates, 0 rejected"
    assert counts(db) == {"messages": 30, "contacts": 10, "chats": 10}
    row = db.execute("select * from public.mensajes where whatsapp_message_id = 'H00007'").fetchone()
    assert (row["direction"], row["body"], row["tipo"], str(row["account_id"])) == (
        "inbound",
        "historia 7",
        "whatsapp_api",
        ACCOUNT_A,
    )
    assert row["content"] == {"type": "text", "text": "historia 7"}


def test_a_bad_item_rejects_only_itself_and_is_named(invoke: Invoke, db: Any) -> None:
    items = [item(0), {**item(1), "from": "<svg onload=x>"}, "not an object", item(3), {**item(4), "message": {}}]

    result = invoke(request(BATCH, batch(items)))

    assert result.status == 200
    data = result.body["data"]
    assert (data["stored"], data["rejected"]) == (2, 3)
    assert [(r["index"], r["message_id"], r["field"]) for r in data["rejections"]] == [
        (1, "H00001", "from"),
        (2, None, ""),
        (4, "H00004", "message.type"),
    ]
    assert all(r["problem"] for r in data["rejections"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": [item(0)]}, "session_id"),
        ({"session_id": SESSION_ID, "messages": []}, "messages"),
        ({"session_id": SESSION_ID, "messages": "H00000"}, "messages"),
        ({"session_id": SESSION_ID, "messages": [item(0)] * (MAX_BATCH_ITEMS + 1)}, "messages"),
    ],
)
def test_a_bad_envelope_is_400_and_writes_nothing(invoke: Invoke, db: Any, body: dict[str, Any], field: str) -> None:
    result = invoke(request(BATCH, body))

    assert result.status == 400
    assert [error["field"] for error in result.body["data"]["errors"]] == [field]
    assert counts(db)["messages"] == 0


def test_a_body_over_the_documented_limit_is_413(invoke: Invoke, db: Any) -> None:
    big = [item(n, message={"type": "text", "text": "x" * 5000}) for n in range(MAX_BATCH_BYTES // 5000 + 1)][:1000]
    result = invoke(request(BATCH, batch(big)))

    assert result.status == 413
    assert str(MAX_BATCH_BYTES) in result.body["message"]


def test_an_unknown_session_is_404(invoke: Invoke, db: Any) -> None:
    result = invoke(request(BATCH, batch([item(0)], session_id="00000000-0000-4000-8000-000000000000")))

    assert result.status == 404


def test_a_message_id_is_stored_once_within_across_batches_and_with_the_single_endpoint(
    invoke: Invoke, db: Any
) -> None:
    single = event_body("messages_received/text")
    invoke("messages_received/text")
    first = invoke(request(BATCH, batch([item(1), item(1), {k: v for k, v in single.items() if k != "session_id"}])))
    again = invoke(request(BATCH, batch([item(1), item(2)])))
    then_single = invoke(request("messages_received/text", {**item(2), "session_id": SESSION_ID}))

    assert (first.body["data"]["stored"], first.body["data"]["duplicates"]) == (1, 2)
    assert (again.body["data"]["stored"], again.body["data"]["duplicates"]) == (1, 1)
    assert then_single.body["data"]["duplicate"] is True
    assert counts(db)["messages"] == 3


def test_a_redelivered_batch_writes_nothing_and_broadcasts_nothing(invoke: Invoke, db: Any) -> None:
    items = [item(n, push_name=f"Nombre {n}") for n in range(20)]
    invoke(request(BATCH, batch(items)))
    events = db.execute("select count(*) as n from realtime.messages").fetchone()["n"]
    tuples = db.execute("select n_tup_ins + n_tup_upd as w from pg_stat_user_tables where relname = 'chats'")
    before = tuples.fetchone()["w"]

    result = invoke(request(BATCH, batch(items)))

    assert result.body["data"] == {"stored": 0, "duplicates": 20, "rejected": 0, "rejections": []}
    assert db.execute("select count(*) as n from realtime.messages").fetchone()["n"] == events
    db.execute("select pg_stat_clear_snapshot()")
    after = db.execute("select n_tup_ins + n_tup_upd as w from pg_stat_user_tables where relname = 'chats'")
    assert after.fetchone()["w"] == before


def test_a_batch_broadcasts_one_event_not_one_per_message(invoke: Invoke, db: Any) -> None:
    invoke(request(BATCH, batch([item(n) for n in range(50)])))

    rows = db.execute("select event, payload from realtime.messages").fetchall()
    assert [row["event"] for row in rows] == ["messages_created"]
    assert rows[0]["payload"]["count"] == 50 and len(rows[0]["payload"]["chat_ids"]) == 10


def test_outbound_items_are_filed_in_the_chat_with_the_receiver(invoke: Invoke, db: Any) -> None:
    items = [
        {**item(1, sender=OWN), "to": "5215530000099"},
        {**item(2, sender="5215530000098", from_me=True), "to": "5215530000097"},
        {**item(3, sender=OWN, from_me=False)},
    ]
    invoke(request(BATCH, batch(items)))

    rows = db.execute(
        "select m.whatsapp_message_id as id, m.direction, c.wa_id from public.mensajes m"
        " join public.contacts c on c.id = m.contact_id order by 1"
    ).fetchall()
    assert [(r["id"], r["direction"], r["wa_id"]) for r in rows] == [
        ("H00001", "outbound", "5215530000099"),
        ("H00002", "outbound", "5215530000097"),
        ("H00003", "inbound", OWN),
    ]


def test_chats_last_message_at_is_the_latest_message_whatever_the_order(invoke: Invoke, db: Any) -> None:
    items = [item(n * 10) for n in range(6)]  # all from contact 0
    random.Random(3).shuffle(items)
    invoke(request(BATCH, batch(items[:3])))
    invoke(request(BATCH, batch(items[3:])))

    row = db.execute("select extract(epoch from last_message_at)::bigint as t from public.chats").fetchone()
    assert row["t"] == 1795840050


def test_push_names_of_a_batch_newest_wins(invoke: Invoke, db: Any) -> None:
    items = [item(0, push_name="Ana"), item(10, push_name="Ana María"), item(20, push_name=" ")]
    invoke(request(BATCH, batch(list(reversed(items)))))
    invoke(request(BATCH, batch([item(5, push_name="Old name")])))  # contact 5, its own contact
    invoke(request(BATCH, batch([item(0, push_name="Ana (redelivered)")])))  # a duplicate: no name from it

    names = db.execute("select wa_id, display_name from public.contacts order by wa_id").fetchall()
    assert [(r["wa_id"], r["display_name"]) for r in names] == [
        ("5215530000000", "Ana María"),
        ("5215530000005", "Old name"),
    ]


# ---------------------------------------------------------------------------
# Races
# ---------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:Dimension .endpoint. has already been added")
def test_batches_racing_singles_from_eight_threads_store_each_message_once(
    handlers: Any, database_url: str, db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """400 messages from 40 new contacts, each delivered in a batch and as a single, plus
    redelivered batches, from 8 threads at once: exact counts, every answer 200."""
    use_backend(monkeypatch, {"DATABASE_URL": database_url})
    items = [item(n, sender=f"5215540000{n % 40:03d}") for n in range(400)]
    work: list[dict[str, Any]] = []
    for start in range(0, 400, 50):
        work.append(request(BATCH, batch(items[start : start + 50])))
        work.append(request(BATCH, batch(list(reversed(items[start : start + 50])))))
    work += [request("messages_received/text", {**i, "session_id": SESSION_ID}) for i in items[::3]]
    random.Random(8).shuffle(work)
    statuses: list[int] = []
    lock = threading.Lock()

    def worker(share: list[dict[str, Any]]) -> None:
        for event in share:
            result = call_handler(handlers, event)
            with lock:
                statuses.append(result.status)

    threads = [threading.Thread(target=worker, args=(work[n::8],)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [200] * len(work)
    assert counts(db) == {"messages": 400, "contacts": 40, "chats": 40}
    latest = db.execute("select count(*) as n from public.chats where last_message_at is null").fetchone()["n"]
    assert latest == 0


# ---------------------------------------------------------------------------
# Storage-first
# ---------------------------------------------------------------------------


def test_queued_batches_fit_the_queue_and_replay_exactly_once(tmp_path: Any) -> None:
    """Split by retry_queue.chunks: every SQS body within CHUNK_BYTES and the template's
    MaximumMessageSize (SQS's current largest is 1 MiB), every item in exactly one chunk."""
    import yaml

    from local import gateway
    from whatsapp_ingest.retry_queue import CHUNK_BYTES, chunks

    template = yaml.load((gateway.REPO / "template.yaml").read_text(), Loader=gateway.CfnLoader)
    queue_limit = template["Resources"]["RetryQueue"]["Properties"]["MaximumMessageSize"]
    items = [item(n, message={"type": "text", "text": "ñ" * 900}) for n in range(1000)]
    message = {"endpoint": "messages_batch", "body": batch(items), "request_id": "r", "received_at": "now"}

    bodies = chunks(message)

    assert len(bodies) > 1
    assert queue_limit <= 1024 * 1024 and queue_limit >= CHUNK_BYTES
    assert all(len(body.encode()) <= CHUNK_BYTES for body in bodies)
    assert 10 * CHUNK_BYTES < 6_000_000  # a replay invocation of ten records stays under Lambda's 6 MB
    ids = [i["message_id"] for body in bodies for i in json.loads(body)["body"]["messages"]]
    assert ids == [i["message_id"] for i in items]


def test_batch_items_are_validated_like_single_messages_on_the_database_too(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True, row_factory=dict_row) as conn:
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(
                "select public.whatsapp_ingest_batch(%s, %s)",
                (
                    SESSION_ID,
                    json.dumps(
                        [
                            {
                                "i": 0,
                                "message_id": "x",
                                "from": "1",
                                "to": "2",
                                "type": "hologram",
                                "content": {},
                                "sent_at": "2026-12-01T00:00:00Z",
                            }
                        ]
                    ),
                ),
            )
        assert (
            conn.execute("select count(*) as n from public.mensajes where whatsapp_message_id = 'x'").fetchone()["n"]
            == 0
        )


def test_the_documented_example_answers_as_documented(invoke: Invoke, db: Any) -> None:
    readme = (Path(__file__).parent.parent / "docs" / "orchestrator.md").read_text()
    block = readme[readme.index('/api/whatsapp/messages/batch" -H') :]
    body = json.loads(block[block.index("-d '") + 4 : block.index("}]}'") + 3])

    result = invoke(request(BATCH, body))

    assert result.body["message"] == "2 stored, 0 duplicates, 1 rejected"
    assert [(r["index"], r["message_id"], r["field"]) for r in result.body["data"]["rejections"]] == [
        (2, "HIST0003", "from")
    ]
