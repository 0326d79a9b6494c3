-- What a Supabase project already has and plain Postgres lacks, so that the
-- migrations run unchanged on an embedded Postgres (local runs and tests).
-- Idempotent: applied before the migrations on every start.
do $$
begin
    if not exists (select from pg_roles where rolname = 'anon') then
        create role anon nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'authenticated') then
        create role authenticated nologin noinherit;
    end if;
    if not exists (select from pg_roles where rolname = 'service_role') then
        create role service_role nologin noinherit bypassrls;
    end if;
    if not exists (select from pg_publication where pubname = 'supabase_realtime') then
        create publication supabase_realtime;
    end if;
end;
$$;

grant usage on schema public to anon, authenticated, service_role;

-- Supabase's default privileges: every new table and function in public is
-- granted to the API roles. The migrations must revoke what they do not want.
-- Set once, when the project is new (no migration recorded yet), as Supabase
-- does: on a later start they would undo what a migration revoked.
do $$
begin
    if to_regclass('supabase_migrations.schema_migrations') is null then
        alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
        alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
        alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;
    end if;
end;
$$;

-- ---------------------------------------------------------------------------
-- auth: the parts of Supabase Auth the migrations and policies use, in the
-- shape and signatures Supabase defines them (auth.users is much wider there).
-- ---------------------------------------------------------------------------

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create table if not exists auth.users (
    id                 uuid primary key,
    email              text,
    raw_user_meta_data jsonb,
    created_at         timestamptz default now(),
    updated_at         timestamptz default now()
);

-- The caller's user id, from the JWT claims PostgREST (and Realtime) set per request.
create or replace function auth.uid() returns uuid
language sql stable
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

create or replace function auth.role() returns text
language sql stable
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;

create or replace function auth.jwt() returns jsonb
language sql stable
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

-- ---------------------------------------------------------------------------
-- API roles' statement timeouts, as Supabase sets them (supabase/postgres:
-- migrations/db/init-scripts/00000000000000-initial-schema.sql, anon 3s and
-- authenticated 8s; migrations/db/migrations/20221028101028_set_authenticator_timeout.sql,
-- authenticator 8s). A role's setting applies when a session logs in as it or, as PostgREST does
-- with the role it impersonates (and tests/postgrest_standin.py likewise), when a
-- request takes the role: so a slow policy or an oversized call fails here as there.
-- authenticator is PostgREST's login, which switches to the API roles.
-- ---------------------------------------------------------------------------

do $$
begin
    if not exists (select from pg_roles where rolname = 'authenticator') then
        create role authenticator login noinherit;
    end if;
end;
$$;
grant anon, authenticated, service_role to authenticator;
alter role anon set statement_timeout = '3s';
alter role authenticated set statement_timeout = '8s';
alter role authenticator set statement_timeout = '8s';

-- ---------------------------------------------------------------------------
-- realtime: Broadcast from the database, as Supabase Realtime defines it
-- (supabase/realtime, lib/realtime/tenants/repo/migrations/):
-- realtime.messages partitioned by day on inserted_at (20241030150047, with the
-- uuid id of 20241108114728), its partitions made for yesterday to three days
-- ahead, as the Realtime server does every day (Realtime.Tenants
-- .create_messages_partitions: here on every start), its grants
-- (20231204144023, 20241030150047), and realtime.send adding an `id` to a payload
-- without one (20251103001201, 20260605120000). One addition: realtime.send also
-- notifies channel 'realtime' so the local console (make run) can relay the
-- events as they are sent. docs/frontend.md, "What still differs locally".
-- ---------------------------------------------------------------------------

create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

-- An older local database's realtime.messages (one plain table) is replaced by
-- the partitioned one, keeping its policies, as 20241030150047 does on Supabase.
do $$
begin
    if exists (select from pg_class where oid = to_regclass('realtime.messages') and relkind = 'r') then
        alter table realtime.messages rename to messages_unpartitioned;
    end if;
end;
$$;

