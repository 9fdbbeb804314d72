"""Sources: the Stripe accounts stripesync syncs, and connecting / disconnecting them.

A source keeps its key encrypted (`stripesync.secrets`) and shows it only masked; its
mode (test or live) comes from the key itself. Connecting validates every input first,
then probes the key's permissions (`stripe_api.permissions`) and stores nothing unless
all of it succeeded. Disconnecting forgets the key and removes the webhook endpoint;
``purge`` also deletes every object imported from the account.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlparse

import sqlalchemy as sa
import stripe

from stripesync.errors import ConfigError, InvalidInput, NotFound, PermissionMissing
from stripesync.secrets import SecretBox, mask
from stripesync.settings import Settings
from stripesync.store import Store
from stripesync.store.schema import sources
from stripesync.store.types import utcnow
from stripesync.stripe_api.budget import BudgetLimits, RetryPolicy, budget_for
from stripesync.stripe_api.client import DEFAULT_API_BASE, StripeAPI, make_client
from stripesync.stripe_api.errors import DASHBOARD_HINT, StripeError
from stripesync.stripe_api.permissions import PermissionReport, check_permissions

__all__ = [
    "ConnectRequest",
    "Source",
    "api_for_source",
    "disconnect",
    "get_source",
    "key_mode",
    "list_sources",
    "parse_interval",
    "parse_start",
    "probe",
    "save_source",
]

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
KEY = re.compile(r"^(sk|rk)_(live|test)_[A-Za-z0-9]{8,}$")
INTERVAL = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: Webhook events stripesync listens to (``*``: all; unhandled ones are acknowledged).
WEBHOOK_EVENTS = ("*",)
PROBE_TIMEOUT = 15.0


@dataclass(frozen=True)
class Source:
    id: int
    name: str
    status: str
    key_hint: str
    key_kind: str
    livemode: bool
    api_base: str
    start_mode: str
    start_at: int | None
    interval_seconds: int
    permissions: dict[str, Any]
    polling_only: bool
    webhook_endpoint_id: str | None
    profile_settings: dict[str, Any]
    created_at: datetime
    api_key_encrypted: str | None = field(default=None, repr=False)
    webhook_secret_encrypted: str | None = field(default=None, repr=False)

    @property
    def mode(self) -> str:
        return "live" if self.livemode else "test"

    def api_key(self, box: SecretBox) -> str:
        if self.api_key_encrypted is None:
            raise ConfigError(
                f"source {self.name!r} is disconnected and has no key; connect it again with "
                f"`stripesync connect --name {self.name} --api-key ...`"
            )
        return box.decrypt(self.api_key_encrypted, what=f"the API key of source {self.name!r}")

    @property
    def permission_report(self) -> PermissionReport:
        return PermissionReport.from_json(self.permissions)

    def start_label(self) -> str:
        if self.start_mode == "all" or self.start_at is None:
            return "all history"
        stamp = datetime.fromtimestamp(self.start_at, UTC)
        if self.start_mode == "now":
            return f"new data only (from {stamp:%Y-%m-%d %H:%M} UTC)"
        return f"from {stamp:%Y-%m-%d}"

    @classmethod
    def from_row(cls, row: sa.Row[Any]) -> Source:
        m = row._mapping
        return cls(
            id=m["id"],
            name=m["name"],
            status=m["status"],
            key_hint=m["key_hint"],
            key_kind=m["key_kind"],
            livemode=m["livemode"],
            api_base=m["api_base"],
            start_mode=m["start_mode"],
            start_at=m["start_at"],
            interval_seconds=m["interval_seconds"],
            permissions=dict(m["permissions"] or {}),
            polling_only=m["polling_only"],
            webhook_endpoint_id=m["webhook_endpoint_id"],
            profile_settings=dict(m["profile_settings"] or {}),
            created_at=m["created_at"],
            api_key_encrypted=m["api_key_encrypted"],
            webhook_secret_encrypted=m["webhook_secret_encrypted"],
        )


# -- parsing what people type -----------------------------------------------------------


def key_mode(api_key: str) -> tuple[str, bool]:
    """(``secret`` | ``restricted``, livemode) from the key's prefix; bad keys refused."""
    api_key = api_key.strip()
    if api_key.startswith(("pk_live_", "pk_test_")):
        raise InvalidInput(
            f"{mask(api_key)} is a publishable key, which cannot read data; use a restricted "
            "key (rk_…) or a secret key (sk_…) from the Stripe Dashboard → Developers → API keys"
        )
    match = KEY.match(api_key)
    if match is None:
        raise InvalidInput(
            f"--api-key {mask(api_key)} is not a Stripe secret or restricted key (expected "
            "sk_live_…, sk_test_…, rk_live_… or rk_test_…); copy it again from the Stripe "
            "Dashboard → Developers → API keys"
        )
    return ("secret" if match.group(1) == "sk" else "restricted"), match.group(2) == "live"


