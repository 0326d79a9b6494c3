-- Gateway connections: many gateway servers and Meta apps, each with its own
-- webhook URL and credentials (docs/gateway-connections.md).
--
-- 1. whatsapp_gateway_connections: one row per gateway server (WAHA, Evolution)
--    or Meta app. Its id is the last segment of its webhook URL,
--    /api/whatsapp/webhooks/{gateway}/{id}. It holds no secret: its credentials
--    live in AWS Secrets Manager, one secret per connection named
--    <prefix><id>, which only the service's functions may read.
-- 2. A session belongs to a connection (gateway_connection_id); an instance
--    name is unique per connection, so two servers may each have "default".
--    Sessions without a connection are the deployment's default connection:
--    the single-secret endpoints /api/whatsapp/webhooks/{gateway} keep
--    resolving them exactly as before.
-- 3. A connection that serves one account takes only that account's sessions;
--    an operator's connection (account_id null) serves sessions of any account.
-- 4. whatsapp_apply_gateway_events resolves the session within the webhook's
--    connection: a connection's credentials write only into its own sessions.
-- 5. Hardening: no sequence is usable by anon or authenticated.

-- ---------------------------------------------------------------------------
-- Connections
-- ---------------------------------------------------------------------------

create table public.whatsapp_gateway_connections (
    id          uuid primary key default gen_random_uuid(),
    gateway     text not null check (gateway in ('evolution', 'waha', 'meta')),
    -- null: the operator's connection, serving sessions of several accounts
    account_id  uuid references public.accounts (id) on delete cascade,
    name        text not null check (name <> '' and length(name) <= 200),
    -- the server the service calls (WAHA, Evolution); Meta's Graph API has a fixed host
    base_url    text,
    -- Meta only: the Graph API version the service calls, e.g. v21.0
    api_version text,
    created_at  timestamptz not null default now(),
    constraint whatsapp_gateway_connections_base_url_check
        check ((gateway = 'meta') = (base_url is null)
               and length(base_url) <= 2048 and base_url ~ '^https?://[^[:space:]"<>]+$'),
    constraint whatsapp_gateway_connections_api_version_check
        check ((gateway = 'meta' or api_version is null) and api_version ~ '^v[0-9]{1,3}\.[0-9]{1,3}$'),
    -- the target of the sessions' (connection, gateway) foreign key
    constraint whatsapp_gateway_connections_id_gateway_key unique (id, gateway)
);

create index whatsapp_gateway_connections_account_idx on public.whatsapp_gateway_connections (account_id);

comment on table public.whatsapp_gateway_connections is
    'One gateway server or Meta app; its credentials are in Secrets Manager, never here (docs/gateway-connections.md).';

-- Only the operator (service role) manages connections; members read nothing of them.
alter table public.whatsapp_gateway_connections enable row level security;
revoke all on public.whatsapp_gateway_connections from public, anon, authenticated;
grant select, insert, update, delete on public.whatsapp_gateway_connections to service_role;
grant select on public.whatsapp_gateway_connections to whatsapp_ingest_owner;
create policy "the ingest functions' owner" on public.whatsapp_gateway_connections
    for select to whatsapp_ingest_owner using (true);

-- ---------------------------------------------------------------------------
-- Sessions belong to a connection
-- ---------------------------------------------------------------------------

alter table public.whatsapp_sessions add column gateway_connection_id uuid;

comment on column public.whatsapp_sessions.gateway_connection_id is
    'The gateway connection whose webhooks write into this session; null: the deployment''s default connection (/api/whatsapp/webhooks/{gateway}).';

-- A new, empty column: every existing row satisfies the key, and the table is
-- small (one row per linked phone). The gateway is part of the key, so a
-- session cannot name a WAHA instance on an Evolution connection. The new
-- connections table is empty: the lock it takes blocks nobody.
-- squawk-ignore adding-foreign-key-constraint, constraint-missing-not-valid
alter table public.whatsapp_sessions add constraint whatsapp_sessions_gateway_connection_fkey
    foreign key (gateway_connection_id, gateway) references public.whatsapp_gateway_connections (id, gateway);

-- An instance name is unique per connection: two servers may each have
-- "default". The column is new and empty: the index builds on nothing.
-- squawk-ignore disallowed-unique-constraint, constraint-missing-not-valid
alter table public.whatsapp_sessions add constraint whatsapp_sessions_connection_instance_key
    unique (gateway_connection_id, gateway_instance);
-- In the default connection (no connection), the old key, unchanged: every
-- existing row satisfies it. The table is small (one row per linked phone).
-- squawk-ignore require-concurrent-index-creation
create unique index whatsapp_sessions_default_instance_key
    on public.whatsapp_sessions (gateway, gateway_instance) where gateway_connection_id is null;
-- squawk-ignore ban-drop-constraint
alter table public.whatsapp_sessions drop constraint whatsapp_sessions_gateway_instance_key;

-- The CRM shows which connection a session runs on.
grant select (gateway_connection_id) on public.whatsapp_sessions to authenticated;