create table if not exists realtime.messages (
    topic       text not null,
    extension   text not null,
    payload     jsonb,
    event       text,
    private     boolean default false,
    updated_at  timestamp not null default now(),
    inserted_at timestamp not null default now(),
    id          uuid not null default gen_random_uuid(),
    primary key (id, inserted_at)
) partition by range (inserted_at);
alter table realtime.messages enable row level security;
grant select, insert, update on realtime.messages to anon, authenticated, service_role;

do $$
declare
    rec record;
begin
    if to_regclass('realtime.messages_unpartitioned') is not null then
        for rec in select * from pg_policies where schemaname = 'realtime' and tablename = 'messages_unpartitioned'
        loop
            execute format(
                'create policy %I on realtime.messages as %s for %s to %s%s%s',
                rec.policyname, rec.permissive, rec.cmd,
                (select string_agg(quote_ident(r), ', ') from unnest(rec.roles) r),
                case when rec.qual is not null then ' using (' || rec.qual || ')' else '' end,
                case when rec.with_check is not null then ' with check (' || rec.with_check || ')' else '' end
            );
        end loop;
        drop table realtime.messages_unpartitioned;
    end if;
end;
$$;

-- The day partitions Realtime keeps: yesterday, today and three days ahead (UTC).
do $$
declare
    day date;
begin
    for day in
        select generate_series(
            (now() at time zone 'utc')::date - 1, (now() at time zone 'utc')::date + 3, interval '1 day'
        )::date
    loop
        execute format(
            'create table if not exists realtime.%I partition of realtime.messages for values from (%L) to (%L)',
            'messages_' || to_char(day, 'YYYY_MM_DD'), day, day + 1
        );
    end loop;
end;
$$;

-- The topic a Realtime client is joining, set by Realtime while it authorizes the join.
create or replace function realtime.topic() returns text
language sql stable
as $$
    select nullif(current_setting('realtime.topic', true), '')::text;
$$;

-- Supabase's realtime.send (20260605120000_rename_broadcast_send_warning), plus
-- the pg_notify for the local console.
create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql
as $$
declare
    generated_id uuid;
    final_payload jsonb;
begin
    begin
        generated_id := gen_random_uuid();
        -- A payload without an 'id' key gets the message's generated id.
        if payload ? 'id' then
            final_payload := payload;
        else
            final_payload := jsonb_set(payload, '{id}', to_jsonb(generated_id));
        end if;
        execute format('SET LOCAL realtime.topic TO %L', topic);
        insert into realtime.messages (id, payload, event, topic, private, extension)
        values (generated_id, final_payload, event, topic, private, 'broadcast');
        perform pg_notify('realtime', jsonb_build_object(
            'topic', topic, 'event', event, 'payload', final_payload, 'private', private)::text);
    exception
        when others then
            -- As on Supabase: a broadcast that fails never fails the write that sent it.
            raise warning 'WarnSendingBroadcastMessage: %', sqlerrm;
    end;
end;
$$;
grant execute on all functions in schema realtime to anon, authenticated, service_role;

-- ---------------------------------------------------------------------------
-- storage: the tables Supabase Storage keeps its buckets and objects in, and
-- storage.foldername, in the shape Supabase defines them (storage.objects has
-- more columns there). Policies on
-- storage.objects decide who may read an object (and sign a URL for it).
-- ---------------------------------------------------------------------------

create schema if not exists storage;
grant usage on schema storage to anon, authenticated, service_role;

create table if not exists storage.buckets (
    id         text primary key,
    name       text not null,
    owner      uuid,
    public     boolean default false,
    created_at timestamptz default now(),
    updated_at timestamptz default now()
);

create table if not exists storage.objects (
    id         uuid primary key default gen_random_uuid(),
    bucket_id  text references storage.buckets (id),
    name       text,
    owner      uuid,
    metadata   jsonb,
    created_at timestamptz default now(),
    updated_at timestamptz default now(),
    unique (bucket_id, name)
);
alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
grant all on storage.buckets, storage.objects to anon, authenticated, service_role;

-- The folders of an object name: 'a/b/c.jpg' -> {a,b}.
create or replace function storage.foldername(name text) returns text[]
language plpgsql immutable
as $$
declare
    _parts text[];
begin
    select string_to_array(name, '/') into _parts;
    return _parts[1:array_length(_parts, 1) - 1];
end
$$;
