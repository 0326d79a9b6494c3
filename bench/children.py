"""The measurements that run in a process of their own, as a Lambda container would: one per call.

Usage: python -m bench.children <kind> --out result.json [options]; the environment carries the
service's configuration (bench.common.production_env). Each writes its numbers as JSON to --out; stdout
gets the service's own log lines, as in Lambda (the parent discards them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from bench import bulk
from bench.common import (
    INGEST_SQL,
    SERVICE_KEY,
    Context,
    fresh_peer,
    fresh_tag,
    load_event,
    load_handler,
    message_args,
    message_body,
    message_event,
    timed,
)


def _ok(response: dict[str, Any]) -> None:
    if response["statusCode"] != 200:
        raise RuntimeError(f"handler answered {response['statusCode']}: {response['body'][:300]}")


def warm(args: argparse.Namespace) -> dict[str, Any]:
    """Messages per second through the full handler, and through the bare call it makes, interleaved.

    Postgres: the ceiling is public.whatsapp_ingest_message called from psycopg in a tight loop (one
    connection, autocommit, no prepared statements, exactly the store's query). Supabase: the bare loop is
    supabase-py's rpc() alone, the same transport without our handler. Same payloads, fresh ids per loop;
    100 peers, all created in a warm-up pass so every measured message finds its contact and chat.
    """
    handler = load_handler("messages_received")
    context = Context()
    peers = [fresh_peer() for _ in range(100)]

    if args.store == "postgres":
        import psycopg

        conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=None)

        def bare(body: dict[str, Any]) -> None:
            conn.execute(INGEST_SQL, message_args(body)).fetchone()
    else:
        import supabase

        client = supabase.create_client(os.environ["SUPABASE_URL"], SERVICE_KEY)

        def bare(body: dict[str, Any]) -> None:
            call = {**message_args(body), "p_content": body["message"]}
            client.rpc("whatsapp_ingest_message", call).execute()

    def bodies(n: int) -> list[dict[str, Any]]:
        tag = fresh_tag()
        return [message_body(f"bench-{tag}-{i}", peers[i % len(peers)]) for i in range(n)]

    def through_handler(batch: list[dict[str, Any]]) -> float:
        events = [message_event(body) for body in batch]
        started = time.perf_counter()
        for event in events:
            _ok(handler(event, context))
        return len(events) / (time.perf_counter() - started)

    def through_bare(batch: list[dict[str, Any]]) -> float:
        started = time.perf_counter()
        for body in batch:
            bare(body)
        return len(batch) / (time.perf_counter() - started)

    through_handler(bodies(len(peers)))
    through_bare(bodies(len(peers)))
    ours, ceiling = [], []
    for _ in range(args.reps):
        ours.append(through_handler(bodies(args.n)))
        ceiling.append(through_bare(bodies(args.n)))
    return {"ours": ours, "ceiling": ceiling}


def requests(args: argparse.Namespace) -> dict[str, Any]:
    """N requests of one endpoint through the handler (or the six-statement baseline); the parent counts.

    Messages come from new contacts, so both flows do all their work (contact, chat, message).
    """
    if args.function == "six":
        import psycopg

        from bench.six_round_trips import ingest

        with psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=None) as conn:
            tag = fresh_tag()
            for i in range(args.n):
                ingest(conn, message_body(f"bench-six-{tag}-{i}", fresh_peer()))
        return {"n": args.n}
    handler, context = load_handler(args.function), Context()
    tag = fresh_tag()
    for i in range(args.n):
        if args.function == "messages_received":
            event = message_event(message_body(f"bench-rt-{tag}-{i}", fresh_peer()))
        elif args.function == "messages_batch":
            peers = [fresh_peer() for _ in range(bulk.BATCH_SIZE // 5)]
            bodies = [message_body(f"bench-rt-{tag}-{i}-{j}", peers[j % len(peers)]) for j in range(bulk.BATCH_SIZE)]
            event = bulk.batch_event(bodies)
        else:
            event = load_event(f"{args.function}/valid")
        _ok(handler(event, context))
    return {"n": args.n}


def latency(args: argparse.Namespace) -> dict[str, Any]:
    """Per-request latency through the delay proxy: our handler, the bare call, the six-statement flow.

    Each on one connection opened (through the proxy) by untimed warm-up requests, then N requests from
    new contacts; the medians compare steady-state requests, not connection setup.
    """
    import psycopg

    from bench.six_round_trips import ingest

    handler, context = load_handler("messages_received"), Context()
    conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, prepare_threshold=None)

    def through_handler(body: dict[str, Any]) -> None:
        _ok(handler(message_event(body), context))

    def bare(body: dict[str, Any]) -> None:
        conn.execute(INGEST_SQL, message_args(body)).fetchone()

    def six(body: dict[str, Any]) -> None:
        ingest(conn, body)

    tag = fresh_tag()
    result: dict[str, Any] = {}
    for name, flow in (("handler", through_handler), ("bare", bare), ("six", six)):
        for i in range(2):
            flow(message_body(f"bench-lat-{tag}-{name}-w{i}", fresh_peer()))
        samples = []
        for i in range(args.n):
            body = message_body(f"bench-lat-{tag}-{name}-{i}", fresh_peer())
            started = time.perf_counter()
            flow(body)
            samples.append(time.perf_counter() - started)
        result[name] = statistics.median(samples)
    return result


def first_request(args: argparse.Namespace) -> dict[str, Any]:
    """What the first request pays over a warm one, with the store the environment selects.

    build: whatsapp_ingest.store.get_store() (the store's imports and client); first and warm: the first
    and second handler calls (the first opens the connection). The function module is imported untimed.
    """
    handler, context = load_handler("messages_received"), Context()
    from whatsapp_ingest import store  # the layer, already imported by the function

    tag = fresh_tag()
    events = [message_event(message_body(f"bench-fr-{tag}-{i}", fresh_peer())) for i in (1, 2)]
    build = timed(store.get_store)
    first = timed(lambda: _ok(handler(events[0], context)))
    second = timed(lambda: _ok(handler(events[1], context)))
    return {"build": build, "first": first, "warm": second}


def transport(args: argparse.Namespace) -> dict[str, Any]:
    """The RPC client alone, from nothing: imports, client construction, first call, second call.

    supabase: create_client with the keep-alive httpx client SupabaseStore configures; postgrest: the
    same httpx client under postgrest.SyncPostgrestClient directly (what supabase-py wraps for rpc()).
    """
    url = os.environ["SUPABASE_URL"]
    started = time.perf_counter()
    import httpx

    if args.client == "supabase":
        from supabase import ClientOptions, create_client

        imported = time.perf_counter()
        http = httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=300))
        client: Any = create_client(url, SERVICE_KEY, options=ClientOptions(httpx_client=http))
    else:
        from postgrest import SyncPostgrestClient

        imported = time.perf_counter()
        http = httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=4, keepalive_expiry=300))
        headers = {"apikey": SERVICE_KEY, "Authorization": f"Bearer {SERVICE_KEY}"}
        client = SyncPostgrestClient(f"{url}/rest/v1", headers=headers, http_client=http)
    built = time.perf_counter()
    tag = fresh_tag()
    calls = []
    for i in (1, 2):
        body = message_body(f"bench-tr-{tag}-{i}", fresh_peer())
        started_call = time.perf_counter()
        client.rpc("whatsapp_ingest_message", {**message_args(body), "p_content": body["message"]}).execute()
        calls.append(time.perf_counter() - started_call)
    return {"import": imported - started, "build": built - imported, "first": calls[0], "warm": calls[1]}


def secrets(args: argparse.Namespace) -> dict[str, Any]:
    """The deployed configuration's secret reads (config._secret) on the first request, minus the network.

    --client powertools (what config.py does): Powertools Parameters is imported (it imports boto3), its
    Secrets Manager provider built (botocore loads the service model and endpoint rules) and the two
    secrets read through a botocore Stubber, which answers before signing and sending; what remains in
    Lambda is two GetSecretValue round trips. --client urllib: what reading them from the AWS Parameters
    and Secrets Lambda Extension (HTTP on localhost:2773) would import instead. Both after the function
    module is loaded, so only what it does not import already is counted.
    """
    load_handler("messages_received")
    started = time.perf_counter()
    if args.client == "urllib":
        import urllib.request  # noqa: F401

        return {"import": time.perf_counter() - started, "client": 0.0, "reads": 0.0}
    from aws_lambda_powertools.utilities import parameters
    from botocore.stub import Stubber

    imported = time.perf_counter()
    provider = parameters.SecretsProvider()
    built = time.perf_counter()
    arns = {name: f"arn:aws:secretsmanager:us-east-1:000000000000:secret:{name}" for name in ("auth", "db")}
    stub = Stubber(provider.client)
    for name, value in (("auth", {"tokens": ["t"]}), ("db", {"database_url": "postgresql://"})):
        answer = {"SecretString": json.dumps(value), "ARN": arns[name]}
        stub.add_response("get_secret_value", answer, {"SecretId": arns[name]})
    with stub:
        for arn in arns.values():
            provider.get(arn, transform="json")
    done = time.perf_counter()
    return {"import": imported - started, "client": built - imported, "reads": done - built}


KINDS = {
    "bulk": bulk.ingest,
    "bulk_rss": bulk.peak_rss,
    "warm": warm,
    "requests": requests,
    "latency": latency,
    "first_request": first_request,
    "transport": transport,
    "secrets": secrets,
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--store", default="postgres")
    parser.add_argument("--function", default="messages_received")
    parser.add_argument("--client", default="supabase")
    parser.add_argument("--n", type=int, default=100)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    args.out.write_text(json.dumps(KINDS[args.kind](args)))


if __name__ == "__main__":
    main()
