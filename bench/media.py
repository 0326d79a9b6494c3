"""Media (issue 17, point 7), measured in one run:

(a) a media message's ingest (handler to stored row) against a text message's, interleaved;
(b) the media function's decrypt-and-upload throughput on a 50 MB file (download from a local
    CDN stand-in, streamed decryption, multipart upload to moto's S3) against a tight loop of
    cryptography's AES-256-CBC decryption plus one S3 put of the same bytes to the same endpoint;
(c) the media function's peak RSS growth while it stores a 200 MB encrypted document, in a child
    process (VmHWM reset after warm-up; the CDN stand-in and moto run in this process).

Usage: python -m bench.media [--markdown docs/PERFORMANCE.md]  (also a section of `make bench`)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from bench.common import OWN_NUMBER, PYTHON, REPO, SESSION_ID, SHARED, message_event, postgres_env

MARKERS = ("<!-- bench-media:begin -->", "<!-- bench-media:end -->")
KEY = bytes(range(32))
MB = 1_000_000
CHUNK = 1 << 20


def _path() -> None:
    for entry in (str(SHARED), str(REPO)):
        if entry not in sys.path:
            sys.path.insert(0, entry)


def encrypt_to(path: Path, size: int, kind: str) -> dict[str, Any]:
    """Write WhatsApp's encrypted file of `size` random bytes, streamed; the message's media fields."""
    _path()
    import base64

    from cryptography.hazmat.primitives import padding
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from whatsapp_ingest.media.crypto import media_keys

    keys = media_keys(KEY, kind)
    encryptor = Cipher(algorithms.AES(keys.cipher_key), modes.CBC(keys.iv)).encryptor()
    padder = padding.PKCS7(128).padder()
    mac = hmac.new(keys.mac_key, keys.iv, hashlib.sha256)
    plain_sha, enc_sha = hashlib.sha256(), hashlib.sha256()
    with path.open("wb") as out:

        def emit(data: bytes) -> None:
            mac.update(data)
            enc_sha.update(data)
            out.write(data)

        left = size
        while left:
            block = os.urandom(min(CHUNK, left))
            left -= len(block)
            plain_sha.update(block)
            emit(encryptor.update(padder.update(block)))
        emit(encryptor.update(padder.finalize()) + encryptor.finalize())
        tail = mac.digest()[:10]
        enc_sha.update(tail)
        out.write(tail)
    b64 = base64.b64encode
    return {
        "media_key": b64(KEY).decode(),
        "file_sha256": b64(plain_sha.digest()).decode(),
        "file_enc_sha256": b64(enc_sha.digest()).decode(),
        "direct_path": f"/{path.name}",
        "file_length": size,
    }


@contextmanager
def served(argv: list[str], pattern: str) -> Iterator[str]:
    """A server in a process of its own (so it takes no CPU time from the measured process's
    interpreter): the URL read from its first line matching `pattern`."""
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            found = re.search(pattern, line)
            if found:
                yield found.group(1)
                break
        else:
            raise RuntimeError(f"{argv[:3]} printed no URL")
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def file_server(directory: Path) -> Any:
    """The CDN stand-in: Python's http.server on `directory`, streaming each file from disk."""
    argv = [PYTHON, "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", str(directory)]
    return served(argv, r"port (\d+)")


def moto_server() -> Any:
    """moto's server (S3 and SQS), as make run starts it, in a process of its own."""
    code = (
        "from local import media; print(media.start_server()[1], flush=True);"
        " import threading; threading.Event().wait()"
    )
    return served([PYTHON, "-c", code], r"(http://127\.0\.0\.1:\d+)")


def media_env(endpoint: str, cdn: str) -> dict[str, str]:
    from local import media as local_media

    env = local_media.prepare(endpoint)
    env |= {"WHATSAPP_MEDIA_HOSTS": "127.0.0.1", "WHATSAPP_MEDIA_CDN": cdn, "MEDIA_MAX_BYTES": str(256 * 2**20)}
    return env


