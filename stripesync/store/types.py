"""Column types that behave the same on SQLite and PostgreSQL."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect

#: Stripe objects as JSON: JSONB on PostgreSQL (indexable, compact), TEXT on SQLite.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both backends.

    SQLite has no time zones, so values go in as naive UTC and come back marked UTC;
    a naive datetime handed in is refused rather than guessed at.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: stripesync stores UTC-aware datetimes")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def utcnow() -> datetime:
    return datetime.now(UTC)


class EncodedJSON:
    """A JSON document serialized ahead of time (outside a write transaction).

    The engines' JSON serializer (`dumps`) passes it through as it is, so a writer holds
    the database's write lock only for the statement, not for the encoding.
    """

    __slots__ = ("text",)

    def __init__(self, value: Any) -> None:
        self.text = _encode(value)


def _encode(value: Any) -> str:
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what orjson refuses (integers past 64 bits) json still writes
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def dumps(value: Any) -> str:
    """The engines' JSON serializer: compact, fast, and `EncodedJSON` passed through."""
    if isinstance(value, EncodedJSON):
        return value.text
    return _encode(value)
