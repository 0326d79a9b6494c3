"""POST /api/whatsapp/webhooks/evolution: Evolution API v2's own webhooks."""

from whatsapp_ingest.gateways import evolution
from whatsapp_ingest.webhooks import webhook_handler

lambda_handler = webhook_handler(evolution)
