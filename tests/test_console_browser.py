"""The console of `make run` in a real browser: Debian's headless Chromium (through its
chromedriver, with selenium) on the page while the three endpoints are posted to; each
change must show within 1 s without a reload, and the QR on a screenshot must read back,
with zbar, as the string posted.

chromium, chromedriver and zbarimg come from apt (`make browser-tools`, run by
`make venv` and .ci/run); without them this test fails, it does not skip. CHROMIUM and
CHROMEDRIVER name other binaries (a Chrome and its driver) where Debian's are not installed.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import SESSION_ID, scratch_dir
from test_local_run import post, serve

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHROMEDRIVER", "/usr/bin/chromedriver")
# The network is closed on CI machines: without these, Chromium waits on connections it tries.
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]
LIVE_WITHIN_SECONDS = 1.0

Api = tuple[str, str]


@pytest.fixture(scope="module")
def make_run() -> Iterator[Api]:
    """`make run` on a fresh data directory and a free port: (url, token)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SUPABASE_URL", "API_TOKENS")}
    with scratch_dir("console") as directory:
        yield from serve(directory / "pgdata", env)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    for tool in (CHROMIUM, CHROMEDRIVER):
        assert Path(tool).is_file(), f"{tool} is missing: make browser-tools (apt: chromium chromium-driver)"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM  # with the driver's path given, selenium downloads nothing
    profile = tempfile.mkdtemp(prefix="whatsapp-ingest-chromium-")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def shows_within(driver: Any, seconds: float, script: str, *args: Any) -> float:
    """Poll the page until `script` returns true; the seconds it took (fails past `seconds`)."""
    started = time.monotonic()
    while not driver.execute_script(script, *args):
        elapsed = time.monotonic() - started
        assert elapsed < seconds, f"not shown within {seconds} s: {script}"
        time.sleep(0.02)
    return time.monotonic() - started


def posted(api: Api, path: str, body: dict[str, Any]) -> None:
    status, reply, _ = post(api, path, body)
    assert status == 200, reply


def decode_qr(png: bytes) -> list[str]:
    """Every QR code zbar finds in a PNG."""
    zbarimg = shutil.which("zbarimg")
    assert zbarimg, "zbarimg is missing: make browser-tools (apt: zbar-tools)"
    with tempfile.NamedTemporaryFile(suffix=".png") as image:
        image.write(png)
        image.flush()
        found = subprocess.run([zbarimg, "--raw", "-q", image.name], capture_output=True, text=True, timeout=30)
    return found.stdout.splitlines()


CARD = "const card = document.querySelector(`[data-session-id='${arguments[0]}']`);"


def test_the_console_shows_a_status_a_scannable_qr_and_a_message_within_a_second_of_each_post(
    make_run: Api, browser: Any
) -> None:
    url, _ = make_run
    browser.get(url + "/")
    # Listening, and the seeded session drawn.
    shows_within(
        browser, 10, CARD + "return document.getElementById('live').dataset.state === 'live' && !!card", SESSION_ID
    )
    browser.execute_script("window.sameDocument = true")  # gone if the page were reloaded
    took: dict[str, float] = {}

    def after(what: str, path: str, body: dict[str, Any], script: str, *args: Any) -> None:
        posted(make_run, path, body)
        took[what] = shows_within(browser, LIVE_WITHIN_SECONDS, CARD + script, SESSION_ID, *args)

    after(
        "status",
        "/api/whatsapp/sessions/status-update",
        {"session_id": SESSION_ID, "status": "connected", "phone_number": "+52 1 55 0000 0001"},
        "return card.querySelector('[data-field=status]').textContent === 'connected'",
    )

    # Shaped like a Baileys QR: ref, then the base64 noise key, identity key and adv secret.
    qr_code = "2@" + ",".join(base64.b64encode(secrets.token_bytes(n)).decode() for n in (48, 32, 32, 32))
    after(
        "qr",
        "/api/whatsapp/sessions/qr-update",
        {"session_id": SESSION_ID, "qr_code": qr_code, "timestamp": datetime.now(UTC).isoformat()},
        "const img = card.querySelector('.qr img');"
        "return !img.closest('figure').hidden && img.dataset.qrCode === arguments[1]"
        " && img.complete && img.naturalWidth > 0",
        qr_code,
    )

    text = f"¿Lo tienen en azul? {uuid.uuid4()}"
    after(
        "message",
        "/api/whatsapp/messages/received",
        {
            "session_id": SESSION_ID,
            "from": "5215512345678@s.whatsapp.net",
            "to": "+52 1 55 0000 0001",
            "timestamp": int(time.time()),
            "message_id": f"3EB0{uuid.uuid4().hex[:12].upper()}",
            "push_name": "Carla",
            "message": {"type": "text", "text": text},
        },
        "return [...card.querySelectorAll('.message')].some(m => m.dataset.direction === 'inbound'"
        " && m.querySelector('.text').textContent === arguments[1]"
        " && m.querySelector('[data-field=sender]').textContent.startsWith('Carla'))",
        text,
    )

    assert browser.execute_script("return window.sameDocument === true"), "the page was reloaded"
    status = browser.execute_script(CARD + "return card.querySelector('[data-field=status]').textContent", SESSION_ID)
    assert status == "pending"  # the QR's
    assert decode_qr(browser.get_screenshot_as_png()) == [qr_code]
    print(f"shown after the POST's answer: {', '.join(f'{k} {v * 1000:.0f} ms' for k, v in took.items())}")


