"""The PostgREST stand-in answers supabase-py's RPC calls the way Supabase's PostgREST does.

Everything goes through a real embedded Postgres and, where the client's view matters, through a real
``supabase.create_client(...).rpc(...).execute()``. Raw httpx calls check what postgrest-py hides:
HTTP statuses and headers.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from conftest import embedded_postgres
from postgrest.exceptions import APIError
from postgrest_standin import PostgrestStandin, http_status

import supabase

# supabase-py 2.34 only requires a non-empty key; this one looks like Supabase's legacy service_role JWT.
KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoic2VydmljZV9yb2xlIn0.c2lnbmF0dXJl"
WRONG_KEY = "eyJhbGciOiJIUzI1NiJ9.eyJyb2xlIjoiYW5vbiJ9.b3RoZXI"

SETUP_SQL = """
create role service_role nologin bypassrls;
grant usage on schema public to service_role;
create table public.items (id int primary key);
grant select, insert on public.items to service_role;

create function public.echo_args(p_text text, p_payload jsonb, p_at timestamptz, p_count int default 1)
returns jsonb language sql as $$
    select jsonb_build_object('text', p_text, 'payload', p_payload, 'at', p_at, 'count', p_count)
$$;
create function public.whoami() returns jsonb language sql stable as $$
    select jsonb_build_object('user', current_user, 'claims', current_setting('request.jwt.claims', true)::jsonb)
$$;
create function public.find_session(p_session_id uuid) returns jsonb language plpgsql as $$
begin
    raise exception 'session % not found', p_session_id using errcode = 'P0002';
end $$;
create function public.refuse() returns void language plpgsql as $$
begin
    raise exception 'I refuse!' using detail = 'Pretty simple', hint = 'There is nothing you can do.';
end $$;
create function public.add_item(p_id int) returns void language sql as $$
    insert into public.items values (p_id)
$$;
create function public.add_item_from_stable(p_id int) returns void language sql stable as $$
    select public.add_item(p_id)
$$;
create function public.secret() returns int language sql as $$ select 42 $$;
revoke execute on function public.secret() from public;
create function public.pay() returns jsonb language plpgsql as $$
begin
    raise sqlstate 'PGRST' using
        message = '{"code":"123","message":"Payment Required","details":"Quota exceeded","hint":"Upgrade your plan"}',
        detail = '{"status":402,"headers":{"X-Powered-By":"Nerd Rage"}}';
end $$;
create function public.count_to(p_n int) returns setof int language sql as $$ select generate_series(1, p_n) $$;
create function public.pairs() returns table (n int, label text) language sql as $$ values (1, 'uno'), (2, 'dós') $$;
create function public.sleep_then_pid(p_seconds float8) returns int language sql as $$
    select pg_backend_pid() from pg_sleep(p_seconds)
