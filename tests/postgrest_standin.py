"""A PostgREST stand-in serving only Supabase RPC calls (``POST /rest/v1/rpc/<fn>``) on a real Postgres.

PostgREST cannot be installed here. Our service reaches Postgres only through supabase-py's
``client.rpc(fn, args).execute()``. So this server copies just that part of PostgREST, closely enough
that postgrest-py cannot tell the difference. The behaviour follows PostgREST's documentation
(references/api/functions "Functions as RPC", references/errors) and, where the docs are silent, its
source: Error.hs (status mapping and error bodies), Plan.hs ``findProc`` (how a body is matched to a
function) and QueryBuilder.hs ``callPlanToQuery`` (the SQL it runs). Unlike PostgREST, it looks
functions up on every request instead of caching them, so a schema reload is never needed.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import difflib
import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import psycopg
from psycopg import sql

SCHEMA = "public"
_JSON = "application/json; charset=utf-8"

# Checked in this order, so exact codes come before their class. Source: the "HTTP Status Codes" table
# in docs references/errors.rst, plus the 57P01 case from Error.hs mapSQLtoHTTP. Anything else → 400.
_STATUS_BY_SQLSTATE: tuple[tuple[str, int], ...] = (
    ("08", 503),
    ("09", 500),
    ("0L", 403),
    ("0P", 403),
    ("23503", 409),
    ("23505", 409),
    ("25006", 405),
    ("25", 500),
    ("28", 403),
    ("2D", 500),
    ("38", 500),
    ("39", 500),
    ("3B", 500),
    ("40", 500),
    ("53400", 500),
    ("53", 503),
    ("54", 500),
    ("55", 500),
    ("57P01", 503),
    ("57", 500),
    ("58", 500),
    ("F0", 500),
    ("HV", 500),
    ("P0001", 400),
    ("P0", 500),
    ("XX", 500),
    ("42883", 404),
    ("42P01", 404),
    ("42P17", 500),
)


def http_status(sqlstate: str, message: str = "", authenticated: bool = True) -> int:
    """Give the HTTP status PostgREST returns for a Postgres error (Error.hs ``mapSQLtoHTTP``)."""
    if sqlstate == "42501":  # insufficient_privilege: 403 once a JWT was accepted, else 401
        return 403 if authenticated else 401
    if sqlstate == "21000":  # cardinality_violation; pg-safeupdate's error counts as a client error
        return 400 if message.endswith("requires a WHERE clause") else 500
    if sqlstate == "22023" and message.startswith("role") and message.endswith("does not exist"):
        return 401  # the JWT's role does not exist
    if sqlstate.startswith("PT"):  # RAISE SQLSTATE 'PT402' → HTTP 402
        return int(sqlstate[2:]) if sqlstate[2:].isdigit() else 500
    return next((status for prefix, status in _STATUS_BY_SQLSTATE if sqlstate.startswith(prefix)), 400)


@dataclass(frozen=True)
class Reply:
    """One HTTP response: status, headers, body (None: no body) and an optional reason phrase."""

    status: int
    headers: dict[str, str]
    body: bytes | None = None
    reason: str | None = None


def _error(
    status: int,
    code: str,
    message: str,
    details: Any = None,
    hint: Any = None,
    headers: dict[str, str] | None = None,
    reason: str | None = None,
) -> Reply:
    """Build an error like PostgREST's: a JSON body with these four keys and a Proxy-Status header."""
    body = json.dumps({"code": code, "details": details, "hint": hint, "message": message})
    return Reply(
        status,
        {"Content-Type": _JSON, "Proxy-Status": f"PostgREST; error={code}", **(headers or {})},
        body.encode(),
        reason,
    )


def _json_object(text: str | None, required: dict[str, type]) -> dict[str, Any] | None:
    """Parse ``text`` as a JSON object holding ``required`` keys of the given types; None if it is not one."""
    try:
        value = json.loads(text) if text is not None else None
    except ValueError:
        return None
    ok = isinstance(value, dict) and all(isinstance(value.get(k), t) for k, t in required.items())
    return value if ok else None


