-- WhatsApp ingestion: sessions, contacts, chats and messages (mensajes), and the
-- three functions the orchestrator endpoints call. Each endpoint is one call of
-- one function: one round trip, one transaction, JSON back.
--
-- Runs on Supabase and on plain Postgres 15+ where the Supabase roles (anon,
-- authenticated, service_role) and the supabase_realtime publication exist.
--
-- An unknown session raises SQLSTATE PT404: PostgREST turns PTxyz into HTTP
-- status xyz, and the service maps the code itself on both paths.

-- ---------------------------------------------------------------------------
-- Tables
-- ---------------------------------------------------------------------------

create table public.whatsapp_sessions (
    id               uuid primary key,  -- the orchestrator's session id
    status           text not null default 'pending'
                     check (status in ('connected', 'disconnected', 'expired', 'pending')),
    phone_number     text,
    whatsapp_user_id text,
    -- Canonical WhatsApp key of the linked phone itself (digits, or '<id>@lid'),
    -- derived by the service from whatsapp_user_id or phone_number. A message
    -- whose sender is this key was typed on the linked phone: outbound.
    own_wa_id        text,
    auth_folder_path text,
    server_port      integer check (server_port between 0 and 65535),
    last_seen        timestamptz,
    qr_code          text,
    qr_url           text,
    qr_generated_at  timestamptz,
    -- Orchestrator's time of the state last applied (status-update timestamp
    -- or last_seen, or a QR's timestamp): older events arriving late are stale.
    status_event_at  timestamptz,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now()
);

comment on table public.whatsapp_sessions is
    'One row per WhatsApp Web session of the orchestrator; created by the CRM, updated by the orchestrator.';

create table public.contacts (
    id           bigint generated always as identity primary key,
    -- Canonical key: the phone number's digits ('5215512345678') for phone
    -- JIDs and plain numbers; the whole id for '@lid', groups and broadcasts,
    -- from which no phone number is ever guessed.
    wa_id        text not null unique,
    phone_number text,  -- '+<digits>' when wa_id is a phone number, else null
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now()
);

create table public.chats (
    id              bigint generated always as identity primary key,
    session_id      uuid not null references public.whatsapp_sessions (id) on delete cascade,
    contact_id      bigint not null references public.contacts (id) on delete cascade,
    last_message_at timestamptz,
    created_at      timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    unique (session_id, contact_id)
);

create index chats_contact_id_idx on public.chats (contact_id);

create table public.mensajes (
    id                  bigint generated always as identity primary key,
    chat_id             bigint not null references public.chats (id) on delete cascade,
    session_id          uuid not null references public.whatsapp_sessions (id) on delete cascade,
    contact_id          bigint not null references public.contacts (id) on delete cascade,
    whatsapp_message_id text not null,
    tipo                text not null default 'whatsapp_api',
    direction           text not null check (direction in ('inbound', 'outbound')),
    message_type        text not null
                        check (message_type in ('text', 'image', 'video', 'audio',
                                                 'document', 'location', 'contact', 'sticker')),
    body                text,            -- the text, or the media caption
    content             jsonb not null,  -- the whole message object as received
    sent_at             timestamptz not null,
    created_at          timestamptz not null default now(),
    -- A redelivery of the same message to the same session is stored once.
    unique (session_id, whatsapp_message_id)
);

create index mensajes_chat_id_sent_at_idx on public.mensajes (chat_id, sent_at);
create index mensajes_contact_id_idx on public.mensajes (contact_id);

-- ---------------------------------------------------------------------------
-- updated_at is always the database's clock, whoever writes the row
-- ---------------------------------------------------------------------------

create function public.set_updated_at() returns trigger
language plpgsql
set search_path = ''
as $$
begin
    new.updated_at := now();
    return new;
end;
$$;

create trigger whatsapp_sessions_updated_at before update on public.whatsapp_sessions
    for each row execute function public.set_updated_at();
create trigger contacts_updated_at before update on public.contacts
    for each row execute function public.set_updated_at();
create trigger chats_updated_at before update on public.chats
    for each row execute function public.set_updated_at();

-- ---------------------------------------------------------------------------
-- whatsapp_lock_session
--   Arguments: p_session_id  the session about to change state
--   Returns:   its row, locked until the caller's transaction ends, so
--              concurrent updates of one session are applied one after the
--              other. NO KEY UPDATE: it must not block messages being stored
--              for the session (their foreign key takes a KEY SHARE lock).
--   Errors:    PT404 when the session does not exist
-- ---------------------------------------------------------------------------

create function public.whatsapp_lock_session(p_session_id uuid)
returns public.whatsapp_sessions
language plpgsql
set search_path = ''
as $$
declare
    v_session public.whatsapp_sessions;
begin
    select * into v_session from public.whatsapp_sessions s where s.id = p_session_id for no key update;

    if not found then
        raise exception 'session % not found', p_session_id using errcode = 'PT404';
    end if;

    return v_session;
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_event_time_to_keep
--   Arguments: p_event_at  the event time of the update being applied
--              p_stored    the session's status_event_at so far
--   Returns:   the status_event_at to store: p_event_at, unless it is more than
--              5 minutes ahead of the database's clock; such a time is applied
--              but not remembered, so one wrong clock cannot make every later
--              update stale
-- ---------------------------------------------------------------------------