def job(fields: dict[str, Any], kind: str = "document") -> dict[str, Any]:
    return {
        "id": 1,
        "account_id": "0a0a0a0a-0000-4000-8000-0000000000a0",
        "session_id": SESSION_ID,
        "lease": str(uuid.uuid4()),
        "message_type": kind,
        "gateway": None,
        "content": {"type": kind, kind: {"id": "bench", "mime_type": "application/pdf", **fields}},
    }


# ---------------------------------------------------------------------------
# (a) ingest cost
# ---------------------------------------------------------------------------


def media_message(message_id: str, peer: str) -> dict[str, Any]:
    """An inbound photo as a Baileys orchestrator forwards it (the fields of Evolution's reference webhook)."""
    image = {
        "id": message_id,
        "url": "https://mmg.whatsapp.net/o1/v/t62.7118-24/f2/m238/AQPnw3VpmxWhEi-XMtGpfrTyULu0z.enc?ccb=9-4",
        "mime_type": "image/jpeg",
        "caption": "Hola, ¿tienen disponible el modelo azul?",
        "media_key": "Mh9Y7zz1AB9pl1tZe9Rc/32HVRz7NCi8dHD+VlsTQ3U=",
        "file_sha256": "hOGJCXvlENXj5fxZPPu8Ne6xHFM2S9WJPb/unywn5qE=",
        "file_enc_sha256": "bu+kkcG5tZYGy6H5+CRYBsNxvsqFYpjww75cAFCw6oU=",
        "direct_path": "/o1/v/t62.7118-24/f2/m238/AQO5GKDOirN12GT9jW7-JBzcSzx2frzX5s?ccb=9-4",
        "file_length": 52046,
    }
    return {
        "session_id": SESSION_ID,
        "from": f"{peer}@s.whatsapp.net",
        "to": f"{OWN_NUMBER}@s.whatsapp.net",
        "timestamp": "2026-11-28T04:41:00Z",
        "message_id": message_id,
        "message": {"type": "image", "image": image},
    }