def _raise_pgrst(message: str, detail: str | None) -> Reply:
    """Build the reply for ``RAISE SQLSTATE 'PGRST'``: its JSON MESSAGE and DETAIL give body, status and headers."""
    msg = _json_object(message, {"code": str, "message": str})
    det = _json_object(detail, {"status": int, "headers": dict})
    if msg is None or det is None:  # PGRST121, worded as Error.hs pgrstParseErrorDetails/Hint
        why = (
            f"Invalid JSON value for MESSAGE: '{message}'"
            if msg is None
            else "DETAIL is missing in the RAISE statement"
            if detail is None
            else f"Invalid JSON value for DETAIL: '{detail}'"
        )
        hint = (
            "MESSAGE must be a JSON object with obligatory keys: 'code', 'message' and optional keys: 'details', "
            "'hint'."
            if msg is None
            else "DETAIL must be a JSON object with obligatory keys: 'status', 'headers' "
            "and optional key: 'status_text'."
        )
        return _error(500, "PGRST121", "Could not parse JSON in the \"RAISE SQLSTATE 'PGRST'\" error", why, hint)
    return _error(
        det["status"],
        msg["code"],
        msg["message"],
        msg.get("details"),
        msg.get("hint"),
        {str(k): str(v) for k, v in det["headers"].items()},
        det.get("status_text"),
    )


@dataclass(frozen=True)
class _Param:
    name: str
    type: str
    required: bool
    variadic: bool


@dataclass(frozen=True)
class _Function:
    name: str
    params: tuple[_Param, ...]
    read_only: bool  # STABLE/IMMUTABLE functions run in a READ ONLY transaction, as PostgREST does
    returns_set: bool
    returns_void: bool
    returns_composite: bool

    def matches(self, keys: set[str]) -> bool:
        """Apply PostgREST's rule: every required parameter given, nothing that is not a parameter."""
        required = {p.name for p in self.params if p.required}
        return not keys if not self.params else required <= keys <= {p.name for p in self.params}

    def takes_whole_body(self) -> bool:
        """Tell whether this is the fallback: one json/jsonb parameter, which then gets the whole body."""
        return len(self.params) == 1 and self.params[0].type in ("json", "jsonb")


_FUNCTIONS_SQL = """
select p.proname, p.provolatile in ('s', 'i'), p.proretset, p.prorettype = 'void'::regtype,
       t.typtype = 'c' or p.prorettype = 'record'::regtype, coalesce(p.proargnames, '{}'),
       coalesce(p.proargmodes::text[], '{}'), p.pronargdefaults,
       array(select format_type(a, null) from unnest(coalesce(p.proallargtypes, p.proargtypes::oid[]))
             with ordinality u(a, i) order by i)
from pg_proc p join pg_type t on t.oid = p.prorettype
where p.pronamespace = %s::regnamespace and p.prokind = 'f'"""


def _load_functions(conn: psycopg.Connection) -> list[_Function]:
    """Read every function of the exposed schema: PostgREST's schema cache, rebuilt per request."""
    functions = []
    rows = conn.execute(_FUNCTIONS_SQL, (SCHEMA,)).fetchall()
    for name, read_only, setof, void, composite, names, modes, n_defaults, types in rows:
        modes = modes or ["i"] * len(types)  # no modes recorded: all parameters are IN
        inputs = [
            (names[i] if i < len(names) else "", t, modes[i] == "v")
            for i, t in enumerate(types)
            if modes[i] in ("i", "b", "v")
        ]
        params = tuple(_Param(n, t, i < len(inputs) - n_defaults, v) for i, (n, t, v) in enumerate(inputs))
        functions.append(_Function(name, params, read_only, setof, void, composite))
    return functions


def _no_function(name: str, keys: list[str], functions: list[_Function]) -> Reply:
    """Build PGRST202 with the message, details and fuzzy hint PostgREST gives (Error.hs ``NoRpc``)."""
    listed = f"({', '.join(keys)})" if keys else " without parameters"
    searched = f" with parameter{'s' if len(keys) > 1 else ''} {', '.join(keys)}" if keys else " without parameters"
    overloads = [f for f in functions if f.name == name]
    if overloads:
        lists = {"(" + ", ".join(sorted(p.name for p in f.params)) + ")" for f in overloads}
        best = difflib.get_close_matches("(" + ", ".join(keys) + ")", lists, 1, 0.33)
        hint = f"Perhaps you meant to call the function {SCHEMA}.{name}{best[0]}" if best else None
    else:
        best = difflib.get_close_matches(name, {f.name for f in functions}, 1, 0.75)
        hint = f"Perhaps you meant to call the function {SCHEMA}.{best[0]}" if best else None
    return _error(
        404,
        "PGRST202",
        f"Could not find the function {SCHEMA}.{name}{listed} in the schema cache",
        f"Searched for the function {SCHEMA}.{name}{searched} or with a single unnamed json/jsonb "
        "parameter, but no matches were found in the schema cache.",
        hint,
    )


