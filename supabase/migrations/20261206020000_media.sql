-- Media: every photo, voice note, video, document and sticker is fetched and
-- kept in Supabase Storage (bucket whatsapp-media, key <account_id>/...).
--
-- 1. mensajes gains media_* columns. A BEFORE INSERT trigger marks each media
--    message 'pending' in the statement that stores it, so the ingest functions
--    are unchanged and their round trip costs what it cost (docs/media.md).
-- 2. The database is the queue of record: whatsapp_media_dispatch hands out
--    pending messages never queued (or queued long ago without an outcome) for
--    the dispatcher to send to SQS; whatsapp_media_claim gives one message to
--    one media worker under a lease; whatsapp_media_finish records the outcome
--    only for the lease holder, so a stored object is never replaced.
-- 3. A change of media_status broadcasts message_updated with the media fields.
-- 4. A storage.objects policy lets an account's members read its folder.

-- ---------------------------------------------------------------------------
-- Columns
-- ---------------------------------------------------------------------------

alter table public.mensajes
    add column media_status      text,         -- pending, stored, failed, unavailable, too_large; null: no media
    add column media_path        text,         -- object key in bucket whatsapp-media
    add column media_mime_type   text,
    add column media_size        bigint,       -- bytes of the stored plaintext
    add column media_sha256      text,         -- hex SHA-256 of the stored plaintext
    add column media_error       text,         -- a short reason, never a secret
    add column media_attempts    integer,      -- claims so far
    add column media_queued_at   timestamptz,  -- last handed to the queue
    add column media_lease       uuid,         -- the worker holding the message
    add column media_lease_until timestamptz;

-- New, empty columns: every existing row satisfies the checks.
-- squawk-ignore constraint-missing-not-valid
alter table public.mensajes add constraint mensajes_media_status_check
    check (media_status in ('pending', 'stored', 'failed', 'unavailable', 'too_large'));
-- squawk-ignore constraint-missing-not-valid
alter table public.mensajes add constraint mensajes_media_sha256_check
    check (media_sha256 ~ '^[0-9a-f]{64}$');

comment on column public.mensajes.media_status is
    'pending, stored, failed, unavailable or too_large; null for a message without media.';
comment on column public.mensajes.media_path is
    'Object key in the private Storage bucket whatsapp-media; starts with the account id.';

-- Media stored before this migration were never fetched (their keys were not
-- kept): they are marked unavailable, not queued.
update public.mensajes
   set media_status = 'unavailable',
       media_error  = 'received before media were stored'
 where message_type in ('image', 'video', 'audio', 'document', 'sticker');

-- The dispatcher's scan: only pending rows, a few at any time.
-- squawk-ignore require-concurrent-index-creation
create index mensajes_media_pending_idx on public.mensajes (media_queued_at nulls first, id)
    where media_status = 'pending';

-- Members read the new columns as they read the others (table-wide select).
-- The queue's internals are theirs to see too, but say nothing secret.

-- ---------------------------------------------------------------------------
-- whatsapp_media_mark_pending (trigger, BEFORE INSERT on mensajes)
--   A media message is stored 'pending': the media function fetches it.
-- ---------------------------------------------------------------------------

create function public.whatsapp_media_mark_pending()
returns trigger
language plpgsql
set search_path = ''
as $$
begin
    if new.message_type in ('image', 'video', 'audio', 'document', 'sticker') then
        new.media_status := 'pending';
    end if;
    return new;
end;
$$;

create trigger mensajes_media_pending
    before insert on public.mensajes
    for each row execute function public.whatsapp_media_mark_pending();

-- ---------------------------------------------------------------------------
-- whatsapp_broadcast_media_update (trigger, AFTER UPDATE OF media_status)
--   Sends message_updated with the message's payload plus media_status,
--   media_path, media_mime_type, media_size and media_error.
-- ---------------------------------------------------------------------------

create function public.whatsapp_broadcast_media_update()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    perform realtime.send(
        public.whatsapp_message_payload(new) || jsonb_build_object(
            'media_status',    new.media_status,
            'media_path',      new.media_path,
            'media_mime_type', new.media_mime_type,
            'media_size',      new.media_size,
            'media_error',     new.media_error
        ),
        'message_updated',
        'account:' || new.account_id,
        true
    );
    return null;
