"""The baseline data access: the contract's original flow, one statement per step, on the same schema.

select session, select contact, insert contact, select chat, insert chat, insert message: six statements
(and six transactions, each in autocommit as separate PostgREST table calls would be) for a message from
a new contact; four when contact and chat exist. The bench sends it messages from new contacts, so it
runs all six, while public.whatsapp_ingest_message does the same work in one call.
"""

from __future__ import annotations

from typing import Any

import psycopg

from bench.common import message_args


def ingest(conn: psycopg.Connection[Any], body: dict[str, Any]) -> dict[str, Any]:
    """Store one message the six-round-trip way; returns {message_id, contact_id, chat_id}."""
    args = message_args(body)
    session = conn.execute(
        "select id, own_wa_id, account_id from public.whatsapp_sessions where id = %s", (args["p_session_id"],)
    ).fetchone()
    if session is None:
        raise LookupError(f"session {args['p_session_id']} not found")
    outbound = args["p_from"] == session[1]
    peer = args["p_to"] if outbound else args["p_from"]
    account = session[2]
    contact = conn.execute(
        "select id from public.contacts where account_id = %s and wa_id = %s", (account, peer)
    ).fetchone()
    if contact is None:
        contact = conn.execute(
            "insert into public.contacts (account_id, wa_id, phone_number) values (%s, %s, %s) returning id",
            (account, peer, None if "@" in peer else f"+{peer}"),
        ).fetchone()
    assert contact is not None
    chat = conn.execute(
        "select id from public.chats where session_id = %s and contact_id = %s", (args["p_session_id"], contact[0])
    ).fetchone()
    if chat is None:
        chat = conn.execute(
            "insert into public.chats (account_id, session_id, contact_id) values (%s, %s, %s) returning id",
            (account, args["p_session_id"], contact[0]),
        ).fetchone()
    assert chat is not None
    message = conn.execute(
        "insert into public.mensajes (account_id, chat_id, session_id, contact_id, whatsapp_message_id, direction,"
        " message_type, body, content, sent_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s) returning id",
        (
            account,
            chat[0],
            args["p_session_id"],
            contact[0],
            args["p_message_id"],
            "outbound" if outbound else "inbound",
            args["p_message_type"],
            args["p_body"],
            args["p_content"],
            args["p_sent_at"],
        ),
    ).fetchone()
    assert message is not None
    return {"message_id": message[0], "contact_id": contact[0], "chat_id": chat[0]}
