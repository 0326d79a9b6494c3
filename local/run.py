"""`make run`: the whole API on http://127.0.0.1:3000 against a real database.

Without SUPABASE_URL or DATABASE_URL in the environment, an embedded Postgres
is started in .local/pgdata with the migrations and the seed applied; with
either set, the handlers use that database instead (a real Supabase project,
say) and nothing is started.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from local import database, gateway


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3000)
    parser.add_argument("--pgdata", type=Path, default=database.REPO / ".local" / "pgdata")
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
    gateway.main(["--host", args.host, "--port", str(args.port)])


if __name__ == "__main__":
    main()