end;
$$;

create trigger mensajes_broadcast_media
    after update of media_status on public.mensajes
    for each row
    when (old.media_status is distinct from new.media_status)
    execute function public.whatsapp_broadcast_media_update();

-- ---------------------------------------------------------------------------
-- whatsapp_media_dispatch
--   Arguments: p_limit          the most messages to hand out (1-1000)
--              p_requeue_after  seconds after which a message queued without
--                               an outcome is handed out again (the queue
--                               lost it, or its worker died)
--   Returns:   {ids: [mensajes ids, now marked queued]}
--   Errors:    22023 when an argument is out of range
--   Rows handed out concurrently are skipped (skip locked): two dispatchers
--   never send the same message in the same round.
-- ---------------------------------------------------------------------------

create function public.whatsapp_media_dispatch(p_limit integer, p_requeue_after integer)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
    v_ids jsonb;
begin
    if p_limit is null or p_limit not between 1 and 1000 or p_requeue_after is null or p_requeue_after < 1 then
        raise exception 'p_limit must be 1-1000 and p_requeue_after at least 1 second' using errcode = '22023';
    end if;
    with picked as (
        select m.id
          from public.mensajes m
         where m.media_status = 'pending'
           and (m.media_queued_at is null or m.media_queued_at < now() - make_interval(secs => p_requeue_after))
           and (m.media_lease_until is null or m.media_lease_until < now())
         order by m.media_queued_at nulls first, m.id
         limit p_limit
           for update skip locked
    ), queued as (
        update public.mensajes m
           set media_queued_at = now()
          from picked
         where m.id = picked.id
        returning m.id
    )
    select coalesce(jsonb_agg(q.id order by q.id), '[]'::jsonb) into v_ids from queued q;
    return jsonb_build_object('ids', v_ids);
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_media_claim
--   Arguments: p_id     a mensajes id, from a queued job
--              p_lease  seconds the caller may work on it
--   Returns:   {id, account_id, session_id, whatsapp_message_id, message_type,
--              content, gateway, gateway_instance, attempts, lease} when the
--              message is pending and no live lease holds it; {} otherwise
--              (already stored or failed, or another worker has it): the job
--              is then done, and nothing is downloaded again.
--   Errors:    22023 when p_lease is not 1-3600
-- ---------------------------------------------------------------------------

create function public.whatsapp_media_claim(p_id bigint, p_lease integer)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
    v_job jsonb;
begin
    if p_lease is null or p_lease not between 1 and 3600 then
        raise exception 'p_lease must be 1-3600 seconds' using errcode = '22023';
    end if;
    update public.mensajes m
       set media_lease       = gen_random_uuid(),
           media_lease_until = now() + make_interval(secs => p_lease),
           media_attempts    = coalesce(m.media_attempts, 0) + 1
     where m.id = p_id
       and m.media_status = 'pending'
       and (m.media_lease_until is null or m.media_lease_until < now())
    returning jsonb_build_object(
        'id', m.id, 'account_id', m.account_id, 'session_id', m.session_id,
        'whatsapp_message_id', m.whatsapp_message_id, 'message_type', m.message_type,
        'content', m.content, 'attempts', m.media_attempts, 'lease', m.media_lease,
        'gateway', (select s.gateway from public.whatsapp_sessions s where s.id = m.session_id),
        'gateway_instance', (select s.gateway_instance from public.whatsapp_sessions s where s.id = m.session_id)
    ) into v_job;
    return coalesce(v_job, '{}'::jsonb);
end;
$$;

-- ---------------------------------------------------------------------------
-- whatsapp_media_finish
--   Arguments: p_id      a mensajes id
--              p_lease   the lease whatsapp_media_claim returned
--              p_status  stored, failed, unavailable or too_large; or pending
--                        to give the message back after a transient failure
--                        (it is retried by the queue, or dispatched again)
--              p_media   {path, mime_type, size, sha256} when stored, else {}
--              p_error   a short reason (failures and retries), else null
--   Returns:   {recorded: true}; {recorded: false} when the lease is no longer
--              the caller's (another worker took over): the caller deletes what
--              it uploaded, so the recorded object is the only one
--   Errors:    22023 for another status, or stored without path/size/sha256
--   Storing drops the inline base64 (content.<type>.data): the bytes now live
--   in Storage.
-- ---------------------------------------------------------------------------

