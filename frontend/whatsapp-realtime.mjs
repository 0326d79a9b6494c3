// The CRM frontend's kit for the live WhatsApp data (docs/frontend.md): keeps one account's sessions and
// messages current from the Realtime broadcasts our database triggers send on the private topic
// `account:<account_id>`, reading the rows themselves through row-level security.
//
//   import { createClient } from '@supabase/supabase-js'
//   import { createAccountState, subscribeAccount } from './whatsapp-realtime.mjs'
//
//   const supabase = createClient(SUPABASE_URL, SUPABASE_PUBLISHABLE_KEY) // sb_publishable_..., never a secret key
//   await supabase.auth.signInWithPassword({ email, password })
//   await supabase.realtime.setAuth() // private channels authorize with the user's JWT
//   const state = createAccountState({ onChange: render })
//   const channel = subscribeAccount(supabase, accountId, state)
//   // later: supabase.removeChannel(channel)
//
// Every event the triggers send is handled, and an unknown one is reported (state.unhandled), never
// ignored in silence: tests/test_frontend_kit.py runs this module against the broadcasts the local
// database sends, so it cannot drift from what the triggers send.
//
// Broadcast payloads carry ids and a preview, never whole rows: each handler reads what it shows
// through RLS. realtime.send adds an `id` (a uuid) to a payload without one, so `messages_created`'s
// `id` is the broadcast's, not a message's.

/** The columns of whatsapp_sessions a member may read (the orchestrator's internals are not readable). */
export const SESSION_COLUMNS = 'id,account_id,status,phone_number,whatsapp_user_id,last_seen,qr_code,qr_url,qr_generated_at,updated_at'

/** What the CRM shows of a message: content, delivery status, reactions, edits, deletion. */
export const MESSAGE_COLUMNS =
  'id,session_id,chat_id,contact_id,direction,message_type,body,content,sent_at,' +
  'delivery_status,delivery_status_at,delivery_error,reactions,edit_history,edited_at,deleted_at,' +
  // Media (null without): show media_path through storage.createSignedUrl once media_status is 'stored'.
  'media_status,media_path,media_mime_type,media_size,media_sha256,media_error'

/** How many of a chat's latest messages a history batch (messages_created) reloads. */
export const HISTORY_LIMIT = 50

/** The account's live state: sessions and messages by id; onChange(kind, row) after each change. */
export function createAccountState({ onChange = () => {} } = {}) {
  return { sessions: new Map(), messages: new Map(), unhandled: [], onChange }
}

function merge(state, row) {
  const merged = { ...state.messages.get(row.id), ...row }
  state.messages.set(row.id, merged)
  state.onChange('message', merged)
}

/** Apply one broadcast: `supabase` reads the rows it names. Returns when the state is current. */
export async function applyBroadcast(supabase, state, event, payload) {
  switch (event) {
    case 'session_updated': {
      // {id, status, qr_waiting, qr_generated_at, last_seen, updated_at}: the QR itself is read, never sent.
      const { data, error } = await supabase.from('whatsapp_sessions').select(SESSION_COLUMNS).eq('id', payload.id).maybeSingle()
      if (error) throw error
      if (data) {
        state.sessions.set(data.id, data)
        state.onChange('session', data)
      }
      return
    }
    case 'message_created': {
      // {id, session_id, chat_id, contact_id, direction, message_type, preview, sent_at}
      const { data, error } = await supabase.from('mensajes').select(MESSAGE_COLUMNS).eq('id', payload.id).maybeSingle()
      if (error) throw error
      if (data) merge(state, data)
      return
    }
    case 'messages_created': {
      // A history batch, one broadcast for many messages: {count, session_ids, chat_ids, latest_sent_at}.
      for (const chatId of payload.chat_ids) {
        const { data, error } = await supabase.from('mensajes').select(MESSAGE_COLUMNS)
          .eq('chat_id', chatId).order('sent_at', { ascending: false }).limit(HISTORY_LIMIT)
        if (error) throw error
        for (const row of data) merge(state, row)
      }
      return
    }
    case 'message_updated': {
      // A status, reaction, edit, deletion or repaired direction (and whatever later fields, such as
      // media's, the payload carries): merged as sent, then the row as RLS shows it now.
      merge(state, payload)
      const { data, error } = await supabase.from('mensajes').select(MESSAGE_COLUMNS).eq('id', payload.id).maybeSingle()
      if (error) throw error
      if (data) merge(state, data)
      return
    }
    default:
      state.unhandled.push({ event, payload })
  }
}

/**
 * Join the account's private topic and keep `state` current. Broadcasts are applied one at a time,
 * in the order they arrive, so a later update never loses to an earlier read.
 * Recommended: turn off "Allow public access" in the project's Realtime settings, so only private
 * channels (authorized by the policy on realtime.messages) can be joined at all.
 */
export function subscribeAccount(supabase, accountId, state) {
  let queue = Promise.resolve()
  const channel = supabase
    .channel(`account:${accountId}`, { config: { private: true } })
    .on('broadcast', { event: '*' }, ({ event, payload }) => {
      queue = queue.then(() => applyBroadcast(supabase, state, event, payload)).catch((error) => state.onChange('error', error))
    })
    .subscribe()
  channel.settled = () => queue // resolves when every broadcast received so far is applied
  return channel
}
