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
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;

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
-- realtime: Broadcast from the database. Supabase's realtime.messages is
-- partitioned by day and read by the Realtime server; here it is one table,
-- and realtime.send also notifies channel 'realtime' so the local console
-- (make run) can relay the events as they are sent.
-- ---------------------------------------------------------------------------

create schema if not exists realtime;
grant usage on schema realtime to anon, authenticated, service_role;

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
);
alter table realtime.messages enable row level security;
grant select, insert on realtime.messages to anon, authenticated;
grant all on realtime.messages to service_role;

-- The topic a Realtime client is joining, set by Realtime while it authorizes the join.
create or replace function realtime.topic() returns text
language sql stable
as $$
    select nullif(current_setting('realtime.topic', true), '')::text;
$$;

create or replace function realtime.send(payload jsonb, event text, topic text, private boolean default true)
returns void
language plpgsql
as $$
begin
    begin
        perform set_config('realtime.topic', topic, true);
        insert into realtime.messages (payload, event, topic, private, extension)
        values (payload, event, topic, private, 'broadcast');
        perform pg_notify('realtime', jsonb_build_object(
            'topic', topic, 'event', event, 'payload', payload, 'private', private)::text);
    exception
        when others then
            -- As on Supabase: a broadcast that fails never fails the write that sent it.
            raise warning 'ErrorSendingBroadcastMessage: %', sqlerrm;
    end;
end;
$$;

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
