"""WhatsApp ingestion layer: models, API plumbing, configuration and data access
shared by the orchestrator endpoints (one Lambda each)."""
