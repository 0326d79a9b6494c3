-- Media received before 20261206020000 were never fetched (their keys were not
-- kept) and cannot be now: they are marked unavailable, not queued. Then the
-- media checks, added NOT VALID there, are validated.
--
-- Its own migration, so its own transaction: the update locks only the rows it
-- changes (ingest goes on; a new media message is inserted pending and is not
-- touched here), and VALIDATE CONSTRAINT takes a SHARE UPDATE EXCLUSIVE lock,
-- which lets reads and writes go on while it scans. No broadcast: the trigger
-- skips a change from null (20261206020000).

-- mensajes, chats and whatsapp_sessions are busy: a lock that would wait behind
-- a long transaction (and queue every request behind itself) fails the
-- migration instead, to be run again at a quieter moment.
set local lock_timeout = '5s';

update public.mensajes
   set media_status = 'unavailable',
       media_error  = 'received before media were stored'
 where media_status is null
   and message_type in ('image', 'video', 'audio', 'document', 'sticker');

alter table public.mensajes validate constraint mensajes_media_status_check;
alter table public.mensajes validate constraint mensajes_media_sha256_check;