def ingest_cost(database_url: str, n: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per message through the messages/received handler, text and media rounds interleaved."""
    _path()
    from bench.common import message_body
    from local import gateway

    os.environ.update(postgres_env(database_url))
    (route,) = [r for r in gateway.load_routes(REPO / "template.yaml") if r.code_dir.name == "messages_received"]
    handler = gateway.load_handler(route)
    context = gateway.LambdaContext("bench")
    builders: dict[str, Callable[[str, str], dict[str, Any]]] = {"text": message_body, "media": media_message}
    results: dict[str, list[float]] = {"text": [], "media": []}
    peer = f"52{uuid.uuid4().int % 10**11:011d}"  # one chat: what differs is the message alone
    import psycopg

    results["media, pending trigger off"] = []
    for round_ in range(rounds + 1):  # the first round warms up
        for kind in results:
            build = builders[kind.split(",")[0]]
            events = [message_event(build(f"{kind}-{round_}-{i}-{uuid.uuid4().hex[:6]}", peer)) for i in range(n)]
            untriggered = kind != "media" and kind.startswith("media")
            if untriggered:
                _pending_trigger(psycopg, database_url, "disable")
            started = time.perf_counter()
            for event in events:
                handler(event, context)
            if round_:
                results[kind].append((time.perf_counter() - started) / n)
            if untriggered:
                _pending_trigger(psycopg, database_url, "enable")
    return results


def _pending_trigger(psycopg: Any, database_url: str, action: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"alter table public.mensajes {action} trigger mensajes_media_pending")


# ---------------------------------------------------------------------------
# (b) throughput, (c) memory
# ---------------------------------------------------------------------------


def throughput(endpoint: str, workdir: Path, size: int, rounds: int) -> dict[str, list[float]]:
    """MB/s of the media function's store_file, and of decrypt-in-a-loop plus one put_object."""
    _path()
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    from whatsapp_ingest.config import media_settings
    from whatsapp_ingest.media.crypto import media_keys
    from whatsapp_ingest.media.storage import s3_client
    from whatsapp_ingest.media.worker import store_file

    fields = encrypt_to(workdir / "fifty.enc", size, "document")
    encrypted = (workdir / "fifty.enc").read_bytes()
    keys = media_keys(KEY, "document")
    out: dict[str, list[float]] = {"ours": [], "reference": []}
    with file_server(workdir) as port:
        os.environ.update(media_env(endpoint, f"http://127.0.0.1:{port}"))
        media_settings.cache_clear()
        client = s3_client()
        for _ in range(rounds):
            started = time.perf_counter()
            stored = store_file(job(fields), media_settings(), client)
            out["ours"].append(size / MB / (time.perf_counter() - started))
            assert stored["size"] == size
            client.delete_object(Bucket="whatsapp-media", Key=stored["path"])

            started = time.perf_counter()
            decryptor = Cipher(algorithms.AES(keys.cipher_key), modes.CBC(keys.iv)).decryptor()
            body = encrypted[:-10]
            plain = b"".join(decryptor.update(body[i : i + CHUNK]) for i in range(0, len(body), CHUNK))
            plain += decryptor.finalize()
            client.put_object(Bucket="whatsapp-media", Key="reference", Body=plain)
            out["reference"].append(size / MB / (time.perf_counter() - started))
            del plain
    return out


def _kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise LookupError(field)


def rss_child(arguments: dict[str, Any]) -> dict[str, int]:
    """In a fresh process: warm up with a small file, reset the peak, store the big one."""
    _path()
    from whatsapp_ingest.config import media_settings
    from whatsapp_ingest.media.storage import s3_client
    from whatsapp_ingest.media.worker import store_file

    config, client = media_settings(), s3_client()
    store_file(job(arguments["small"]), config, client)
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    baseline = _kib("VmRSS")
    stored = store_file(job(arguments["big"]), config, client)
    return {"baseline": baseline, "peak": _kib("VmHWM"), "size": stored["size"]}


def memory(endpoint: str, workdir: Path, size: int) -> dict[str, int]:
    small = encrypt_to(workdir / "small.enc", 100_000, "document")
    big = encrypt_to(workdir / "big.enc", size, "document")
    with file_server(workdir) as port:
        env = {**os.environ, **media_env(endpoint, f"http://127.0.0.1:{port}"), "PYTHONPATH": f"{SHARED}:{REPO}"}
        argument = json.dumps({"small": small, "big": big})
        done = subprocess.run(
            [PYTHON, "-m", "bench.media", "--rss-child", argument], env=env, capture_output=True, text=True, cwd=REPO
        )
    if done.returncode:
        raise RuntimeError(done.stderr[-500:])
    result: dict[str, int] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ---------------------------------------------------------------------------
# The section
# ---------------------------------------------------------------------------


def section_in_child(table: list[Any], row: Callable[..., Any], database_url: str, quick: bool = False) -> None:
    """The section run by a fresh interpreter (make bench): nothing of the bench's own process
    (its environment, threads, imports) weighs on the measured handler and media function."""
    argv = [PYTHON, "-m", "bench.media", "--rows-for", database_url, *(["--quick"] if quick else [])]
    done = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": f"{SHARED}:{REPO}"}
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-500:])
    for item in json.loads(done.stdout.strip().splitlines()[-1]):
        table.append(item if isinstance(item, str) else row(**item))


def section(table: list[Any], row: Callable[..., Any], database_url: str, quick: bool = False) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="whatsapp-ingest-bench-media-"))
    with moto_server() as endpoint:
        _section(table, row, database_url, quick, endpoint, workdir)
    shutil.rmtree(workdir, ignore_errors=True)


