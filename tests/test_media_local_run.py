"""`make run` serves local storage (moto's S3 and SQS) and runs the media function: an
image posted with its bytes lands in the bucket within seconds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import boto3
import psycopg
import pytest
from conftest import REPO, SESSION_ID, scratch_dir
from gateway_support import payload
from test_local_run import post

from local import media


@pytest.fixture(scope="module")
def make_run() -> Iterator[dict[str, str]]:
    """`python -m local.run` (what `make run` starts) on a fresh database: the lines it printed."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "SUPABASE_URL", "API_TOKENS")
        and not k.startswith(("STORAGE_", "MEDIA_", "AWS_ENDPOINT_URL"))
    }
    with scratch_dir("run-media") as directory:
        proc = subprocess.Popen(
            [sys.executable, "-m", "local.run", "--port", "0", "--pgdata", str(directory / "pgdata")],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert proc.stdout is not None
            lines: dict[str, str] = {}
            prefixes = ("  psql ", "  storage: ", "  secrets: export ", "Orchestrator token: export TOKEN=")
            for line in proc.stdout:
                for prefix in (*prefixes, "Listening on "):
                    if line.startswith(prefix):
                        lines[prefix.strip()] = line[len(prefix) :].strip()
                if line.startswith("Listening on "):
                    break
            yield lines
        finally:
            proc.terminate()
            proc.wait(timeout=20)


def api_of(lines: dict[str, str]) -> tuple[str, str]:
    return lines["Listening on"], lines["Orchestrator token: export TOKEN="].split()[0]


def test_make_run_prints_its_storage_and_stores_a_posted_photo_within_seconds(make_run: dict[str, str]) -> None:
    endpoint, bucket_word, bucket = make_run["storage:"].split()
    assert endpoint.startswith("http://127.0.0.1:") and (bucket_word, bucket) == ("bucket", "whatsapp-media")
    photo = (REPO / "docs" / "console.png").read_bytes()
    body = {
        "session_id": SESSION_ID,
        "from": "5215512345678",
        "to": "5215500000001",
        "timestamp": 1795840860,
        "message_id": "local-photo",
        "message": {
            "type": "image",
            "image": {"id": "p", "mime_type": "image/png", "data": base64.b64encode(photo).decode()},
        },
    }
    status, answer, _ = post(api_of(make_run), "/api/whatsapp/messages/received", body)
    assert status == 200, answer

    stored = wait_for_media(make_run["psql"].strip("'"), "local-photo")
    assert stored["media_status"] == "stored", stored
    s3 = boto3.Session(
        aws_access_key_id=media.LOCAL_KEY, aws_secret_access_key=media.LOCAL_KEY, region_name="us-east-1"
    ).client("s3", endpoint_url=endpoint)
    saved = s3.get_object(Bucket=bucket, Key=stored["media_path"])["Body"].read()
    assert hashlib.sha256(saved).hexdigest() == hashlib.sha256(photo).hexdigest()


def test_a_connection_added_with_the_operators_command_takes_its_webhooks_on_make_run(
    make_run: dict[str, str],
) -> None:
    variable, _, endpoint = make_run["secrets: export"].split()[0].partition("=")
    database = make_run["psql"].strip("'")
    env = os.environ | {variable: endpoint, "DATABASE_URL": database, "AWS_DEFAULT_REGION": "us-east-1"}
    env |= {"AWS_ACCESS_KEY_ID": media.LOCAL_KEY, "AWS_SECRET_ACCESS_KEY": media.LOCAL_KEY}
    key = "local-waha-hmac-key-0123456789"
    command = [sys.executable, "-m", "whatsapp_ingest.connections", "add", "--gateway", "waha", "--name", "WAHA 2"]
    given = json.dumps({"webhook_secret": key, "api_key": "local-waha-api-key"})
    refused = subprocess.run(command, cwd=REPO / "shared", env=env, input=given, capture_output=True, text=True)
    assert (refused.returncode, refused.stderr) == (
        2,
        "error: the database refused the connection (whatsapp_gateway_connections_base_url_check)\n",
    )
    command += ["--base-url", "https://waha-2.example.com"]
    added = subprocess.run(command, cwd=REPO / "shared", env=env, input=given, capture_output=True, text=True)
    assert added.returncode == 0, added.stderr[-2000:]
    connection = json.loads(added.stdout)
    assert key not in added.stdout + added.stderr
    body = payload("waha", "message_text_webjs_fromMe.json")
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(
            "update public.whatsapp_sessions set gateway = 'waha', gateway_instance = %s, gateway_connection_id = %s"
            " where id = %s",
            (body["session"], connection["id"], SESSION_ID),
        )
    raw = json.dumps(body).encode()
    url = make_run["Listening on"] + connection["webhook_path"]
    signature = hmac.new(key.encode(), raw, hashlib.sha512).hexdigest()
    headers = {"Content-Type": "application/json", "X-Webhook-Hmac": signature}
    with urllib.request.urlopen(urllib.request.Request(url, data=raw, headers=headers), timeout=10) as response:
        assert (response.status, json.loads(response.read())["message"]) == (200, "applied")


def wait_for_media(url: str, message_id: str, seconds: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    with psycopg.connect(url, autocommit=True) as conn:
        while True:
            row = conn.execute(
                "select media_status, media_path from public.mensajes where whatsapp_message_id = %s", (message_id,)
            ).fetchone()
            if (row and row[0] != "pending") or time.monotonic() > deadline:
                return {"media_status": row[0] if row else None, "media_path": row[1] if row else None}
            time.sleep(0.2)
