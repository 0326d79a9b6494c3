"""`make run`: a fresh data directory, migrations and seed, the real handlers on HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, get_args

import pytest
from conftest import REPO, event_body, scratch_dir

from whatsapp_ingest.models import MessageType


@pytest.fixture(scope="module")
def local_api() -> Any:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SUPABASE_URL", "API_TOKENS")}
    with scratch_dir("run") as directory:
        yield from serve(directory / "pgdata", env)


def serve(pgdata: Path, env: dict[str, str]) -> Any:
    proc = subprocess.Popen(
        [sys.executable, "-m", "local.run", "--port", "0", "--pgdata", str(pgdata)],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    token = ""
    for line in proc.stdout:
        if line.startswith("Orchestrator token: export TOKEN="):
            token = line.split("=", 1)[1].split()[0]
        if line.startswith("Listening on "):
            yield line.split()[-1], token
            break
    proc.terminate()
    proc.wait(timeout=20)


def post(
    api: tuple[str, str], path: str, body: Any, method: str = "POST", token: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    url, generated = api
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token or generated}"}
    request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read()), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), dict(error.headers)


def test_every_template_route_answers_on_localhost_with_the_seeded_session(local_api: tuple[str, str]) -> None:
    for path, event in [
        ("/api/whatsapp/sessions/status-update", "status_update/valid"),
        ("/api/whatsapp/messages/received", "messages_received/text"),
        ("/api/whatsapp/sessions/qr-update", "qr_update/valid"),
    ]:
        status, body, _ = post(local_api, path, event_body(event))
        assert status == 200, body
        assert body["success"] is True


def test_make_run_generates_a_development_token_and_refuses_others(local_api: tuple[str, str]) -> None:
    _, token = local_api
    assert len(token) >= 32

    status, _, headers = post(local_api, "/api/whatsapp/messages/received", {}, token="guess")

    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Bearer")


def test_wrong_method_on_localhost_is_405_with_allow_post(local_api: tuple[str, str]) -> None:
    status, _, headers = post(local_api, "/api/whatsapp/messages/received", {}, method="PATCH")

    assert status == 405
    assert headers["Allow"] == "POST"


def test_readme_curl_examples_use_paths_and_session_that_exist() -> None:
    readme = (REPO / "README.md").read_text()
    head = "\n".join(readme.splitlines()[:15])
    assert "make run" in head and "make test" in head
    assert "3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c" in readme
    assert Path(REPO / "supabase" / "seed.sql").read_text().count("3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c") == 1


def test_the_documented_message_type_examples_are_the_sample_events() -> None:
    readme = (REPO / "docs" / "orchestrator.md").read_text()
    block = readme.split("<!-- message-types:begin -->")[1].split("<!-- message-types:end -->")[0]
    examples = [json.loads(line) for line in block.splitlines() if line.startswith("{")]

    assert [e["type"] for e in examples] == list(get_args(MessageType))
    for example in examples:
        assert example == event_body(f"messages_received/{example['type']}")["message"]
