-- Real gateway traffic filed the way it happened (issue 19, points 5 and 6).
--
-- 1. A contact's push name is newest-wins by message time without exception.
--    chats.name_seen_at keeps the time of the newest inbound message of the
--    chat that carried a name, written in the same chats update that moves
--    last_message_at (no extra write per message): a name re-sent unchanged
--    still counts as seen, so an older message delivered late cannot replace it.
-- 2. A close (connected, disconnected, expired) that arrives late is still a
--    fact about the QR: even when stale for the session's status, it is
--    recorded in qr_close_order and clears a QR generated before it, so a late
--    QR of the closed attempt is refused. whatsapp_sessions.qr_order keeps the
--    shown QR's own order mark (its time and arrival) to tell.
-- 3. Message events: a WAHA id names the message with its direction
--    (true_/false_<chat>_<id>); an event whose guess of the direction is wrong
--    still reaches the message (the other prefix is tried, and the lock is
--    taken on the id without it). A redelivered event for a message not stored
--    yet adds no second pending row. Pending events are capped per session
--    (1,000 events, 1 MiB of data as JSON text): the oldest are dropped and counted.
-- 4. Edits: a caption is edited in the content too; edit_history keeps the
--    last 20 replaced versions.
--
-- Every function below is a replacement with the same signature (create or
-- replace keeps its owner and grants; each entry point states SECURITY DEFINER
-- again, as 20261202040000 set it).

-- ---------------------------------------------------------------------------
-- Columns
-- ---------------------------------------------------------------------------

alter table public.chats add column name_seen_at timestamptz;
comment on column public.chats.name_seen_at is
    'Time of the newest inbound message of this chat that carried the contact''s push name: '
    'an older name delivered late does not replace the contact''s name.';

alter table public.whatsapp_sessions add column qr_order public.whatsapp_order_mark;
comment on column public.whatsapp_sessions.qr_order is
    'Orchestrator time and arrival of the QR shown: a close older than it does not clear it.';

-- ---------------------------------------------------------------------------
-- whatsapp_message_lock (replaced)
--   Arguments: p_session_id, p_message_id  a message, stored or not
--   Returns:   true, once the lock is held
--   Effect:    a transaction lock on that message id without its WAHA
--              direction prefix (true_/false_), so the two spellings of one
--              message take one lock: whoever stores the message and whoever
--              files an event for it under either spelling are serialised
-- ---------------------------------------------------------------------------

create or replace function public.whatsapp_message_lock(p_session_id uuid, p_message_id text)
returns boolean
language plpgsql
set search_path = ''
as $$
begin
    perform pg_advisory_xact_lock(
        hashtextextended(p_session_id::text || '/' || regexp_replace(p_message_id, '^(true|false)_', ''), 0));
    return true;
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_apply_to_message (replaced)
--   Arguments, Returns: as in 20261202030000. An edit now also replaces the
--   caption of a media message's content, and edit_history keeps only the
--   last 20 replaced versions (WhatsApp lets a message be edited for 15
--   minutes; the bound keeps a row small whatever a gateway repeats).
-- ---------------------------------------------------------------------------

