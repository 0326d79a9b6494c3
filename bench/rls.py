"""What the row-level policies cost: the CRM's main query (one chat's latest 50
messages) on an account of 100,000 messages, as a member under RLS and as the
service role (which bypasses it), with EXPLAIN ANALYZE.

    .venv/bin/python -m bench.rls [--messages 100000]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import psycopg

from local import database

ACCOUNT_A = "0a0a0a0a-0000-4000-8000-0000000000a0"
MEMBER_A = "a1a1a1a1-0000-4000-8000-00000000000a"
SESSION_ID = "3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c"
CHATS = 1000
QUERY = (
    "select id, direction, message_type, body, sent_at from public.mensajes"
    " where chat_id = %s order by sent_at desc limit 50"
)


def fill(conn: psycopg.Connection, messages: int) -> int:
    """`messages` messages over CHATS chats of account A's session, set-based; returns a busy chat's id."""
    conn.execute(
        "insert into public.contacts (account_id, wa_id, phone_number)"
        " select %s, (5215510000000 + n)::text, '+' || (5215510000000 + n) from generate_series(1, %s) n",
        (ACCOUNT_A, CHATS),
    )
    conn.execute(
        "insert into public.chats (account_id, session_id, contact_id)"
        " select account_id, %s, id from public.contacts where account_id = %s",
        (SESSION_ID, ACCOUNT_A),
    )
    conn.execute(
        "insert into public.mensajes (account_id, chat_id, session_id, contact_id, whatsapp_message_id,"
        " direction, message_type, body, content, sent_at)"
        " select ch.account_id, ch.id, ch.session_id, ch.contact_id, 'bench-' || n,"
        " case when n %% 3 = 0 then 'outbound' else 'inbound' end, 'text', 'mensaje ' || n,"
        " jsonb_build_object('type', 'text', 'text', 'mensaje ' || n), now() - n * interval '1 second'"
        " from generate_series(1, %s) n join public.chats ch on ch.contact_id = ("
        "   select min(id) from public.contacts where account_id = %s) + (n %% %s)",
        (messages, ACCOUNT_A, CHATS),
    )
    conn.execute("analyze")
    row = conn.execute("select chat_id from public.mensajes group by 1 order by count(*) desc limit 1").fetchone()
    assert row is not None
    return int(row[0])


def timed(conn: psycopg.Connection, chat_id: int, member: bool, runs: int = 200) -> tuple[float, str, int]:
    """Median ms of the query, its plan, and the rows it returned."""
    with conn.transaction(force_rollback=True):
        if member:
            conn.execute("set local role authenticated")
            conn.execute(
                "select set_config('request.jwt.claims', %s, true)",
                (json.dumps({"sub": MEMBER_A, "role": "authenticated"}),),
            )
        rows = len(conn.execute(QUERY, (chat_id,)).fetchall())
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            conn.execute(QUERY, (chat_id,)).fetchall()
            samples.append((time.perf_counter() - started) * 1000)
        plan = "\n".join(r[0] for r in conn.execute("explain (analyze, buffers) " + QUERY, (chat_id,)).fetchall())
    return statistics.median(samples), plan, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="whatsapp-ingest-rls-") as scratch:
        directory = Path(scratch)
        directory.chmod(0o777)  # run as root, the embedded server runs as its own user
        server = database.start(directory / "data", delete_on_exit=True)
        try:
            url = server.get_uri()
            database.migrate(url, seed=True)
            with psycopg.connect(url, autocommit=True) as conn:
                chat_id = fill(conn, args.messages)
                machine = f"{platform.machine()}, {platform.system()} {platform.release()}"
                print(f"# {args.messages:,} messages in {CHATS:,} chats of one account; {machine}")
                print(f"# Postgres {conn.info.server_version}")
                for member in (False, True):
                    median, plan, rows = timed(conn, chat_id, member)
                    who = "member (RLS)" if member else "service role (no RLS)"
                    print(f"\n## {who}: median {median:.3f} ms over 200 runs, {rows} rows\n{plan}")
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
