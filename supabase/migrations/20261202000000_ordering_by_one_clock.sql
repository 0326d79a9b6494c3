-- What is stored is what happened, whatever the arrival order and the clocks.
--
-- 1. Times are compared only with times from the same clock. Every session
--    update has an arrival time (when API Gateway received it; a replay from
--    the retry queue keeps it) and may have an orchestrator time (a QR's
--    timestamp, a status-update's timestamp, or its signed X-Timestamp).
--    last_seen is a heartbeat: stored, never compared.
-- 2. A QR is shown (status pending) until the session connects, disconnects or
--    expires after it; then it is cleared, so the CRM never shows a dead code.
-- 3. A message typed on the linked phone is outbound whatever arrives first:
--    the orchestrator may say so (from_me), and when a session learns its own
--    number, the messages stored earlier as sent by that number are repaired.
--
-- The first migration may already be applied with data: everything here is an
-- addition or a replacement, and old rows are carried over (see the updates).

-- ---------------------------------------------------------------------------
-- Ordering marks
-- ---------------------------------------------------------------------------

-- What a session remembers of the updates it applied, per clock: the latest
-- orchestrator time, the latest arrival, the latest arrival of an update that
-- had no orchestrator time (which can only be ordered by arrival), and the
-- latest arrival among the updates of event_at's second (ties within a second
-- are ordered by arrival).
create type public.whatsapp_order_mark as (
    event_at            timestamptz,
    received_at         timestamptz,
    untimed_received_at timestamptz,
    event_received_at   timestamptz
);

alter table public.whatsapp_sessions
    -- every state applied: statuses and QRs
    add column state_order    public.whatsapp_order_mark,
    -- the states that end a QR's life: connected, disconnected, expired
    add column qr_close_order public.whatsapp_order_mark;

comment on column public.whatsapp_sessions.state_order is
    'Latest orchestrator time and arrival of the states applied: orders late status updates and QRs.';
comment on column public.whatsapp_sessions.qr_close_order is
    'Latest orchestrator time and arrival of a non-pending status: a QR generated before it is dead.';

-- Old rows: status_event_at mixed the orchestrator's clock with API Gateway's
-- (last_seen, receive times), so only the QR's own time is carried over; the
-- last change counts as having arrived when the row was last written.
update public.whatsapp_sessions
   set state_order = row(qr_generated_at, updated_at, null, updated_at)::public.whatsapp_order_mark;

-- A session that is not pending shows no QR.
update public.whatsapp_sessions
   set qr_code = null,
       qr_url  = null
 where status <> 'pending' and (qr_code is not null or qr_url is not null);

-- Replaced below by versions with one more argument, which has a default: a
-- call by name from the previous release still resolves (a rolling deploy).
-- squawk-ignore ban-drop-function
drop function public.whatsapp_update_session_status(uuid, text, jsonb, timestamptz);
-- squawk-ignore ban-drop-function
drop function public.whatsapp_store_qr(uuid, text, text, timestamptz);
-- squawk-ignore ban-drop-function
drop function public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz);

-- Its mixed-clock value is replaced by state_order; only the service role
-- could ever read it (the first migration grants nothing to the API roles).
-- squawk-ignore ban-drop-column
alter table public.whatsapp_sessions drop column status_event_at;

-- ---------------------------------------------------------------------------
-- Who sent a message, as the orchestrator said it
-- ---------------------------------------------------------------------------

