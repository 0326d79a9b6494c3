"""GET and POST /api/whatsapp/webhooks/meta: the WhatsApp Cloud API's webhooks (GET: Meta's verification)."""

from whatsapp_ingest.gateways import meta
from whatsapp_ingest.webhooks import webhook_handler

lambda_handler = webhook_handler(meta, verify=meta.verify)
