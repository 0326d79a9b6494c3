"""`make bench`: one table of medians, each measurement beside its reference measured in the same run.

Usage: python -m bench.run [--markdown docs/PERFORMANCE.md] [--quick]

Sections: init (import of each function vs an eager-import script and an empty interpreter), the cold
path to a first response (embedded Postgres, and Supabase through the PostgREST stand-in, vs the eager
flow), warm throughput (full handler vs the bare SQL call), database transactions and statements per
request counted on the server (vs the contract's six-statement flow) and their latency over a simulated
20 ms network, the built layer's size; then what each candidate change would save. Progress goes to
stderr, the table to stdout (and, with --markdown, into the file between the bench markers).
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import bulk, media
from bench.common import (
    FUNCTIONS,
    PYTHON,
    REPO,
    RESPONSE_MARK,
    SERVICE_KEY,
    SHARED,
    postgres_env,
    slow_network,
    supabase_env,
)

BENCH = Path(__file__).resolve().parent
BUILD = REPO / ".aws-sam" / "build"
MARKERS = ("<!-- bench:begin -->", "<!-- bench:end -->")
UNREACHABLE_SUPABASE = "http://127.0.0.1:9"  # init never calls it: the clients connect lazily
STARTED = time.perf_counter()


@dataclass(frozen=True)
class Reps:
    """How many times each thing runs; medians are taken over these."""

    init: int = 15
    cold: int = 10
    imports: int = 7
    first: int = 5
    pyc: int = 7
    warm_n: int = 2000
    warm_reps: int = 3
    supabase_n: int = 500
    rt_small: int = 10
    rt_large: int = 60
    latency_n: int = 15


QUICK = Reps(init=3, cold=2, imports=2, first=2, pyc=2, warm_n=300, warm_reps=2, supabase_n=100, latency_n=4)


def progress(message: str) -> None:
    print(f"[{time.perf_counter() - STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------


@dataclass
class Row:
    measure: str
    ours: str = ""
    reference: str = ""
    ratio: str = ""
    goal: str = ""
    note: str = ""


Table = list[Row | str]  # a str starts a section


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms" if seconds < 0.01 else f"{seconds * 1000:.0f} ms"


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.1f} MiB"


def judged(value: float, limit: float, at_most: bool = True) -> tuple[str, str]:
    """(ratio text, verdict) for a ratio against its goal."""
    met = value <= limit if at_most else value >= limit
    return f"{value:.3f}", f"{'≤' if at_most else '≥'} {limit:g}: {'met' if met else '**missed**'}"


def markdown(table: Table) -> str:
    head = ["measure (median)", "ours", "reference", "ratio", "goal", "note"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table:
        if isinstance(row, str):
            lines.append(f"| **{row}** |" + " |" * (len(head) - 1))
        else:
            cells = [row.measure, row.ours, row.reference, row.ratio, row.goal, row.note]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    meminfo = Path("/proc/meminfo").read_text()
    total = re.search(r"^MemTotal:\s*(\d+) kB", meminfo, re.M)
    cores = len(os.sched_getaffinity(0))
    ram = f"{int(total[1]) / 2**20:.1f} GiB" if total else "?"
    python = f"Python {platform.python_version()} ({platform.python_implementation()})"
    return (
        f"{model[1].strip() if model else platform.processor()}, {cores} cores, {ram} RAM; "
        f"{platform.system()} {platform.release()} {platform.machine()}; {python}"
    )


# ---------------------------------------------------------------------------
# Child processes
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    seconds: float  # spawn to exit, or spawn to the response line when one is awaited
    max_rss_kib: int  # the child's peak resident set (ru_maxrss of exactly this child, from wait4)
    cpu_seconds: float  # the child's user + system time


def spawn(argv: list[str], env: dict[str, str], *, until_response: bool = False) -> Sample:
    """Run one child, timed by the wall clock from before spawn; its rusage is its own (os.wait4 on it)."""
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        proc = subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=subprocess.PIPE if until_response else subprocess.DEVNULL, stderr=errors
        )
        answered = None
        if until_response:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(RESPONSE_MARK.encode()):
                    answered = time.perf_counter()
                    if not line.startswith(f"{RESPONSE_MARK} 200 duplicate=False".encode()):
                        raise RuntimeError(f"{argv[1:3]}: unexpected response {line.decode().strip()}")
                    break
            proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        ended = time.perf_counter()
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0 or (until_response and answered is None):
            errors.seek(0)
            tail = errors.read().decode(errors="replace")[-1500:]
            raise RuntimeError(f"{' '.join(argv[:4])} exited {proc.returncode}: {tail}")
    return Sample((answered or ended) - started, usage.ru_maxrss, usage.ru_utime + usage.ru_stime)


def child(kind: str, env: dict[str, str], **options: Any) -> Any:
    """Run a bench.children measurement in a fresh process; its JSON result."""
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "result.json"
        argv = [PYTHON, "-m", "bench.children", kind, "--out", str(out)]
        for name, value in options.items():
            argv += [f"--{name}", str(value)]
        spawn(argv, env)
        return json.loads(out.read_text())


def interleaved(commands: dict[str, tuple[list[str], dict[str, str]]], reps: int, **kw: Any) -> dict[str, list[Sample]]:
    """Each command `reps` times, round robin (so drift hits all alike), after one untimed warm-up each
    (bytecode caches written, files in the page cache)."""
    for argv, env in commands.values():
        spawn(argv, env, **kw)
    samples: dict[str, list[Sample]] = {name: [] for name in commands}
    for _ in range(reps):
        for name, (argv, env) in commands.items():
            samples[name].append(spawn(argv, env, **kw))
    return samples


def median(samples: list[Sample], field: str = "seconds") -> float:
    return float(statistics.median(getattr(s, field) for s in samples))


def spread(samples: list[Sample]) -> str:
    """The middle half of the wall times (p25-p75): how far to trust a ratio near its goal."""
    if len(samples) < 4:
        return "n/a"
    low, _, high = statistics.quantiles([s.seconds for s in samples], n=4)
    return f"{low * 1000:.0f}-{high * 1000:.0f} ms"


def import_code(function_dir: Path, layer: Path) -> str:
    """`import app` as the Lambda runtime does it: the function's directory, then the layer, on the path."""
    return f"import sys; sys.path[:0] = [{str(function_dir)!r}, {str(layer)!r}]; import app"


