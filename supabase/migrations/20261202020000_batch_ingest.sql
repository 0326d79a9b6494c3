-- History sync at bulk speed: one call stores a whole batch of messages of one
-- session, set-based (INSERT ... SELECT ... ON CONFLICT over the batch), with
-- the guarantees of whatsapp_ingest_message: a message id is stored once per
-- session (within the batch, across batches and the single path), racing
-- batches and singles make one contact and one chat, outbound detection,
-- chats' last_message_at, push names.

-- ---------------------------------------------------------------------------
-- whatsapp_batch_items
--   Arguments: p_messages   jsonb array of {i, message_id, from, to, type,
--                           body, content, sent_at, from_me, push_name}, as
--                           the service builds it from validated items
--              p_own_wa_id  the session's own number, or null
--   Returns:   one row per item, with its direction decided as in
--              whatsapp_ingest_message and the other party (peer)
-- ---------------------------------------------------------------------------

create function public.whatsapp_batch_items(p_messages jsonb, p_own_wa_id text)
returns table (
    i            integer,
    message_id   text,
    from_wa_id   text,
    to_wa_id     text,
    message_type text,
    body         text,
    content      jsonb,
    sent_at      timestamptz,
    from_me      boolean,
    push_name    text,
    outbound     boolean,
    peer         text
)
language sql
stable
set search_path = ''
as $$
    select x.i, x.message_id, x."from", x."to", x.type, x.body, x.content, x.sent_at, x.from_me,
           nullif(btrim(x.push_name), ''),
           d.outbound,
           case when d.outbound then x."to" else x."from" end
      from jsonb_to_recordset(p_messages) as x (
               i integer, message_id text, "from" text, "to" text, type text, body text,
               content jsonb, sent_at timestamptz, from_me boolean, push_name text)
     cross join lateral (select coalesce(x.from_me, x."from" = p_own_wa_id, false) as outbound) d;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_ingest_batch
--   Arguments: p_session_id  the session that saw the messages
--              p_messages    the items (see whatsapp_batch_items)
--   Returns:   {stored, duplicates}: messages written, and items whose
--              message id was already stored (or repeated in the batch)
--   Errors:    PT404 when the session does not exist; 23514 when a value
--              breaks a check (the whole batch is refused: items are
--              validated before they get here)
--
--   Concurrency: each step is one statement over the whole batch, so each sees
--   what racing transactions committed before it (READ COMMITTED), as the
--   single path does. Rows are inserted and locked in key order, so racing
--   batches cannot deadlock on each other's uncommitted contacts, chats or
--   messages. FOR SHARE on the session, as whatsapp_ingest_message.
-- ---------------------------------------------------------------------------

create function public.whatsapp_ingest_batch(p_session_id uuid, p_messages jsonb)
returns jsonb
language plpgsql
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
        returning chat_id, sent_at
    ), per_chat as (
        select f.chat_id, count(*) as n, max(f.sent_at) as latest from fresh f group by f.chat_id
    )
    select coalesce(sum(n), 0), coalesce(jsonb_object_agg(chat_id, latest), '{}')
      into v_stored, v_latest
      from per_chat;

    -- Each chat's latest message time, locked in id order (racing batches).
    with latest as (
        select key::bigint as chat_id, value #>> '{}' as sent_at from jsonb_each(v_latest)
    ), locked as (
        select ch.id, latest.sent_at::timestamptz as sent_at
          from public.chats ch
          join latest on latest.chat_id = ch.id
         where ch.last_message_at is distinct from greatest(ch.last_message_at, latest.sent_at::timestamptz)
         order by ch.id
           for no key update of ch
    )
    update public.chats ch
       set last_message_at = greatest(ch.last_message_at, locked.sent_at)
      from locked
     where ch.id = locked.id;

    return jsonb_build_object('stored', v_stored, 'duplicates', v_items - v_stored);
end;
$$;

revoke execute on function
    public.whatsapp_batch_items(jsonb, text),
    public.whatsapp_ingest_batch(uuid, jsonb)
    from public, anon, authenticated;
grant execute on function
    public.whatsapp_batch_items(jsonb, text),
    public.whatsapp_ingest_batch(uuid, jsonb)
    to service_role;
