"""The local console (local/console.py): what it reads from the database, and its live
stream of the triggers' broadcasts on the local gateway. In a real browser:
test_console_browser.py."""

from __future__ import annotations

import base64
import http.client
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import SESSION_B, SESSION_ID, call_handler, event_body, request, use_backend

from local import console, gateway

PNG_QR = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n not really").decode()


@pytest.fixture
def post(handlers: dict[str, gateway.Handler], database_url: str, db: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """post('messages_received/text', changes...): the real handler on the clean database."""
    use_backend(monkeypatch, {"DATABASE_URL": database_url})

    def call(name: str, **changes: Any) -> dict[str, Any]:
        result = call_handler(handlers, request(name, {**event_body(name), **changes}))
        assert result.status == 200, result.body
        return result.body

    return call


def session(state: dict[str, Any], session_id: str = SESSION_ID) -> dict[str, Any]:
    found: dict[str, Any] = next(s for s in state["sessions"] if s["id"] == session_id)
    return found


def test_every_session_is_listed_with_its_account_status_and_last_change(post: Any, database_url: str) -> None:
    state = console.state(database_url)

    assert {(s["id"], s["account"], s["status"]) for s in state["sessions"]} == {
        (SESSION_ID, "Account A", "disconnected"),
        (SESSION_B, "Account B", "disconnected"),
    }
    assert all(s["updated_at"] for s in state["sessions"])


def test_a_waiting_qr_is_an_svg_image_until_the_session_connects(post: Any, database_url: str) -> None:
    post("qr_update/valid", qr_url=None)
    qr = session(console.state(database_url))["qr"]

    assert qr["code"] == event_body("qr_update/valid")["qr_code"]
    assert qr["image"].startswith("data:image/svg+xml")
    assert qr["generated_at"] == "2026-11-28T04:42:00+00:00"

    post("status_update/valid")  # connected: the service clears the QR
    assert session(console.state(database_url))["qr"] is None


def test_a_qr_the_orchestrator_sent_as_an_image_is_shown_as_sent(post: Any, database_url: str) -> None:
    post("qr_update/valid", qr_code=PNG_QR)

    assert session(console.state(database_url))["qr"]["image"] == PNG_QR


def test_text_that_only_looks_like_an_image_url_is_drawn_as_a_qr() -> None:
    assert console.qr_image('data:image/png;base64,AAAA"><script>').startswith("data:image/svg+xml")
    assert console.qr_image("data:text/html;base64,AAAA").startswith("data:image/svg+xml")


def test_messages_are_grouped_by_chat_newest_first_with_direction_type_sender_and_text(
    post: Any, database_url: str
) -> None:
    post("status_update/valid")  # the session's own number: the linked phone's messages are outbound
    post("messages_received/text", message_id="m-old", timestamp="2026-11-28T04:00:00Z", push_name="Carla")
    post("messages_received/image", message_id="m-new", timestamp="2026-11-28T05:00:00Z")
    post("messages_received/location", message_id="m-mid", timestamp="2026-11-28T04:30:00Z")
    post("messages_received/from_linked_phone", message_id="m-out", timestamp="2026-11-28T06:00:00Z")
    post("messages_received/text", message_id="m-other", timestamp="2026-11-28T07:00:00Z", **{"from": "5215522223333"})

    chats = session(console.state(database_url))["chats"]

    assert [c["contact"] for c in chats] == ["+5215522223333", "Carla (+5215512345678)"]  # latest message first
    carla = "Carla (+5215512345678)"
    assert [
        (m["whatsapp_message_id"], m["direction"], m["type"], m["sender"], m["text"]) for m in chats[1]["messages"]
    ] == [
        ("m-out", "outbound", "text", "this phone", "Claro, se lo aparto"),
        ("m-new", "inbound", "image", carla, "Este modelo"),
        ("m-mid", "inbound", "location", carla, "Zócalo, Centro, CDMX"),
        ("m-old", "inbound", "text", carla, event_body("messages_received/text")["message"]["text"]),
    ]
    assert chats[1]["messages"][1]["sent_at"] == "2026-11-28T05:00:00+00:00"


@pytest.fixture
def local_gateway(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    """The local gateway, console included, on a free port of 127.0.0.1."""
    monkeypatch.setenv("DATABASE_URL", database_url)
    server = gateway.make_server([], port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1", server.server_address[1]
    server.shutdown()
    server.server_close()


def get(address: tuple[str, int], path: str, method: str = "GET") -> tuple[int, str, bytes]:
    conn = http.client.HTTPConnection(*address, timeout=5)
    conn.request(method, path)
    response = conn.getresponse()
    status, content_type, body = response.status, response.getheader("Content-Type", ""), response.read()
    conn.close()
    return status, content_type, body


def within(seconds: float, condition: Any) -> bool:
    """Whether `condition()` becomes true within `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def read_event(response: http.client.HTTPResponse) -> tuple[str, str]:
    """The next SSE message (event name, data), skipping comments."""
    name, data = "message", []
    while True:
        line = response.fp.readline().decode().rstrip("\n")
        if line == "" and data:
            return name, "\n".join(data)
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: "):
            data.append(line[len("data: ") :])


def test_the_page_its_files_and_the_state_are_served_on_the_local_gateway(
    local_gateway: tuple[str, int], db: Any
) -> None:
    status, content_type, page = get(local_gateway, "/")
    assert (status, content_type) == (200, "text/html; charset=utf-8")
    for asset, kind in [("/console/console.css", "text/css"), ("/console/console.js", "text/javascript")]:
        assert asset.encode() in page
        assert get(local_gateway, asset)[:2] == (200, f"{kind}; charset=utf-8")
    status, _, body = get(local_gateway, "/console/state")
    assert status == 200
    assert {s["id"] for s in json.loads(body)["sessions"]} == {SESSION_ID, SESSION_B}
    assert get(local_gateway, "/console/../template.yaml")[0] == 404


@pytest.mark.parametrize(
    "host", ["attacker.example:{port}", "127.0.0.1.nip.io:{port}", "127.0.0.1:1", "localhost", "192.168.1.20:{port}"]
)
def test_a_host_other_than_localhost_or_127_0_0_1_at_its_port_is_refused(
    local_gateway: tuple[str, int], host: str
) -> None:
    # DNS rebinding: a site whose name now resolves to 127.0.0.1 sends its own name as Host.
    for path in ("/", "/console/state", "/console/events"):
        conn = http.client.HTTPConnection(*local_gateway, timeout=5)
        conn.request("GET", path, headers={"Host": host.format(port=local_gateway[1])})
        response = conn.getresponse()
        assert (response.status, response.read()) == (403, b"the console answers only to localhost or 127.0.0.1\n")
        conn.close()


def test_localhost_at_its_port_is_served(local_gateway: tuple[str, int], db: Any) -> None:
    conn = http.client.HTTPConnection(*local_gateway, timeout=5)
    conn.request("GET", "/console/state", headers={"Host": f"localhost:{local_gateway[1]}"})
    assert conn.getresponse().status == 200
    conn.close()


def test_the_api_routes_are_not_the_consoles(local_gateway: tuple[str, int]) -> None:
    status, _, body = get(local_gateway, "/", method="POST")
    assert status == 404
    assert json.loads(body)["message"] == "no route for POST /"


def test_the_event_stream_relays_each_broadcast_of_the_triggers_while_other_requests_are_served(
    local_gateway: tuple[str, int], post: Any
) -> None:
    stream = http.client.HTTPConnection(*local_gateway, timeout=5)
    stream.request("GET", "/console/events")
    response = stream.getresponse()
    assert response.getheader("Content-Type") == "text/event-stream; charset=utf-8"
    assert read_event(response)[0] == "ready"

    post("qr_update/valid")
    assert get(local_gateway, "/console/state")[0] == 200  # the open stream holds no other request
    post("messages_received/text")

    events = [read_event(response), read_event(response)]
    broadcasts = [json.loads(data) for _, data in events]
    assert [name for name, _ in events] == ["broadcast", "broadcast"]
    assert [(b["event"], b["topic"]) for b in broadcasts] == [
        ("session_updated", "account:0a0a0a0a-0000-4000-8000-0000000000a0"),
        ("message_created", "account:0a0a0a0a-0000-4000-8000-0000000000a0"),
    ]
    assert broadcasts[0]["payload"]["qr_waiting"] is True
    stream.close()


def test_a_closed_page_lets_its_streams_database_connection_go(local_gateway: tuple[str, int], db: Any) -> None:
    def listening() -> int:
        count: int = db.execute(
            "select count(*) as n from pg_stat_activity where query = 'listen realtime'"
        ).fetchone()["n"]
        return count

    assert within(3, lambda: listening() == 0)  # the streams of earlier tests have let go
    stream = http.client.HTTPConnection(*local_gateway, timeout=5)
    stream.request("GET", "/console/events")
    assert read_event(stream.getresponse())[0] == "ready"
    assert within(2, lambda: listening() == 1)  # pg_stat_activity may lag the backend a little

    stream.close()
    assert within(2, lambda: listening() == 0)


def test_an_open_event_stream_does_not_hold_the_shutdown(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    server = gateway.make_server([], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stream = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=5)
    stream.request("GET", "/console/events")
    assert read_event(stream.getresponse())[0] == "ready"

    started = time.monotonic()
    server.shutdown()
    server.server_close()

    assert time.monotonic() - started < 2
    stream.close()


def test_without_database_url_the_console_says_what_it_needs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    server = gateway.make_server([], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        status, _, body = get(("127.0.0.1", server.server_address[1]), "/console/state")
    finally:
        server.shutdown()
        server.server_close()

    assert status == 503
    assert "DATABASE_URL" in json.loads(body)["error"]
