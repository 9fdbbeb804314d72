"""Stripe events, from the ledger to the raw store: verifying, storing, applying, refetching.

The receiver (``stripesync.web.routes.webhooks``) verifies a delivery (`verify_event`),
adds it to the event ledger (`insert_events`) and answers; the job
``webhooks.process`` applies what the ledger holds unprocessed (`drain`), oldest
first, through the one apply path (`stripesync.sync.apply.apply`). Event polling
(`stripesync.sync.polling`) feeds the same `apply_events`.

What an event does to its object:

* a deletion (``customer.deleted``, ``product.deleted``, ...) leaves a tombstone: the
  last copy, flagged ``deleted``;
* a payload rendered in another API version than the pinned one (Stripe renders an
  event in the version in force when it was created) is not stored: the object is
  refetched from the API in the pinned version;
* two different copies of the same second (a *tie*: ``trial_will_end`` and
  ``updated`` together) are not guessed at: the object is refetched;
* a payload with a truncated nested list (more than ten items or lines) is applied
  and refetched whole;
* an event of a type stripesync does not store (``payment_method.attached``, ...) is
  kept in the ledger and acknowledged, nothing more.

Refetches are queued in ``sync_refetch`` in the same transaction as the events that
asked for them and run by the job ``webhooks.refetch`` (`run_refetches`), so a crash
loses none. Every transaction that changes objects also recomputes the derived state
of the customers it touched (``stripesync.profiles.recompute``, when installed).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import sqlalchemy as sa
import stripe
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from stripesync.errors import InvalidInput, NotFound, StripeSyncError, TerminalError, TransientError
from stripesync.jobs import JobContext, job
from stripesync.secrets import SecretBox, mask, secret_box
from stripesync.settings import Settings
from stripesync.store import Store
from stripesync.store.schema import (
    RAW_TABLES,
    sources,
    stripe_events,
    sync_errors,
    sync_refetch,
    sync_state,
    webhook_secrets,
)
from stripesync.store.types import utcnow
from stripesync.stripe_api import shapes
from stripesync.stripe_api.client import StripeAPI
from stripesync.stripe_api.errors import StripeError
from stripesync.sync.apply import ApplyResult, Observed, apply
from stripesync.sync.sources import Source, api_for_source
from stripesync.sync.streams import STREAMS, Stream

__all__ = [
    "MalformedWebhook",
    "Outcome",
    "PayloadTooLarge",
    "SignatureExpired",
    "SignatureInvalid",
    "SignatureMissing",
    "WebhookNotConfigured",
    "add_secret",
    "apply_events",
    "clear_secrets",
    "drain",
    "insert_events",
    "ledger_row",
    "list_secrets",
    "load_secrets",
    "pinned_version",
    "run_refetches",
    "update_derived",
    "verify_event",
]

log = logging.getLogger(__name__)

#: Events applied per transaction by `drain`.
BATCH = 200
#: A refetch of an object whose stored copy is from second T waits until T+1 s plus
#: this margin (clock skew between us and Stripe), so the copy it reads is newer.
SETTLE_MS = 1000
#: A refetch that keeps failing is dropped after this many attempts (the error stays).
MAX_REFETCH_ATTEMPTS = 5
#: PostgreSQL advisory lock namespace serializing one source's drains across processes.
_DRAIN_LOCK = 0x5357_4845  # "SWHE"

_STREAM_OF: dict[str, Stream] = {s.object_type: s for s in STREAMS}


def pinned_version() -> str:
    """The API version stripesync reads and registers its endpoints with (the SDK's)."""
    return str(stripe.api_version)


# -- rejections ---------------------------------------------------------------------------


class SignatureMissing(TerminalError):
    code = "signature_missing"
    status = 401


class SignatureInvalid(TerminalError):
    code = "signature_invalid"
    status = 401


class SignatureExpired(TerminalError):
    code = "signature_expired"
    status = 401


class WebhookNotConfigured(TerminalError):
    code = "webhook_secret_missing"
    status = 401


class MalformedWebhook(InvalidInput):
    code = "malformed_webhook"
    status = 400


class PayloadTooLarge(TerminalError):
    code = "payload_too_large"
    status = 413


# -- secrets --------------------------------------------------------------------------------


@dataclass(frozen=True)
class SecretInfo:
    hint: str
    origin: str
    created_at: datetime
    expires_at: datetime | None


def load_secrets(conn: Connection, box: SecretBox, source_id: int) -> list[str]:
    """Every secret that may sign this source's webhooks now (two or more while rotating)."""
    now = utcnow()
    found: list[str] = []
    registered = conn.execute(
        sa.select(sources.c.webhook_secret_encrypted).where(sources.c.id == source_id)
    ).scalar()
    if registered:
        found.append(box.decrypt(registered, what="a webhook secret"))
    for row in conn.execute(
        sa.select(webhook_secrets.c.secret_encrypted)
        .where(
            webhook_secrets.c.source_id == source_id,
            sa.or_(webhook_secrets.c.expires_at.is_(None), webhook_secrets.c.expires_at > now),
        )
        .order_by(webhook_secrets.c.id.desc())
    ):
        found.append(box.decrypt(row.secret_encrypted, what="a webhook secret"))
    return found


def list_secrets(store: Store, source: Source) -> list[SecretInfo]:
    """The source's webhook secrets, masked (the registered endpoint's first)."""
    now = utcnow()
    out: list[SecretInfo] = []
    if source.webhook_secret_encrypted:
        out.append(SecretInfo("whsec_…", "endpoint", source.created_at, None))
    with store.read() as conn:
        for row in conn.execute(
            sa.select(webhook_secrets)
            .where(webhook_secrets.c.source_id == source.id)
            .order_by(webhook_secrets.c.id)
        ):
            if row.expires_at is None or row.expires_at > now:
                out.append(SecretInfo(row.hint, row.origin, row.created_at, row.expires_at))
    return out


def add_secret(
    store: Store,
    box: SecretBox,
    source: Source,
    secret: str,
    *,
    rotate: bool = False,
    keep_previous: timedelta = timedelta(hours=24),
) -> str:
    """Accept webhooks signed with ``secret`` too; ``rotate``: the others expire after
    ``keep_previous`` (Stripe keeps signing with a rolled secret for as long)."""
    secret = secret.strip()
    if not secret.startswith("whsec_") or len(secret) < 16 or any(c.isspace() for c in secret):
        raise InvalidInput(
            f"{mask(secret)} is not a webhook signing secret (whsec_…); copy it from the "
            "Stripe Dashboard → Developers → Webhooks, or from `stripe listen`"
        )
    now = utcnow()
    with store.write() as conn:
        if rotate:
            expires = now + keep_previous
            conn.execute(
                sa.update(webhook_secrets)
                .where(
                    webhook_secrets.c.source_id == source.id,
                    sa.or_(
                        webhook_secrets.c.expires_at.is_(None),
                        webhook_secrets.c.expires_at > expires,
                    ),
                )
                .values(expires_at=expires)
            )
            registered = conn.execute(
                sa.select(sources.c.webhook_secret_encrypted).where(sources.c.id == source.id)
            ).scalar()
            if registered:
                # The registered secret becomes an ordinary one, expiring like the others.
                conn.execute(
                    sa.insert(webhook_secrets).values(
                        source_id=source.id,
                        secret_encrypted=registered,
                        hint="whsec_…",
                        origin="endpoint",
                        created_at=now,
                        expires_at=expires,
                    )
                )
                conn.execute(
                    sa.update(sources)
                    .where(sources.c.id == source.id)
                    .values(webhook_secret_encrypted=None, updated_at=now)
                )
        conn.execute(
            sa.insert(webhook_secrets).values(
                source_id=source.id,
                secret_encrypted=box.encrypt(secret),
                hint=mask(secret),
                origin="rotated" if rotate else "added",
                created_at=now,
                expires_at=None,
            )
        )
    return mask(secret)


def clear_secrets(store: Store, source: Source) -> int:
    """Forget the secrets added by hand (the registered endpoint's stays)."""
    with store.write() as conn:
        result = conn.execute(
            sa.delete(webhook_secrets).where(webhook_secrets.c.source_id == source.id)
        )
    return int(result.rowcount or 0)


# -- verifying a delivery -------------------------------------------------------------------


def _signature_parts(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                timestamp = None
        elif key == stripe.WebhookSignature.EXPECTED_SCHEME:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise MalformedWebhook(
            "the Stripe-Signature header is not `t=<timestamp>,v1=<signature>`; is this "
            "request from Stripe (or `stripe listen`)?"
        )
    return timestamp, signatures


def verify_event(
    payload: bytes, header: str | None, secrets: Sequence[str], *, tolerance: int
) -> dict[str, Any]:
    """The event, once ``header`` proves that one of ``secrets`` signed ``payload``.

    Stripe's scheme, checked by the SDK's `stripe.WebhookSignature`: an HMAC-SHA256 of
    ``"<t>.<raw body>"``, one ``v1`` per secret in force, and ``t`` at most
    ``tolerance`` seconds old.
    """
    if not header:
        raise SignatureMissing(
            "no Stripe-Signature header: webhooks must be signed by Stripe (or `stripe listen`)"
        )
    if not secrets:
        raise WebhookNotConfigured(
            "this source has no webhook signing secret to check deliveries with; set one "
            "with `stripesync webhook-secret NAME whsec_…` (or connect with "
            "STRIPESYNC_PUBLIC_URL set to register an endpoint)"
        )
    _signature_parts(header)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedWebhook("the webhook body is not UTF-8 JSON") from None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(text, header, secret, tolerance)
        except stripe.SignatureVerificationError as exc:
            if "tolerance" in str(exc):
                raise SignatureExpired(
                    f"the Stripe-Signature timestamp is more than {tolerance}s old (a replay, "
                    "or this server's clock is wrong)"
                ) from None
            continue
        break
    else:
        raise SignatureInvalid(
            "the Stripe-Signature matches none of this source's webhook secrets; if the "
            "secret was rolled, set the new one with `stripesync webhook-secret NAME whsec_… "
            "--rotate`"
        )
    try:
        event = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise MalformedWebhook("the webhook body is not JSON") from None
    if (
        not isinstance(event, dict)
        or not isinstance(event.get("id"), str)
        or not event["id"]
        or not isinstance(event.get("type"), str)
        or not isinstance(event.get("created"), int)
        or not isinstance(event.get("data"), dict)
    ):
        raise MalformedWebhook(
            "the webhook body is not a Stripe event (an object with id, type, created, data)"
        )
    return event


# -- the ledger -----------------------------------------------------------------------------


def ledger_row(source_id: int, event: Mapping[str, Any], *, via: str) -> dict[str, Any]:
    """An event as `insert_events` stores it (``data_text``: its compact JSON)."""
    data_object = event.get("data", {}).get("object")
    return {
        "source_id": source_id,
        "id": str(event["id"]),
        "type": str(event["type"]),
        "created": int(event["created"]),
        "api_version": event.get("api_version"),
        "livemode": bool(event.get("livemode", False)),
        "object_id": shapes.object_id(data_object),
        "data_text": orjson.dumps(event).decode(),
        "received_via": via,
        "received_at": utcnow(),
    }


def _dialect_insert(conn: Connection, table: sa.Table) -> Any:
    return (postgresql if conn.dialect.name == "postgresql" else sqlite).insert(table)


_LEDGER_COLUMNS = (
    "source_id",
    "id",
    "type",
    "created",
    "api_version",
    "livemode",
    "object_id",
    "data",
    "received_via",
    "received_at",
)


def _ledger_sql(dialect: str) -> str:
    mark = "%s" if dialect == "postgresql" else "?"
    values = [
        f"{mark}::jsonb" if c == "data" and dialect == "postgresql" else mark
        for c in _LEDGER_COLUMNS
    ]
    return (
        f"INSERT INTO {stripe_events.name} ({', '.join(_LEDGER_COLUMNS)}, processed_at) "
        f"VALUES ({', '.join(values)}, NULL) ON CONFLICT (source_id, id) DO NOTHING"
    )


def _ledger_params(dialect: str, row: Mapping[str, Any]) -> tuple[Any, ...]:
    received: datetime = row["received_at"]
    if dialect == "postgresql":
        return (
            *(row[c] for c in _LEDGER_COLUMNS[:7]),
            row["data_text"],
            row["received_via"],
            received,
        )
    # What the UTCDateTime and Boolean types would have bound on SQLite.
    stamp = received.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    values = [row[c] for c in _LEDGER_COLUMNS[:7]]
    values[5] = int(bool(values[5]))
    return (*values, row["data_text"], row["received_via"], stamp)


def insert_events(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Add events to the ledger, skipping ids already there; how many were added.

    The JSON goes in as the text it was received as (re-encoded compactly once), not
    through a second serialization, and as one driver-level ``executemany`` (no
    RETURNING): this is the receiver's hot path.
    """
    if not rows:
        return 0
    dialect = conn.dialect.name
    # The driver's own executemany (psycopg: a pipeline), not a rendered multi-row insert.
    result = conn.exec_driver_sql(
        _ledger_sql(dialect), [_ledger_params(dialect, row) for row in rows]
    )
    return max(0, int(result.rowcount or 0))


def record_received(conn: Connection, tallies: Mapping[int, tuple[int, int, datetime]]) -> None:
    """Add webhook counts to the sources' health: source → (received, duplicates, last)."""
    for source_id, (received, duplicates, last) in sorted(tallies.items()):
        bump_state(
            conn,
            source_id,
            last_webhook_at=last,
            webhooks_received=sync_state.c.webhooks_received + received,
            webhook_duplicates=sync_state.c.webhook_duplicates + duplicates,
        )


def ensure_state(conn: Connection, source_id: int) -> None:
    conn.execute(
        _dialect_insert(conn, sync_state)
        .values(
            source_id=source_id,
            last_poll_events=0,
            last_poll_missed=0,
            webhooks_received=0,
            webhook_duplicates=0,
            updated_at=utcnow(),
        )
        .on_conflict_do_nothing(index_elements=[sync_state.c.source_id])
    )


def bump_state(conn: Connection, source_id: int, **values: Any) -> None:
    """Update the source's ``sync_state`` row (created on first use)."""
    values.setdefault("updated_at", utcnow())
    result = conn.execute(
        sa.update(sync_state).where(sync_state.c.source_id == source_id).values(**values)
    )
    if not result.rowcount:
        ensure_state(conn, source_id)
        conn.execute(
            sa.update(sync_state).where(sync_state.c.source_id == source_id).values(**values)
        )


def record_error(
    conn: Connection, source_id: int, stream: str, exc: BaseException, *, context: str = ""
) -> None:
    """One line in ``sync_errors`` (what `stripesync status` counts and shows)."""
    message = str(exc) if isinstance(exc, StripeSyncError) else f"internal error: {exc!r}"
    conn.execute(
        sa.insert(sync_errors).values(
            source_id=source_id,
            stream=stream,
            occurred_at=utcnow(),
            kind="transient" if isinstance(exc, TransientError) else "terminal",
            http_status=getattr(exc, "http_status", None),
            code=getattr(exc, "stripe_code", None),
            request_id=getattr(exc, "request_id", None),
            message=f"{context}{message}"[:4000],
        )
    )


# -- applying events ------------------------------------------------------------------------


@dataclass
class Outcome:
    """What applying some events did."""

    events: int = 0
    applied: ApplyResult = field(default_factory=ApplyResult)
    #: Customers whose objects were written: their derived state must be recomputed.
    customers: set[str] = field(default_factory=set)
    #: (object type, id) → why it must be refetched.
    refetch: dict[tuple[str, str], str] = field(default_factory=dict)
    ignored: int = 0

    def add(self, other: Outcome) -> None:
        self.events += other.events
        self.applied.add(other.applied)
        self.customers |= other.customers
        self.refetch.update(other.refetch)
        self.ignored += other.ignored


def _is_deletion(event_type: str, object_type: str) -> bool:
    # customer.subscription.deleted is a cancellation: the subscription stays, canceled.
    return event_type.endswith(".deleted") and object_type != "subscription"


def _truncated(object_type: str, obj: Mapping[str, Any]) -> bool:
    spec = _STREAM_OF.get(object_type)
    for nested in spec.nested if spec else ():
        embedded = obj.get(nested.name)
        if isinstance(embedded, Mapping) and embedded.get("has_more"):
            return True
    return False


def apply_events(conn: Connection, source_id: int, events: Iterable[Mapping[str, Any]]) -> Outcome:
    """Apply events' objects in ``conn``'s transaction; refetches are queued, not run."""
    outcome = Outcome()
    pinned = pinned_version()
    planned: list[tuple[int, str, str, dict[str, Any]]] = []
    for event in events:
        outcome.events += 1
        data = event.get("data")
        obj = data.get("object") if isinstance(data, Mapping) else None
        if not isinstance(obj, Mapping):
            outcome.ignored += 1
            continue
        object_type, object_id = obj.get("object"), obj.get("id")
        if object_type not in RAW_TABLES or not isinstance(object_id, str):
            outcome.ignored += 1  # a type stripesync does not store: acknowledged, kept
            continue
        assert isinstance(object_type, str)
        if _is_deletion(str(event.get("type", "")), object_type):
            planned.append(
                (int(event["created"]), object_type, object_id, {**obj, "deleted": True})
            )
            continue
        if event.get("api_version") != pinned:
            outcome.refetch.setdefault((object_type, object_id), "version")
            continue
        if _truncated(object_type, obj):
            outcome.refetch.setdefault((object_type, object_id), "truncated")
        planned.append((int(event["created"]), object_type, object_id, dict(obj)))
    # Only the newest copy of each object in the batch can win: the older ones would be
    # written and overwritten, or dropped as stale. Copies that differ within the newest
    # second are a tie: one is applied, and the object is refetched (never guessed at).
    newest: dict[tuple[str, str], tuple[int, dict[str, Any]]] = {}
    for created, object_type, object_id, obj in planned:
        key = (object_type, object_id)
        seen = newest.get(key)
        if seen is None or created > seen[0]:
            newest[key] = (created, obj)
        elif created == seen[0] and obj != seen[1]:
            outcome.refetch[key] = "tie"
    by_second: dict[int, list[dict[str, Any]]] = {}
    for created, obj in newest.values():
        by_second.setdefault(created, []).append(obj)
    for created in sorted(by_second):
        result = apply(conn, source_id, by_second[created], Observed.event(created))
        outcome.applied.add(result)
        outcome.customers.update(c for _, c in result.customers)
        for tie in result.ties:
            outcome.refetch[tie] = "tie"
    if outcome.refetch:
        queue_refetch(conn, source_id, outcome.refetch)
    return outcome


def queue_refetch(conn: Connection, source_id: int, wanted: Mapping[tuple[str, str], str]) -> None:
    now = utcnow()
    stmt = _dialect_insert(conn, sync_refetch)
    stmt = stmt.on_conflict_do_update(
        index_elements=[
            sync_refetch.c.source_id,
            sync_refetch.c.object_type,
            sync_refetch.c.object_id,
        ],
        # A newer request outlives a refetch already in flight (see `run_refetches`).
        set_={"requested_at": stmt.excluded.requested_at, "reason": stmt.excluded.reason},
    )
    conn.execute(
        stmt,
        [
            {
                "source_id": source_id,
                "object_type": object_type,
                "object_id": object_id,
                "reason": reason,
                "requested_at": now,
                "attempts": 0,
                "last_error": None,
            }
            for (object_type, object_id), reason in sorted(wanted.items())
        ],
    )


# -- derived state --------------------------------------------------------------------------

_RECOMPUTE: list[Any] = []
_RECOMPUTE_LOCK = threading.Lock()


def _recompute_module() -> Any:
    with _RECOMPUTE_LOCK:
        if not _RECOMPUTE:
            try:
                module: Any = importlib.import_module("stripesync.profiles.recompute")
            except ModuleNotFoundError as exc:
                if exc.name not in ("stripesync.profiles.recompute", "stripesync.profiles"):
                    raise
                module = None
            _RECOMPUTE.append(module)
        return _RECOMPUTE[0]


def update_derived(conn: Connection, source_id: int, customers: Iterable[str]) -> None:
    """Recompute the derived state (profiles, MRR, ...) of ``customers``, in ``conn``'s
    transaction, so the raw change and what follows from it commit together."""
    wanted = sorted(set(customers))
    if not wanted:
        return
    module = _recompute_module()
    if module is not None:
        module.recompute_customers(conn, source_id, wanted)


def update_derived_catalog(store: Store, applied: ApplyResult) -> None:
    """After a commit: recompute the customers whose subscriptions use a catalogue
    object (price, plan, product, coupon) that changed."""
    if not applied.catalog:
        return
    module = _recompute_module()
    if module is not None:
        module.refresh_after_apply(store, ApplyResult(catalog=set(applied.catalog)))


# -- draining the ledger --------------------------------------------------------------------


@dataclass
class DrainResult:
    events: int = 0
    refetch: int = 0
    failed: int = 0


def lock_source(conn: Connection, source_id: int) -> None:
    """Serialize, across processes, the transactions writing one source's objects from
    events (drains, refetches, polls): they touch the same rows in no common order."""
    if conn.dialect.name == "postgresql":
        conn.execute(
            sa.text("SELECT pg_advisory_xact_lock(:ns, :id)"), {"ns": _DRAIN_LOCK, "id": source_id}
        )


def _unprocessed(conn: Connection, source_id: int, limit: int) -> list[sa.Row[Any]]:
    return list(
        conn.execute(
            sa.select(stripe_events.c.id, stripe_events.c.data)
            .where(stripe_events.c.source_id == source_id, stripe_events.c.processed_at.is_(None))
            .order_by(stripe_events.c.created, stripe_events.c.id)
            .limit(limit)
        )
    )


def _mark_processed(conn: Connection, source_id: int, ids: Sequence[str]) -> None:
    conn.execute(
        sa.update(stripe_events)
        .where(stripe_events.c.source_id == source_id, stripe_events.c.id.in_(list(ids)))
        .values(processed_at=utcnow())
    )


def drain(store: Store, source_id: int, *, batch: int = BATCH) -> DrainResult:
    """Apply every unprocessed event of the ledger, oldest first, ``batch`` per transaction.

    One source is drained by one process at a time (PostgreSQL: an advisory lock;
    SQLite: its single writer). An event that cannot be applied is recorded in the
    errors and marked processed, so it never blocks the ones after it.
    """
    result = DrainResult()
    while True:
        try:
            with store.write() as conn:
                lock_source(conn, source_id)
                rows = _unprocessed(conn, source_id, batch)
                if not rows:
                    return result
                outcome = apply_events(conn, source_id, [r.data for r in rows])
                update_derived(conn, source_id, outcome.customers)
                # Last, so that processed_at is when the derived state was ready too.
                _mark_processed(conn, source_id, [r.id for r in rows])
            update_derived_catalog(store, outcome.applied)
        except (sa.exc.OperationalError, sa.exc.InterfaceError):
            raise  # the store itself: the job fails and runs again later
        except Exception:
            log.exception("a batch of events failed; applying them one by one")
            one = _drain_one_by_one(store, source_id, batch)
            result.events += one.events
            result.failed += one.failed
            result.refetch += one.refetch
            continue
        result.events += len(rows)
        result.refetch += len(outcome.refetch)
        if len(rows) < batch:
            return result


def _drain_one_by_one(store: Store, source_id: int, batch: int) -> DrainResult:
    result = DrainResult()
    with store.read() as conn:
        rows = _unprocessed(conn, source_id, batch)
    for row in rows:
        try:
            with store.write() as conn:
                outcome = apply_events(conn, source_id, [row.data])
                update_derived(conn, source_id, outcome.customers)
                _mark_processed(conn, source_id, [row.id])
            result.events += 1
            result.refetch += len(outcome.refetch)
        except Exception as exc:
            log.exception("event %s could not be applied", row.id)
            with store.write() as conn:
                record_error(conn, source_id, "webhooks", exc, context=f"event {row.id}: ")
                _mark_processed(conn, source_id, [row.id])
            result.failed += 1
    return result


# -- refetching -----------------------------------------------------------------------------


def _retrieve(api: StripeAPI, object_type: str, object_id: str) -> tuple[dict[str, Any], int, int]:
    spec = _STREAM_OF[object_type]
    params: dict[str, Any] = {}
    expand = [e.removeprefix("data.") for e in spec.expand]
    if expand:
        params["expand"] = expand
    try:
        body, sent_ms, received_ms = api.request(
            "get", f"{spec.path}/{object_id}", params, group=spec.name
        )
    except StripeError as exc:
        if exc.http_status != 404:
            raise
        # Gone: Stripe no longer serves it (a deleted product or price, say).
        now_ms = time.time_ns() // 1_000_000
        return {"id": object_id, "object": object_type, "deleted": True}, now_ms, now_ms
    for nested in spec.nested:
        embedded = body.get(nested.name)
        if isinstance(embedded, Mapping) and embedded.get("has_more"):
            path, nested_params = nested.request(object_id)
            items: list[dict[str, Any]] = []
            for page in api.iter_list(path, {"limit": 100, **nested_params}, group=spec.name):
                items.extend(page.data)
            body[nested.name] = {**embedded, "data": items, "has_more": False}
    return body, sent_ms, received_ms


def _stored_hi(conn: Connection, source_id: int, object_type: str, object_id: str) -> int | None:
    table = RAW_TABLES[object_type].table
    value = conn.execute(
        sa.select(table.c.version_hi).where(table.c.source_id == source_id, table.c.id == object_id)
    ).scalar()
    return int(value) if value is not None else None


def run_refetches(
    store: Store,
    api: StripeAPI,
    source_id: int,
    *,
    limit: int = 500,
    workers: int = 8,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Refetch the objects queued for it (``workers`` requests at a time, within the
    source's request budget); returns how many were settled.

    The copy read is at least as new as the one stored when the request was sent
    (causality: that copy was received first), so its window starts after the stored
    one's; when the stored copy is from this very second the request waits until the
    second is over, so that nothing Stripe does later in it can be older than the copy.
    """
    with store.read() as conn:
        rows = list(
            conn.execute(
                sa.select(sync_refetch)
                .where(sync_refetch.c.source_id == source_id)
                .order_by(sync_refetch.c.requested_at)
                .limit(limit)
            )
        )
        stored = {
            (row.object_type, row.object_id): _stored_hi(
                conn, source_id, row.object_type, row.object_id
            )
            if row.object_type in _STREAM_OF
            else None
            for row in rows
        }
    unknown = [row for row in rows if row.object_type not in _STREAM_OF]
    if unknown:
        with store.write() as conn:
            for row in unknown:
                _forget_refetch(conn, source_id, row)
    rows = [row for row in rows if row.object_type in _STREAM_OF]
    now_ms = time.time_ns() // 1_000_000
    waits: list[tuple[int, sa.Row[Any]]] = []
    for row in rows:
        hi = stored[(row.object_type, row.object_id)]
        settle = hi + 1 + SETTLE_MS if hi is not None else 0
        waits.append((settle if hi is not None and hi - 600_000 < now_ms < settle else 0, row))
    waits.sort(key=lambda w: w[0])
    settled = 0
    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(rows)))) as pool:
        start = 0
        while start < len(waits):
            # Everything due now goes together; then wait for the next second to end.
            due_until = max(waits[start][0], time.time_ns() // 1_000_000)
            wait_ms = due_until - time.time_ns() // 1_000_000
            if wait_ms > 0:
                sleep(wait_ms / 1000)
            end = start
            while end < len(waits) and waits[end][0] <= due_until:
                end += 1
            chunk = [row for _, row in waits[start:end]]
            start = end
            fetched = list(pool.map(lambda r: _fetch(api, r), chunk))
            done, stop = _settle(store, source_id, chunk, fetched, stored)
            settled += done
            if stop:
                break
    return settled


def _fetch(api: StripeAPI, row: sa.Row[Any]) -> tuple[dict[str, Any], int, int] | StripeSyncError:
    try:
        return _retrieve(api, row.object_type, row.object_id)
    except StripeSyncError as exc:
        return exc


def _settle(
    store: Store,
    source_id: int,
    rows: list[sa.Row[Any]],
    fetched: list[tuple[dict[str, Any], int, int] | StripeSyncError],
    stored: Mapping[tuple[str, str], int | None],
) -> tuple[int, bool]:
    """Apply what was fetched; (how many settled, whether Stripe is struggling)."""
    settled = 0
    struggling = False
    applied = ApplyResult()
    with store.write() as conn:
        lock_source(conn, source_id)  # one writer of the source's objects at a time
        for row, got in zip(rows, fetched, strict=True):
            key = (row.object_type, row.object_id)
            if isinstance(got, StripeSyncError):
                record_error(conn, source_id, "refetch", got, context=f"{key[0]} {key[1]}: ")
                struggling = struggling or isinstance(got, TransientError)
                if isinstance(got, TerminalError) and row.attempts + 1 >= MAX_REFETCH_ATTEMPTS:
                    _forget_refetch(conn, source_id, row)
                else:
                    conn.execute(
                        sa.update(sync_refetch)
                        .where(*_refetch_key(source_id, row))
                        .values(attempts=sync_refetch.c.attempts + 1, last_error=str(got)[:2000])
                    )
                continue
            body, sent_ms, received_ms = got
            hi = stored[key]
            lo = max(sent_ms, hi + 1 if hi is not None else sent_ms)
            result = apply(conn, source_id, [body], Observed(lo, max(received_ms, lo)))
            applied.add(result)
            if result.ties and row.attempts + 1 < MAX_REFETCH_ATTEMPTS:
                # A newer copy arrived meanwhile, from the same moment: try again later.
                conn.execute(
                    sa.update(sync_refetch)
                    .where(*_refetch_key(source_id, row))
                    .values(attempts=sync_refetch.c.attempts + 1)
                )
            else:
                _forget_refetch(conn, source_id, row)
                settled += 1
        update_derived(conn, source_id, [c for _, c in applied.customers])
    update_derived_catalog(store, applied)
    return settled, struggling


def _refetch_key(source_id: int, row: sa.Row[Any]) -> tuple[Any, ...]:
    return (
        sync_refetch.c.source_id == source_id,
        sync_refetch.c.object_type == row.object_type,
        sync_refetch.c.object_id == row.object_id,
    )


def _forget_refetch(conn: Connection, source_id: int, row: sa.Row[Any]) -> None:
    # Only the request we served: one queued again meanwhile has a later requested_at.
    conn.execute(
        sa.delete(sync_refetch).where(
            *_refetch_key(source_id, row), sync_refetch.c.requested_at <= row.requested_at
        )
    )


def pending_refetches(conn: Connection, source_id: int) -> int:
    return int(
        conn.execute(
            sa.select(sa.func.count())
            .select_from(sync_refetch)
            .where(sync_refetch.c.source_id == source_id)
        ).scalar_one()
    )


# -- jobs -----------------------------------------------------------------------------------


class Coalescer:
    """At most one queued run of a job per source, and one more if kicked while it runs.

    A receiver kicks the drain after every commit, hundreds of times a second; the
    drain takes everything there is each time, so more queued copies would only wait
    for nothing. (A queue such as procrastinate does the same with a queueing lock.)
    """

    def __init__(self, defer: Callable[..., None]) -> None:
        self._defer = defer
        self._lock = threading.Lock()
        self._state: dict[tuple[str, int], str] = {}

    def kick(self, name: str, source_id: int) -> None:
        key = (name, source_id)
        with self._lock:
            state = self._state.get(key)
            if state is None:
                self._state[key] = "queued"
            elif state == "running":
                self._state[key] = "again"
                return
            else:
                return
        try:
            self._defer(name, source_id=source_id)
        except BaseException:
            with self._lock:
                self._state.pop(key, None)
            raise

    def started(self, name: str, source_id: int) -> None:
        with self._lock:
            self._state[(name, source_id)] = "running"

    def finished(self, name: str, source_id: int) -> bool:
        """True when it was kicked meanwhile: run again."""
        key = (name, source_id)
        with self._lock:
            if self._state.get(key) == "again":
                self._state[key] = "running"
                return True
            self._state.pop(key, None)
            return False

    def busy(self) -> bool:
        with self._lock:
            return bool(self._state)


_API_LOCK = threading.Lock()


def source_api(ctx: JobContext, source_id: int) -> tuple[Source, StripeAPI]:
    """The source and its Stripe client in this process (cached; rebuilt on a new key)."""
    store: Store = ctx.get("store")
    settings: Settings = ctx.get("settings")
    with store.read() as conn:
        row = conn.execute(sa.select(sources).where(sources.c.id == source_id)).first()
    if row is None or row.status != "active":
        raise NotFound(f"source {source_id} is not connected")
    source = Source.from_row(row)
    cache: dict[int, tuple[str | None, StripeAPI]] = ctx.resources.setdefault("apis", {})
    with _API_LOCK:
        cached = cache.get(source_id)
        if cached is None or cached[0] != source.api_key_encrypted:
            api = api_for_source(source, settings, _box(ctx, settings))
            cache[source_id] = cached = (source.api_key_encrypted, api)
    return source, cached[1]


def _box(ctx: JobContext, settings: Settings) -> SecretBox:
    box = ctx.resources.get("box")
    if box is None:
        box = ctx.resources["box"] = secret_box(settings)
    return box  # type: ignore[no-any-return]


def _coalesced(ctx: JobContext, name: str, source_id: int, run: Callable[[], None]) -> None:
    coalescer: Coalescer | None = ctx.resources.get("coalescer")
    if coalescer is not None:
        coalescer.started(name, source_id)
    try:
        while True:
            run()
            if coalescer is None or not coalescer.finished(name, source_id):
                return
    except BaseException:
        if coalescer is not None:
            coalescer.finished(name, source_id)
        raise


@job("webhooks.process")
def process_job(ctx: JobContext, *, source_id: int) -> None:
    """Apply the source's unprocessed events, then have its refetches run."""
    store: Store = ctx.get("store")

    def run() -> None:
        result = drain(store, source_id)
        if result.refetch:
            kick(ctx, "webhooks.refetch", source_id)

    _coalesced(ctx, "webhooks.process", source_id, run)


@job("webhooks.refetch")
def refetch_job(ctx: JobContext, *, source_id: int) -> None:
    """Refetch the source's queued objects (ties, other-version payloads, long lists)."""
    store: Store = ctx.get("store")

    def run() -> None:
        _, api = source_api(ctx, source_id)
        while run_refetches(store, api, source_id):
            with store.read() as conn:
                if not pending_refetches(conn, source_id):
                    return

    _coalesced(ctx, "webhooks.refetch", source_id, run)


def kick(ctx: JobContext, name: str, source_id: int) -> None:
    """Run job ``name`` for the source soon: coalesced when the process has a coalescer."""
    coalescer: Coalescer | None = ctx.resources.get("coalescer")
    if coalescer is not None:
        coalescer.kick(name, source_id)
    else:
        ctx.defer(name, source_id=source_id)