alter table public.mensajes
    add column from_wa_id text,     -- canonical sender
    add column to_wa_id   text,     -- canonical receiver
    add column from_me    boolean;  -- as the orchestrator said (Baileys' key.fromMe); null: not said

comment on column public.mensajes.from_me is
    'true/false when the orchestrator said who sent it; null when the direction was inferred from the own number.';

-- Finds the messages to repair when a session learns its own number. Rows
-- stored before this migration have no from_wa_id and are not repaired: the
-- receiver of a message was not kept.
-- Not CONCURRENTLY: migrations run in one transaction (supabase db push). It
-- blocks message writes while it builds; those time out, are queued and
-- replayed (storage-first), so nothing is lost.
-- squawk-ignore require-concurrent-index-creation
create index mensajes_inferred_from_idx on public.mensajes (session_id, from_wa_id)
    where from_me is null and direction = 'inbound';

-- ---------------------------------------------------------------------------
-- whatsapp_stale_reason
--   Arguments: p_mark         what the session remembers (state_order or
--                             qr_close_order)
--              p_event_at     the update's orchestrator time, or null
--              p_received_at  when API Gateway received the update
--   Returns:   null when no update behind p_mark is known to be newer; else
--              {update: {at, clock}, newer: {at, clock}}, the two times
--              compared and their clock ('orchestrator' or 'arrival').
--              Orchestrator times are compared to the second (X-Timestamp has
--              no finer grain); within one second the later arrival is newer.
--              An update without an orchestrator time is ordered by arrival,
--              and so is any update against one that had none.
-- ---------------------------------------------------------------------------

create function public.whatsapp_stale_reason(
    p_mark        public.whatsapp_order_mark,
    p_event_at    timestamptz,
    p_received_at timestamptz
) returns jsonb
language plpgsql
stable
set search_path = ''
as $$
declare
    v_update_second timestamptz := date_trunc('second', p_event_at);
    v_stored_second timestamptz := date_trunc('second', (p_mark).event_at);
begin
    if p_event_at is not null and v_update_second < v_stored_second then
        return public.whatsapp_compared(p_event_at, 'orchestrator', (p_mark).event_at, 'orchestrator');
    end if;
    if p_event_at is null and p_received_at < (p_mark).received_at then
        return public.whatsapp_compared(p_received_at, 'arrival', (p_mark).received_at, 'arrival');
    end if;
    if v_update_second = v_stored_second and p_received_at < (p_mark).event_received_at then
        return public.whatsapp_compared(p_received_at, 'arrival', (p_mark).event_received_at, 'arrival');
    end if;
    if p_event_at is not null and p_received_at < (p_mark).untimed_received_at then
        return public.whatsapp_compared(p_received_at, 'arrival', (p_mark).untimed_received_at, 'arrival');
    end if;
    return null;
end;
$$;

-- whatsapp_compared: the stale_because object (see whatsapp_stale_reason).
create function public.whatsapp_compared(
    p_update_at timestamptz, p_update_clock text, p_newer_at timestamptz, p_newer_clock text
) returns jsonb
language sql
immutable
set search_path = ''
as $$
    select jsonb_build_object(
        'update', jsonb_build_object('at', p_update_at, 'clock', p_update_clock),
        'newer',  jsonb_build_object('at', p_newer_at, 'clock', p_newer_clock)
    );
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_order_after
--   Arguments: p_mark, p_event_at, p_received_at as in whatsapp_stale_reason
--   Returns:   p_mark once the update is applied. An orchestrator time more
--              than 5 minutes ahead of the database's clock is applied but not
--              remembered (whatsapp_event_time_to_keep), so one wrong clock
--              cannot make every later update stale.
-- ---------------------------------------------------------------------------

create function public.whatsapp_order_after(
    p_mark        public.whatsapp_order_mark,
    p_event_at    timestamptz,
    p_received_at timestamptz
) returns public.whatsapp_order_mark
language sql
stable
set search_path = ''
as $$
    -- greatest() ignores nulls
    select row(
        greatest((p_mark).event_at, k.event_at),
        greatest((p_mark).received_at, p_received_at),
        case when p_event_at is null
             then greatest((p_mark).untimed_received_at, p_received_at)
             else (p_mark).untimed_received_at end,
        case when k.event_at is null then (p_mark).event_received_at
             when (p_mark).event_at is null
                  or date_trunc('second', k.event_at) > date_trunc('second', (p_mark).event_at) then p_received_at
             when date_trunc('second', k.event_at) = date_trunc('second', (p_mark).event_at)
                  then greatest((p_mark).event_received_at, p_received_at)
             else (p_mark).event_received_at end
    )::public.whatsapp_order_mark
      from (select public.whatsapp_event_time_to_keep(p_event_at, null) as event_at) k;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_repair_outbound
--   Arguments: p_session_id  a session, locked by the caller
--              p_own_wa_id   its own canonical number, just learned
--   Returns:   how many messages were repaired. Messages whose direction was
--              inferred (from_me null) and whose sender is p_own_wa_id were
--              stored inbound because they arrived before the session knew its
--              number: they become outbound, in the chat with their receiver;
--              the chat with the own number is deleted when left empty.
--   Concurrency: whatsapp_ingest_message holds FOR SHARE on the session while
--              it stores, and the caller holds FOR NO KEY UPDATE, so no message
--              of this session is being stored meanwhile.
-- ---------------------------------------------------------------------------

create function public.whatsapp_repair_outbound(p_session_id uuid, p_own_wa_id text)
returns integer
language plpgsql
set search_path = ''
as $$
declare
    v_repaired integer;
begin
    insert into public.contacts (wa_id, phone_number)
    select distinct m.to_wa_id, case when m.to_wa_id !~ '@' then '+' || m.to_wa_id end
      from public.mensajes m
     where m.session_id = p_session_id and m.from_wa_id = p_own_wa_id
       and m.from_me is null and m.direction = 'inbound' and m.to_wa_id is not null
    on conflict (wa_id) do nothing;

    insert into public.chats (session_id, contact_id)
    select distinct p_session_id, c.id
      from public.mensajes m
      join public.contacts c on c.wa_id = m.to_wa_id
     where m.session_id = p_session_id and m.from_wa_id = p_own_wa_id
       and m.from_me is null and m.direction = 'inbound'
    on conflict (session_id, contact_id) do nothing;

    with moved as (
        update public.mensajes m
           set direction  = 'outbound',
               contact_id = c.id,
               chat_id    = ch.id
          from public.contacts c
          join public.chats ch on ch.contact_id = c.id and ch.session_id = p_session_id
         where m.session_id = p_session_id and m.from_wa_id = p_own_wa_id
           and m.from_me is null and m.direction = 'inbound' and c.wa_id = m.to_wa_id
        returning m.chat_id, m.sent_at
    ), latest as (
        select chat_id, max(sent_at) as sent_at, count(*) as n from moved group by chat_id
    ), touched as (
        update public.chats ch
           set last_message_at = greatest(ch.last_message_at, latest.sent_at)
          from latest
         where ch.id = latest.chat_id
    )
    select coalesce(sum(n), 0) into v_repaired from latest;

    -- The chat "with itself" these messages were filed in, now empty.
    delete from public.chats ch
     using public.contacts c
     where ch.session_id = p_session_id and ch.contact_id = c.id and c.wa_id = p_own_wa_id
       and not exists (select from public.mensajes m where m.chat_id = ch.id);
    -- If it keeps messages (said to be from_me = false), its latest may have moved.
    update public.chats ch
       set last_message_at = (select max(m.sent_at) from public.mensajes m where m.chat_id = ch.id)
      from public.contacts c
     where ch.session_id = p_session_id and ch.contact_id = c.id and c.wa_id = p_own_wa_id;

    return v_repaired;
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_update_session_status
--   Arguments: p_session_id   the session to update
--              p_status       connected | disconnected | expired | pending
--              p_changes      object holding only the optional fields the
--                             orchestrator sent: last_seen, phone_number,
--                             whatsapp_user_id, own_wa_id, auth_folder_path,
--                             server_port (a JSON null clears server_port)
--              p_event_at     the orchestrator's time of the change, or null
--              p_received_at  when API Gateway received it (null: now)
--   Returns:   the session row as jsonb, plus "stale": false, or "stale": true
--              and "stale_because" (see whatsapp_stale_reason) when an update
--              already applied is known to be newer: then nothing is written,
--              except the session's own number when it had none (a fact, not
--              a state). Any status but pending clears the QR. Learning the
--              own number repairs the messages stored before it was known.
--   Errors:    PT404 when the session does not exist; 23514 / 22xxx when a
--              value breaks a check (bad status, port out of range)
-- ---------------------------------------------------------------------------