$$;
"""


@contextmanager
def prepared_postgres() -> Iterator[Any]:
    """Its own embedded Postgres, holding only the roles and functions these tests call."""
    with embedded_postgres() as server:
        with psycopg.connect(server.get_uri(), autocommit=True) as conn:
            conn.execute(SETUP_SQL)
        yield server


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    with prepared_postgres() as server:
        yield server.get_uri()


@pytest.fixture(scope="module")
def standin(database_url: str) -> Iterator[PostgrestStandin]:
    with PostgrestStandin(database_url, KEY) as running:
        yield running


@pytest.fixture
def client(standin: PostgrestStandin) -> supabase.Client:
    return supabase.create_client(standin.url, KEY)


def post(
    standin: PostgrestStandin, path: str, body: Any = None, method: str = "POST", **headers: str
) -> httpx.Response:
    """Send a request the way supabase-py does, with headers overridable per test."""
    sent = {"apikey": KEY, "Authorization": f"Bearer {KEY}", "Content-Profile": "public", **headers}
    return httpx.request(method, f"{standin.url}/rest/v1/{path}", json=body, headers=sent)


def api_error(call: Any) -> APIError:
    with pytest.raises(APIError) as caught:
        call.execute()
    return caught.value


_ids = iter(range(1, 1_000_000))


# --- results ---------------------------------------------------------------------------------------


def test_a_jsonb_function_returns_the_json_it_built_from_its_arguments(client: supabase.Client) -> None:
    payload = {"nested": [1, 2.5, None, True], "text": "x"}
    args = {"p_text": "hi", "p_payload": payload, "p_at": "2026-11-28T10:00:00Z"}
    data = client.rpc("echo_args", args).execute().data
    assert data == {"text": "hi", "payload": payload, "at": data["at"], "count": 1}  # p_count took its default
    assert datetime.fromisoformat(data["at"]) == datetime.fromisoformat("2026-11-28T10:00:00+00:00")


def test_an_argument_with_a_default_may_still_be_given(client: supabase.Client) -> None:
    args = {"p_text": None, "p_payload": None, "p_at": None, "p_count": 7}
    assert client.rpc("echo_args", args).execute().data == {"text": None, "payload": None, "at": None, "count": 7}


def test_unicode_and_emoji_round_trip_unchanged(client: supabase.Client) -> None:
    text = 'Olá, ñandú 👋🏽 中文 \u2028 "quoted" \\ back'
    args = {"p_text": text, "p_payload": {"emoji": "🚀", "ключ": text}, "p_at": "2026-01-01T00:00:00Z"}
    data = client.rpc("echo_args", args).execute().data
    assert (data["text"], data["payload"]) == (text, {"emoji": "🚀", "ключ": text})


def test_the_function_runs_as_the_configured_role_with_the_keys_claims(client: supabase.Client) -> None:
    assert client.rpc("whoami", {}).execute().data == {"user": "service_role", "claims": {"role": "service_role"}}


def test_a_set_returning_function_gives_a_json_array(client: supabase.Client) -> None:
    assert client.rpc("count_to", {"p_n": 3}).execute().data == [1, 2, 3]
    assert client.rpc("count_to", {"p_n": 0}).execute().data == []


def test_a_table_returning_function_gives_an_array_of_objects(client: supabase.Client) -> None:
    assert client.rpc("pairs", {}).execute().data == [{"n": 1, "label": "uno"}, {"n": 2, "label": "dós"}]


def test_a_void_function_answers_204_without_a_body(standin: PostgrestStandin, client: supabase.Client) -> None:
    response = post(standin, "rpc/add_item", {"p_id": next(_ids)})
    assert (response.status_code, response.content, response.headers.get("content-type")) == (204, b"", None)
    assert client.rpc("add_item", {"p_id": next(_ids)}).execute().data == []


def test_a_success_is_json_with_the_postgrest_content_type(standin: PostgrestStandin) -> None:
    response = post(standin, "rpc/count_to", {"p_n": 2})
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json; charset=utf-8")


# --- errors ----------------------------------------------------------------------------------------

SESSION = "6f1c1f3e-1d2b-4a8e-9c7a-1234567890ab"


@pytest.mark.parametrize(
    ("function", "args", "status", "code", "message"),
    [
        ("find_session", {"p_session_id": SESSION}, 500, "P0002", f"session {SESSION} not found"),
        ("refuse", {}, 400, "P0001", "I refuse!"),
        ("secret", {}, 403, "42501", "permission denied for function secret"),
        ("add_item_from_stable", {"p_id": 0}, 405, "25006", "cannot execute INSERT in a read-only transaction"),
        ("find_session", {"p_session_id": "bad"}, 400, "22P02", 'invalid input syntax for type uuid: "bad"'),
    ],
)
def test_a_postgres_error_reaches_api_error_with_its_sqlstate_and_postgrests_status(
    standin: PostgrestStandin,
    client: supabase.Client,
    function: str,
    args: dict[str, Any],
    status: int,
    code: str,
    message: str,
) -> None:
    error = api_error(client.rpc(function, args))
    assert (error.code, error.message) == (code, message)
    response = post(standin, f"rpc/{function}", args)
    assert response.status_code == status
    assert response.headers["proxy-status"] == f"PostgREST; error={code}"


def test_raise_keeps_its_detail_and_hint(client: supabase.Client) -> None:
    error = api_error(client.rpc("refuse", {}))
    assert (error.details, error.hint) == ("Pretty simple", "There is nothing you can do.")


def test_a_unique_violation_is_409_with_postgres_details(standin: PostgrestStandin, client: supabase.Client) -> None:
    item = next(_ids)
    client.rpc("add_item", {"p_id": item}).execute()
    error = api_error(client.rpc("add_item", {"p_id": item}))
    assert (error.code, error.details) == ("23505", f"Key (id)=({item}) already exists.")
    assert error.message == 'duplicate key value violates unique constraint "items_pkey"'
    assert post(standin, "rpc/add_item", {"p_id": item}).status_code == 409


def test_raise_sqlstate_pgrst_sets_code_message_status_and_headers(
    standin: PostgrestStandin, client: supabase.Client
) -> None:
    error = api_error(client.rpc("pay", {}))
    assert error.json() == {
        "code": "123",
        "message": "Payment Required",
        "details": "Quota exceeded",
        "hint": "Upgrade your plan",
    }
    response = post(standin, "rpc/pay", {})
    assert (response.status_code, response.headers["x-powered-by"]) == (402, "Nerd Rage")


def test_an_unknown_function_is_pgrst202(standin: PostgrestStandin, client: supabase.Client) -> None:
    error = api_error(client.rpc("no_such_function", {"p_x": 1}))
    assert error.code == "PGRST202"
    assert error.message == "Could not find the function public.no_such_function(p_x) in the schema cache"
    assert error.details == (
        "Searched for the function public.no_such_function with parameter p_x or with a single "
        "unnamed json/jsonb parameter, but no matches were found in the schema cache."
    )
    assert post(standin, "rpc/no_such_function", {}).status_code == 404


def test_arguments_matching_no_signature_are_pgrst202_with_a_hint(client: supabase.Client) -> None:
    missing_required = api_error(client.rpc("echo_args", {"p_text": "hi"}))
    unknown_extra = api_error(client.rpc("count_to", {"p_n": 1, "p_step": 2}))
    assert (missing_required.code, unknown_extra.code) == ("PGRST202", "PGRST202")
    perhaps = "Perhaps you meant to call the function"
    assert missing_required.hint == f"{perhaps} public.echo_args(p_at, p_count, p_payload, p_text)"
    assert api_error(client.rpc("count_too", {"p_n": 1})).hint == f"{perhaps} public.count_to"


def test_an_invalid_json_body_is_pgrst102(standin: PostgrestStandin) -> None:
    response = httpx.post(
        f"{standin.url}/rest/v1/rpc/whoami",
        content=b"{oops",
        headers={"apikey": KEY, "Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
    )
    assert (response.status_code, response.json()["code"]) == (400, "PGRST102")


# --- authentication, schema, routes ----------------------------------------------------------------


def test_a_client_with_the_wrong_key_gets_401(standin: PostgrestStandin) -> None:
    error = api_error(supabase.create_client(standin.url, WRONG_KEY).rpc("whoami", {}))
    assert error.message == "Invalid API key"  # Supabase's gateway rejects the apikey header first
    assert post(standin, "rpc/whoami", {}, apikey=WRONG_KEY).status_code == 401


@pytest.mark.parametrize(
    ("authorization", "code", "message"),
    [
        (f"Bearer {WRONG_KEY}", "PGRST301", "JWT cryptographic operation failed"),
        ("Bearer sb_secret_abc", "PGRST301", "Expected 3 parts in JWT; got 1"),
        ("Basic dXNlcjpwYXNz", "PGRST302", "Anonymous access is disabled"),
    ],
)
def test_a_bearer_token_other_than_the_key_gets_postgrests_401(
    standin: PostgrestStandin, authorization: str, code: str, message: str
) -> None:
    response = post(standin, "rpc/whoami", {}, Authorization=authorization)
    assert response.status_code == 401
    assert (response.json()["code"], response.json()["message"]) == (code, message)
    assert response.headers["www-authenticate"].startswith("Bearer")


def test_a_schema_other_than_public_is_pgrst106(standin: PostgrestStandin, client: supabase.Client) -> None:
    error = api_error(client.schema("private").rpc("whoami", {}))
    assert (error.code, error.message, error.hint) == (
        "PGRST106",
        "Invalid schema: private",
        "Only the following schemas are exposed: public",
    )
    assert post(standin, "rpc/whoami", {}, **{"Content-Profile": "private"}).status_code == 406


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("DELETE", "rpc/whoami", 405, "PGRST101"),
        ("GET", "rpc/whoami", 400, "PGRST127"),
        ("POST", "rpc/whoami?select=user", 400, "PGRST127"),
        ("GET", "items", 404, "PGRST205"),
        ("POST", "rpc/whoami/extra", 404, "PGRST125"),
    ],
)
def test_anything_but_a_plain_rpc_post_gets_a_postgrest_error(
    standin: PostgrestStandin, method: str, path: str, status: int, code: str
) -> None:
    response = post(standin, path, {} if method == "POST" else None, method=method)
    assert (response.status_code, response.json()["code"]) == (status, code)


# --- concurrency -----------------------------------------------------------------------------------


def test_racing_calls_run_at_once_on_separate_connections(client: supabase.Client) -> None:
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        pids = list(pool.map(lambda _: client.rpc("sleep_then_pid", {"p_seconds": 0.5}).execute().data, range(6)))
    assert len(set(pids)) == 6
    assert time.monotonic() - started < 2.0  # one after another would take 3 s


def test_racing_inserts_of_one_key_let_exactly_one_win(client: supabase.Client) -> None:
    item = next(_ids)

    def add() -> str:
        try:
            client.rpc("add_item", {"p_id": item}).execute()
            return "inserted"
        except APIError as error:
            return str(error.code)

    with ThreadPoolExecutor(8) as pool:
        outcomes = sorted(pool.map(lambda _: add(), range(8)))
    assert outcomes == ["23505"] * 7 + ["inserted"]


# --- database down ---------------------------------------------------------------------------------


def test_an_unreachable_database_gets_503_pgrst000(tmp_path: Path) -> None:
    with PostgrestStandin(f"postgresql://postgres:@/postgres?host={tmp_path}", KEY) as dead:
        error = api_error(supabase.create_client(dead.url, KEY).rpc("whoami", {}))
        assert (error.code, error.message) == ("PGRST000", "Database connection error. Retrying the connection.")
        assert post(dead, "rpc/whoami", {}).status_code == 503


def test_a_database_stopped_under_the_standin_gets_503() -> None:
    with prepared_postgres() as server, PostgrestStandin(server.get_uri(), KEY) as standin:
        client = supabase.create_client(standin.url, KEY)
        assert client.rpc("whoami", {}).execute().data["user"] == "service_role"  # leaves a pooled connection
        server.cleanup()
        first, second = post(standin, "rpc/whoami", {}), post(standin, "rpc/whoami", {})
    assert (first.status_code, second.status_code) == (503, 503)
    # The pooled connection learns of the shutdown (57P01, or a bare broken socket: PGRST001); then connecting fails.
    assert first.json()["code"] in ("57P01", "PGRST001")
    assert second.json()["code"] == "PGRST000"


# --- the status table itself -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sqlstate", "status"),
    [
        ("08006", 503),
        ("09000", 500),
        ("0L000", 403),
        ("0P000", 403),
        ("23503", 409),
        ("23505", 409),
        ("23514", 400),
        ("25006", 405),
        ("25001", 500),
        ("28000", 403),
        ("2D000", 500),
        ("38000", 500),
        ("39000", 500),
        ("3B000", 500),
        ("40001", 500),
        ("53400", 500),
        ("53200", 503),
        ("54000", 500),
        ("55P03", 500),
        ("57014", 500),
        ("57P01", 503),
        ("58030", 500),
        ("F0000", 500),
        ("HV000", 500),
        ("P0001", 400),
        ("P0002", 500),
        ("XX000", 500),
        ("42883", 404),
        ("42P01", 404),
        ("42P17", 500),
        ("42501", 403),
        ("22P02", 400),
        ("PT402", 402),
        ("PTabc", 500),
    ],
)
def test_sqlstates_map_to_postgrests_documented_http_statuses(sqlstate: str, status: int) -> None:
    assert http_status(sqlstate) == status


def test_insufficient_privilege_is_401_when_unauthenticated() -> None:
    assert http_status("42501", authenticated=False) == 401
