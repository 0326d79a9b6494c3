"""The CRM frontend's kit (frontend/whatsapp-realtime.mjs), run by node on the broadcasts the local database
really sends (the realtime.send stand-in's pg_notify, as the console relays them), ends with every session
and message of the account as a member reads them: no event unhandled, no payload field misread."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import ACCOUNT_A, MEMBER_A, call_handler, load_event

REPO = Path(__file__).resolve().parent.parent
#: `make venv` installs node (Debian's nodejs) when missing: without it this fails, never skips.
NODE = shutil.which("node") or "node"

#: An orchestrator's day: every kind of broadcast the triggers send.
EVENTS = [
    "status_update/valid",  # session_updated
    "qr_update/valid",  # session_updated
    "messages_received/text",  # message_created
    "messages_received/image",  # message_created, media pending
    "messages_batch/valid",  # messages_created
    "message_event/status_read",  # message_updated: status
    "message_event/reaction",
    "message_event/edit",
    "message_event/delete",
]


def kit_columns() -> dict[str, str]:
    script = (
        "import('./frontend/whatsapp-realtime.mjs')"
        ".then(m => console.log(JSON.stringify({whatsapp_sessions: m.SESSION_COLUMNS, mensajes: m.MESSAGE_COLUMNS})))"
    )
    out = subprocess.run([NODE, "-e", script], cwd=REPO, check=True, capture_output=True, text=True).stdout  # type: ignore[list-item]
    return json.loads(out)


def rows_as_member(db: Any) -> dict[str, list[dict[str, Any]]]:
    """What member A reads of each table, with the kit's columns, through RLS (as PostgREST would)."""
    rows = {}
    with db.transaction(force_rollback=True):
        db.execute("set local role authenticated")
        db.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps({"sub": MEMBER_A}),))
        for table, columns in kit_columns().items():
            query = f"select coalesce(json_agg(t), '[]') as j from (select {columns} from public.{table}) t"
            rows[table] = db.execute(query).fetchone()["j"]
    return rows


def run_kit(broadcasts: list[dict[str, Any]], rows: dict[str, Any]) -> dict[str, Any]:
    stdin = json.dumps({"accountId": ACCOUNT_A, "rows": rows, "broadcasts": broadcasts})
    done = subprocess.run(
        [NODE, "tests/frontend_kit_run.mjs"],  # type: ignore[list-item]
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture
def broadcasts(handlers: Any, db: Any, database_url: str, backend: str) -> list[dict[str, Any]]:
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("listen realtime")
        for name in EVENTS:
            assert call_handler(handlers, load_event(name)).status == 200, name
        return [json.loads(n.payload) for n in listener.notifies(timeout=1, stop_after=None)]


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_the_kit_ends_with_every_session_and_message_as_the_member_reads_them(
    broadcasts: list[dict[str, Any]], db: Any
) -> None:
    assert {b["event"] for b in broadcasts} == {
        "session_updated",
        "message_created",
        "messages_created",
        "message_updated",
    }
    rows = rows_as_member(db)
    state = run_kit(broadcasts, rows)
    assert (state["unhandled"], state["errors"]) == ([], [])
    assert state["sessions"] == {r["id"]: r for r in rows["whatsapp_sessions"]}
    # Each message as the member reads it (plus what its broadcasts said: the preview).
    shown = {
        key: {column: message.get(column) for column in rows["mensajes"][0]}
        for key, message in state["messages"].items()
    }
    assert shown == {str(r["id"]): r for r in rows["mensajes"]}
    edited = next(m for m in state["messages"].values() if m["edited_at"])
    assert edited["deleted_at"] and edited["reactions"] and edited["delivery_status"] == "read"


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
def test_a_photo_stored_by_the_media_function_shows_in_the_kit_with_its_path(
    broadcasts: list[dict[str, Any]], db: Any, database_url: str
) -> None:
    # The media function's own two calls, claim and finish, and the broadcast they make.
    photo = db.execute("select id from public.mensajes where message_type = 'image'").fetchone()["id"]
    lease = db.execute("select public.whatsapp_media_claim(%s, 60) as r", (photo,)).fetchone()["r"]["lease"]
    media = {"path": f"{ACCOUNT_A}/{photo}/{lease}/image.jpg", "mime_type": "image/jpeg", "size": 3, "sha256": "0" * 64}
    with psycopg.connect(database_url, autocommit=True) as listener:
        listener.execute("listen realtime")
        finish = "select public.whatsapp_media_finish(%s, %s, 'stored', %s, null) as r"
        assert db.execute(finish, (photo, lease, json.dumps(media))).fetchone()["r"] == {"recorded": True}
        stored = [json.loads(n.payload) for n in listener.notifies(timeout=1, stop_after=None)]
    assert [b["event"] for b in stored] == ["message_updated"]

    rows = rows_as_member(db)
    state = run_kit([*broadcasts, *stored], rows)
    assert (state["unhandled"], state["errors"]) == ([], [])
    shown = state["messages"][str(photo)]
    assert (shown["media_status"], shown["media_path"], shown["media_size"]) == ("stored", media["path"], 3)
    assert {k: shown[k] for k in rows["mensajes"][0]} == next(r for r in rows["mensajes"] if r["id"] == photo)


def test_an_event_the_kit_does_not_know_is_reported_not_ignored() -> None:
    state = run_kit([{"topic": f"account:{ACCOUNT_A}", "event": "chat_archived", "payload": {"id": 1}}], {})
    assert state["unhandled"] == [{"event": "chat_archived", "payload": {"id": 1}}]
