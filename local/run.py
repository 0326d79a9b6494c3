"""`make run`: the whole API on http://127.0.0.1:3000 against a real database.

Without SUPABASE_URL or DATABASE_URL in the environment, an embedded Postgres
is started in .local/pgdata with the migrations and the seed applied; with
either set, the handlers use that database instead (a real Supabase project,
say) and nothing is started. Without API_TOKENS, a development token is
generated once (.local/dev-token) and printed. moto's server stands in for
Supabase Storage's S3 endpoint and for the media queue, and the media function
runs on what is queued (docs/media.md).
"""

from __future__ import annotations

import argparse
import os
import secrets
from pathlib import Path

from local import database, gateway, media


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--pgdata", type=Path, default=database.REPO / ".local" / "pgdata")
    parser.add_argument("--storage-port", type=int, default=0, help="moto's S3 and SQS server (0: any free port)")
    args = parser.parse_args(argv)

    if os.environ.get("SUPABASE_URL") or os.environ.get("DATABASE_URL"):
        print("Using the database named by SUPABASE_URL / DATABASE_URL.", flush=True)
    else:
        server = database.start(args.pgdata)
        url = server.get_uri()
        applied = database.migrate(url, seed=True)
        os.environ["DATABASE_URL"] = url
        print(f"Embedded Postgres in {args.pgdata}: {len(applied)} migration(s) applied, seed loaded.", flush=True)
        print(f"  psql '{url}'", flush=True)
    start_media(args.storage_port)
    if not os.environ.get("API_TOKENS"):
        os.environ["API_TOKENS"] = development_token(args.pgdata.parent / "dev-token")
    token = os.environ["API_TOKENS"].split(",")[0].strip()
    print(f"Orchestrator token: export TOKEN={token}   (send: Authorization: Bearer $TOKEN)", flush=True)
    gateway.main(["--host", args.host, "--port", str(args.port)])


def start_media(port: int) -> None:
    """Local media storage and queue (moto's server), and the media function fed from the queue
    (docs/media.md); with STORAGE_S3_ENDPOINT_URL set, that endpoint is used instead of moto."""
    if not os.environ.get("STORAGE_S3_ENDPOINT_URL"):
        _, endpoint = media.start_server(port=port)
        os.environ.update(media.prepare(endpoint))
        # The gateway connections' secrets (docs/gateway-connections.md) on the same server.
        os.environ.setdefault("AWS_ENDPOINT_URL_SECRETS_MANAGER", endpoint)
    print(f"  storage: {os.environ['STORAGE_S3_ENDPOINT_URL']} bucket {media.BUCKET}", flush=True)
    if os.environ.get("AWS_ENDPOINT_URL_SECRETS_MANAGER"):
        print(
            f"  secrets: export AWS_ENDPOINT_URL_SECRETS_MANAGER={os.environ['AWS_ENDPOINT_URL_SECRETS_MANAGER']}"
            "   (gateway connections: python -m whatsapp_ingest.connections)",
            flush=True,
        )
    media.MediaLoop().start()


def development_token(path: Path) -> str:
    """A random token for this checkout, kept across runs so curl examples keep working."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


if __name__ == "__main__":
    main()