create function public.whatsapp_event_time_to_keep(p_event_at timestamptz, p_stored timestamptz)
returns timestamptz
language sql
stable
set search_path = ''
as $$
    select case when p_event_at <= now() + interval '5 minutes' then p_event_at else p_stored end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_update_session_status
--   Arguments: p_session_id  the session to update
--              p_status      connected | disconnected | expired | pending
--              p_changes     object holding only the optional fields the
--                            orchestrator sent: last_seen, phone_number,
--                            whatsapp_user_id, own_wa_id, auth_folder_path,
--                            server_port (a JSON null clears server_port)
--              p_event_at    when the change happened (the orchestrator's
--                            timestamp, else when the API received it)
--   Returns:   the session row as jsonb, plus "stale": true when p_event_at is
--              older than the state already stored (then nothing is written;
--              see whatsapp_event_time_to_keep for times ahead of our clock)
--   Errors:    PT404 when the session does not exist; 23514 / 22xxx when a
--              value breaks a check (bad status, port out of range)
-- ---------------------------------------------------------------------------

create function public.whatsapp_update_session_status(
    p_session_id uuid,
    p_status     text,
    p_changes    jsonb default '{}',
    p_event_at   timestamptz default null
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
    v_session public.whatsapp_sessions;
begin
    v_session := public.whatsapp_lock_session(p_session_id);

    if p_event_at < v_session.status_event_at then
        return to_jsonb(v_session) || '{"stale": true}';
    end if;

    update public.whatsapp_sessions s
       set status           = p_status,
           status_event_at  = public.whatsapp_event_time_to_keep(p_event_at, s.status_event_at),
           last_seen        = case when p_changes ? 'last_seen'
                                   then (p_changes ->> 'last_seen')::timestamptz
                                   else s.last_seen end,
           phone_number     = case when p_changes ? 'phone_number'
                                   then p_changes ->> 'phone_number'
                                   else s.phone_number end,
           whatsapp_user_id = case when p_changes ? 'whatsapp_user_id'
                                   then p_changes ->> 'whatsapp_user_id'
                                   else s.whatsapp_user_id end,
           own_wa_id        = case when p_changes ? 'own_wa_id'
                                   then p_changes ->> 'own_wa_id'
                                   else s.own_wa_id end,
           auth_folder_path = case when p_changes ? 'auth_folder_path'
                                   then p_changes ->> 'auth_folder_path'
                                   else s.auth_folder_path end,
           -- ->> yields SQL null for a JSON null, so an explicit null clears it
           server_port      = case when p_changes ? 'server_port'
                                   then (p_changes ->> 'server_port')::integer
                                   else s.server_port end
     where s.id = p_session_id
    returning s.* into v_session;

    return to_jsonb(v_session) || '{"stale": false}';
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_store_qr
--   Arguments: p_session_id    the session waiting for a scan
--              p_qr_code       base64 image or raw QR text
--              p_qr_url        optional URL of the QR image
--              p_generated_at  when the orchestrator generated it
--   Returns:   the session row as jsonb (status pending, QR kept), plus
--              "stale": true when a newer state or QR is already stored (a
--              late retry of an old QR): then nothing is written
--   Errors:    PT404 when the session does not exist
-- ---------------------------------------------------------------------------

create function public.whatsapp_store_qr(
    p_session_id   uuid,
    p_qr_code      text,
    p_qr_url       text,
    p_generated_at timestamptz
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
    v_session public.whatsapp_sessions;
begin
    v_session := public.whatsapp_lock_session(p_session_id);

    if p_generated_at < v_session.status_event_at then
        return to_jsonb(v_session) || '{"stale": true}';
    end if;

    update public.whatsapp_sessions s
       set status          = 'pending',
           status_event_at = public.whatsapp_event_time_to_keep(p_generated_at, s.status_event_at),
           qr_code         = p_qr_code,
           qr_url          = p_qr_url,
           qr_generated_at = p_generated_at
     where s.id = p_session_id
    returning s.* into v_session;

    return to_jsonb(v_session) || '{"stale": false}';
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_ingest_message
--   Arguments: p_session_id    the session that saw the message
--              p_message_id    WhatsApp's message id (unique per session)
--              p_from, p_to    canonical WhatsApp keys of sender and receiver
--              p_message_type  text | image | video | audio | document |
--                              location | contact | sticker
--              p_body          the text or caption, null for other types
--              p_content       the whole message object as received
--              p_sent_at       when the message was sent
--   Returns:   {message: <mensajes row>, contact_id, chat_id, duplicate}
--              duplicate is true when this message id was already stored for
--              this session: the stored row is returned and nothing is written.
--   Errors:    PT404 when the session does not exist; 23514 when a value
--              breaks a check (unknown message type)
--
--   Concurrency: contact, chat and message are each decided by a unique
--   constraint with INSERT ... ON CONFLICT DO NOTHING. When the insert loses a
--   race it waits for the winner to commit, and the following SELECT (a new
--   snapshot under READ COMMITTED) sees the winner's row.
-- ---------------------------------------------------------------------------

create function public.whatsapp_ingest_message(
    p_session_id   uuid,
    p_message_id   text,
    p_from         text,
    p_to           text,
    p_message_type text,
    p_body         text,
    p_content      jsonb,
    p_sent_at      timestamptz
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
    v_own_wa_id  text;
    v_outbound   boolean;
    v_peer       text;
    v_contact_id bigint;
    v_chat_id    bigint;
    v_message    public.mensajes;
    v_duplicate  boolean := false;
begin
    select s.own_wa_id into v_own_wa_id
      from public.whatsapp_sessions s
     where s.id = p_session_id;

    if not found then
        raise exception 'session % not found', p_session_id using errcode = 'PT404';
    end if;

    -- A redelivery (the common retry) returns what was stored without touching
    -- contacts or chats. Only a shortcut: the unique constraint below decides.
    select m.* into v_message
      from public.mensajes m
     where m.session_id = p_session_id and m.whatsapp_message_id = p_message_id;
    v_duplicate := found;

    if not v_duplicate then
        -- Typed on the linked phone itself: the other party is the receiver.
        v_outbound := p_from = v_own_wa_id;
        v_peer := case when v_outbound then p_to else p_from end;

        insert into public.contacts (wa_id, phone_number)
        values (v_peer, case when v_peer !~ '@' then '+' || v_peer end)
        on conflict (wa_id) do nothing
        returning id into v_contact_id;

        if v_contact_id is null then
            select c.id into strict v_contact_id from public.contacts c where c.wa_id = v_peer;
        end if;

        insert into public.chats (session_id, contact_id)
        values (p_session_id, v_contact_id)
        on conflict (session_id, contact_id) do nothing
        returning id into v_chat_id;

        if v_chat_id is null then
            select c.id into strict v_chat_id
              from public.chats c
             where c.session_id = p_session_id and c.contact_id = v_contact_id;
        end if;

        insert into public.mensajes (chat_id, session_id, contact_id, whatsapp_message_id,
                                     direction, message_type, body, content, sent_at)
        values (v_chat_id, p_session_id, v_contact_id, p_message_id,
                case when v_outbound then 'outbound' else 'inbound' end,
                p_message_type, p_body, p_content, p_sent_at)
        on conflict (session_id, whatsapp_message_id) do nothing
        returning * into v_message;

        if v_message.id is null then
            -- A redelivery racing this one won: return what it stored, write nothing.
            v_duplicate := true;
            select m.* into strict v_message
              from public.mensajes m
             where m.session_id = p_session_id and m.whatsapp_message_id = p_message_id;
        else
            update public.chats c
               set last_message_at = greatest(c.last_message_at, p_sent_at)
             where c.id = v_chat_id
               and c.last_message_at is distinct from greatest(c.last_message_at, p_sent_at);
        end if;
    end if;

    return jsonb_build_object(
        'message',    to_jsonb(v_message),
        'contact_id', v_message.contact_id,
        'chat_id',    v_message.chat_id,
        'duplicate',  v_duplicate
    );
end;
$$;

-- ---------------------------------------------------------------------------
-- Access: the tables are reached only through the functions, and only the
-- service role may call them. Supabase grants new tables and functions to
-- anon and authenticated by default, so both are revoked explicitly.
-- ---------------------------------------------------------------------------

alter table public.whatsapp_sessions enable row level security;
alter table public.contacts          enable row level security;
alter table public.chats             enable row level security;
alter table public.mensajes          enable row level security;

revoke all on public.whatsapp_sessions, public.contacts, public.chats, public.mensajes
    from public, anon, authenticated;
grant select, insert, update, delete
    on public.whatsapp_sessions, public.contacts, public.chats, public.mensajes
    to service_role;

-- The identity sequences too: Supabase's default privileges grant them to the API roles.
revoke all on sequence public.contacts_id_seq, public.chats_id_seq, public.mensajes_id_seq
    from public, anon, authenticated;

revoke execute on function
    public.set_updated_at(),
    public.whatsapp_lock_session(uuid),
    public.whatsapp_event_time_to_keep(timestamptz, timestamptz),
    public.whatsapp_update_session_status(uuid, text, jsonb, timestamptz),
    public.whatsapp_store_qr(uuid, text, text, timestamptz),
    public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz)
    from public, anon, authenticated;
grant execute on function
    public.whatsapp_lock_session(uuid),
    public.whatsapp_event_time_to_keep(timestamptz, timestamptz),
    public.whatsapp_update_session_status(uuid, text, jsonb, timestamptz),
    public.whatsapp_store_qr(uuid, text, text, timestamptz),
    public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz)
    to service_role;

-- ---------------------------------------------------------------------------
-- Realtime: session states, QR codes and new messages are published. Supabase
-- delivers a change only to subscribers whom RLS lets read the row: with no
-- policies here, that is the service role until the CRM adds owner-scoped
-- select policies for its users (README, "Realtime and RLS").
-- ---------------------------------------------------------------------------

alter publication supabase_realtime add table public.whatsapp_sessions, public.mensajes;
