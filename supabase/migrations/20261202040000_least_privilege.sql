-- The database login of the deployed functions can do only its job.
--
-- whatsapp_ingest (the functions' login; NOLOGIN here, docs/DEPLOY.md gives it
-- a password or a PostgREST JWT) may execute the ingest entry points and
-- nothing else: no table, no helper function. The entry points are SECURITY
-- DEFINER, owned by whatsapp_ingest_owner, a NOLOGIN role holding exactly the
-- table rights they need, with search_path pinned (''), so what the login can
-- do is what the functions do. The service role keeps its execute rights: an
-- existing deployment keeps working until it switches (docs/DEPLOY.md).

do $$
begin
    if not exists (select from pg_roles where rolname = 'whatsapp_ingest_owner') then
        create role whatsapp_ingest_owner nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'whatsapp_ingest') then
        create role whatsapp_ingest nologin noinherit;
    end if;
end;
$$;

-- Whoever runs the migrations must be able to hand the functions over.
grant whatsapp_ingest_owner to current_user;

grant usage on schema public to whatsapp_ingest_owner, whatsapp_ingest;

-- The owner: the rows the functions read and write. RLS applies to it (it owns
-- no table), so one policy per table lets it through.
grant select, insert, update, delete
    on public.whatsapp_sessions, public.contacts, public.chats, public.mensajes,
       public.whatsapp_pending_message_events
    to whatsapp_ingest_owner;
grant usage on sequence public.contacts_id_seq, public.chats_id_seq, public.mensajes_id_seq
    to whatsapp_ingest_owner;

create policy "the ingest functions' owner" on public.whatsapp_sessions
    for all to whatsapp_ingest_owner using (true) with check (true);
create policy "the ingest functions' owner" on public.contacts
    for all to whatsapp_ingest_owner using (true) with check (true);
create policy "the ingest functions' owner" on public.chats
    for all to whatsapp_ingest_owner using (true) with check (true);
create policy "the ingest functions' owner" on public.mensajes
    for all to whatsapp_ingest_owner using (true) with check (true);
create policy "the ingest functions' owner" on public.whatsapp_pending_message_events
    for all to whatsapp_ingest_owner using (true) with check (true);

grant execute on function
    public.whatsapp_lock_session(uuid),
    public.whatsapp_event_time_to_keep(timestamptz, timestamptz),
    public.whatsapp_stale_reason(public.whatsapp_order_mark, timestamptz, timestamptz),
    public.whatsapp_compared(timestamptz, text, timestamptz, text),
    public.whatsapp_order_after(public.whatsapp_order_mark, timestamptz, timestamptz),
    public.whatsapp_repair_outbound(uuid, text),
    public.whatsapp_batch_items(jsonb, text),
    public.whatsapp_status_rank(text),
    public.whatsapp_message_lock(uuid, text),
    public.whatsapp_apply_to_message(bigint, text, jsonb, timestamptz),
    public.whatsapp_apply_pending_message_events()
    to whatsapp_ingest_owner;

-- The entry points: owned by the owner, run with its rights. A new owner must
-- hold CREATE on the schema when a non-superuser (Supabase's postgres) hands a
-- function over; it is taken back below, once they are its.
grant create on schema public to whatsapp_ingest_owner;
alter function public.whatsapp_update_session_status(uuid, text, jsonb, timestamptz, timestamptz)
    owner to whatsapp_ingest_owner;
alter function public.whatsapp_update_session_status(uuid, text, jsonb, timestamptz, timestamptz)
    security definer;
alter function public.whatsapp_store_qr(uuid, text, text, timestamptz, timestamptz)
    owner to whatsapp_ingest_owner;
alter function public.whatsapp_store_qr(uuid, text, text, timestamptz, timestamptz)
    security definer;
alter function public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz, boolean, text)
    owner to whatsapp_ingest_owner;
alter function public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz, boolean, text)
    security definer;
alter function public.whatsapp_ingest_batch(uuid, jsonb)
    owner to whatsapp_ingest_owner;
alter function public.whatsapp_ingest_batch(uuid, jsonb)
    security definer;
alter function public.whatsapp_message_event(uuid, text, text, jsonb, timestamptz)
    owner to whatsapp_ingest_owner;
alter function public.whatsapp_message_event(uuid, text, text, jsonb, timestamptz)
    security definer;
alter function public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean)
    owner to whatsapp_ingest_owner;
alter function public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean)
    security definer;

revoke create on schema public from whatsapp_ingest_owner;

-- A new owner starts with the default EXECUTE for PUBLIC: take it back, then
-- grant the entry points to the login and to the service role only.
revoke execute on function
    public.whatsapp_update_session_status(uuid, text, jsonb, timestamptz, timestamptz),
    public.whatsapp_store_qr(uuid, text, text, timestamptz, timestamptz),
    public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz, boolean, text),
    public.whatsapp_ingest_batch(uuid, jsonb),
    public.whatsapp_message_event(uuid, text, text, jsonb, timestamptz),
    public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean)
    from public, anon, authenticated;
grant execute on function
    public.whatsapp_update_session_status(uuid, text, jsonb, timestamptz, timestamptz),
    public.whatsapp_store_qr(uuid, text, text, timestamptz, timestamptz),
    public.whatsapp_ingest_message(uuid, text, text, text, text, text, jsonb, timestamptz, boolean, text),
    public.whatsapp_ingest_batch(uuid, jsonb),
    public.whatsapp_message_event(uuid, text, text, jsonb, timestamptz),
    public.whatsapp_apply_gateway_events(text, text, jsonb, timestamptz, text, boolean)
    to whatsapp_ingest, service_role;