create or replace function public.whatsapp_apply_to_message(p_id bigint, p_kind text, p_data jsonb, p_event_at timestamptz)
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
           set edit_history = (
                   select jsonb_agg(h.entry order by h.n)
                     from jsonb_array_elements(
                              coalesce(m.edit_history, '[]')
                              || jsonb_build_array(jsonb_build_object('body', m.body, 'content', m.content,
                                                                      'replaced_at', v_at))
                          ) with ordinality as h (entry, n)
                    where h.n > coalesce(jsonb_array_length(m.edit_history), 0) + 1 - 20
               ),
               body         = p_data ->> 'body',
               content      = case when m.message_type = 'text'
                                   then m.content || jsonb_build_object('text', p_data ->> 'body')
                                   when m.message_type in ('image', 'video', 'document')
                                        and jsonb_typeof(m.content -> m.message_type) = 'object'
                                   then jsonb_set(m.content, array[m.message_type, 'caption'], to_jsonb(p_data ->> 'body'))
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
-- whatsapp_message_event (replaced)
--   Arguments: p_session_id  the session that saw the event
--              p_message_id  the id of the message it is about; a WAHA id
--                            (true_/false_<chat>_<id>) also finds the message
--                            stored under the other direction prefix
--              p_kind        status | reaction | edit | delete
--              p_data        as whatsapp_apply_to_message
--              p_event_at    when it happened (the gateway's clock), or null
--   Returns:   {message_id, kind, applied, pending}, plus "dropped": n when
--              keeping this event dropped the session's n oldest pending
--              events (at most 1,000 events and 1 MiB of data wait per
--              session). applied: the message changed; pending: the message
--              is not stored yet, the event is kept (7 days) and applied when
--              it arrives; the same event delivered again is kept once.
--   Errors:    PT404 when the session does not exist; 22023 for an unknown kind
-- ---------------------------------------------------------------------------

create or replace function public.whatsapp_message_event(
    p_session_id uuid,
    p_message_id text,
    p_kind       text,
    p_data       jsonb,
    p_event_at   timestamptz default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_other   text := case when p_message_id like 'true\_%' then 'false_' || substr(p_message_id, 6)
                           when p_message_id like 'false\_%' then 'true_' || substr(p_message_id, 7) end;
    v_id      bigint;
    v_applied boolean := false;
    v_dropped integer := 0;
begin
    perform from public.whatsapp_sessions s where s.id = p_session_id;
    if not found then
        raise exception 'session % not found', p_session_id using errcode = 'PT404';
    end if;
    if p_kind not in ('status', 'reaction', 'edit', 'delete') then
        raise exception 'unknown message event kind %', p_kind using errcode = '22023';
    end if;

    perform public.whatsapp_message_lock(p_session_id, p_message_id);
    select m.id into v_id
      from public.mensajes m
     where m.session_id = p_session_id and m.whatsapp_message_id in (p_message_id, v_other)
     order by m.whatsapp_message_id = p_message_id desc
     limit 1;

    if v_id is not null then
        v_applied := public.whatsapp_apply_to_message(v_id, p_kind, p_data, p_event_at);
    elsif not exists (
        -- a redelivery of an event already waiting (under the message lock: no race)
        select from public.whatsapp_pending_message_events e
         where e.session_id = p_session_id and e.whatsapp_message_id = p_message_id
           and e.kind = p_kind and e.data = p_data and e.event_at is not distinct from p_event_at
    ) then
        insert into public.whatsapp_pending_message_events (session_id, whatsapp_message_id, kind, data, event_at)
        values (p_session_id, p_message_id, p_kind, p_data, p_event_at);

        -- The cap: the newest 1,000 events and 1 MiB of data per session wait.
        with ranked as (
            select e.id,
                   row_number() over newest_first as n,
                   sum(octet_length(e.data::text)) over newest_first as bytes
              from public.whatsapp_pending_message_events e
             where e.session_id = p_session_id
            window newest_first as (order by e.id desc)
        )
        delete from public.whatsapp_pending_message_events e
         using ranked r
         where e.id = r.id and (r.n > 1000 or r.bytes > 1048576);
        get diagnostics v_dropped = row_count;

        -- Retention: what waited a week for its message will not see it.
        delete from public.whatsapp_pending_message_events e where e.created_at < now() - interval '7 days';
    end if;

    return jsonb_build_object('message_id', p_message_id, 'kind', p_kind,
                              'applied', v_applied, 'pending', v_id is null)
           || case when v_dropped > 0 then jsonb_build_object('dropped', v_dropped) else '{}' end;
end;
$$;

-- whatsapp_apply_pending_message_events (trigger, AFTER INSERT on mensajes; replaced)
--   Applies, oldest first, the events that arrived before their message, filed
--   under its id or under its other WAHA direction prefix, and forgets them.
create or replace function public.whatsapp_apply_pending_message_events()
returns trigger
language plpgsql
set search_path = ''
as $$
declare
    v_other text := case when new.whatsapp_message_id like 'true\_%' then 'false_' || substr(new.whatsapp_message_id, 6)
                         when new.whatsapp_message_id like 'false\_%' then 'true_' || substr(new.whatsapp_message_id, 7) end;
    v_event record;
begin
    perform public.whatsapp_message_lock(new.session_id, new.whatsapp_message_id);
    for v_event in
        with taken as (
            delete from public.whatsapp_pending_message_events e
             where e.session_id = new.session_id and e.whatsapp_message_id in (new.whatsapp_message_id, v_other)
            returning e.id, e.kind, e.data, e.event_at
        )
        select * from taken order by event_at nulls first, id
    loop
        perform public.whatsapp_apply_to_message(new.id, v_event.kind, v_event.data, v_event.event_at);
    end loop;
    return null;
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_update_session_status (replaced)
--   Arguments, Returns, Errors: as in 20261202000000, and: a stale
--   connected, disconnected or expired not older than the last close recorded
--   is still recorded for the QR rule (qr_close_order), and clears the QR shown
--   unless that QR is known to be newer than it (qr_order): the status stays as
--   the newer update left it.
-- ---------------------------------------------------------------------------

create or replace function public.whatsapp_update_session_status(
    p_session_id  uuid,
    p_status      text,
    p_changes     jsonb default '{}',
    p_event_at    timestamptz default null,
    p_received_at timestamptz default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_session     public.whatsapp_sessions;
    v_received_at timestamptz := coalesce(p_received_at, now());
    v_own         text := p_changes ->> 'own_wa_id';
    v_stale       jsonb;
    v_learns_own  boolean;
begin
    v_session := public.whatsapp_lock_session(p_session_id);
    v_stale := public.whatsapp_stale_reason(v_session.state_order, p_event_at, v_received_at);
    v_learns_own := v_own is not null and v_own is distinct from v_session.own_wa_id;

    if v_stale is not null then
        if v_learns_own and v_session.own_wa_id is null then
            update public.whatsapp_sessions s
               set own_wa_id        = v_own,
                   phone_number     = coalesce(s.phone_number, p_changes ->> 'phone_number'),
                   whatsapp_user_id = coalesce(s.whatsapp_user_id, p_changes ->> 'whatsapp_user_id')
             where s.id = p_session_id
            returning s.* into v_session;
            perform public.whatsapp_repair_outbound(p_session_id, v_own);
        end if;
        if p_status <> 'pending'
           and public.whatsapp_stale_reason(v_session.qr_close_order, p_event_at, v_received_at) is null then
            -- A late close still ends the QRs generated before it (unless a close newer
            -- than it is already recorded: that one did, and does).
            update public.whatsapp_sessions s
               set qr_close_order = public.whatsapp_order_after(s.qr_close_order, p_event_at, v_received_at),
                   qr_code        = case when older.qr then null else s.qr_code end,
                   qr_url         = case when older.qr then null else s.qr_url end
              from (select public.whatsapp_stale_reason(
                               coalesce(v_session.qr_order,
                                        row(v_session.qr_generated_at, null, null, null)::public.whatsapp_order_mark),
                               p_event_at, v_received_at) is null as qr) older
             where s.id = p_session_id
            returning s.* into v_session;
        end if;
        return to_jsonb(v_session) || jsonb_build_object('stale', true, 'stale_because', v_stale);
    end if;

    update public.whatsapp_sessions s
       set status           = p_status,
           state_order      = public.whatsapp_order_after(s.state_order, p_event_at, v_received_at),
           qr_close_order   = case when p_status = 'pending' then s.qr_close_order
                                   else public.whatsapp_order_after(s.qr_close_order, p_event_at, v_received_at) end,
           qr_code          = case when p_status = 'pending' then s.qr_code end,
           qr_url           = case when p_status = 'pending' then s.qr_url end,
           last_seen        = case when p_changes ? 'last_seen'
                                   then (p_changes ->> 'last_seen')::timestamptz
                                   else s.last_seen end,
           phone_number     = case when p_changes ? 'phone_number'
                                   then p_changes ->> 'phone_number'
                                   else s.phone_number end,
           whatsapp_user_id = case when p_changes ? 'whatsapp_user_id'
                                   then p_changes ->> 'whatsapp_user_id'
                                   else s.whatsapp_user_id end,
           own_wa_id        = coalesce(v_own, s.own_wa_id),
           auth_folder_path = case when p_changes ? 'auth_folder_path'
                                   then p_changes ->> 'auth_folder_path'
                                   else s.auth_folder_path end,
           -- ->> yields SQL null for a JSON null, so an explicit null clears it
           server_port      = case when p_changes ? 'server_port'
                                   then (p_changes ->> 'server_port')::integer
                                   else s.server_port end
     where s.id = p_session_id
    returning s.* into v_session;

    if v_learns_own then
        perform public.whatsapp_repair_outbound(p_session_id, v_own);
    end if;

    return to_jsonb(v_session) || '{"stale": false}';
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_store_qr (replaced)
--   Arguments, Returns, Errors: as in 20261202000000; a QR stored also keeps
--   its own order mark (qr_order), which a late close is compared with.
-- ---------------------------------------------------------------------------

create or replace function public.whatsapp_store_qr(
    p_session_id   uuid,
    p_qr_code      text,
    p_qr_url       text,
    p_generated_at timestamptz,
    p_received_at  timestamptz default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_session     public.whatsapp_sessions;
    v_received_at timestamptz := coalesce(p_received_at, now());
    v_stale       jsonb;
begin
    v_session := public.whatsapp_lock_session(p_session_id);

    if p_generated_at = v_session.qr_generated_at and p_qr_code = v_session.qr_code then
        return to_jsonb(v_session) || '{"stale": false, "duplicate": true}';
    end if;
    -- A stored QR time more than 5 minutes ahead of our clock is not remembered
    -- (whatsapp_event_time_to_keep): it cannot make every later QR stale.
    if p_generated_at <= public.whatsapp_event_time_to_keep(v_session.qr_generated_at, null) then
        v_stale := public.whatsapp_compared(p_generated_at, 'orchestrator', v_session.qr_generated_at, 'orchestrator');
    else
        v_stale := public.whatsapp_stale_reason(v_session.qr_close_order, p_generated_at, v_received_at);
    end if;
    if v_stale is not null then
        return to_jsonb(v_session) || jsonb_build_object('stale', true, 'duplicate', false, 'stale_because', v_stale);
    end if;

    update public.whatsapp_sessions s
       set status          = 'pending',
           state_order     = public.whatsapp_order_after(s.state_order, p_generated_at, v_received_at),
           qr_order        = public.whatsapp_order_after(null, p_generated_at, v_received_at),
           qr_code         = p_qr_code,
           qr_url          = p_qr_url,
           qr_generated_at = p_generated_at
     where s.id = p_session_id
    returning s.* into v_session;

    return to_jsonb(v_session) || '{"stale": false, "duplicate": false}';
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_ingest_message (replaced)
--   Arguments, Returns, Errors: as in 20261202010000. The push name of an
--   inbound message replaces the contact's name when different and its
--   message is not older than the contact's name nor than the newest named
--   inbound message of any of its chats (chats.name_seen_at, moved in the
--   same update as last_message_at).
-- ---------------------------------------------------------------------------

create or replace function public.whatsapp_ingest_message(
    p_session_id   uuid,
    p_message_id   text,
    p_from         text,
    p_to           text,
    p_message_type text,
    p_body         text,
    p_content      jsonb,
    p_sent_at      timestamptz,
    p_from_me      boolean default null,
    p_push_name    text default null
) returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_account_id uuid;
    v_own_wa_id  text;
    v_outbound   boolean;
    v_peer       text;
    v_name       text;
    v_contact_id bigint;
    v_chat_id    bigint;
    v_message    public.mensajes;
    v_duplicate  boolean := false;
begin
    select s.account_id, s.own_wa_id into v_account_id, v_own_wa_id
      from public.whatsapp_sessions s
     where s.id = p_session_id
       for share;

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
        v_outbound := coalesce(p_from_me, p_from = v_own_wa_id, false);
        v_peer := case when v_outbound then p_to else p_from end;
        v_name := case when not v_outbound then nullif(btrim(p_push_name), '') end;

        insert into public.contacts (account_id, wa_id, phone_number, display_name, display_name_at)
        values (v_account_id, v_peer, case when v_peer !~ '@' then '+' || v_peer end,
                v_name, case when v_name is not null then p_sent_at end)
        on conflict (account_id, wa_id) do nothing
        returning id into v_contact_id;

        if v_contact_id is null then
            select c.id into strict v_contact_id
              from public.contacts c
             where c.account_id = v_account_id and c.wa_id = v_peer;
            if v_name is not null then
                update public.contacts c
                   set display_name = v_name, display_name_at = p_sent_at
                 where c.id = v_contact_id
                   and c.display_name is distinct from v_name
                   and (c.display_name_at is null or c.display_name_at <= p_sent_at)
                   and p_sent_at >= coalesce((select max(ch.name_seen_at) from public.chats ch
                                               where ch.contact_id = v_contact_id), '-infinity');
            end if;
        end if;

        insert into public.chats (account_id, session_id, contact_id)
        values (v_account_id, p_session_id, v_contact_id)
        on conflict (session_id, contact_id) do nothing
        returning id into v_chat_id;

        if v_chat_id is null then
            select c.id into strict v_chat_id
              from public.chats c
             where c.session_id = p_session_id and c.contact_id = v_contact_id;
        end if;

        insert into public.mensajes (account_id, chat_id, session_id, contact_id, whatsapp_message_id,
                                     direction, message_type, body, content, sent_at,
                                     from_wa_id, to_wa_id, from_me)
        values (v_account_id, v_chat_id, p_session_id, v_contact_id, p_message_id,
                case when v_outbound then 'outbound' else 'inbound' end,
                p_message_type, p_body, p_content, p_sent_at,
                p_from, p_to, p_from_me)
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
               set last_message_at = greatest(c.last_message_at, p_sent_at),
                   name_seen_at    = case when v_name is not null then greatest(c.name_seen_at, p_sent_at)
                                          else c.name_seen_at end
             where c.id = v_chat_id
               and (c.last_message_at is distinct from greatest(c.last_message_at, p_sent_at)
                    or v_name is not null and c.name_seen_at is distinct from greatest(c.name_seen_at, p_sent_at));
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
-- whatsapp_ingest_batch (replaced)
--   Arguments, Returns, Errors, Concurrency: as in 20261202020000; push names
--   as in whatsapp_ingest_message (chats.name_seen_at moves with
--   last_message_at, in the same statement).
-- ---------------------------------------------------------------------------

create or replace function public.whatsapp_ingest_batch(p_session_id uuid, p_messages jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_account_id uuid;
    v_own_wa_id  text;
    v_items      integer := jsonb_array_length(p_messages);
    v_stored     integer;
    v_latest     jsonb;
begin
    select s.account_id, s.own_wa_id into v_account_id, v_own_wa_id
      from public.whatsapp_sessions s
     where s.id = p_session_id
       for share;

    if not found then
        raise exception 'session % not found', p_session_id using errcode = 'PT404';
    end if;

    insert into public.contacts (account_id, wa_id, phone_number, display_name, display_name_at)
    select v_account_id, b.peer, case when b.peer !~ '@' then '+' || b.peer end, b.push_name,
           case when b.push_name is not null then b.sent_at end
      from (
            -- the newest name each new contact sent in this batch
            select distinct on (b.peer) b.peer, case when not b.outbound then b.push_name end as push_name, b.sent_at
              from public.whatsapp_batch_items(p_messages, v_own_wa_id) b
             order by b.peer, (not b.outbound and b.push_name is not null) desc, b.sent_at desc
           ) b
     order by b.peer
    on conflict (account_id, wa_id) do nothing;

    -- Names of contacts that already existed: newest wins, as in the single path.
    with named as (
        select distinct on (b.peer) b.peer, b.push_name, b.sent_at
          from public.whatsapp_batch_items(p_messages, v_own_wa_id) b
         where not b.outbound and b.push_name is not null
         order by b.peer, b.sent_at desc
    ), renamed as (
        select c.id, named.push_name, named.sent_at
          from named
          join public.contacts c on c.account_id = v_account_id and c.wa_id = named.peer
         where c.display_name is distinct from named.push_name
           and (c.display_name_at is null or c.display_name_at <= named.sent_at)
           and named.sent_at >= coalesce((select max(ch.name_seen_at) from public.chats ch
                                           where ch.contact_id = c.id), '-infinity')
         order by c.id
           for no key update of c
    )
    update public.contacts c
       set display_name = renamed.push_name, display_name_at = renamed.sent_at
      from renamed
     where c.id = renamed.id;

    insert into public.chats (account_id, session_id, contact_id)
    select distinct v_account_id, p_session_id, c.id
      from public.whatsapp_batch_items(p_messages, v_own_wa_id) b
      join public.contacts c on c.account_id = v_account_id and c.wa_id = b.peer
     order by 3
    on conflict (session_id, contact_id) do nothing;

    with fresh as (
        insert into public.mensajes (account_id, chat_id, session_id, contact_id, whatsapp_message_id,
                                     direction, message_type, body, content, sent_at,
                                     from_wa_id, to_wa_id, from_me)
        select distinct on (b.message_id)
               v_account_id, ch.id, p_session_id, c.id, b.message_id,
               case when b.outbound then 'outbound' else 'inbound' end,
               b.message_type, b.body, b.content, b.sent_at,
               b.from_wa_id, b.to_wa_id, b.from_me
          from public.whatsapp_batch_items(p_messages, v_own_wa_id) b
          join public.contacts c on c.account_id = v_account_id and c.wa_id = b.peer
          join public.chats ch on ch.session_id = p_session_id and ch.contact_id = c.id
         order by b.message_id, b.i  -- the first of a repeated id is stored
        on conflict (session_id, whatsapp_message_id) do nothing
        returning chat_id, sent_at, whatsapp_message_id
    ), named as (
        select distinct b.message_id
          from public.whatsapp_batch_items(p_messages, v_own_wa_id) b
         where not b.outbound and b.push_name is not null
    ), per_chat as (
        select f.chat_id, count(*) as n, max(f.sent_at) as latest,
               max(f.sent_at) filter (where named.message_id is not null) as named_at
          from fresh f
          left join named on named.message_id = f.whatsapp_message_id
         group by f.chat_id
    )
    select coalesce(sum(n), 0), coalesce(jsonb_object_agg(chat_id, jsonb_build_array(latest, named_at)), '{}')
      into v_stored, v_latest
      from per_chat;

    -- Each chat's latest message time (and named one), locked in id order (racing batches).
    with latest as (
        select key::bigint as chat_id, (value ->> 0)::timestamptz as sent_at, (value ->> 1)::timestamptz as named_at
          from jsonb_each(v_latest)
    ), locked as (
        select ch.id, latest.sent_at, latest.named_at
          from public.chats ch
          join latest on latest.chat_id = ch.id
         where ch.last_message_at is distinct from greatest(ch.last_message_at, latest.sent_at)
            or latest.named_at is not null and ch.name_seen_at is distinct from greatest(ch.name_seen_at, latest.named_at)
         order by ch.id
           for no key update of ch
    )
    update public.chats ch
       set last_message_at = greatest(ch.last_message_at, locked.sent_at),
           name_seen_at    = greatest(ch.name_seen_at, locked.named_at)
      from locked
     where ch.id = locked.id;

    return jsonb_build_object('stored', v_stored, 'duplicates', v_items - v_stored);
end;
$$;
