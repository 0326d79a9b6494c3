"""Bulk ingest (history sync): 10,000 messages from 1,000 new contacts into one session,
(a) one request per message through the messages/received handler, (b) batches of 500
through the messages/batch handler, (c) public.whatsapp_ingest_batch called from psycopg
in a tight loop with the same batches. Each in a process of its own (a Lambda container);
events and payloads are built before the clock starts. Peak RSS of one 500-message batch
next to one message, and the same comparison over the simulated 20 ms network.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
from typing import Any

from bench.common import (
    SESSION_ID,
    Context,
    fresh_peer,
    fresh_tag,
    load_event,
    load_handler,
    message_body,
    message_event,
    postgres_env,
    slow_network,
)

BATCH_SIZE = 500
CONTACTS = 1000
_BATCH_EVENT = load_event("messages_batch/valid")


def batch_event(bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """The API Gateway v2 event of events/messages_batch/valid.json carrying these messages."""
    event = json.loads(json.dumps(_BATCH_EVENT))
    items = [{k: v for k, v in body.items() if k != "session_id"} for body in bodies]
    event["body"] = json.dumps({"session_id": SESSION_ID, "messages": items}, ensure_ascii=False)
    return event


def batch_items(bodies: list[dict[str, Any]]) -> str:
    """The p_messages argument the store passes for these messages (see Store.ingest_batch)."""
    return json.dumps(
        [
            {
                "i": i,
                "message_id": body["message_id"],
                "from": body["from"].split("@")[0],
                "to": body["to"].split("@")[0],
                "type": "text",
                "body": body["message"]["text"],
                "content": body["message"],
                "sent_at": body["timestamp"],
                "from_me": None,
                "push_name": None,
            }
            for i, body in enumerate(bodies)
        ]
    )


# ---------------------------------------------------------------------------
# Children (bench.children registers these kinds)
# ---------------------------------------------------------------------------


def ingest(args: argparse.Namespace) -> dict[str, Any]:
    """args.n messages from CONTACTS new contacts, the way args.function says: single | batch | sql."""
    tag = fresh_tag()
    peers = [fresh_peer() for _ in range(CONTACTS)]
    # args.n measured, and one more request's worth for the untimed warm-up
    extra = 1 if args.function == "single" else BATCH_SIZE
    bodies = [message_body(f"bulk-{tag}-{i}", peers[i % CONTACTS]) for i in range(args.n + extra)]
    groups = [bodies[i : i + BATCH_SIZE] for i in range(0, len(bodies), BATCH_SIZE)]
    context = Context()
    call: Any
    work: list[Any]
    if args.function == "single":
        handler = load_handler("messages_received")
        work = [message_event(body) for body in bodies]

        def call(event: Any) -> Any:
            return handler(event, context)
    elif args.function == "batch":
        handler = load_handler("messages_batch")
        work = [batch_event(group) for group in groups]

        def call(event: Any) -> Any:
            return handler(event, context)
    else:
        import psycopg

        conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=None)
        work = [batch_items(group) for group in groups]

        def call(items: Any) -> Any:
            return conn.execute("select public.whatsapp_ingest_batch(%s, %s)", (SESSION_ID, items)).fetchone()

    call(work.pop())  # untimed: the container's first request builds its store and connects
    started = time.perf_counter()
    for unit in work:
        response = call(unit)
        if isinstance(response, dict) and response["statusCode"] != 200:
            raise RuntimeError(f"handler answered {response['statusCode']}: {response['body'][:300]}")
    elapsed = time.perf_counter() - started
    return {"rate": args.n / elapsed, "seconds": elapsed}


def peak_rss(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of a container that imported the handler and served one request of args.n messages."""
    tag, function = fresh_tag(), "messages_batch" if args.n > 1 else "messages_received"
    handler = load_handler(function)
    bodies = [message_body(f"rss-{tag}-{i}", fresh_peer()) for i in range(args.n)]
    event = batch_event(bodies) if args.n > 1 else message_event(bodies[0])
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    response = handler(event, Context())
    assert response["statusCode"] == 200, response["body"][:300]
    return {"before_kib": before, "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


# ---------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------


def section(table: list[Any], row: Any, child: Any, db: Any, quick: bool) -> None:
    """Append the bulk section to the bench table (row: bench.run.Row, child: bench.run.child)."""
    n = 2000 if quick else 10_000
    table.append(
        f"Bulk ingest: {n:,} messages from {CONTACTS:,} new contacts into one session; batches of {BATCH_SIZE}"
    )
    env = postgres_env(db.url)
    runs = {mode: [] for mode in ("single", "batch", "sql")}  # type: dict[str, list[float]]
    for _ in range(1 if quick else 3):  # round robin: drift hits all alike
        for mode in runs:
            runs[mode].append(child("bulk", env, function=mode, n=n)["rate"])
    single, batch, sql = (statistics.median(runs[m]) for m in ("single", "batch", "sql"))
    table.append(
        row("(a) one request per message, handler (msg/s)", f"{single:.0f}", note="messages/received, warm container")
    )
    met = "met" if batch >= 10 * single else "**missed**"
    table.append(
        row(
            "(b) batches through the handler vs (a) (msg/s)",
            f"{batch:.0f}",
            f"{single:.0f}",
            f"{batch / single:.1f}",
            f"≥ 10: {met}",
            "messages/batch, warm container",
        )
    )
    met = "met" if batch >= 0.5 * sql else "**missed**"
    table.append(
        row(
            "(b) batches through the handler vs (c) (msg/s)",
            f"{batch:.0f}",
            f"{sql:.0f}",
            f"{batch / sql:.2f}",
            f"≥ 0.5: {met}",
            "(c): whatsapp_ingest_batch from psycopg in a tight loop",
        )
    )
    one = child("bulk_rss", env, n=1)
    many = child("bulk_rss", env, n=BATCH_SIZE)
    table.append(
        row(
            f"peak RSS: one {BATCH_SIZE}-message batch vs one message (MiB)",
            f"{many['peak_kib'] / 1024:.1f}",
            f"{one['peak_kib'] / 1024:.1f}",
            f"{many['peak_kib'] / one['peak_kib']:.2f}",
            note=f"fresh processes; after imports {many['before_kib'] / 1024:.1f} / {one['before_kib'] / 1024:.1f}",
        )
    )
    with slow_network(db.socket) as url:
        net_single = child("bulk", postgres_env(url), function="single", n=100)["rate"]
        net_batch = child("bulk", postgres_env(url), function="batch", n=2000)["rate"]
    table.append(
        row(
            "over a 20 ms network: batches vs one request per message (msg/s)",
            f"{net_batch:.0f}",
            f"{net_single:.0f}",
            f"{net_batch / net_single:.0f}",
            note="2,000 in batches of 500 vs 100 singles",
        )
    )
