"""Alembic migrations of the store (``stripesync migrate``)."""
