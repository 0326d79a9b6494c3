"""The media columns, queue functions, broadcast and Storage policy, in SQL on the
real embedded Postgres: a media message is stored pending in its one round trip,
handed out once, claimed by one worker, recorded once; members read only their
account's folder of the bucket."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest
from conftest import ACCOUNT_A, ACCOUNT_B, MEMBER_A, MEMBER_B, SESSION_B, SESSION_ID, embedded_postgres
from psycopg.rows import dict_row
from test_accounts import OUTSIDER, as_user

from local import database

IMAGE = {"type": "image", "image": {"id": "img", "url": "https://mmg.whatsapp.net/x.enc"}}


def ingest(db: Any, message_id: str, content: dict[str, Any], session_id: str = SESSION_ID) -> dict[str, Any]:
    result: dict[str, Any] = db.execute(
        "select public.whatsapp_ingest_message(%s, %s, '5215512345678', '5215500000001', %s, null, %s, now()) as r",
        (session_id, message_id, content["type"], json.dumps(content)),
    ).fetchone()["r"]
    return result["message"]


def call(db: Any, function: str, *args: Any) -> Any:
    placeholders = ", ".join(["%s"] * len(args))
    return db.execute(f"select public.{function}({placeholders}) as r", args).fetchone()["r"]


def test_a_media_message_is_stored_pending_in_its_one_call_and_text_has_no_media_status(db: Any) -> None:
    assert ingest(db, "m1", IMAGE)["media_status"] == "pending"
    assert ingest(db, "t1", {"type": "text", "text": "hola"})["media_status"] is None
    batch = call(
        db,
        "whatsapp_ingest_batch",
        SESSION_ID,
        json.dumps([{"message_id": "b1", "from": "5215512345678", "to": "5215500000001", "type": "video",
                     "content": {"type": "video", "video": {"id": "v"}}, "sent_at": "2026-12-06T00:00:00Z"}]),
    )  # fmt: skip
    assert batch["stored"] == 1
    statuses = db.execute("select whatsapp_message_id, media_status from public.mensajes order by id").fetchall()
    assert [(r["whatsapp_message_id"], r["media_status"]) for r in statuses] == [
        ("m1", "pending"),
        ("t1", None),
        ("b1", "pending"),
    ]


def test_dispatch_hands_a_message_out_once_and_again_only_after_the_requeue_time(db: Any) -> None:
    message = ingest(db, "m1", IMAGE)
    assert call(db, "whatsapp_media_dispatch", 10, 300) == {"ids": [message["id"]]}
    assert call(db, "whatsapp_media_dispatch", 10, 300) == {"ids": []}
    # The job was lost (SQS down after the dispatch): an hour later the message is handed out again.
    db.execute("update public.mensajes set media_queued_at = now() - interval '1 hour'")
    assert call(db, "whatsapp_media_dispatch", 10, 300) == {"ids": [message["id"]]}
    with pytest.raises(psycopg.errors.InvalidParameterValue):
        call(db, "whatsapp_media_dispatch", 0, 300)


def test_one_worker_holds_a_claim_and_only_its_outcome_is_recorded(db: Any) -> None:
    message = ingest(db, "m1", IMAGE)
    job = call(db, "whatsapp_media_claim", message["id"], 60)
    assert (job["message_type"], job["account_id"], job["attempts"]) == ("image", ACCOUNT_A, 1)
    assert call(db, "whatsapp_media_claim", message["id"], 60) == {}  # held by the first worker
    media = {"path": f"{ACCOUNT_A}/x", "mime_type": "image/jpeg", "size": 3, "sha256": "a" * 64}
    other_lease = "00000000-0000-4000-8000-000000000000"
    assert call(db, "whatsapp_media_finish", message["id"], other_lease, "stored", json.dumps(media), None) == {
        "recorded": False
    }
    assert call(db, "whatsapp_media_finish", message["id"], job["lease"], "stored", json.dumps(media), None) == {
        "recorded": True
    }
    assert call(db, "whatsapp_media_claim", message["id"], 60) == {}  # stored: nothing to do ever again
    assert call(db, "whatsapp_media_dispatch", 10, 1) == {"ids": []}
    row = db.execute("select * from public.mensajes where id = %s", (message["id"],)).fetchone()
    assert (row["media_status"], row["media_path"], row["media_size"]) == ("stored", f"{ACCOUNT_A}/x", 3)


def test_an_expired_lease_lets_another_worker_take_over(db: Any) -> None:
    message = ingest(db, "m1", IMAGE)
    first = call(db, "whatsapp_media_claim", message["id"], 60)
    db.execute("update public.mensajes set media_lease_until = now() - interval '1 second'")
    second = call(db, "whatsapp_media_claim", message["id"], 60)
    assert second["lease"] != first["lease"] and second["attempts"] == 2
    assert call(db, "whatsapp_media_finish", message["id"], first["lease"], "failed", "{}", "late") == {
        "recorded": False
    }


def test_a_media_status_change_broadcasts_message_updated_with_the_media_fields(db: Any) -> None:
    message = ingest(db, "m1", IMAGE)
    db.execute("truncate realtime.messages")
    job = call(db, "whatsapp_media_claim", message["id"], 60)
    assert db.execute("select count(*) as n from realtime.messages").fetchone()["n"] == 0  # a claim is no change
    call(db, "whatsapp_media_finish", message["id"], job["lease"], "unavailable", "{}", "expired")
    (sent,) = db.execute("select topic, event, payload from realtime.messages").fetchall()
    assert (sent["topic"], sent["event"]) == (f"account:{ACCOUNT_A}", "message_updated")
    assert sent["payload"]["id"] == message["id"]
    assert (sent["payload"]["media_status"], sent["payload"]["media_error"]) == ("unavailable", "expired")


def test_members_read_the_media_columns_of_their_messages(db: Any) -> None:
    ingest(db, "m1", IMAGE)
    with as_user(db, MEMBER_A):
        rows = db.execute("select media_status, media_path from public.mensajes").fetchall()
    assert [r["media_status"] for r in rows] == ["pending"]


@pytest.mark.parametrize(
    ("user", "sees"),
    [(MEMBER_A, {ACCOUNT_A}), (MEMBER_B, {ACCOUNT_B}), (OUTSIDER, set()), (None, set())],
    ids=["A", "B", "outsider", "anon"],
)
def test_members_read_only_their_accounts_folder_of_the_bucket(db: Any, user: str | None, sees: set[str]) -> None:
    db.execute("insert into auth.users (id) values (%s) on conflict do nothing", (OUTSIDER,))
    db.execute("delete from storage.objects")
    db.execute("insert into storage.buckets (id, name) values ('other-bucket', 'other-bucket') on conflict do nothing")
    for account in (ACCOUNT_A, ACCOUNT_B):
        for bucket in ("whatsapp-media", "other-bucket"):
            db.execute(
                "insert into storage.objects (bucket_id, name) values (%s, %s)", (bucket, f"{account}/1/l/photo.jpg")
            )
    with as_user(db, user):
        rows = db.execute("select bucket_id, name from storage.objects").fetchall()
    assert {r["name"].split("/")[0] for r in rows} == sees
    assert {r["bucket_id"] for r in rows} <= {"whatsapp-media"}


def test_the_bucket_is_private() -> None:
    # Asserted on the migration's own insert: a public bucket would serve every file without a signed URL.
    sql = (database.MIGRATIONS / "20261206020000_media.sql").read_text()
    assert "values ('whatsapp-media', 'whatsapp-media', false)" in sql


def test_upgrade_marks_media_received_before_as_unavailable_and_leaves_text_alone() -> None:
    with embedded_postgres() as server:
        url = server.get_uri()
        database.migrate(url, until="20261202040000", seed=True)
        with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
            ingest(conn, "old-photo", IMAGE, SESSION_B)
            ingest(conn, "old-text", {"type": "text", "text": "hola"}, SESSION_B)

            database.migrate(url)

            rows = conn.execute(
                "select whatsapp_message_id, media_status, media_error from public.mensajes order by id"
            ).fetchall()
            assert [(r["whatsapp_message_id"], r["media_status"]) for r in rows] == [
                ("old-photo", "unavailable"),
                ("old-text", None),
            ]
            assert call(conn, "whatsapp_media_dispatch", 10, 1) == {"ids": []}
