-- Gateways' own webhooks (Evolution API, WAHA, Meta's WhatsApp Cloud API) and
-- the message events a CRM needs: delivery status, reactions, edits, deletions.
--
-- 1. A session names its gateway and the gateway's own id for it (Evolution
--    instance name, WAHA session name, Meta phone_number_id), set by the CRM;
--    for Evolution deployments without webhook headers, the sha256 of the
--    instance apikey the gateway puts in each payload.
-- 2. mensajes keeps its delivery status (forward only), reactions, edit history
--    and deletion mark; 'unsupported', 'interactive' and 'template' join the
--    message types.
-- 3. Events for a message not stored yet wait in whatsapp_pending_message_events
--    and are applied by an AFTER INSERT trigger on mensajes, so every path that
--    stores messages applies them.
-- 4. whatsapp_apply_gateway_events: one call per webhook body, resolving the
--    session by (gateway, instance) and applying each internal event through
--    the existing functions, in one transaction.

-- ---------------------------------------------------------------------------
-- Sessions: which gateway, which instance
-- ---------------------------------------------------------------------------

alter table public.whatsapp_sessions
    add column gateway               text,
    add column gateway_instance      text,
    add column gateway_apikey_sha256 text;

-- New, empty columns: every existing row satisfies the checks, and the table
-- is small (one row per linked phone).
-- squawk-ignore constraint-missing-not-valid
alter table public.whatsapp_sessions add constraint whatsapp_sessions_gateway_check
    check (gateway in ('evolution', 'waha', 'meta') and gateway_instance <> ''
           and (gateway_apikey_sha256 is null or gateway_apikey_sha256 ~ '^[0-9a-f]{64}$')
           or gateway is null and gateway_instance is null and gateway_apikey_sha256 is null);
-- One session per gateway instance. The column is new and empty: the index
-- builds on nothing.
-- squawk-ignore disallowed-unique-constraint, constraint-missing-not-valid
alter table public.whatsapp_sessions add constraint whatsapp_sessions_gateway_instance_key
    unique (gateway, gateway_instance);

comment on column public.whatsapp_sessions.gateway_instance is
    'The gateway''s own id of this session: Evolution instance name, WAHA session name, Meta phone_number_id.';
comment on column public.whatsapp_sessions.gateway_apikey_sha256 is
    'Evolution only: hex sha256 of the instance apikey, compared with the apikey of each webhook payload when no webhook token is configured.';

-- The CRM shows which gateway a session runs on; the key's hash stays private.
grant select (gateway, gateway_instance) on public.whatsapp_sessions to authenticated;

-- ---------------------------------------------------------------------------
-- Messages: status, reactions, edits, deletion
-- ---------------------------------------------------------------------------

alter table public.mensajes
    add column delivery_status     text,
    add column delivery_status_at  timestamptz,
    add column delivery_error      jsonb,        -- {code, title} of a failed status
    add column reactions           jsonb,        -- {<reactor wa_id>: {emoji, at}}; null: none yet
    add column edit_history        jsonb,        -- [{body, content, replaced_at}], oldest first
    add column edited_at           timestamptz,
    add column deleted_at          timestamptz;  -- revoked for everyone; content kept unless erased

-- New, empty column: every existing row satisfies it.
-- squawk-ignore constraint-missing-not-valid
alter table public.mensajes add constraint mensajes_delivery_status_check
    check (delivery_status in ('pending', 'sent', 'delivered', 'read', 'played', 'failed'));

-- Widened: the new list contains the old one, so every existing row satisfies it.
-- squawk-ignore ban-drop-constraint
alter table public.mensajes drop constraint mensajes_message_type_check;
-- squawk-ignore constraint-missing-not-valid
alter table public.mensajes add constraint mensajes_message_type_check
    check (message_type in ('text', 'image', 'video', 'audio', 'document', 'location', 'contact', 'sticker',
                            'interactive', 'template', 'unsupported'));

-- ---------------------------------------------------------------------------
-- Events waiting for their message
-- ---------------------------------------------------------------------------

create table public.whatsapp_pending_message_events (
    id                  bigint generated always as identity primary key,
    session_id          uuid not null references public.whatsapp_sessions (id) on delete cascade,
    whatsapp_message_id text not null,
    kind                text not null check (kind in ('status', 'reaction', 'edit', 'delete')),
    data                jsonb not null,
    event_at            timestamptz,
    created_at          timestamptz not null default now()
);

create index whatsapp_pending_message_events_message_idx
    on public.whatsapp_pending_message_events (session_id, whatsapp_message_id);
-- Events kept longer than 7 days are forgotten (whatsapp_message_event): statuses
-- of messages the CRM sent itself through a gateway never get a message here.
create index whatsapp_pending_message_events_created_at_idx
    on public.whatsapp_pending_message_events (created_at);

alter table public.whatsapp_pending_message_events enable row level security;
revoke all on public.whatsapp_pending_message_events from public, anon, authenticated;
grant select, insert, delete on public.whatsapp_pending_message_events to service_role;

