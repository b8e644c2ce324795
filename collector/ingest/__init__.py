"""Ingest: WebSocket connections, their supervisors and the exchange-facing plumbing."""