-- ---------------------------------------------------------------------------
-- whatsapp_check_session_connection (trigger, BEFORE INSERT OR UPDATE on
-- whatsapp_sessions)
--   Errors: 23514 when the session's connection serves another account (an
--           operator's connection, account_id null, serves every account)
-- ---------------------------------------------------------------------------

create function public.whatsapp_check_session_connection()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    if new.gateway_connection_id is not null and exists (
        select from public.whatsapp_gateway_connections c
         where c.id = new.gateway_connection_id and c.account_id is distinct from new.account_id
           and c.account_id is not null
    ) then
        raise exception 'gateway connection % serves another account', new.gateway_connection_id
            using errcode = '23514';
    end if;
    return new;
end;
$$;

create trigger whatsapp_sessions_check_connection
    before insert or update of gateway_connection_id, account_id on public.whatsapp_sessions
    for each row execute function public.whatsapp_check_session_connection();

-- ---------------------------------------------------------------------------
-- whatsapp_add_gateway_connection
--   Arguments: p_id          the connection's id (its Secrets Manager secret is
--                            named after it, so the caller chooses it)
--              p_gateway     evolution | waha | meta
--              p_name        a label for people
--              p_account_id  the account it serves; null: the operator's
--              p_base_url    the server's URL (WAHA, Evolution); null for Meta
--              p_api_version Meta's Graph API version, or null
--   Returns:   the connection row, with its webhook path
--   Errors:    23505 when the id is taken; 23503 for an unknown account;
--              23514 for a value the table's checks refuse
-- ---------------------------------------------------------------------------

create function public.whatsapp_add_gateway_connection(
    p_id          uuid,
    p_gateway     text,
    p_name        text,
    p_account_id  uuid default null,
    p_base_url    text default null,
    p_api_version text default null
) returns jsonb
language sql
set search_path = ''
as $$
    insert into public.whatsapp_gateway_connections (id, gateway, name, account_id, base_url, api_version)
    values (p_id, p_gateway, p_name, p_account_id, p_base_url, p_api_version)
    returning to_jsonb(whatsapp_gateway_connections.*)
              || jsonb_build_object('webhook_path', '/api/whatsapp/webhooks/' || p_gateway || '/' || p_id);
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_session_connection
--   Arguments: p_session_id  a session
--   Returns:   {session_id, connection_id, gateway, instance, base_url,
--              api_version}: the connection the service calls the session's
--              gateway through; all but session_id null when the session has
--              none (the default connection, or no gateway)
--   Errors:    PT404 when the session does not exist
-- ---------------------------------------------------------------------------

create function public.whatsapp_session_connection(p_session_id uuid)
returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
    v_result jsonb;
