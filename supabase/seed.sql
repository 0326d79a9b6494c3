-- Demo data for local runs (`make run`) and `supabase db reset`: one session
-- the README's curl examples use. The CRM creates sessions; the orchestrator
-- only updates them.
insert into public.whatsapp_sessions (id, status, phone_number, whatsapp_user_id, own_wa_id)
values ('3f8a2b1c-5d4e-4f6a-9b7c-1d2e3f4a5b6c', 'disconnected', '+5215500000001',
        '5215500000001@s.whatsapp.net', '5215500000001')
on conflict (id) do nothing;