def _section(
    table: list[Any], row: Callable[..., Any], database_url: str, quick: bool, endpoint: str, workdir: Path
) -> None:
    n, rounds = (50, 2) if quick else (300, 5)
    cost = ingest_cost(database_url, n, rounds)
    text, media = statistics.median(cost["text"]), statistics.median(cost["media"])
    untriggered = statistics.median(cost["media, pending trigger off"])
    table.append(f"Media (issue 17): ingest, decrypt-and-upload, memory ({rounds} rounds each)")
    ratio = media / text
    table.append(
        row(
            f"(a) messages/received: a photo with Baileys' media fields vs a text ({n} each per round, ms/msg)",
            f"{media * 1000:.2f} ms",
            f"{text * 1000:.2f} ms",
            f"{ratio:.3f}",
            f"≤ 1.05: {'met' if ratio <= 1.05 else '**missed**'}",
            "same handler, same chat, interleaved rounds; the row is marked pending by a BEFORE INSERT trigger",
        )
    )
    table.append(
        row(
            "(a') the same photo with the pending trigger on vs off (what marking media pending costs)",
            f"{media * 1000:.2f} ms",
            f"{untriggered * 1000:.2f} ms",
            f"{media / untriggered:.3f}",
            note="the trigger is the only addition to the ingest's one round trip",
        )
    )
    size = 50 * MB
    speed = throughput(endpoint, workdir, size, 1 if quick else 3)
    ours, reference = statistics.median(speed["ours"]), statistics.median(speed["reference"])
    ratio = ours / reference
    table.append(
        row(
            "(b) media function on a 50 MB encrypted file (MB/s)",
            f"{ours:.1f}",
            f"{reference:.1f}",
            f"{ratio:.3f}",
            f"≥ 0.5: {'met' if ratio >= 0.5 else '**missed**'}",
            "ours: download from a local CDN stand-in, streamed decrypt, hashes, 8 MiB multipart to moto's S3;"
            " ref: AES-256-CBC decryption in a tight loop plus one put_object to the same moto",
        )
    )
    (workdir / "fifty.enc").unlink()
    rss = memory(endpoint, workdir, 200 * MB)
    growth = rss["peak"] - rss["baseline"]
    table.append(
        row(
            "(c) peak RSS growth storing a 200 MB encrypted document",
            f"{growth / 2**20:.1f} MiB",
            f"{rss['baseline'] / 2**20:.1f} MiB baseline",
            "",
            f"< 64 MiB: {'met' if growth < 64 * 2**20 else '**missed**'}",
            "VmHWM minus VmRSS after a warm-up store, in a child process running only the media function",
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--markdown", type=Path, help="write the table between the media bench markers of this file")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rss-child", help=argparse.SUPPRESS)
    parser.add_argument("--rows-for", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        print(json.dumps(rss_child(json.loads(args.rss_child))))
        return
    if args.rows_for:  # make bench: the section in a process of its own, its rows as JSON on the last line
        _path()
        from bench import run

        rows: list[Any] = []
        section(rows, run.Row, args.rows_for, args.quick)
        print(json.dumps([r if isinstance(r, str) else r.__dict__ for r in rows]))
        return
    _path()
    from bench import run

    started = time.perf_counter()
    table: list[Any] = []
    with run.embedded_database() as db:
        section(table, run.Row, db.url, args.quick)
    report = (
        f"Machine: {run.machine()}\n\n{run.markdown(table)}\n\n"
        f"Medians; ratios are ours / reference. {time.perf_counter() - started:.0f} s ({time.strftime('%Y-%m-%d')}).\n"
    )
    print(report)
    if args.markdown:
        text = args.markdown.read_text()
        block = f"{MARKERS[0]}\n{report}{MARKERS[1]}"
        if MARKERS[0] in text:
            head, rest = text.split(MARKERS[0], 1)
            text = head + block + rest.split(MARKERS[1], 1)[1]
        else:
            text += f"\n## Media (issue 17)\n\n`python -m bench.media --markdown docs/PERFORMANCE.md`\n\n{block}\n"
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