create function public.whatsapp_media_finish(p_id bigint, p_lease uuid, p_status text, p_media jsonb, p_error text)
returns jsonb
language plpgsql
set search_path = ''
as $$
declare
    v_found boolean;
begin
    if p_status is null or p_status not in ('pending', 'stored', 'failed', 'unavailable', 'too_large') then
        raise exception 'p_status must be pending, stored, failed, unavailable or too_large' using errcode = '22023';
    end if;
    if p_status = 'stored' and (p_media ->> 'path' is null or p_media ->> 'size' is null
                                or p_media ->> 'sha256' is null) then
        raise exception 'a stored medium needs path, size and sha256' using errcode = '22023';
    end if;
    update public.mensajes m
       set media_status      = p_status,
           media_path        = case when p_status = 'stored' then p_media ->> 'path' end,
           media_mime_type   = case when p_status = 'stored' then p_media ->> 'mime_type' end,
           media_size        = case when p_status = 'stored' then (p_media ->> 'size')::bigint end,
           media_sha256      = case when p_status = 'stored' then p_media ->> 'sha256' end,
           media_error       = left(p_error, 200),
           media_lease       = null,
           media_lease_until = null,
           content           = case when p_status = 'stored' then m.content #- array[m.message_type, 'data']
                                    else m.content end
     where m.id = p_id
       and m.media_status = 'pending'
       and m.media_lease = p_lease
    returning true into v_found;
    return jsonb_build_object('recorded', coalesce(v_found, false));
end;
$$;

-- ---------------------------------------------------------------------------
-- Least privilege (as in 20261202040000_least_privilege.sql): the entry points
-- run as whatsapp_ingest_owner; the login and the service role execute them.
-- ---------------------------------------------------------------------------

grant create on schema public to whatsapp_ingest_owner;
alter function public.whatsapp_media_dispatch(integer, integer) owner to whatsapp_ingest_owner;
alter function public.whatsapp_media_dispatch(integer, integer) security definer;
alter function public.whatsapp_media_claim(bigint, integer) owner to whatsapp_ingest_owner;
alter function public.whatsapp_media_claim(bigint, integer) security definer;
alter function public.whatsapp_media_finish(bigint, uuid, text, jsonb, text) owner to whatsapp_ingest_owner;
alter function public.whatsapp_media_finish(bigint, uuid, text, jsonb, text) security definer;
revoke create on schema public from whatsapp_ingest_owner;

revoke execute on function
    public.whatsapp_media_dispatch(integer, integer),
    public.whatsapp_media_claim(bigint, integer),
    public.whatsapp_media_finish(bigint, uuid, text, jsonb, text),
    public.whatsapp_media_mark_pending(),
    public.whatsapp_broadcast_media_update()
    from public, anon, authenticated;
grant execute on function
    public.whatsapp_media_dispatch(integer, integer),
    public.whatsapp_media_claim(bigint, integer),
    public.whatsapp_media_finish(bigint, uuid, text, jsonb, text)
    to whatsapp_ingest, service_role;
-- The ingest functions' owner inserts messages, which runs the trigger.
grant execute on function public.whatsapp_media_mark_pending() to whatsapp_ingest_owner;

-- ---------------------------------------------------------------------------
-- Storage: the private bucket, and who may read it
-- ---------------------------------------------------------------------------

insert into storage.buckets (id, name, public)
values ('whatsapp-media', 'whatsapp-media', false)
on conflict (id) do nothing;

-- An account's members read (and so sign URLs for) the objects under
-- <account_id>/ and nothing else; only the media function writes, with the
-- S3 keys, which bypass these policies.
create policy "members read their accounts' media" on storage.objects
    for select to authenticated
    using (
        bucket_id = 'whatsapp-media'
        and (storage.foldername(name))[1] in (select ids.account_id::text
                                                from public.crm_account_ids() as ids (account_id))
    );