def parse_start(value: str | None, *, now: float | None = None) -> tuple[str, int | None]:
    """``all`` (default) → all history; ``now`` → only new data; ``YYYY-MM-DD`` → that day."""
    now = time.time() if now is None else now
    text = (value or "all").strip().lower()
    if text == "all":
        return "all", None
    if text == "now":
        return "now", int(now)
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(
            f"--start-date {value!r} is not a date; use YYYY-MM-DD (e.g. 2024-01-01), `all` "
            "for all history or `now` for new data only"
        ) from None
    stamp = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    if stamp > now:
        raise InvalidInput(
            f"--start-date {value} is in the future; use a past date, or `now` for new data only"
        )
    return "date", stamp


def parse_interval(value: str | None) -> int:
    """``30m``, ``1h`` (default), ``1d`` → seconds; at least a minute."""
    text = (value or "1h").strip().lower()
    match = INTERVAL.match(text)
    if match is None:
        raise InvalidInput(
            f"--interval {value!r} is not a duration; use a number and a unit: 30m, 1h, 1d"
        )
    seconds = int(match.group(1)) * UNITS[match.group(2)]
    if seconds < 60:
        raise InvalidInput(f"--interval {value} is too short; the minimum is 1m")
    if seconds > 7 * 86400:
        raise InvalidInput(
            f"--interval {value} is too long: the Events API keeps 30 days, and a source "
            "synced less than weekly risks missing changes; the maximum is 7d"
        )
    return seconds


def parse_api_base(value: str | None) -> str:
    base = (value or DEFAULT_API_BASE).strip().rstrip("/")
    parsed = urlparse(base)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise InvalidInput(
            f"--api-base {value!r} is not an http(s) URL; use e.g. https://api.stripe.com "
            "or http://127.0.0.1:12111 for the simulator"
        )
    if parsed.path not in ("", "/"):
        raise InvalidInput(
            f"--api-base {value!r} has a path; give the server only (https://api.stripe.com), "
            "stripesync adds /v1/..."
        )
    return base


