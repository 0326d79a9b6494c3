-- A session that names a gateway connection names its gateway too.
--
-- whatsapp_sessions_gateway_connection_fkey (20261206000000) is the composite
-- key (gateway_connection_id, gateway), MATCH SIMPLE: with gateway null it
-- checks nothing, so a session could name a connection that does not exist,
-- or another gateway's. A session already in that state takes its connection's
-- gateway (the connection says which gateway it is); one naming no existing
-- connection is unlinked, as the key would have refused it.

-- whatsapp_sessions is busy (every request locks its session): a lock that
-- would wait behind a long transaction, and queue every request behind itself,
-- fails the migration instead, to be run again at a quieter moment.
set local lock_timeout = '5s';

update public.whatsapp_sessions s
   set gateway = c.gateway
  from public.whatsapp_gateway_connections c
 where s.gateway_connection_id = c.id
   and s.gateway is null;

update public.whatsapp_sessions
   set gateway_connection_id = null
 where gateway_connection_id is not null
   and gateway is null;

-- One row per linked phone: the scan under this lock is short.
-- squawk-ignore constraint-missing-not-valid
alter table public.whatsapp_sessions add constraint whatsapp_sessions_gateway_connection_gateway_check
    check (gateway_connection_id is null or gateway is not null);
