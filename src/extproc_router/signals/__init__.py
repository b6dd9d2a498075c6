"""Routing signals: each reads a parsed request and says which pool suits it, and why."""