def _call_sql(fn: _Function, keys: set[str], whole_body: bool) -> sql.Composed:
    """Build the call as callPlanToQuery does: arguments come from json_to_record over the body, result as JSON text."""
    target = sql.Identifier(SCHEMA, fn.name)
    used = [p for p in fn.params if p.name in keys]
    if whole_body:
        source, args = sql.SQL(""), sql.SQL("%s::{}").format(sql.SQL(fn.params[0].type))
    elif used:
        columns = sql.SQL(", ").join(sql.SQL("{} {}").format(sql.Identifier(p.name), sql.SQL(p.type)) for p in used)
        source = sql.SQL("json_to_record(%s::json) AS pgrst_body({}), LATERAL ").format(columns)
        args = sql.SQL(", ").join(
            sql.SQL("{}{} := pgrst_body.{}").format(
                sql.SQL("VARIADIC " if p.variadic else ""), sql.Identifier(p.name), sql.Identifier(p.name)
            )
            for p in used
        )
    else:
        source, args = sql.SQL(""), sql.SQL("")
    if fn.returns_composite:
        call, value = sql.SQL("{}({}) pgrst_call").format(target, args), sql.SQL("pgrst_call")
    else:
        call = sql.SQL("(SELECT {}({}) AS pgrst_scalar) pgrst_call").format(target, args)
        value = sql.SQL("pgrst_call.pgrst_scalar")
    shape = "coalesce(json_agg({}), '[]')" if fn.returns_set else "coalesce(json_agg({})->0, 'null')"
    return sql.SQL("SELECT " + shape + "::text FROM {}{}").format(value, source, call)


#: Apply a role's own settings (ALTER ROLE ... SET, for every database or this one): %s is_local, role.
_ROLE_SETTINGS = (
    "select set_config(split_part(s, '=', 1), substr(s, strpos(s, '=') + 1), %s::boolean)"
    " from pg_db_role_setting d, unnest(d.setconfig) s where d.setrole = to_regrole(%s)"
    " and d.setdatabase in (0, (select oid from pg_database where datname = current_database()))"
)


