"""Thin tornado handlers, one module per capability; business logic lives in the managers."""
