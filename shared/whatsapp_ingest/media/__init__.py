"""Media: photos, voice notes, videos, documents and stickers fetched from where
the gateway left them, decrypted when WhatsApp encrypted them, and kept in
Supabase Storage (docs/media.md). Nothing here runs on the ingest hot path."""