class PostgrestStandin:
    """Serve ``POST /rest/v1/rpc/<fn>`` like Supabase's PostgREST, on ``database_url``, as a context manager.

    A caller presents either the legacy ``jwt_secret_key`` (a service_role JWT) as ``apikey`` and as
    ``Authorization: Bearer``, or the new ``secret_key`` (``sb_secret_...``) as ``apikey`` alone, which
    Supabase's API gateway accepts and turns into a short-lived service_role JWT for PostgREST itself.
    Source: Supabase's "API keys" guide (https://supabase.com/docs/guides/api/api-keys, "How API keys
    work": the new keys are not JWTs, they go in the ``apikey`` header; an ``Authorization`` header, if
    any, carries a user's JWT or the same key) and the answer in supabase discussion #54235 (a secret key
    sent only as ``Authorization: Bearer`` is refused: "No API key found in request").
    Every call runs in its own transaction as ``role``, on a connection from a small pool, so racing
    requests really race in Postgres.
    """

    def __init__(
        self, database_url: str, jwt_secret_key: str, role: str = "service_role", secret_key: str | None = None
    ) -> None:
        self.database_url, self.jwt_secret_key, self.role = database_url, jwt_secret_key, role
        self.secret_key = secret_key
        self._idle: list[psycopg.Connection] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        #: Test hooks: how many TCP connections were accepted, and how many of the
        #: next requests to drop without an answer (a reset, as a flaky network).
        self.connections = 0
        self.drop_next = 0

    @property
    def url(self) -> str:
        """Give the base URL to pass to ``supabase.create_client``; requests then arrive at /rest/v1/rpc/<fn>."""
        if self._server is None:
            raise RuntimeError("start() the stand-in first")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> PostgrestStandin:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, like PostgREST; every reply carries its length
            # Headers and body go out in separate writes: without TCP_NODELAY, Nagle and the
            # client's delayed ACK stall every keep-alive reply by 40 ms. PostgREST does not.
            disable_nagle_algorithm = True

            def setup(self) -> None:
                super().setup()
                with standin._lock:
                    standin.connections += 1

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with standin._lock:
                    drop, standin.drop_next = standin.drop_next > 0, max(0, standin.drop_next - 1)
                if drop:
                    self.close_connection = True
                    return
                reply = standin.handle(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                self.send_response(reply.status, reply.reason)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                if reply.body is not None:
                    self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                if reply.body is not None and self.command != "HEAD":
                    self.wfile.write(reply.body)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="postgrest-standin", daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()

    def __enter__(self) -> PostgrestStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Answer one request, checking in the order Supabase does: gateway key, JWT, schema, route, body, call."""
        apikey = headers.get("apikey")
        if self.secret_key and apikey == self.secret_key:
            # Supabase's gateway: a secret key is no JWT; with no Authorization header (or the same key
            # there) it stands in a service_role JWT of its own. Any other Authorization goes to PostgREST.
            if headers.get("authorization", "").strip() in ("", f"Bearer {self.secret_key}"):
                return self._route(method, target, headers, body)
        elif apikey != self.jwt_secret_key:  # Supabase's gateway, in front of PostgREST
            gateway = (
                {"message": "No API key found in request", "hint": "No `apikey` request header or url param was found."}
                if "apikey" not in headers
                else {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                }
            )
            return Reply(401, {"Content-Type": _JSON}, json.dumps(gateway).encode())
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            return _error(401, "PGRST302", "Anonymous access is disabled", headers={"WWW-Authenticate": "Bearer"})
        token = token.strip()
        if token != self.jwt_secret_key:
            parts = len(token.split("."))
            why = (
                "Empty JWT is sent in Authorization header"
                if not token
                else f"Expected 3 parts in JWT; got {parts}"
                if parts != 3
                else "JWT cryptographic operation failed"
            )
            challenge = f'Bearer error="invalid_token", error_description={json.dumps(why)}'
            return _error(401, "PGRST301", why, headers={"WWW-Authenticate": challenge})
        return self._route(method, target, headers, body)

    def _route(self, method: str, target: str, headers: dict[str, str], body: bytes) -> Reply:
        """Past the keys and the JWT: schema, route, body, call."""
        url = urlsplit(target)
        schema = headers.get("content-profile" if method not in ("GET", "HEAD") else "accept-profile", SCHEMA)
        if schema != SCHEMA:
            return _error(
                406, "PGRST106", f"Invalid schema: {schema}", hint=f"Only the following schemas are exposed: {SCHEMA}"
            )
        path = [unquote(p) for p in url.path.split("/")[3:]] if url.path.startswith("/rest/v1/") else []
        if len(path) == 1:
            return _error(404, "PGRST205", f"Could not find the table '{SCHEMA}.{path[0]}' in the schema cache")
        if len(path) != 2 or path[0] != "rpc" or not path[1]:
            return _error(404, "PGRST125", "Invalid path specified in request URL")
        if method in ("PUT", "PATCH", "DELETE"):
            return _error(405, "PGRST101", f"Cannot use the {method} method on RPC")
        if method != "POST" or url.query:
            return _error(
                400,
                "PGRST127",
                "Feature not implemented",
                "The PostgREST stand-in serves only POST "
                "calls without query parameters (no GET/HEAD, select, filters, order or limit).",
            )
        try:
            text = body.decode() if body.strip() else "{}"
            args = json.loads(text)
        except ValueError:
            return _error(400, "PGRST102", "Empty or invalid json")
        if not isinstance(args, dict):
            return _error(
                400, "PGRST127", "Feature not implemented", "The PostgREST stand-in takes only a JSON object body."
            )
        return self._call(path[1], text, set(args), headers)

    def _call(self, name: str, body: str, keys: set[str], headers: dict[str, str]) -> Reply:
        """Run the function in its own transaction as ``role`` and turn its result or error into a reply."""
        with self._lock:
            conn = self._idle.pop() if self._idle else None
        try:
            if conn is None or conn.closed:
                conn = psycopg.connect(self.database_url, autocommit=True, prepare_threshold=None)
                # PostgREST logs in as authenticator, whose settings hold for the whole session: a role
                # without its own statement_timeout (service_role) has authenticator's 8s (Supabase's
                # "Timeouts" guide, https://supabase.com/docs/guides/database/postgres/timeouts).
                conn.execute(_ROLE_SETTINGS, ("false", "authenticator"))
        except psycopg.Error as e:  # PostgREST's ConnectionUsageError
            return _error(503, "PGRST000", "Database connection error. Retrying the connection.", str(e))
        try:
            functions = _load_functions(conn)
            named = [f for f in functions if f.name == name and f.matches(keys)]
            fallback = [f for f in functions if f.name == name and not f.matches(keys) and f.takes_whole_body()]
            candidates = named or fallback
            if not candidates:
                return _no_function(name, sorted(keys), functions)
            if len(candidates) > 1:
                listed = ", ".join(
                    f"{SCHEMA}.{f.name}(" + ", ".join(f"{p.name} => {p.type}" for p in f.params) + ")"
                    for f in candidates
                )
                return _error(
                    300,
                    "PGRST203",
                    f"Could not choose the best candidate function between: {listed}",
                    hint="Try renaming the parameters or the function itself in the database so function "
                    "overloading can be resolved",
                )
            fn = candidates[0]
            conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED" + (" READ ONLY" if fn.read_only else ""))
            conn.execute(
                "select set_config('search_path', '\"public\", \"extensions\"', true), "
                "set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
                "set_config('request.method', 'POST', true), set_config('request.path', %s, true), "
                "set_config('request.headers', %s, true)",
                (self.role, self._claims(), f"/rpc/{name}", json.dumps(headers)),
            )
            # PostgREST applies the impersonated role's own settings (ALTER ROLE ... SET), such as the
            # statement_timeout Supabase gives anon (3s) and authenticated (8s): docs "Impersonated Role
            # Settings" (references/transactions), PostgREST 11.1+.
            conn.execute(_ROLE_SETTINGS, ("true", self.role))
            whole_body = not named
            result = conn.execute(_call_sql(fn, keys, whole_body), (body,) if keys or whole_body else ()).fetchone()
            guc_headers, guc_status = conn.execute(
                "select current_setting('response.headers', true), current_setting('response.status', true)"
            ).fetchone()
            conn.execute("COMMIT")
        except psycopg.Error as e:
            with contextlib.suppress(psycopg.Error):  # the connection is gone; _release drops it
                conn.execute("ROLLBACK")
            diag = e.diag
            if e.sqlstate is None:  # no server error: either the connection broke (hasql's ClientError) ...
                if not (conn.broken or conn.closed):
                    raise  # ... or the stand-in itself is wrong: let the traceback show
                return _error(503, "PGRST001", "Database client error. Retrying the connection.", str(e))
            message = diag.message_primary or str(e)
            if e.sqlstate == "PGRST":
                return _raise_pgrst(message, diag.message_detail)
            return _error(http_status(e.sqlstate, message), e.sqlstate, message, diag.message_detail, diag.message_hint)
        finally:
            self._release(conn)
        try:
            extra = {k: v for item in json.loads(guc_headers or "[]") for k, v in item.items()}
            if not all(isinstance(v, str) for v in extra.values()):
                raise TypeError(extra)
        except (ValueError, AttributeError, TypeError):
            return _error(
                500,
                "PGRST111",
                "response.headers guc must be a JSON array composed of objects with a single key and a string value",
            )
        if guc_status and not guc_status.isdigit():
            return _error(500, "PGRST112", "response.status guc must be a valid status code")
        if fn.returns_void:  # PostgREST ≥ 10 answers void functions with 204 and no body
            return Reply(int(guc_status or 204), extra)
        return Reply(int(guc_status or 200), {"Content-Type": _JSON, **extra}, result[0].encode())

    def _claims(self) -> str:
        """Give the JWT's claims (PostgREST's request.jwt.claims), or just the role when the key is no decodable JWT."""
        try:
            payload = self.jwt_secret_key.split(".")[1]
            claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
            return json.dumps(claims if isinstance(claims, dict) else {"role": self.role})
        except (IndexError, ValueError, binascii.Error):
            return json.dumps({"role": self.role})

    def _release(self, conn: psycopg.Connection) -> None:
        """Keep a healthy idle connection for the next request; drop broken ones, as hasql's pool does."""
        idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        healthy = not conn.closed and not conn.broken and idle
        with self._lock:
            if healthy and self._server is not None and len(self._idle) < 8:
                self._idle.append(conn)
                return
        conn.close()