create function public.whatsapp_update_session_status(
    p_session_id  uuid,
    p_status      text,
    p_changes     jsonb default '{}',
    p_event_at    timestamptz default null,
    p_received_at timestamptz default null
) returns jsonb
language plpgsql
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
-- whatsapp_store_qr
--   Arguments: p_session_id    the session waiting for a scan
--              p_qr_code       base64 image or raw QR text
--              p_qr_url        optional URL of the QR image
--              p_generated_at  when the orchestrator generated it
--              p_received_at   when API Gateway received it (null: now)
--   Returns:   the session row as jsonb (status pending, QR kept) plus
--              "stale": false and "duplicate": false; "duplicate": true when
--              it is the QR already shown (nothing written); "stale": true and
--              "stale_because" when it is not newer than the last QR, or the
--              session connected, disconnected or expired after it was
--              generated (see whatsapp_stale_reason): nothing written. A
--              pending status never makes a QR stale.
--   Errors:    PT404 when the session does not exist
-- ---------------------------------------------------------------------------

create function public.whatsapp_store_qr(
    p_session_id   uuid,
    p_qr_code      text,
    p_qr_url       text,
    p_generated_at timestamptz,
    p_received_at  timestamptz default null
) returns jsonb
language plpgsql
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
           qr_code         = p_qr_code,
           qr_url          = p_qr_url,
           qr_generated_at = p_generated_at
     where s.id = p_session_id
    returning s.* into v_session;

    return to_jsonb(v_session) || '{"stale": false, "duplicate": false}';
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
--              p_from_me       sent from the linked phone (Baileys' fromMe);
--                              null: inferred, p_from = the session's number
--   Returns:   {message: <mensajes row>, contact_id, chat_id, duplicate}
--              duplicate is true when this message id was already stored for
--              this session: the stored row is returned and nothing is written.
--   Errors:    PT404 when the session does not exist; 23514 when a value
--              breaks a check (unknown message type)
--
--   Concurrency: contact, chat and message are each decided by a unique
--   constraint with INSERT ... ON CONFLICT DO NOTHING. When the insert loses a
--   race it waits for the winner to commit, and the following SELECT (a new
--   snapshot under READ COMMITTED) sees the winner's row. FOR SHARE on the
--   session: messages are stored in parallel, but not while the session's own
--   number changes (whatsapp_repair_outbound must see every stored message).
-- ---------------------------------------------------------------------------

create function public.whatsapp_ingest_message(
    p_session_id   uuid,
    p_message_id   text,
    p_from         text,
    p_to           text,
    p_message_type text,
    p_body         text,
    p_content      jsonb,
    p_sent_at      timestamptz,
    p_from_me      boolean default null
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
                                     direction, message_type, body, content, sent_at,
                                     from_wa_id, to_wa_id, from_me)
        values (v_chat_id, p_session_id, v_contact_id, p_message_id,
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
-- Access: as in the first migration, only the service role calls functions.
-- ---------------------------------------------------------------------------

revoke execute on function
    public.whatsapp_stale_reason(public.whatsapp_order_mark, timestamptz, timestamptz),
    public.whatsapp_compared(timestamptz, text, timestamptz, text),
    public.whatsapp_order_after(public.whatsapp_order_mark, timestamptz, timestamptz),
    public.whatsapp_repair_outbound(uuid, text),
    public.whatsapp_update_session_status(uuid, text, jsonb, timestamptz, timestamptz),
    public.whatsapp_store_qr(uuid, text, text, timestamptz, timestamptz),
    public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz, boolean)
    from public, anon, authenticated;
grant execute on function
    public.whatsapp_stale_reason(public.whatsapp_order_mark, timestamptz, timestamptz),
    public.whatsapp_compared(timestamptz, text, timestamptz, text),
    public.whatsapp_order_after(public.whatsapp_order_mark, timestamptz, timestamptz),
    public.whatsapp_repair_outbound(uuid, text),
    public.whatsapp_update_session_status(uuid, text, jsonb, timestamptz, timestamptz),
    public.whatsapp_store_qr(uuid, text, text, timestamptz, timestamptz),
    public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz, boolean)
    to service_role;