def _check_name(name: str) -> str:
    name = name.strip()
    if not NAME.match(name):
        raise InvalidInput(
            f"--name {name!r} is not a valid source name; use 1-64 letters, digits, '-', '_' "
            "or '.', starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class ConnectRequest:
    """A validated ``stripesync connect``."""

    name: str
    api_key: str = field(repr=False)
    key_kind: str
    livemode: bool
    api_base: str
    start_mode: str
    start_at: int | None
    interval_seconds: int

    @property
    def key_hint(self) -> str:
        return mask(self.api_key)

    @classmethod
    def parse(
        cls,
        *,
        name: str,
        api_key: str,
        api_base: str | None = None,
        start_date: str | None = None,
        interval: str | None = None,
        mode: str | None = None,
    ) -> ConnectRequest:
        api_key = api_key.strip()
        kind, livemode = key_mode(api_key)
        if mode is not None:
            wanted = mode.strip().lower()
            if wanted not in ("test", "live"):
                raise InvalidInput(f"--mode {mode!r} must be `test` or `live`")
            if (wanted == "live") != livemode:
                actual = "live" if livemode else "test"
                raise InvalidInput(
                    f"--mode {wanted} was asked but {mask(api_key)} is a {actual}-mode key; "
                    f"use a {wanted}-mode key ({kind[0]}k_{wanted}_…) or --mode {actual}"
                )
        start_mode, start_at = parse_start(start_date)
        return cls(
            name=_check_name(name),
            api_key=api_key,
            key_kind=kind,
            livemode=livemode,
            api_base=parse_api_base(api_base),
            start_mode=start_mode,
            start_at=start_at,
            interval_seconds=parse_interval(interval),
        )


# -- the store --------------------------------------------------------------------------


def list_sources(store: Store, *, include_disconnected: bool = True) -> list[Source]:
    query = sa.select(sources).order_by(sources.c.name)
    if not include_disconnected:
        query = query.where(sources.c.status == "active")
    with store.read() as conn:
        return [Source.from_row(row) for row in conn.execute(query)]


def get_source(store: Store, name: str, *, active: bool = True) -> Source:
    with store.read() as conn:
        row = conn.execute(sa.select(sources).where(sources.c.name == name)).first()
    if row is None or (active and row.status != "active"):
        names = [s.name for s in list_sources(store, include_disconnected=False)]
        known = f"; connected: {', '.join(names)}" if names else "; none is connected yet"
        raise NotFound(
            f"no connected source named {name!r}{known} (`stripesync connect --name {name} "
            "--api-key ...` adds one)"
        )
    return Source.from_row(row)


def _check_free(store: Store, name: str) -> None:
    with store.read() as conn:
        status = conn.execute(sa.select(sources.c.status).where(sources.c.name == name)).scalar()
    if status == "active":
        raise InvalidInput(
            f"a source named {name!r} is already connected; choose another --name, or "
            f"`stripesync disconnect {name}` first"
        )


# -- connecting -------------------------------------------------------------------------


def probe_api(request: ConnectRequest, settings: Settings) -> StripeAPI:
    """A client that fails fast: a person is waiting, so no retries and a short timeout."""
    client = make_client(
        request.api_key, request.api_base, max_network_retries=0, timeout=PROBE_TIMEOUT
    )
    return StripeAPI(
        client,
        key_hint=request.key_hint,
        api_base=request.api_base,
        policy=RetryPolicy(rate_limit_retries=3, backoff_base=1.0),
    )


def probe(store: Store, request: ConnectRequest, settings: Settings) -> PermissionReport:
    """Check the name is free and the key works; the permission report (nothing stored)."""
    _check_free(store, request.name)
    return check_permissions(probe_api(request, settings))


def missing_permissions_error(request: ConnectRequest, report: PermissionReport) -> None:
    missing = report.missing_required
    if missing:
        names = ", ".join(f"`{p.name}`" for p in missing)
        raise PermissionMissing(f"key {request.key_hint} lacks {names}; {DASHBOARD_HINT}")


@dataclass
class Saved:
    source: Source
    notes: list[str]


def save_source(
    store: Store,
    box: SecretBox,
    request: ConnectRequest,
    report: PermissionReport,
    settings: Settings,
) -> Saved:
    """Store a probed source (reusing a disconnected one's row and data by name)."""
    missing_permissions_error(request, report)
    notes: list[str] = []
    endpoint_id: str | None = None
    endpoint_secret: str | None = None
    polling_only = not report.webhooks
    if polling_only:
        notes.append(
            "key lacks `Webhook Endpoints: Write`: connected with polling only (changes "
            f"arrive through the Events API every {_duration(request.interval_seconds)})"
        )
    elif settings.public_url:
        try:
            endpoint_id, endpoint_secret = _register_webhook(request, settings)
            notes.append(f"webhook endpoint {endpoint_id} registered")
        except StripeError as exc:
            polling_only = True
            notes.append(f"webhook endpoint not registered ({exc}); polling only")
    else:
        notes.append(
            "no webhook endpoint registered (set STRIPESYNC_PUBLIC_URL to receive webhooks); "
            f"changes arrive by polling every {_duration(request.interval_seconds)}"
        )
    now = utcnow()
    values: dict[str, Any] = {
        "status": "active",
        "api_key_encrypted": box.encrypt(request.api_key),
        "key_hint": request.key_hint,
        "key_kind": request.key_kind,
        "livemode": request.livemode,
        "api_base": request.api_base,
        "start_mode": request.start_mode,
        "start_at": request.start_at,
        "interval_seconds": request.interval_seconds,
        "permissions": report.as_json(),
        "polling_only": polling_only,
        "webhook_endpoint_id": endpoint_id,
        "webhook_secret_encrypted": box.encrypt(endpoint_secret) if endpoint_secret else None,
        "updated_at": now,
        "disconnected_at": None,
    }
    with store.write() as conn:
        row = conn.execute(
            sa.select(sources.c.id, sources.c.status).where(sources.c.name == request.name)
        ).first()
        if row is not None and row.status == "active":
            raise InvalidInput(f"a source named {request.name!r} was connected meanwhile")
        if row is None:
            conn.execute(
                sa.insert(sources).values(
                    name=request.name, profile_settings={}, created_at=now, **values
                )
            )
        else:
            conn.execute(sa.update(sources).where(sources.c.id == row.id).values(**values))
            notes.append("reconnected: the data imported before is kept and resumed")
    return Saved(get_source(store, request.name), notes)


def _register_webhook(request: ConnectRequest, settings: Settings) -> tuple[str, str]:
    api = probe_api(request, settings)
    url = f"{settings.public_url.rstrip('/')}/webhooks/stripe/{request.name}"
    body, _, _ = api.request(
        "post",
        "/v1/webhook_endpoints",
        {
            "url": url,
            "enabled_events": list(WEBHOOK_EVENTS),
            "api_version": stripe.api_version,
            "description": f"stripesync source {request.name}",
            "metadata": {"stripesync_source": request.name},
        },
    )
    return str(body["id"]), str(body.get("secret") or "")


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


# -- using a source ---------------------------------------------------------------------


def api_for_source(
    source: Source,
    settings: Settings,
    box: SecretBox,
    *,
    policy: RetryPolicy | None = None,
    paced: bool = True,
) -> StripeAPI:
    """The source's account, with the SDK's retries and the source's request budget."""
    limits = BudgetLimits.for_mode(
        source.livemode,
        live=settings.stripe_budget_live,
        test=settings.stripe_budget_test,
        endpoint=settings.stripe_budget_endpoint,
    )
    client = make_client(
        source.api_key(box),
        source.api_base,
        max_network_retries=settings.stripe_max_network_retries,
    )
    return StripeAPI(
        client,
        key_hint=source.key_hint,
        api_base=source.api_base,
        budget=budget_for(f"source:{source.id}:{source.api_base}", limits) if paced else None,
        policy=policy,
    )


@dataclass
class Disconnected:
    name: str
    purged: bool
    notes: list[str]


def disconnect(
    store: Store, settings: Settings, box: SecretBox, name: str, *, purge: bool = False
) -> Disconnected:
    """Forget a source's key and webhook endpoint; ``purge``: delete its data too."""
    with store.read() as conn:
        row = conn.execute(sa.select(sources).where(sources.c.name == name)).first()
    if row is None or (row.status != "active" and not purge):
        get_source(store, name)  # raises the helpful NotFound
    assert row is not None
    source = Source.from_row(row)
    notes: list[str] = []
    if source.webhook_endpoint_id and source.api_key_encrypted:
        try:
            api = api_for_source(source, settings, box, paced=False)
            api.request("delete", f"/v1/webhook_endpoints/{source.webhook_endpoint_id}")
            notes.append(f"webhook endpoint {source.webhook_endpoint_id} deleted")
        except StripeError as exc:
            if exc.http_status == 404:
                notes.append(f"webhook endpoint {source.webhook_endpoint_id} was already gone")
            else:
                notes.append(
                    f"could not delete webhook endpoint {source.webhook_endpoint_id} ({exc}); "
                    "delete it in the Stripe Dashboard → Developers → Webhooks"
                )
    with store.write() as conn:
        if purge:
            _purge(conn, source.id)
        else:
            conn.execute(
                sa.update(sources)
                .where(sources.c.id == source.id)
                .values(
                    status="disconnected",
                    api_key_encrypted=None,
                    webhook_endpoint_id=None,
                    webhook_secret_encrypted=None,
                    updated_at=utcnow(),
                    disconnected_at=utcnow(),
                )
            )
            # Webhook signing secrets set by hand go with the key (issue 5).
            from stripesync.store.schema import webhook_secrets

            conn.execute(sa.delete(webhook_secrets).where(webhook_secrets.c.source_id == source.id))
    if not purge:
        notes.append("imported data kept; `stripesync disconnect --purge` deletes it")
    return Disconnected(name, purge, notes)


def _purge(conn: sa.Connection, source_id: int) -> None:
    """Delete the source and everything imported from it (children first, for SQLite)."""
    from stripesync.store.schema import metadata

    for table in reversed(metadata.sorted_tables):
        if table is sources:
            continue
        if "source_id" in table.c:
            conn.execute(sa.delete(table).where(table.c.source_id == source_id))
    conn.execute(sa.delete(sources).where(sources.c.id == source_id))
