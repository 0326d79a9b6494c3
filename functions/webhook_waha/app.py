"""POST /api/whatsapp/webhooks/waha: WAHA's own webhooks."""

from whatsapp_ingest.gateways import waha
from whatsapp_ingest.webhooks import webhook_handler

lambda_handler = webhook_handler(waha)