-- ---------------------------------------------------------------------------
-- whatsapp_status_rank
--   Arguments: p_status  a delivery status, or null
--   Returns:   its place in the order a status may only move forward in:
--              null/pending 0, sent 1, failed 2, delivered 3, read 4, played 5
--              (a failure overrides "sent"; a later delivery overrides it)
-- ---------------------------------------------------------------------------

create function public.whatsapp_status_rank(p_status text)
returns integer
language sql
immutable
set search_path = ''
as $$
    select case p_status when 'sent' then 1 when 'failed' then 2 when 'delivered' then 3
                         when 'read' then 4 when 'played' then 5 else 0 end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_message_lock
--   Arguments: p_session_id, p_message_id  a message, stored or not
--   Returns:   true, once the lock is held
--   Effect:    a transaction lock on that message id, taken by whoever stores
--              the message (the trigger below) and whoever files an event for
--              it, so an event is never left waiting for a message that was
--              stored meanwhile
-- ---------------------------------------------------------------------------

create function public.whatsapp_message_lock(p_session_id uuid, p_message_id text)
returns boolean
language plpgsql
set search_path = ''
as $$
begin
    perform pg_advisory_xact_lock(hashtextextended(p_session_id::text || '/' || p_message_id, 0));
    return true;
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_apply_to_message
--   Arguments: p_id        a stored message (mensajes.id)
--              p_kind      status | reaction | edit | delete
--              p_data      status:   {status, error?: {code, title}}
--                          reaction: {from: wa_id, emoji: text or null (removed)}
--                          edit:     {body, content?}
--                          delete:   {erase?: bool}
--              p_event_at  when it happened (the gateway's clock), or null
--   Returns:   true when the message changed. A status only moves forward
--              (whatsapp_status_rank); a reaction or an edit older than the one
--              kept changes nothing; an edit keeps the replaced text in
--              edit_history; a deletion marks deleted_at and, with erase,
--              empties body, content and history.
-- ---------------------------------------------------------------------------

create function public.whatsapp_apply_to_message(p_id bigint, p_kind text, p_data jsonb, p_event_at timestamptz)
returns boolean
language plpgsql
set search_path = ''
as $$
declare
    v_at      timestamptz := coalesce(p_event_at, now());
    v_changed integer;
begin
    if p_kind = 'status' then
        update public.mensajes m
           set delivery_status    = p_data ->> 'status',
               delivery_status_at = v_at,
               delivery_error     = case when p_data ->> 'status' = 'failed' then p_data -> 'error' end
         where m.id = p_id
           and public.whatsapp_status_rank(p_data ->> 'status') > public.whatsapp_status_rank(m.delivery_status);
    elsif p_kind = 'reaction' then
        update public.mensajes m
           set reactions = case when coalesce(p_data ->> 'emoji', '') = ''
                                then coalesce(m.reactions, '{}') - (p_data ->> 'from')
                                else coalesce(m.reactions, '{}') || jsonb_build_object(
                                         p_data ->> 'from', jsonb_build_object('emoji', p_data ->> 'emoji', 'at', v_at))
                           end
         where m.id = p_id
           and (m.reactions -> (p_data ->> 'from') ->> 'emoji') is distinct from nullif(p_data ->> 'emoji', '')
           and coalesce((m.reactions -> (p_data ->> 'from') ->> 'at')::timestamptz, '-infinity') <= v_at;
    elsif p_kind = 'edit' then
        update public.mensajes m
           set edit_history = coalesce(m.edit_history, '[]')
                              || jsonb_build_array(jsonb_build_object('body', m.body, 'content', m.content,
                                                                      'replaced_at', v_at)),
               body         = p_data ->> 'body',
               content      = case when m.message_type = 'text' then m.content || jsonb_build_object('text', p_data ->> 'body')
                                   else m.content end,
               edited_at    = v_at
         where m.id = p_id
           and m.deleted_at is null  -- a deleted message is not brought back by a late edit
           and m.body is distinct from p_data ->> 'body'
           and (m.edited_at is null or m.edited_at <= v_at);
    elsif p_kind = 'delete' then
        update public.mensajes m
           set deleted_at   = coalesce(m.deleted_at, v_at),
               body         = case when (p_data ->> 'erase')::boolean then null else m.body end,
               content      = case when (p_data ->> 'erase')::boolean
                                   then jsonb_build_object('type', m.message_type, 'deleted', true) else m.content end,
               edit_history = case when (p_data ->> 'erase')::boolean then null else m.edit_history end
         where m.id = p_id
           and (m.deleted_at is null or (p_data ->> 'erase')::boolean and m.body is not null);
    else
        raise exception 'unknown message event kind %', p_kind using errcode = '22023';
    end if;
    get diagnostics v_changed = row_count;
    return v_changed > 0;
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_message_event
--   Arguments: p_session_id  the session that saw the event
--              p_message_id  WhatsApp's id of the message it is about
--              p_kind        status | reaction | edit | delete
--              p_data        as whatsapp_apply_to_message
--              p_event_at    when it happened (the gateway's clock), or null
--   Returns:   {message_id, kind, applied, pending}: applied when the message
--              changed; pending when the message is not stored yet (the event
--              is kept, for 7 days, and applied when it arrives)
--   Errors:    PT404 when the session does not exist; 22023 for an unknown kind
-- ---------------------------------------------------------------------------

create function public.whatsapp_message_event(
    p_session_id uuid,
    p_message_id text,
    p_kind       text,
    p_data       jsonb,
    p_event_at   timestamptz default null
) returns jsonb
language plpgsql
set search_path = ''
as $$
declare
    v_id      bigint;
    v_applied boolean := false;
begin
    perform from public.whatsapp_sessions s where s.id = p_session_id;
    if not found then
        raise exception 'session % not found', p_session_id using errcode = 'PT404';
    end if;
    if p_kind not in ('status', 'reaction', 'edit', 'delete') then
        raise exception 'unknown message event kind %', p_kind using errcode = '22023';
    end if;

    perform public.whatsapp_message_lock(p_session_id, p_message_id);
    select m.id into v_id from public.mensajes m
     where m.session_id = p_session_id and m.whatsapp_message_id = p_message_id;

    if v_id is null then
        insert into public.whatsapp_pending_message_events (session_id, whatsapp_message_id, kind, data, event_at)
        values (p_session_id, p_message_id, p_kind, p_data, p_event_at);
        -- Retention: what waited a week for its message will not see it.
        delete from public.whatsapp_pending_message_events e where e.created_at < now() - interval '7 days';
    else
        v_applied := public.whatsapp_apply_to_message(v_id, p_kind, p_data, p_event_at);
    end if;

    return jsonb_build_object('message_id', p_message_id, 'kind', p_kind,
                              'applied', v_applied, 'pending', v_id is null);
end;
$$;

-- whatsapp_apply_pending_message_events (trigger, AFTER INSERT on mensajes)
--   Applies, oldest first, the events that arrived before their message, and
--   forgets them. Every path that stores a message goes through it.
create function public.whatsapp_apply_pending_message_events()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
    v_event record;
begin
    perform public.whatsapp_message_lock(new.session_id, new.whatsapp_message_id);
    for v_event in
        with taken as (
            delete from public.whatsapp_pending_message_events e
             where e.session_id = new.session_id and e.whatsapp_message_id = new.whatsapp_message_id
            returning e.id, e.kind, e.data, e.event_at
        )
        select * from taken order by event_at nulls first, id
    loop
        perform public.whatsapp_apply_to_message(new.id, v_event.kind, v_event.data, v_event.event_at);
    end loop;
    return null;
end;
$$;

create trigger mensajes_apply_pending_events
    after insert on public.mensajes
    for each row execute function public.whatsapp_apply_pending_message_events();

-- The CRM learns of a new status, reaction, edit or deletion as message_updated.
create trigger mensajes_broadcast_event
    after update of delivery_status, reactions, edited_at, deleted_at on public.mensajes
    for each row execute function public.whatsapp_broadcast_message_update();

-- ---------------------------------------------------------------------------
-- whatsapp_apply_gateway_events
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
--                                when the deployment authenticates by it
--              p_require_apikey  true: the session's stored hash must match
--   Returns:   {session_id, results: [one result per event, in order]}
--   Errors:    PT404 when no session has this gateway instance; PT401 when the
--              apikey is required and does not match (nothing written); the
--              called functions' errors (22xxx / 23xxx for refused values):
--              the whole body is one transaction, applied entirely or not at all
-- ---------------------------------------------------------------------------

create function public.whatsapp_apply_gateway_events(
    p_gateway        text,
    p_instance       text,
    p_events         jsonb,
    p_received_at    timestamptz default null,
    p_apikey_sha256  text default null,
    p_require_apikey boolean default false
) returns jsonb
language plpgsql
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
     where s.gateway = p_gateway and s.gateway_instance = p_instance;
    if not found then
        raise exception 'no session for % instance %', p_gateway, p_instance using errcode = 'PT404';
    end if;
    if p_require_apikey and (v_key is null or p_apikey_sha256 is distinct from v_key) then
        raise exception 'apikey does not match the session''s' using errcode = 'PT401';
    end if;

    -- The messages the body touches, locked once in id order (whatsapp_message_lock is
    -- re-entrant), so two bodies, or a body and a batch, cannot lock them crosswise.
    perform public.whatsapp_message_lock(v_session_id, ids.message_id)
       from (select distinct coalesce(m ->> 'message_id', e ->> 'message_id') as message_id
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
-- Access to the functions
-- ---------------------------------------------------------------------------

revoke execute on function
    public.whatsapp_status_rank(text),
    public.whatsapp_message_lock(uuid, text),
    public.whatsapp_apply_to_message(bigint, text, jsonb, timestamptz),
    public.whatsapp_message_event(uuid, text, text, jsonb, timestamptz),
    public.whatsapp_apply_pending_message_events(),
    public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean)
    from public, anon, authenticated;
grant execute on function
    public.whatsapp_status_rank(text),
    public.whatsapp_message_lock(uuid, text),
    public.whatsapp_apply_to_message(bigint, text, jsonb, timestamptz),
    public.whatsapp_message_event(uuid, text, text, jsonb, timestamptz),
    public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean)
    to service_role;