def function_names() -> list[str]:
    return sorted(p.parent.name for p in FUNCTIONS.glob("*/app.py"))


# ---------------------------------------------------------------------------
# The embedded database and the PostgREST stand-in
# ---------------------------------------------------------------------------


@dataclass
class Database:
    url: str
    meter_url: str  # a second database: reading statistics there adds no transaction to the measured one
    socket: Path
    log: Path


@contextmanager
def embedded_database() -> Iterator[Database]:
    """A migrated, seeded Postgres 18 in a scratch directory (0755: the server runs as "pgserver" under root)."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    import psycopg

    from local import database

    scratch = Path(tempfile.mkdtemp(prefix="whatsapp-ingest-bench-"))
    scratch.chmod(0o755)
    server = database.start(scratch / "data", delete_on_exit=True)
    try:
        url = server.get_uri()
        database.migrate(url, seed=True)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("create database bench_meter")
        info = server.get_postmaster_info()
        assert info.socket_dir is not None
        yield Database(
            url,
            server.get_uri(database="bench_meter"),
            info.socket_dir / f".s.PGSQL.{info.port or 5432}",
            scratch / "data" / "log",
        )
    finally:
        server.cleanup()
        shutil.rmtree(scratch, ignore_errors=True)


class CountingStandin:
    """The PostgREST stand-in of tests/, counting the HTTP requests it answers."""

    def __init__(self, database_url: str) -> None:
        sys.path.insert(0, str(REPO / "tests"))
        from postgrest_standin import PostgrestStandin

        self.requests = 0
        self._lock = threading.Lock()
        self.standin = PostgrestStandin(database_url, SERVICE_KEY)
        answer = self.standin.handle

        def counted(*args: Any) -> Any:
            with self._lock:
                self.requests += 1
            return answer(*args)

        setattr(self.standin, "handle", counted)  # noqa: B010  (an instance attribute over the method)
        self.start()

    def start(self) -> None:
        self.standin.start()

    def stop(self) -> None:
        """Stop serving and close its pooled database connections."""
        self.standin.stop()

    @property
    def url(self) -> str:
        return str(self.standin.url)


# ---------------------------------------------------------------------------
# Section 1: the goals
# ---------------------------------------------------------------------------


def init(table: Table, reps: Reps) -> dict[str, float]:
    """Whole-process time and peak RSS of importing each function, the eager reference, an empty interpreter."""
    env = supabase_env(UNREACHABLE_SUPABASE)
    commands = {name: ([PYTHON, "-c", import_code(FUNCTIONS / name, SHARED)], env) for name in function_names()}
    commands["eager reference"] = ([PYTHON, str(BENCH / "eager_reference.py")], env)
    commands["empty interpreter"] = ([PYTHON, "-c", "pass"], env)
    samples = interleaved(commands, reps.init)
    ref, ref_rss = median(samples["eager reference"]), median(samples["eager reference"], "max_rss_kib")
    empty = median(samples["empty interpreter"])
    table.append(f"Init: fresh process importing the function, spawn to exit ({reps.init} runs each)")
    table.append(
        Row(
            "eager reference (bench/eager_reference.py)",
            ms(ref),
            note=f"p25-p75 {spread(samples['eager reference'])}; peak RSS {ref_rss / 1024:.0f} MiB",
        )
    )
    table.append(Row("empty interpreter (python -c pass)", ms(empty)))
    result = {"empty": empty, "reference": ref}
    for name in function_names():
        wall, rss = median(samples[name]), median(samples[name], "max_rss_kib")
        ratio, goal = judged(wall / ref, 0.35)
        table.append(
            Row(
                f"import functions/{name}/app.py",
                ms(wall),
                ms(ref),
                ratio,
                goal,
                f"net of interpreter: {(wall - empty) / (ref - empty):.2f}; p25-p75 {spread(samples[name])}",
            )
        )
        ratio, goal = judged(rss / ref_rss, 0.6)
        table.append(Row(f"  peak RSS, {name}", f"{rss / 1024:.0f} MiB", f"{ref_rss / 1024:.0f} MiB", ratio, goal))
        result[name] = wall
    return result


def cold_path(table: Table, reps: Reps, db: Database, standin: CountingStandin) -> dict[str, Sample]:
    """Spawn to first response of messages/received, each run under a fresh message id (never a duplicate).

    Round robin over the four variants; the first round is an untimed warm-up (page cache, bytecode).
    """
    tag, ids = uuid.uuid4().hex[:8], itertools.count()
    envs = {"postgres": postgres_env(db.url), "supabase": supabase_env(standin.url)}
    variants = {
        f"{who} {store}": (script, envs[store])
        for store in envs
        for who, script in (
            ("ours", [str(BENCH / "cold_child.py"), "messages_received"]),
            ("eager", [str(BENCH / "eager_flow.py"), store]),
        )
    }
    samples: dict[str, list[Sample]] = {name: [] for name in variants}
    for rep in range(reps.cold + 1):
        for name, (script, env) in variants.items():
            sample = spawn([PYTHON, *script, f"bench-cold-{tag}-{next(ids)}"], env, until_response=True)
            if rep:
                samples[name].append(sample)
    table.append(f"Cold path: spawn to first response of messages/received ({reps.cold} runs each, fresh message ids)")
    result: dict[str, Sample] = {}
    for store, label in (
        ("postgres", "embedded Postgres (DATABASE_URL)"),
        ("supabase", "Supabase store, PostgREST stand-in"),
    ):
        mine, theirs = samples[f"ours {store}"], samples[f"eager {store}"]
        rss = f"{median(mine, 'max_rss_kib') / 1024:.0f} vs {median(theirs, 'max_rss_kib') / 1024:.0f} MiB"
        cpu = f"{ms(median(mine, 'cpu_seconds'))} vs {ms(median(theirs, 'cpu_seconds'))}"
        ratio = f"{median(mine) / median(theirs):.2f}"
        spreads = f"p25-p75 {spread(mine)} vs {spread(theirs)}"
        table.append(
            Row(label, ms(median(mine)), ms(median(theirs)), ratio, note=f"{spreads}; peak RSS {rss}; CPU {cpu}")
        )
        result[store] = Sample(median(mine), int(median(mine, "max_rss_kib")), median(mine, "cpu_seconds"))
    return result


def warm(table: Table, reps: Reps, db: Database, standin: CountingStandin) -> None:
    """Messages per second, in one process with one connection (a warm container), vs the bare call."""
    got = child("warm", postgres_env(db.url), store="postgres", n=reps.warm_n, reps=reps.warm_reps)
    ours, ceiling = statistics.median(got["ours"]), statistics.median(got["ceiling"])
    table.append(
        f"Warm throughput: messages/received in one warm process ({reps.warm_reps} runs of {reps.warm_n} messages)"
    )
    ratio, goal = judged(ours / ceiling, 0.6, at_most=False)
    table.append(
        Row(
            "full handler, DATABASE_URL store (msg/s)",
            f"{ours:.0f}",
            f"{ceiling:.0f}",
            ratio,
            goal,
            "ref: the SQL function from psycopg in a tight loop",
        )
    )
    progress("warm throughput, Supabase store")
    got = child("warm", supabase_env(standin.url), store="supabase", n=reps.supabase_n, reps=reps.warm_reps)
    ours, bare = statistics.median(got["ours"]), statistics.median(got["ceiling"])
    table.append(
        Row(
            f"full handler, Supabase store via stand-in (msg/s, {reps.supabase_n} messages)",
            f"{ours:.0f}",
            f"{bare:.0f}",
            f"{ours / bare:.2f}",
            note="ref: supabase-py rpc() alone in a tight loop; the stand-in (Python) bounds both",
        )
    )


def _xacts(meter: Any) -> int:
    """Committed + rolled back transactions of the measured database, read from the other database."""
    meter.execute("select pg_stat_clear_snapshot()")
    row = meter.execute("select xact_commit + xact_rollback from pg_stat_database where datname = 'postgres'")
    return int(row.fetchone()[0])


def _quiet(meter: Any) -> None:
    """Wait until no backend is connected to the measured database: each one that left has flushed its
    statistics (a backend flushes on exit, before it leaves pg_stat_activity)."""
    query = "select count(*) from pg_stat_activity where datname = 'postgres' and pid <> pg_backend_pid()"
    deadline = time.monotonic() + 30
    while meter.execute(query).fetchone()[0]:
        if time.monotonic() > deadline:
            raise RuntimeError("the measured database did not become idle")
        time.sleep(0.01)


_STATEMENT = re.compile(r"^@@(?P<app>[^|]*)\|(?P<vxid>[^|]*)\|LOG:\s+(?:statement|execute [^:]*):", re.M)
_SERVER_SETTINGS = {"log_statement": "'all'", "log_line_prefix": "'@@%a|%v|'", "autovacuum": "off"}


def _configure(db: Database, on: bool) -> None:
    import psycopg

    with psycopg.connect(db.url, autocommit=True) as admin:
        for name, value in _SERVER_SETTINGS.items():
            admin.execute(f"alter system set {name} = {value}" if on else f"alter system reset {name}")
        admin.execute("select pg_reload_conf()")
    time.sleep(0.3)


def round_trips(table: Table, reps: Reps, db: Database, standin: CountingStandin) -> None:
    """Transactions and statements per request, counted by the server.

    Transactions: pg_stat_database deltas of the measured database, read from another database (so the
    reading adds none), once no backend is connected to it (the child's has exited and flushed; the
    stand-in's pool is closed), autovacuum off. Statements: log_statement = all with the application name
    in log_line_prefix, counted in the server log. Each is measured with a small and a large number of
    requests and divided by the difference, which cancels connection setup exactly.
    """
    import psycopg

    def counted(meter: Any, function: str, n: int) -> tuple[int, int, int]:
        app = f"bench_{function}_{n}_{uuid.uuid4().hex[:6]}"
        log_from = db.log.stat().st_size
        before = _xacts(meter)
        child("requests", postgres_env(f"{db.url}&application_name={app}"), function=function, n=n)
        _quiet(meter)
        after = _xacts(meter)
        with db.log.open("rb") as log:
            log.seek(log_from)
            lines = [m for m in _STATEMENT.finditer(log.read().decode(errors="replace")) if m["app"] == app]
        return after - before, len(lines), len({m["vxid"] for m in lines})

    standin.stop()  # closes its pooled connections
    _configure(db, on=True)
    span = reps.rt_large - reps.rt_small
    per: dict[str, list[float]] = {}
    try:
        with psycopg.connect(db.meter_url, autocommit=True) as meter:
            _quiet(meter)
            for function in ("status_update", "qr_update", "messages_received", "messages_batch", "six"):
                small, large = counted(meter, function, reps.rt_small), counted(meter, function, reps.rt_large)
                per[function] = [(b - a) / span for a, b in zip(small, large, strict=True)]
    finally:
        _configure(db, on=False)
        standin.start()
    with psycopg.connect(db.meter_url, autocommit=True) as conn:
        query = "select count(*) from pg_available_extensions where name = 'pg_stat_statements'"
        shipped = conn.execute(query).fetchone() != (0,)
    statements_from = "statements: server log" + ("" if shipped else ", this Postgres ships no pg_stat_statements")
    table.append(
        f"Round trips per request, counted by the server ({reps.rt_large} minus {reps.rt_small} requests;"
        f" transactions: pg_stat_database; {statements_from})"
    )
    six_xacts, six_statements, _ = per.pop("six")
    for function, (xacts, statements, logged) in per.items():
        messages = function == "messages_received"
        met = "met" if (xacts, statements) == (1, 1) else "**missed**"
        table.append(
            Row(
                f"{function}: transactions / statements"
                + (" (per batch of 500)" if function == "messages_batch" else ""),
                f"{xacts:g} / {statements:g}",
                f"{six_xacts:g} / {six_statements:g}" if messages else "",
                f"{xacts / six_xacts:.2f} / {statements / six_statements:.2f}" if messages else "",
                f"1 / 1: {met}",
                f"server log: {logged:g} transactions" + ("; ref: bench/six_round_trips.py" if messages else ""),
            )
        )
    http = []
    for function in ("status_update", "qr_update", "messages_received"):
        before = standin.requests
        child("requests", supabase_env(standin.url), function=function, n=reps.rt_small)
        http.append(f"{(standin.requests - before) / reps.rt_small:g}")
    verdict = "met" if set(http) == {"1"} else "**missed**"
    table.append(
        Row("Supabase store: HTTP requests to PostgREST (status, qr, message)", " / ".join(http), goal=f"1: {verdict}")
    )


def latency(table: Table, reps: Reps, db: Database) -> None:
    """Median request latency through bench/delay_proxy.py (20 ms per client→server chunk)."""
    with slow_network(db.socket) as url:
        got = child("latency", postgres_env(url), n=reps.latency_n)
    table.append(
        Row(
            "latency over a 20 ms network: full handler vs six statements",
            ms(got["handler"]),
            ms(got["six"]),
            f"{got['handler'] / got['six']:.2f}",
            note=f"bare SQL call {ms(got['bare'])}; {reps.latency_n} requests each, new contacts",
        )
    )


def layer_size(table: Table) -> Path:
    """The built layer and functions, unzipped (apparent bytes: what Lambda's 250 MB limit counts)."""
    sources = [REPO / "template.yaml", *SHARED.rglob("*"), *FUNCTIONS.rglob("*")]
    newest = max(p.stat().st_mtime for p in sources if p.is_file() and "__pycache__" not in p.parts)
    built = BUILD / "template.yaml"
    note = "existing .aws-sam/build"
    if not built.exists() or built.stat().st_mtime < newest:
        progress("make build (the build is missing or older than the sources)")
        started = time.perf_counter()
        # What ships: sam build, then the precompiled bytecode `make build` adds.
        subprocess.run(["make", "build"], cwd=REPO, check=True, capture_output=True)
        note = f"make build run now ({time.perf_counter() - started:.0f} s)"
    layer = BUILD / "IngestLayer" / "python"
    table.append(f"Size, unzipped ({note}; Lambda's limit: 250 MB for a function and its layers)")
    total = _size(BUILD / "IngestLayer")
    functions = {p.name: _size(p) for p in sorted(BUILD.iterdir()) if p.is_dir() and p.name != "IngestLayer"}
    table.append(
        Row(
            "IngestLayer",
            mib(total),
            note="functions: " + ", ".join(f"{n} {v / 1024:.0f} KiB" for n, v in functions.items()),
        )
    )
    biggest = sorted(distribution_sizes(layer).items(), key=lambda kv: -kv[1])[:8]
    table.append(Row("  biggest in the layer", ", ".join(f"{n} {mib(s)}" for n, s in biggest)))
    return layer


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def distribution_sizes(layer: Path) -> dict[str, int]:
    """Bytes per distribution installed in the layer (the files its RECORD lists), and ours."""
    sizes: dict[str, int] = {"whatsapp-ingest (ours)": _size(layer / "whatsapp_ingest")}
    for record in layer.glob("*.dist-info/RECORD"):
        name = _normal(record.parent.name.split("-")[0])
        with record.open(newline="") as rows:
            files = [layer / row[0] for row in csv.reader(rows) if row]
        sizes[name] = sum(f.stat().st_size for f in files if f.is_file())
    return sizes


# ---------------------------------------------------------------------------
# Section 2: what each candidate change would save
# ---------------------------------------------------------------------------

IMPORTS = (
    "supabase",
    "postgrest",
    "httpx",
    "boto3",
    "botocore",
    "aws_lambda_powertools.utilities.parameters",
    "psycopg",
    "pydantic",
    "aws_lambda_powertools.event_handler",
    "urllib.request",
)


def candidates(
    table: Table, reps: Reps, db: Database, standin: CountingStandin, layer: Path, cold: dict[str, Sample]
) -> None:
    env = supabase_env(UNREACHABLE_SUPABASE)
    commands = {module: ([PYTHON, "-c", f"import {module}"], env) for module in IMPORTS}
    commands["(empty)"] = ([PYTHON, "-c", "pass"], env)
    samples = interleaved(commands, reps.imports)
    empty = median(samples.pop("(empty)"))
    table.append(f"Candidates: import cost in a fresh process, net of the empty interpreter ({reps.imports} runs each)")
    table.append(
        Row("import " + ", ".join(IMPORTS[:4]), ", ".join(ms(median(samples[m]) - empty) for m in IMPORTS[:4]))
    )
    table.append(
        Row("import " + ", ".join(IMPORTS[4:7]), ", ".join(ms(median(samples[m]) - empty) for m in IMPORTS[4:7]))
    )
    table.append(
        Row("import " + ", ".join(IMPORTS[7:]), ", ".join(ms(median(samples[m]) - empty) for m in IMPORTS[7:]))
    )

    progress("first request per store")
    table.append(f"Candidates: first request over a warm one, per store ({reps.first} fresh processes each)")
    for store, store_env in (
        ("DATABASE_URL (PostgresStore)", postgres_env(db.url)),
        ("Supabase (SupabaseStore)", supabase_env(standin.url)),
    ):
        runs = [child("first_request", store_env) for _ in range(reps.first)]
        build, first, warm_call = (statistics.median(r[k] for r in runs) for k in ("build", "first", "warm"))
        table.append(
            Row(
                f"{store}: extra on the first request",
                ms(build + first - warm_call),
                note=f"get_store() {ms(build)}, first call {ms(first)}, warm call {ms(warm_call)}",
            )
        )
    clients = {
        c: [child("transport", supabase_env(standin.url), client=c) for _ in range(reps.first)]
        for c in ("postgrest", "supabase")
    }
    cost = {
        c: statistics.median(r["import"] + r["build"] + r["first"] - r["warm"] for r in runs)
        for c, runs in clients.items()
    }
    imports = {c: statistics.median(r["import"] for r in runs) for c, runs in clients.items()}
    sizes = distribution_sizes(layer)
    only_supabase = _requirements("supabase") - _requirements("postgrest")
    trimmed = sum(sizes.get(d, 0) for d in only_supabase)
    table.append(
        Row(
            "postgrest.SyncPostgrestClient instead of supabase.create_client (imports + client + first call)",
            ms(cost["postgrest"]),
            ms(cost["supabase"]),
            f"{cost['postgrest'] / cost['supabase']:.2f}",
            note=f"saves {ms(cost['supabase'] - cost['postgrest'])} per cold start"
            f" (imports {ms(imports['postgrest'])} vs {ms(imports['supabase'])});"
            + (
                f" layer -{mib(trimmed)} ({', '.join(sorted(d for d in only_supabase if d in sizes))})"
                if trimmed
                else " the layer already holds postgrest-py only"
            ),
        )
    )
    progress("secrets through Powertools Parameters")
    aws = {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    runs = [child("secrets", {**supabase_env(standin.url), **aws}) for _ in range(reps.first)]
    parts = {k: statistics.median(r[k] for r in runs) for k in ("import", "client", "reads")}
    urllib_import = statistics.median(
        child("secrets", supabase_env(standin.url), client="urllib")["import"] for _ in range(reps.first)
    )
    table.append(
        Row(
            "deployed config: secrets via Powertools Parameters on the first request, without network",
            ms(sum(parts.values())),
            note=f"import parameters+boto3 {ms(parts['import'])}, Secrets Manager client {ms(parts['client'])},"
            f" 2 stubbed reads {ms(parts['reads'])}; plus 2 GetSecretValue round trips. Without boto3"
            f" (Parameters and Secrets extension over HTTP): import urllib.request {ms(urllib_import)}",
        )
    )
    progress("bytecode: layer with and without __pycache__")
    without, with_pyc, added = bytecode(layer, reps.pyc)
    table.append(
        Row(
            "import messages_received from a layer with precompiled bytecode vs without (as sam build ships it)",
            ms(with_pyc),
            ms(without),
            f"{with_pyc / without:.2f}",
            note=f"saves {ms(without - with_pyc)} per cold start; layer +{mib(added)} of .pyc",
        )
    )
    cpu = cold["supabase"].cpu_seconds
    table.append(
        Row(
            "MemorySize: cold path CPU time (user+sys) and peak RSS, Supabase store",
            f"{ms(cpu)}, {cold['supabase'].max_rss_kib / 1024:.0f} MiB",
            note=f"Lambda allots CPU in proportion to memory (1 vCPU at 1,769 MB): this CPU time takes about"
            f" {1769 / 512:.1f} times longer at 512 MB, {1769 / 1024:.1f} at 1,024 MB (estimate: verify in AWS)",
        )
    )


def _requirements(name: str, extras: frozenset[str] = frozenset(), seen: set[str] | None = None) -> set[str]:
    """The distributions `name` needs (recursively, with the extras asked for), by normalised name."""
    from packaging.requirements import Requirement

    seen = set() if seen is None else seen
    key = f"{_normal(name)}[{','.join(sorted(extras))}]"
    if key in seen:
        return {k.split("[")[0] for k in seen}
    seen.add(key)
    try:
        requires = importlib.metadata.requires(name) or []
    except importlib.metadata.PackageNotFoundError:  # an extra's dependency that is not installed
        requires = []
    for text in requires:
        requirement = Requirement(text)
        wanted = requirement.marker is None or any(requirement.marker.evaluate({"extra": e}) for e in {"", *extras})
        if wanted:
            _requirements(requirement.name, frozenset(requirement.extras), seen)
    return {k.split("[")[0] for k in seen}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def bytecode(layer: Path, reps: int) -> tuple[float, float, int]:
    """Import time of messages_received from an x86 replica of the layer, without then with __pycache__.

    The built layer is arm64, so the replica holds the same distributions from this venv (their RECORD)
    plus shared/ and the function, all without bytecode, imported with -S (no site-packages) and -B
    (nothing written, as on Lambda's read-only /opt). Then `compileall --invalidation-mode unchecked-hash`
    (valid whatever the zip does to mtimes) and the same imports again.
    """
    with tempfile.TemporaryDirectory(prefix="bench-layer-") as scratch:
        replica, function = Path(scratch) / "python", Path(scratch) / "function"
        names = {p.name.split("-")[0] for p in layer.glob("*.dist-info")}
        for name in names:
            dist = importlib.metadata.distribution(name)
            for file in dist.files or []:
                source = Path(str(dist.locate_file(file)))
                if "__pycache__" in file.parts or ".." in file.parts or not source.is_file():
                    continue
                (replica / file).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, replica / file)
        shutil.copytree(
            SHARED / "whatsapp_ingest", replica / "whatsapp_ingest", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copytree(FUNCTIONS / "messages_received", function, ignore=shutil.ignore_patterns("__pycache__"))
        env = supabase_env(UNREACHABLE_SUPABASE)
        argv = [PYTHON, "-S", "-B", "-c", import_code(function, replica)]
        without = median(interleaved({"x": (argv, env)}, reps)["x"])
        subprocess.run(
            [
                PYTHON,
                "-m",
                "compileall",
                "-q",
                "-j0",
                "--invalidation-mode",
                "unchecked-hash",
                str(replica),
                str(function),
            ],
            check=True,
            capture_output=True,
        )
        added = sum(p.stat().st_size for p in Path(scratch).rglob("*.pyc"))
        with_pyc = median(interleaved({"x": (argv, env)}, reps)["x"])
    return without, with_pyc, added


# ---------------------------------------------------------------------------


def run(reps: Reps) -> str:
    table: Table = []
    progress("layer size")
    layer = guarded(table, "size", lambda: layer_size(table))
    progress("init")
    guarded(table, "init", lambda: init(table, reps))
    progress("embedded Postgres")
    with embedded_database() as db:
        standin = CountingStandin(db.url)
        try:
            progress("cold path")
            cold = guarded(table, "cold path", lambda: cold_path(table, reps, db, standin))
            progress("warm throughput")
            guarded(table, "warm throughput", lambda: warm(table, reps, db, standin))
            progress("round trips")
            guarded(table, "round trips", lambda: round_trips(table, reps, db, standin))
            progress("latency through the delay proxy")
            guarded(table, "latency", lambda: latency(table, reps, db))
            progress("bulk ingest")
            guarded(table, "bulk", lambda: bulk.section(table, Row, child, db, reps == QUICK))
            progress("media")
            guarded(table, "media", lambda: media.section_in_child(table, Row, db.url, reps == QUICK))
            progress("candidate changes")
            if layer is not None and cold is not None:
                guarded(table, "candidates", lambda: candidates(table, reps, db, standin, layer, cold))
        finally:
            standin.stop()
    elapsed = time.perf_counter() - STARTED
    return (
        f"Machine: {machine()}\n\n{markdown(table)}\n\n"
        f"Medians; ratios are ours / reference. Whole bench: {elapsed:.0f} s ({time.strftime('%Y-%m-%d')}).\n"
    )


def guarded(table: Table, what: str, measure: Callable[[], Any]) -> Any:
    """Run one section; a failure becomes a row (the layer is being changed: keep measuring the rest)."""
    try:
        return measure()
    except Exception as exc:
        progress(f"{what} failed: {exc}")
        table.append(Row(f"{what}: error", note=f"{type(exc).__name__}: {str(exc)[:300]}"))
        return None


def write_markdown(path: Path, report: str) -> None:
    """Replace the text between the bench markers of `path` (or write the report alone)."""
    block = f"{MARKERS[0]}\n{report}{MARKERS[1]}"
    text = path.read_text() if path.exists() else ""
    if MARKERS[0] in text and MARKERS[1] in text:
        head, rest = text.split(MARKERS[0], 1)
        text = head + block + rest.split(MARKERS[1], 1)[1]
    else:
        text = block + "\n"
    path.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description="Measure cold start, throughput, round trips and size.")
    parser.add_argument("--markdown", type=Path, help="also write the report into this file, between the bench markers")
    parser.add_argument("--quick", action="store_true", help="few repetitions: checks the bench, not the service")
    args = parser.parse_args()
    report = run(QUICK if args.quick else Reps())
    print(report)
    if args.markdown:
        write_markdown(args.markdown, report)
        progress(f"written into {args.markdown}")


if __name__ == "__main__":
    main()
