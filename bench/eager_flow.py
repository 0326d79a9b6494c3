"""The reference for the cold path: the same request served the eager way, from process start.

Usage: python bench/eager_flow.py supabase|postgres <message_id>

Eager imports as in eager_reference.py, then one call of public.whatsapp_ingest_message with the
arguments of events/messages_received/text.json under a fresh message id (the RPC, not the six-statement
flow: the PostgREST stand-in serves only RPC, and the same SQL on both sides isolates what init costs):

- supabase: `supabase.create_client(SUPABASE_URL, SUPABASE_SERVICE_ROLE_KEY).rpc(...)`, as production;
- postgres: psycopg to DATABASE_URL (autocommit, no prepared statements, as PostgresStore), no Supabase
  client since there is no SUPABASE_URL.

No validation, logging or metrics: the reference pays only the imports, the client and the call.
"""

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import boto3  # noqa: F401  (imported for its cost: what an eager function pays)
import pydantic  # noqa: F401
from aws_lambda_powertools import Logger, Metrics  # noqa: F401
from aws_lambda_powertools.event_handler import APIGatewayHttpResolver  # noqa: F401

import supabase

EVENT = Path(__file__).resolve().parent.parent / "events" / "messages_received" / "text.json"


def wa_id(value: str) -> str:
    return re.sub(r"\D", "", value.split("@")[0].split(":")[0])


mode, message_id = sys.argv[1], sys.argv[2]
body = json.loads(json.loads(EVENT.read_text())["body"])
args = {
    "p_session_id": body["session_id"],
    "p_message_id": message_id,
    "p_from": wa_id(body["from"]),
    "p_to": wa_id(body["to"]),
    "p_message_type": body["message"]["type"],
    "p_body": body["message"]["text"],
    "p_content": body["message"],
    "p_sent_at": body["timestamp"],
}
result: dict[str, Any]
if mode == "supabase":
    client = supabase.create_client(os.environ["SUPABASE_URL"], os.environ["SUPABASE_SERVICE_ROLE_KEY"])
    result = client.rpc("whatsapp_ingest_message", args).execute().data  # type: ignore[assignment]
else:
    import psycopg

    args["p_content"] = json.dumps(args["p_content"])
    named = ", ".join(f"{name} => %({name})s" for name in args)
    with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=None) as conn:
        row = conn.execute(f"select public.whatsapp_ingest_message({named})", args).fetchone()
        result = row[0] if row else {}
print(f"\n@@bench-response 200 duplicate={result['duplicate']}", flush=True)