begin
    select jsonb_build_object('session_id', s.id, 'connection_id', c.id, 'gateway', c.gateway,
                              'instance', s.gateway_instance, 'base_url', c.base_url,
                              'api_version', c.api_version)
      into v_result
      from public.whatsapp_sessions s
      left join public.whatsapp_gateway_connections c on c.id = s.gateway_connection_id
     where s.id = p_session_id;
    if not found then
        raise exception 'session % not found', p_session_id using errcode = 'PT404';
    end if;
    return v_result;
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_apply_gateway_events, now within a connection
--   Arguments: p_gateway         evolution | waha | meta
--              p_instance        the gateway's id of the session
--              p_events          array of internal events, each {kind, ...}:
--                 message:  {message_id, from, to, message_type, body, content,
--                            sent_at, from_me, push_name} (whatsapp_ingest_message)
--                 history:  {messages: [batch items]}  (whatsapp_ingest_batch)
--                 session:  {status, changes, event_at}  (whatsapp_update_session_status)
--                 qr:       {qr_code, qr_url, generated_at} (whatsapp_store_qr)
--                 status | reaction | edit | delete:
--                           {message_id, data, event_at} (whatsapp_message_event)
--              p_received_at     when API Gateway received the webhook
--              p_apikey_sha256   Evolution: sha256 of the payload's apikey,
--                                when the connection authenticates by it
--              p_require_apikey  true: the session's stored hash must match
--              p_connection_id   the connection whose URL the webhook came to;
--                                null: the default connection (sessions
--                                without one)
--   Returns:   {session_id, results: [one result per event, in order]}
--   Errors:    PT404 when the connection has no session with this instance
--              (another connection's instance included); PT401 when the apikey
--              is required and does not match (nothing written); the called
--              functions' errors (22xxx / 23xxx for refused values): the whole
--              body is one transaction, applied entirely or not at all
-- ---------------------------------------------------------------------------

-- Replaced by the version with p_connection_id (a new argument, with a default, so
-- every caller's named arguments still work); only the service calls it.
-- squawk-ignore ban-drop-function
drop function public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean);

create function public.whatsapp_apply_gateway_events(
    p_gateway        text,
    p_instance       text,
    p_events         jsonb,
    p_received_at    timestamptz default null,
    p_apikey_sha256  text default null,
    p_require_apikey boolean default false,
    p_connection_id  uuid default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_session_id uuid;
    v_key        text;
    v_event      jsonb;
    v_results    jsonb := '[]';
    v_result     jsonb;
begin
    select s.id, s.gateway_apikey_sha256 into v_session_id, v_key
      from public.whatsapp_sessions s
     where s.gateway = p_gateway and s.gateway_instance = p_instance
       and s.gateway_connection_id is not distinct from p_connection_id;
    if not found then
        raise exception 'no session for % instance % in this connection', p_gateway, p_instance
            using errcode = 'PT404';
    end if;
    if p_require_apikey and (v_key is null or p_apikey_sha256 is distinct from v_key) then
        raise exception 'apikey does not match the session''s' using errcode = 'PT401';
    end if;

    -- The messages the body touches, locked once in the order of the key the lock takes
    -- (the id without WAHA's true_/false_ prefix, 20261206010000; whatsapp_message_lock
    -- is re-entrant), so two bodies, or a body and a batch, cannot lock them crosswise,
    -- whichever spelling of an id each names.
    perform public.whatsapp_message_lock(v_session_id, ids.lock_key)
       from (select distinct regexp_replace(coalesce(m ->> 'message_id', e ->> 'message_id'),
                                            '^(true|false)_', '') as lock_key
               from jsonb_array_elements(p_events) e
               left join lateral jsonb_array_elements(case when e ->> 'kind' = 'history'
                                                           then e -> 'messages' else '[]' end) m on true
              where coalesce(m ->> 'message_id', e ->> 'message_id') is not null
              order by 1) ids;

    for v_event in select * from jsonb_array_elements(p_events)
    loop
        case v_event ->> 'kind'
        when 'message' then
            v_result := public.whatsapp_ingest_message(
                v_session_id, v_event ->> 'message_id', v_event ->> 'from', v_event ->> 'to',
                v_event ->> 'message_type', v_event ->> 'body', v_event -> 'content',
                (v_event ->> 'sent_at')::timestamptz, (v_event ->> 'from_me')::boolean, v_event ->> 'push_name');
            v_result := jsonb_build_object(
                'kind', 'message', 'message_id', v_event ->> 'message_id', 'duplicate', v_result -> 'duplicate',
                'id', v_result -> 'message' -> 'id', 'chat_id', v_result -> 'chat_id',
                'contact_id', v_result -> 'contact_id', 'direction', v_result -> 'message' -> 'direction');
        when 'history' then
            -- a history sync page: set-based, as POST /api/whatsapp/messages/batch
            v_result := jsonb_build_object('kind', 'history')
                        || public.whatsapp_ingest_batch(v_session_id, v_event -> 'messages');
        when 'session' then
            v_result := public.whatsapp_update_session_status(
                v_session_id, v_event ->> 'status', coalesce(v_event -> 'changes', '{}'),
                (v_event ->> 'event_at')::timestamptz, p_received_at);
            v_result := jsonb_build_object('kind', 'session', 'status', v_result -> 'status',
                                           'stale', v_result -> 'stale');
        when 'qr' then
            v_result := public.whatsapp_store_qr(
                v_session_id, v_event ->> 'qr_code', v_event ->> 'qr_url',
                (v_event ->> 'generated_at')::timestamptz, p_received_at);
            v_result := jsonb_build_object('kind', 'qr', 'stale', v_result -> 'stale',
                                           'duplicate', v_result -> 'duplicate');
        else
            v_result := public.whatsapp_message_event(
                v_session_id, v_event ->> 'message_id', v_event ->> 'kind', coalesce(v_event -> 'data', '{}'),
                (v_event ->> 'event_at')::timestamptz);
        end case;
        v_results := v_results || jsonb_build_array(v_result);
    end loop;

    return jsonb_build_object('session_id', v_session_id, 'results', v_results);
end;
$$;

-- ---------------------------------------------------------------------------
-- Access to the functions (the pattern of 20261202040000_least_privilege.sql)
-- ---------------------------------------------------------------------------

grant create on schema public to whatsapp_ingest_owner;
alter function public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean, uuid)
    owner to whatsapp_ingest_owner;
alter function public.whatsapp_session_connection(uuid) owner to whatsapp_ingest_owner;
alter function public.whatsapp_session_connection(uuid) security definer;
revoke create on schema public from whatsapp_ingest_owner;

revoke execute on function
    public.whatsapp_check_session_connection(),
    public.whatsapp_add_gateway_connection(uuid, text, text, uuid, text, text),
    public.whatsapp_session_connection(uuid),
    public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean, uuid)
    from public, anon, authenticated;
-- The operator adds connections (service role); the service's login only uses them.
grant execute on function public.whatsapp_add_gateway_connection(uuid, text, text, uuid, text, text)
    to service_role;
grant execute on function
    public.whatsapp_session_connection(uuid),
    public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean, uuid)
    to whatsapp_ingest, service_role;

-- ---------------------------------------------------------------------------
-- Sequences: none for the API roles
-- ---------------------------------------------------------------------------

-- Supabase's default privileges grant every new sequence to anon and
-- authenticated: with them, authenticated could setval the pending events'
-- identity to its maximum and stop every account's pending events. Nothing
-- of theirs inserts rows, so they need none, now or for future sequences.
revoke all on all sequences in schema public from anon, authenticated;
alter default privileges in schema public revoke all on sequences from anon, authenticated;
