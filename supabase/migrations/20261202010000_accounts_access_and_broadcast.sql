-- The CRM's users see their own WhatsApp data, live.
--
-- 1. Accounts: a session belongs to an account; contacts, chats and messages
--    are per account (the same phone in two accounts is two contacts), and
--    composite foreign keys make the database refuse a row that mixes two.
-- 2. Row-level access: a member of an account reads its sessions (not the
--    orchestrator's internals), contacts, chats and messages; nothing else.
--    Writes stay with the service role, through the ingest functions.
-- 3. Live: triggers broadcast compact events on the private topic
--    'account:<account_id>' (Supabase Realtime Broadcast from the database);
--    only members may join it. The tables leave the supabase_realtime
--    publication: Postgres Changes would publish columns members may not read.
-- 4. Contact names: the sender's WhatsApp display name (push name).
--
-- Existing data moves to one account named 'Default account' (README,
-- "Accounts"); whatsapp_move_session moves a session to another account.
--
-- The account columns are added, filled and constrained in this one
-- transaction, which locks the four tables throughout: a NOT VALID constraint
-- validated later would only open a window for rows that break it.
-- squawk-ignore-file adding-foreign-key-constraint, constraint-missing-not-valid, disallowed-unique-constraint

-- ---------------------------------------------------------------------------
-- Accounts
-- ---------------------------------------------------------------------------

create table public.accounts (
    id         uuid primary key default gen_random_uuid(),
    name       text not null,
    created_at timestamptz not null default now()
);

create table public.account_members (
    account_id uuid not null references public.accounts (id) on delete cascade,
    user_id    uuid not null references auth.users (id) on delete cascade,
    role       text not null default 'member' check (role in ('owner', 'admin', 'member')),
    created_at timestamptz not null default now(),
    primary key (account_id, user_id)
);

-- The membership lookup every policy makes goes by user.
create index account_members_user_id_idx on public.account_members (user_id);

-- Everything written before accounts existed belongs to one account.
insert into public.accounts (name)
select 'Default account'
 where exists (select from public.whatsapp_sessions) or exists (select from public.contacts);

alter table public.whatsapp_sessions add column account_id uuid references public.accounts (id);
alter table public.contacts add column account_id uuid references public.accounts (id);
alter table public.chats add column account_id uuid;
alter table public.mensajes add column account_id uuid;

update public.whatsapp_sessions set account_id = (select id from public.accounts where name = 'Default account');
update public.contacts set account_id = (select id from public.accounts where name = 'Default account');
update public.chats ch set account_id = s.account_id from public.whatsapp_sessions s where s.id = ch.session_id;
update public.mensajes m set account_id = ch.account_id from public.chats ch where ch.id = m.chat_id;

-- The tables were just filled in this transaction: nothing else can be writing.
-- squawk-ignore adding-not-nullable-field
alter table public.whatsapp_sessions alter column account_id set not null;
-- squawk-ignore adding-not-nullable-field
alter table public.contacts alter column account_id set not null;
-- squawk-ignore adding-not-nullable-field
alter table public.chats alter column account_id set not null;
-- squawk-ignore adding-not-nullable-field
alter table public.mensajes alter column account_id set not null;

-- One contact per WhatsApp id per account (replaces one per WhatsApp id).
-- squawk-ignore ban-drop-constraint
alter table public.contacts drop constraint contacts_wa_id_key;
alter table public.contacts add constraint contacts_account_wa_id_key unique (account_id, wa_id);

-- A chat, and each of its messages, belong to the account of both their session
-- and their contact. Deferrable: whatsapp_move_session changes all at once.
alter table public.whatsapp_sessions add constraint whatsapp_sessions_id_account_key unique (id, account_id);
alter table public.contacts add constraint contacts_id_account_key unique (id, account_id);
alter table public.chats add constraint chats_id_account_key unique (id, account_id);
alter table public.chats add constraint chats_session_account_fkey foreign key (session_id, account_id)
    references public.whatsapp_sessions (id, account_id) on update cascade deferrable;
alter table public.chats add constraint chats_contact_account_fkey foreign key (contact_id, account_id)
    references public.contacts (id, account_id) deferrable;
alter table public.mensajes add constraint mensajes_chat_account_fkey foreign key (chat_id, account_id)
    references public.chats (id, account_id) on update cascade deferrable;

-- Not CONCURRENTLY: migrations run in one transaction (supabase db push).
-- squawk-ignore require-concurrent-index-creation
create index whatsapp_sessions_account_id_idx on public.whatsapp_sessions (account_id);
-- squawk-ignore require-concurrent-index-creation
create index chats_account_id_last_message_at_idx on public.chats (account_id, last_message_at desc);
-- squawk-ignore require-concurrent-index-creation
create index mensajes_account_id_idx on public.mensajes (account_id);

-- ---------------------------------------------------------------------------
-- Contact names
-- ---------------------------------------------------------------------------

alter table public.contacts
    add column display_name    text,         -- the contact's WhatsApp push name, newest seen
    add column display_name_at timestamptz;  -- sent_at of the message that brought it

-- ---------------------------------------------------------------------------
-- crm_account_ids
--   Arguments: none; the caller is auth.uid() (from the request's JWT claims)
--   Returns:   the ids of the accounts the caller is a member of
--   Security:  SECURITY DEFINER so policies can read memberships without a
--              policy on account_members recursing into itself; search_path
--              pinned. Called as (select ...) in policies: once per query.
-- ---------------------------------------------------------------------------

create function public.crm_account_ids()
returns setof uuid
language sql
stable
security definer
set search_path = ''
as $$
    select m.account_id from public.account_members m where m.user_id = (select auth.uid());
$$;

-- ---------------------------------------------------------------------------
-- Row-level access for the CRM's users
-- ---------------------------------------------------------------------------

alter table public.accounts        enable row level security;
alter table public.account_members enable row level security;

revoke all on public.accounts, public.account_members from public, anon, authenticated;
grant select, insert, update, delete on public.accounts, public.account_members to service_role;
grant select on public.accounts, public.account_members, public.contacts, public.chats, public.mensajes
    to authenticated;
-- Sessions: not the orchestrator's internals (auth_folder_path, server_port,
-- own_wa_id, the ordering marks).
grant select (id, account_id, status, phone_number, whatsapp_user_id, last_seen, qr_code, qr_url,
              qr_generated_at, created_at, updated_at)
    on public.whatsapp_sessions to authenticated;

create policy "members read their accounts" on public.accounts
    for select to authenticated using (id in (select public.crm_account_ids()));
create policy "members read their accounts' members" on public.account_members
    for select to authenticated using (account_id in (select public.crm_account_ids()));
create policy "members read their accounts' sessions" on public.whatsapp_sessions
    for select to authenticated using (account_id in (select public.crm_account_ids()));
create policy "members read their accounts' contacts" on public.contacts
    for select to authenticated using (account_id in (select public.crm_account_ids()));
create policy "members read their accounts' chats" on public.chats
    for select to authenticated using (account_id in (select public.crm_account_ids()));
create policy "members read their accounts' messages" on public.mensajes
    for select to authenticated using (account_id in (select public.crm_account_ids()));

-- The CRM's chat list: each chat with its contact and last message, under the
-- caller's own rights (security_invoker), so the policies above apply.
create view public.whatsapp_chat_list with (security_invoker = true) as
select ch.id,
       ch.account_id,
       ch.session_id,
       ch.contact_id,
       c.wa_id,
       c.phone_number,
       c.display_name,
       ch.last_message_at,
       last.direction    as last_direction,
       last.message_type as last_message_type,
       last.preview      as last_preview
  from public.chats ch
  join public.contacts c on c.id = ch.contact_id
  left join lateral (
        select m.direction, m.message_type, left(m.body, 100) as preview
          from public.mensajes m
         where m.chat_id = ch.id
         order by m.sent_at desc, m.id desc
         limit 1
  ) last on true;

revoke all on public.whatsapp_chat_list from public, anon, authenticated;
grant select on public.whatsapp_chat_list to authenticated, service_role;

-- ---------------------------------------------------------------------------
-- Live: Broadcast from the database on the private topic 'account:<id>'
-- ---------------------------------------------------------------------------

-- Realtime authorizes a join by selecting from realtime.messages as the
-- joining user with realtime.topic() set: members may join their accounts.
create policy "members join their accounts' topics" on realtime.messages
    for select to authenticated
    using (
        realtime.messages.extension = 'broadcast'
        and (select realtime.topic()) in (select 'account:' || ids.account_id from public.crm_account_ids() as ids (account_id))
    );

-- whatsapp_broadcast_session (trigger)
--   Sends session_updated {id, status, qr_waiting, qr_generated_at, last_seen,
--   updated_at} when a session is created or something a CRM shows changed.
--   SECURITY DEFINER: the writer may not insert into realtime.messages itself.
create function public.whatsapp_broadcast_session()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform realtime.send(
        jsonb_build_object(
            'id',              new.id,
            'status',          new.status,
            'qr_waiting',      new.status = 'pending' and new.qr_code is not null,
            'qr_generated_at', new.qr_generated_at,
            'last_seen',       new.last_seen,
            'updated_at',      new.updated_at
        ),
        'session_updated',
        'account:' || new.account_id,
        true
    );
    return null;
end;
$$;

create trigger whatsapp_sessions_broadcast_insert
    after insert on public.whatsapp_sessions
    for each row execute function public.whatsapp_broadcast_session();
create trigger whatsapp_sessions_broadcast_update
    after update on public.whatsapp_sessions
    for each row
    when ((old.status, old.qr_code, old.qr_url, old.last_seen, old.phone_number, old.account_id)
          is distinct from
          (new.status, new.qr_code, new.qr_url, new.last_seen, new.phone_number, new.account_id))
    execute function public.whatsapp_broadcast_session();

-- whatsapp_broadcast_messages (statement trigger)
--   For each account a statement stored messages in: message_created with
--   {id, session_id, chat_id, contact_id, direction, message_type, preview (at
--   most 100 characters), sent_at} when it stored one, or messages_created
--   with {count, session_ids, chat_ids, latest_sent_at} when it stored several
--   (a history batch: one event, not thousands). Never the whole content or
--   media. A redelivery writes nothing, so it sends nothing.
create function public.whatsapp_broadcast_messages()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_account record;
begin
    for v_account in
        select n.account_id, count(*) as n, min(n.id) as first_id,
               jsonb_agg(distinct n.session_id) as session_ids, jsonb_agg(distinct n.chat_id) as chat_ids,
               max(n.sent_at) as latest_sent_at
          from stored n
         group by n.account_id
    loop
        if v_account.n = 1 then
            perform realtime.send(public.whatsapp_message_payload(m), 'message_created',
                                  'account:' || v_account.account_id, true)
               from stored m
              where m.id = v_account.first_id;
        else
            perform realtime.send(
                jsonb_build_object('count', v_account.n, 'session_ids', v_account.session_ids,
                                   'chat_ids', v_account.chat_ids, 'latest_sent_at', v_account.latest_sent_at),
                'messages_created',
                'account:' || v_account.account_id,
                true
            );
        end if;
    end loop;
    return null;
end;
$$;

-- whatsapp_message_payload: the broadcast payload of one message (see above).
create function public.whatsapp_message_payload(p_message public.mensajes)
returns jsonb
language sql
immutable
set search_path = ''
as $$
    select jsonb_build_object(
        'id',           p_message.id,
        'session_id',   p_message.session_id,
        'chat_id',      p_message.chat_id,
        'contact_id',   p_message.contact_id,
        'direction',    p_message.direction,
        'message_type', p_message.message_type,
        'preview',      left(p_message.body, 100),
        'sent_at',      p_message.sent_at
    );
$$;

-- whatsapp_broadcast_message_update (trigger): message_updated when a message's
-- direction, contact or chat is repaired (see whatsapp_repair_outbound).
create function public.whatsapp_broadcast_message_update()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform realtime.send(public.whatsapp_message_payload(new), 'message_updated', 'account:' || new.account_id, true);
    return null;
end;
$$;

create trigger mensajes_broadcast_insert
    after insert on public.mensajes
    referencing new table as stored
    for each statement execute function public.whatsapp_broadcast_messages();
create trigger mensajes_broadcast_update
    after update of direction, contact_id, chat_id on public.mensajes
    for each row execute function public.whatsapp_broadcast_message_update();

-- Postgres Changes would send whole rows, auth_folder_path included, past the
-- column privileges above: Broadcast replaces it.
alter publication supabase_realtime drop table public.whatsapp_sessions, public.mensajes;

-- ---------------------------------------------------------------------------
-- whatsapp_move_session
--   Arguments: p_session_id  a session
--              p_account_id  the account it now belongs to
--   Returns:   {session_id, account_id, chats, messages}: how many moved
--   Effect:    the session, its chats and messages move; each chat's contact is
--              found or created in the new account (the old one stays with the
--              old account's other sessions). One transaction.
--   Errors:    PT404 when the session does not exist; 23503 when the account
--              does not exist
-- ---------------------------------------------------------------------------

create function public.whatsapp_move_session(p_session_id uuid, p_account_id uuid)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
    v_chats    integer;
    v_messages integer;
begin
    perform public.whatsapp_lock_session(p_session_id);
    set constraints public.chats_session_account_fkey, public.chats_contact_account_fkey,
                    public.mensajes_chat_account_fkey deferred;

    insert into public.contacts (account_id, wa_id, phone_number, display_name, display_name_at)
    select p_account_id, c.wa_id, c.phone_number, c.display_name, c.display_name_at
      from public.chats ch
      join public.contacts c on c.id = ch.contact_id
     where ch.session_id = p_session_id
     order by c.wa_id  -- key order, as the batch path: racing inserts cannot deadlock
    on conflict (account_id, wa_id) do nothing;

    -- Cascades to the session's chats and, through them, their messages.
    update public.whatsapp_sessions s set account_id = p_account_id where s.id = p_session_id;

    with moved as (
        update public.chats ch
           set contact_id = target.id
          from public.contacts old, public.contacts target
         where ch.session_id = p_session_id and old.id = ch.contact_id
           and target.account_id = p_account_id and target.wa_id = old.wa_id
        returning ch.id
    )
    select count(*) into v_chats from moved;

    update public.mensajes m
       set contact_id = ch.contact_id
      from public.chats ch
     where ch.id = m.chat_id and m.session_id = p_session_id;
    get diagnostics v_messages = row_count;

    return jsonb_build_object('session_id', p_session_id, 'account_id', p_account_id,
                              'chats', v_chats, 'messages', v_messages);
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_repair_outbound: as before (20261202000000), with contacts per account
-- ---------------------------------------------------------------------------

create or replace function public.whatsapp_repair_outbound(p_session_id uuid, p_own_wa_id text)
returns integer
language plpgsql
set search_path = ''
as $$
declare
    v_account_id uuid;
    v_repaired   integer;
begin
    select s.account_id into strict v_account_id from public.whatsapp_sessions s where s.id = p_session_id;

    insert into public.contacts (account_id, wa_id, phone_number)
    select distinct v_account_id, m.to_wa_id, case when m.to_wa_id !~ '@' then '+' || m.to_wa_id end
      from public.mensajes m
     where m.session_id = p_session_id and m.from_wa_id = p_own_wa_id
       and m.from_me is null and m.direction = 'inbound' and m.to_wa_id is not null
     order by 2  -- key order, as the batch path: racing inserts cannot deadlock
    on conflict (account_id, wa_id) do nothing;

    insert into public.chats (account_id, session_id, contact_id)
    select distinct v_account_id, p_session_id, c.id
      from public.mensajes m
      join public.contacts c on c.account_id = v_account_id and c.wa_id = m.to_wa_id
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
           and m.from_me is null and m.direction = 'inbound'
           and c.account_id = v_account_id and c.wa_id = m.to_wa_id
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
-- whatsapp_ingest_message: as before (20261202000000), per account, and with
--   p_push_name  the sender's WhatsApp display name, or null. Kept on the
--                contact of an inbound message when not empty and not older
--                than the name it has (a name is replaced only by a different
--                one from a message sent at the same time or later); never
--                from an outbound message, whose push name is the owner's.
-- ---------------------------------------------------------------------------

-- squawk-ignore ban-drop-function
drop function public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz, boolean);

create function public.whatsapp_ingest_message(
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
                   and (c.display_name_at is null or c.display_name_at <= p_sent_at);
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
-- Access to the functions
-- ---------------------------------------------------------------------------

revoke execute on function
    public.whatsapp_broadcast_session(),
    public.whatsapp_broadcast_messages(),
    public.whatsapp_broadcast_message_update(),
    public.whatsapp_message_payload(public.mensajes),
    public.whatsapp_move_session(uuid, uuid),
    public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz, boolean, text)
    from public, anon, authenticated;
grant execute on function
    public.whatsapp_move_session(uuid, uuid),
    public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz, boolean, text)
    to service_role;
-- Policies run it as the querying user.
revoke execute on function public.crm_account_ids() from public, anon;
grant execute on function public.crm_account_ids() to authenticated, service_role;
