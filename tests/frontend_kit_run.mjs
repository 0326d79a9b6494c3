// Runs frontend/whatsapp-realtime.mjs as a CRM page would, for tests/test_frontend_kit.py. Reads from stdin
// {accountId, rows: {table: [rows a member can read]}, broadcasts: [{topic, event, payload}]} and prints the
// kit's state as JSON. supabase-js is replaced by the few calls the kit makes (channel, from...select...),
// answered from `rows`, which the test read from the real database as a member, through RLS.
import { createAccountState, subscribeAccount } from '../frontend/whatsapp-realtime.mjs'

const input = JSON.parse(await new Promise((resolve) => {
  let text = ''
  process.stdin.on('data', (chunk) => { text += chunk }).on('end', () => resolve(text))
}))

function query(table, columns) {
  const wanted = columns.split(',')
  let rows = input.rows[table] ?? []
  const q = {
    eq(column, value) { rows = rows.filter((r) => r[column] === value); return q },
    order(column, { ascending }) {
      rows = [...rows].sort((a, b) => (a[column] < b[column] ? -1 : 1) * (ascending ? 1 : -1)); return q
    },
    limit(n) { rows = rows.slice(0, n); return q },
    project(r) {
      const missing = wanted.filter((c) => !(c in r))
      if (missing.length) throw new Error(`${table} has no readable column ${missing}`)
      return Object.fromEntries(wanted.map((c) => [c, r[c]]))
    },
    maybeSingle: async () => ({ data: rows.length ? q.project(rows[0]) : null, error: null }),
    then(resolve) { resolve({ data: rows.map(q.project), error: null }) },
  }
  return q
}

const listeners = []
const supabase = {
  from: (table) => ({ select: (columns) => query(table, columns) }),
  channel(topic, options) {
    if (topic !== `account:${input.accountId}` || options?.config?.private !== true) throw new Error(`bad channel ${topic}`)
    const channel = {
      on(type, filter, callback) { listeners.push({ type, filter, callback }); return channel },
      subscribe() { return channel },
    }
    return channel
  },
}

const errors = []
const state = createAccountState({ onChange: (kind, value) => { if (kind === 'error') errors.push(String(value)) } })
const channel = subscribeAccount(supabase, input.accountId, state)
for (const { topic, event, payload } of input.broadcasts) {
  if (topic !== `account:${input.accountId}`) continue
  for (const { type, filter, callback } of listeners) {
    if (type === 'broadcast' && (filter.event === '*' || filter.event === event)) callback({ type, event, payload })
  }
}
await channel.settled()
console.log(JSON.stringify({
  sessions: Object.fromEntries(state.sessions), messages: Object.fromEntries(state.messages),
  unhandled: state.unhandled, errors,
}))
