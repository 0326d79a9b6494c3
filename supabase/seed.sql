-- Demo data for local runs (`make run`), the tests and `supabase db reset`: two
-- accounts with one session and one member each, with fixed ids, so the
-- README's examples can show that each member sees only their own account.
-- The CRM creates accounts, members and sessions; the orchestrator only
-- updates sessions.

insert into auth.users (id, email)
values ('a1a1a1a1-0000-4000-8000-00000000000a', 'ana@account-a.example'),
       ('b2b2b2b2-0000-4000-8000-00000000000b', 'beto@account-b.example')
on conflict (id) do nothing;

insert into public.accounts (id, name)
values ('0a0a0a0a-0000-4000-8000-0000000000a0', 'Account A'),
       ('0b0b0b0b-0000-4000-8000-0000000000b0', 'Account B')
on conflict (id) do nothing;

insert into public.account_members (account_id, user_id, role)
values ('0a0a0a0a-0000-4000-8000-0000000000a0', 'a1a1a1a1-0000-4000-8000-00000000000a', 'owner'),
       ('0b0b0b0b-0000-4000-8000-0000000000b0', 'b2b2b2b2-0000-4000-8000-00000000000b', 'owner')
on conflict (account_id, user_id) do nothing;

-- Account A's session runs on Evolution API as the instance 'demo-a' (README, "Gateways").
insert into public.whatsapp_sessions (id, account_id, status, phone_number, whatsapp_user_id, own_wa_id,
                                      gateway, gateway_instance)
values ('3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c', '0a0a0a0a-0000-4000-8000-0000000000a0', 'disconnected',
        '+5215500000001', '5215500000001@s.whatsapp.net', '5215500000001', 'evolution', 'demo-a'),
       ('5e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b', '0b0b0b0b-0000-4000-8000-0000000000b0', 'disconnected',
        '+5215500000002', '5215500000002@s.whatsapp.net', '5215500000002', null, null)
on conflict (id) do nothing;
