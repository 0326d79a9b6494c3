"""`make run` serves local storage (moto's S3 and SQS) and runs the media function: an
image posted with its bytes lands in the bucket within seconds."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import time
from typing import Any

import boto3
import psycopg
from conftest import REPO, SESSION_ID, scratch_dir
from test_local_run import post

from local import media


def test_make_run_prints_its_storage_and_stores_a_posted_photo_within_seconds() -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "SUPABASE_URL", "API_TOKENS") and not k.startswith(("STORAGE_", "MEDIA_"))
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
            for line in proc.stdout:
                for prefix in ("  psql ", "  storage: ", "Orchestrator token: export TOKEN=", "Listening on "):
                    if line.startswith(prefix):
                        lines[prefix.strip()] = line[len(prefix) :].strip()
                if line.startswith("Listening on "):
                    break
            endpoint, bucket_word, bucket = lines["storage:"].split()
            assert endpoint.startswith("http://127.0.0.1:") and (bucket_word, bucket) == ("bucket", "whatsapp-media")
            api = (lines["Listening on"], lines["Orchestrator token: export TOKEN="].split()[0])
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
            status, answer, _ = post(api, "/api/whatsapp/messages/received", body)
            assert status == 200, answer

            stored = wait_for_media(lines["psql"].strip("'"), "local-photo")
            assert stored["media_status"] == "stored", stored
            s3 = boto3.Session(
                aws_access_key_id=media.LOCAL_KEY, aws_secret_access_key=media.LOCAL_KEY, region_name="us-east-1"
            ).client("s3", endpoint_url=endpoint)
            saved = s3.get_object(Bucket=bucket, Key=stored["media_path"])["Body"].read()
            assert hashlib.sha256(saved).hexdigest() == hashlib.sha256(photo).hexdigest()
        finally:
            proc.terminate()
            proc.wait(timeout=20)


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
