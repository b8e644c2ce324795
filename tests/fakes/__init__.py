"""Fake exchange servers for integration tests (one module per venue)."""