def wav_tone(seconds: float = 2.0, rate: int = 8000) -> bytes:
    """A playable voice note: a 440 Hz tone as 16-bit mono WAV (no Opus encoder is at hand)."""
    import io
    import math
    import struct
    import wave

    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        samples = (int(8000 * math.sin(2 * math.pi * 440 * n / rate)) for n in range(int(seconds * rate)))
        out.writeframes(b"".join(struct.pack("<h", s) for s in samples))
    return buffer.getvalue()


MESSAGE = (
    "const m = [...document.querySelectorAll('.message')].find(m => m.dataset.whatsappMessageId === arguments[0]);"
)


def test_the_console_shows_a_stored_photo_and_plays_a_voice_note_without_a_reload(make_run: Api, browser: Any) -> None:
    url, _ = make_run
    browser.get(url + "/")
    shows_within(browser, 10, "return document.getElementById('live').dataset.state === 'live'")
    browser.execute_script("window.sameDocument = true")
    photo = (Path(__file__).resolve().parent.parent / "docs" / "console.png").read_bytes()
    for message_id, kind, media in [
        ("photo-in-console", "image", {"mime_type": "image/png", "data": base64.b64encode(photo).decode()}),
        (
            "voice-in-console",
            "audio",
            {"mime_type": "audio/wav", "voice": True, "data": base64.b64encode(wav_tone()).decode()},
        ),
    ]:
        posted(make_run, "/api/whatsapp/messages/received", {
            "session_id": SESSION_ID, "from": "5215512345678", "to": "+52 1 55 0000 0001",
            "timestamp": int(time.time()), "message_id": message_id,
            "message": {"type": kind, kind: {"id": message_id, **media}},
        })  # fmt: skip

    # Stored by the media function within seconds, and drawn from its presigned URL of the local S3.
    shows_within(
        browser, 15, MESSAGE + "const img = m && m.querySelector('img.media-image');"
        "return !!img && img.complete && img.naturalWidth > 0", "photo-in-console",
    )  # fmt: skip
    source = browser.execute_script(MESSAGE + "return m.querySelector('img.media-image').src", "photo-in-console")
    assert "X-Amz-Signature=" in source and "X-Amz-Expires=300" in source
    shows_within(browser, 15, MESSAGE + "return !!(m && m.querySelector('audio.media-audio'))", "voice-in-console")
    # A click first: Chromium plays media only after the user has interacted with the page.
    browser.find_element("css selector", "h1").click()
    played = browser.execute_async_script(
        MESSAGE + "const done = arguments[arguments.length - 1];"
        "m.querySelector('audio').play().then(() => done('playing'), (e) => done(String(e)))",
        "voice-in-console",
    )
    assert played == "playing"
    shows_within(
        browser, 10, MESSAGE + "const a = m.querySelector('audio'); return a.currentTime > 0.3 && a.duration > 1.9",
        "voice-in-console",
    )  # fmt: skip
    assert browser.execute_script("return window.sameDocument === true"), "the page was reloaded"
