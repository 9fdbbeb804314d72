"""The simulator's engine: accounts and keys, the clock, ids, events, request dispatch.

Handlers (in ``stripesync.sim.resources``) are plain synchronous functions registered
with :func:`route`. :meth:`Simulator.request` runs one API request exactly as the HTTP
server would (auth, permissions, idempotency, dispatch, expansion, version rendering),
so the generator and the tests can drive the same code without a socket.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
import string
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stripesync.sim import versions
from stripesync.sim.db import Page, SimDB, clone
from stripesync.sim.errors import SimAPIError, invalid, missing
from stripesync.sim.forms import as_int, as_list

DEFAULT_ACCOUNT = "acct_1SimDefault00000"
EVENT_RETENTION_SECONDS = 30 * 86400
NESTED_LIST_LIMIT = 10
#: Fields Stripe returns only when expanded (``expand[]=tiers``).
INCLUDABLE = {
    "price": ("tiers",),
    "plan": ("tiers",),
    "coupon": ("applies_to",),
    "charge": ("refunds",),  # not returned by default since 2022-11-15
}
ALNUM = string.ascii_letters + string.digits

#: Restricted-key permission names, as the Stripe Dashboard shows them, by resource.
PERMISSION_LABELS = {
    "customers": "Customers",
    "products": "Products",
    "prices": "Prices",
    "plans": "Plans",
    "coupons": "Coupons",
    "subscriptions": "Subscriptions",
    "invoices": "Invoices",
    "charges": "Charges",
    "payment_intents": "Payment Intents",
    "payment_methods": "Payment Methods",
    "refunds": "Refunds",
    "credit_notes": "Credit Notes",
    "events": "Events",
    "webhook_endpoints": "Webhook Endpoints",
}
#: Stripe's internal names for restricted-key permissions, used in its 403 messages.
PERMISSION_CODES = {
    "customers": "rak_customer",
    "products": "rak_product",
    "prices": "rak_plan",
    "plans": "rak_plan",
    "coupons": "rak_coupon",
    "subscriptions": "rak_subscription",
    "invoices": "rak_invoice",
    "charges": "rak_charge",
    "payment_intents": "rak_payment_intent",
    "payment_methods": "rak_payment_method",
    "refunds": "rak_refund",
    "credit_notes": "rak_credit_note",
    "events": "rak_event",
    "webhook_endpoints": "rak_webhook",
}


@dataclass
class Knobs:
    """Realism settings: rate limits, latency, faults, webhook chaos."""

    rate_limit_live: int = 100
    rate_limit_test: int = 25
    rate_limit_endpoint: int = 25
    rate_limits: bool = True
    latency_ms: float = 0.0
    error_rate: float = 0.0
    burst_429_rate: float = 0.0
    webhook_duplicate_rate: float = 0.0
    webhook_shuffle: bool = False
    webhook_drop_rate: float = 0.0
    webhook_retry_base_seconds: float = 1.0
    webhook_max_attempts: int = 8
    seed: int = 0


@dataclass
class Ctx:
    """What one request runs as."""

    acct: str
    account: str
    livemode: bool
    key: str
    api_version: str
    request_id: str | None = None
    idempotency_key: str | None = None
    expand: list[str] = field(default_factory=list)

    @property
    def request(self) -> dict[str, Any]:
        return {"id": self.request_id, "idempotency_key": self.idempotency_key}


Handler = Callable[..., Any]


@dataclass(frozen=True)
class Route:
    method: str
    pattern: re.Pattern[str]
    template: str
    handler: Handler
    resource: str | None
    access: str


ROUTES: list[Route] = []

#: Clock callbacks by timer kind: ``fn(sim, ctx, obj_id, at)`` runs what is due and may
#: schedule the next timer (see ``stripesync.sim.clock``).
TIMER_HANDLERS: dict[str, Callable[..., None]] = {}


def timer_handler(kind: str) -> Callable[[Handler], Handler]:
    def decorate(fn: Handler) -> Handler:
        TIMER_HANDLERS[kind] = fn
        return fn

    return decorate


def route(
    method: str, template: str, *, resource: str | None, access: str | None = None
) -> Callable[[Handler], Handler]:
    """Register a handler for ``METHOD /v1/path/{id}``; ``resource`` names its permission."""
    regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", template) + "$"

    def decorate(fn: Handler) -> Handler:
        ROUTES.append(
            Route(
                method,
                re.compile(regex),
                template,
                fn,
                resource,
                access or ("read" if method == "GET" else "write"),
            )
        )
        return fn

    return decorate


def mask_key(key: str) -> str:
    prefix = key[: key.index("_", 3) + 1] if key.count("_") >= 2 else key[:3]
    return f"{prefix}{'*' * 12}{key[-4:]}"


class Simulator:
    """One simulator instance: a database file, its knobs and its clock."""

    def __init__(self, path: str | Path = ":memory:", knobs: Knobs | None = None) -> None:
        from stripesync.sim import resources  # registers the routes

        del resources
        self.db = SimDB(path)
        self.knobs = knobs or Knobs()
        self.rng = random.Random(self.knobs.seed)
        self._id_lock = threading.Lock()
        self._endpoint_cache: dict[str, list[dict[str, Any]]] = {}
        self.on_event: list[Callable[[str, dict[str, Any]], None]] = []
        if self.db.meta_get("initialized") is None:
            self._initialize()

    # -- setup --------------------------------------------------------------------------

    def _initialize(self) -> None:
        seed_hex = hashlib.sha256(f"stripesync-sim-{self.knobs.seed}".encode()).hexdigest()
        self.db.meta_set("clock_mode", "real")
        self.db.meta_set("clock_offset", "0")
        self.create_account(DEFAULT_ACCOUNT)
        self.create_key(DEFAULT_ACCOUNT, livemode=False, key=f"sk_test_51Sim{seed_hex[:40]}")
        self.create_key(DEFAULT_ACCOUNT, livemode=True, key=f"sk_live_51Sim{seed_hex[24:64]}")
        self.db.meta_set("initialized", "1")

    def create_account(
        self, account_id: str | None = None, *, api_version: str | None = None
    ) -> str:
        account_id = account_id or "acct_1" + self.random_chars(15)
        with self.db:
            self.db.conn.execute(
                "INSERT OR IGNORE INTO accounts(id, api_version, data) VALUES (?,?,?)",
                (account_id, api_version or versions.CURRENT_VERSION, "{}"),
            )
        return account_id

    def create_key(
        self,
        account: str,
        *,
        livemode: bool = False,
        permissions: dict[str, str] | None = None,
        key: str | None = None,
    ) -> str:
        """A secret key (``permissions=None``) or a restricted one with a permission set."""
        if key is None:
            kind = "rk" if permissions is not None else "sk"
            key = f"{kind}_{'live' if livemode else 'test'}_51Sim{self.random_chars(60)}"
        for resource, access in (permissions or {}).items():
            if resource not in PERMISSION_LABELS or access not in ("none", "read", "write"):
                raise ValueError(f"bad permission {resource}={access}")
        with self.db:
            self.db.conn.execute(
                "INSERT OR REPLACE INTO api_keys(key, account, livemode, permissions, revoked)"
                " VALUES (?,?,?,?,0)",
                (
                    key,
                    account,
                    int(livemode),
                    None if permissions is None else json.dumps(permissions),
                ),
            )
        return key

    def revoke_key(self, key: str) -> None:
        with self.db:
            self.db.conn.execute("UPDATE api_keys SET revoked=1 WHERE key=?", (key,))

    def keys(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT key, account, livemode, permissions, revoked FROM api_keys")
        return [
            {
                "key": r[0],
                "account": r[1],
                "livemode": bool(r[2]),
                "permissions": None if r[3] is None else json.loads(r[3]),
                "revoked": bool(r[4]),
            }
            for r in rows
        ]

    def default_key(self, *, livemode: bool = False) -> str:
        rows = self.db.execute(
            "SELECT key FROM api_keys WHERE account=? AND livemode=? AND permissions IS NULL"
            " AND revoked=0 ORDER BY key LIMIT 1",
            (DEFAULT_ACCOUNT, int(livemode)),
        )
        return str(rows[0][0])

    def account_version(self, account: str) -> str:
        rows = self.db.execute("SELECT api_version FROM accounts WHERE id=?", (account,))
        return str(rows[0][0]) if rows else versions.CURRENT_VERSION

    def set_account_version(self, account: str, version: str) -> None:
        versions.is_legacy(version)  # validates
        with self.db:
            self.db.conn.execute("UPDATE accounts SET api_version=? WHERE id=?", (version, account))

    def context(self, key: str | None = None, *, stripe_version: str | None = None) -> Ctx:
        """The context a request with this key runs as (no key: the default test key)."""
        key = key or self.default_key()
        rows = self.db.execute(
            "SELECT account, livemode, permissions, revoked FROM api_keys WHERE key=?", (key,)
        )
        if not rows or rows[0][3]:
            raise SimAPIError(
                401,
                f"Invalid API Key provided: {mask_key(key)}",
                code="api_key_expired" if rows else None,
            )
        account, livemode = rows[0][0], bool(rows[0][1])
        return Ctx(
            acct=f"{account}:{'live' if livemode else 'test'}",
            account=account,
            livemode=livemode,
            key=key,
            api_version=stripe_version or self.account_version(account),
        )

    # -- clock --------------------------------------------------------------------------

    def now(self) -> int:
        return int(self.now_float())

    def now_float(self) -> float:
        if self.db.meta_get("clock_mode") == "frozen":
            return float(self.db.meta_get("clock_now") or 0)
        return time.time() + float(self.db.meta_get("clock_offset") or 0)

    def freeze(self, at: int) -> None:
        self.db.meta_set("clock_mode", "frozen")
        self.db.meta_set("clock_now", str(at))

    def set_clock(self, at: float) -> None:
        """Move the clock without running what happens in between (the generator's)."""
        if self.db.meta_get("clock_mode") == "frozen":
            self.db.meta_set("clock_now", str(int(at)))
        else:
            self.db.meta_set("clock_offset", str(at - time.time()))

    def system_context(self, acct: str) -> Ctx:
        """The context of what Stripe does on its own (clock-driven changes)."""
        account, _, mode = acct.partition(":")
        return Ctx(
            acct=acct,
            account=account,
            livemode=mode == "live",
            key="",
            api_version=self.account_version(account),
        )

    def schedule(self, ctx: Ctx, kind: str, obj_id: str, at: int | None) -> None:
        """Ask the clock to call ``TIMER_HANDLERS[kind]`` for the object at ``at``."""
        self.db.set_timer(ctx.acct, kind, obj_id, at)

    # -- ids ----------------------------------------------------------------------------

    def random_chars(self, n: int) -> str:
        with self._id_lock:
            return "".join(self.rng.choices(ALNUM, k=n))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}_1Sim{self.random_chars(20)}"

    # -- objects ------------------------------------------------------------------------

    def get(
        self,
        ctx: Ctx,
        obj_id: str,
        *,
        kind: str = "object",
        param: str = "id",
        object_type: str | None = None,
    ) -> dict[str, Any]:
        obj = self.db.get(ctx.acct, obj_id)
        if obj is None or (object_type is not None and obj.get("object") != object_type):
            raise missing(obj_id, param=param, kind=kind)
        return obj

    def save(
        self,
        ctx: Ctx,
        obj: dict[str, Any],
        *,
        links: dict[str, Iterable[str] | str | None] | None = None,
    ) -> dict[str, Any]:
        self.db.put(ctx.acct, obj, links=links)
        return obj

    # -- events -------------------------------------------------------------------------

    def emit(
        self,
        ctx: Ctx,
        event_type: str,
        obj: dict[str, Any],
        *,
        previous: dict[str, Any] | None = None,
        automatic: bool = False,
        created: int | None = None,
    ) -> dict[str, Any]:
        """Record an event with its snapshot, in the account's version of the moment."""
        event: dict[str, Any] = {
            "id": self.new_id("evt"),
            "object": "event",
            "api_version": self.account_version(ctx.account),
            "created": created if created is not None else self.now(),
            "data": {"object": clone(obj)},
            "livemode": ctx.livemode,
            "pending_webhooks": 0,
            "request": {"id": None, "idempotency_key": None}
            if automatic
            else {"id": ctx.request_id, "idempotency_key": ctx.idempotency_key},
            "type": event_type,
        }
        if previous is not None:
            event["data"]["previous_attributes"] = previous
        endpoints = self.endpoints_for(ctx.acct, event_type)
        event["pending_webhooks"] = len(endpoints)
        self.db.put_event(ctx.acct, event)
        if endpoints:
            now = time.time()
            with self.db:
                self.db.conn.executemany(
                    "INSERT INTO deliveries(acct, endpoint, event, next_attempt) VALUES (?,?,?,?)",
                    [(ctx.acct, ep["id"], event["id"], now) for ep in endpoints],
                )
        for listener in self.on_event:
            listener(ctx.acct, event)
        return event

    def endpoints_for(self, acct: str, event_type: str) -> list[dict[str, Any]]:
        endpoints = self._endpoint_cache.get(acct)
        if endpoints is None:
            endpoints = []
            page_cursor: str | None = None
            while True:
                page = self.db.list(acct, "webhook_endpoint", limit=100, starting_after=page_cursor)
                endpoints.extend(page.data)
                if not page.has_more:
                    break
                page_cursor = page.data[-1]["id"]
            self._endpoint_cache[acct] = endpoints
        return [
            ep
            for ep in endpoints
            if ep.get("status") == "enabled"
            and ("*" in ep["enabled_events"] or event_type in ep["enabled_events"])
        ]

    def invalidate_endpoints(self, acct: str) -> None:
        self._endpoint_cache.pop(acct, None)

    # -- rendering ----------------------------------------------------------------------

    def render(
        self,
        ctx: Ctx,
        obj: dict[str, Any],
        *,
        expand: list[str] | None = None,
        version: str | None = None,
    ) -> dict[str, Any]:
        """Expand, truncate nested lists, drop private fields, render in the version.

        Events keep the version in force when they were created. For an older target
        version the object is rendered first and expanded after, so that fields only the
        old shape has (``invoice.payment_intent``, ``charge.invoice``) can be expanded.
        """
        result = clone(obj)
        paths = expand if expand is not None else ctx.expand
        is_events = result.get("object") == "event" or (
            result.get("object") == "list"
            and any(
                isinstance(item, dict) and item.get("object") == "event"
                for item in result.get("data", [])
            )
        )
        target = version or ctx.api_version
        legacy = target != versions.CURRENT_VERSION and not is_events
        if legacy:
            result = versions.render(result, target, lookup=self._lookup(ctx.acct))
        for path in paths:
            self._expand(ctx, result, path.split("."), depth=0, version=target if legacy else None)
        result = _public(result, root=True)
        if result.get("object") == "event":
            event: dict[str, Any] = self._event_version(ctx.acct, result, None)
            return event
        if is_events:
            result["data"] = [self._event_version(ctx.acct, e, None) for e in result["data"]]
        rendered: dict[str, Any] = result
        return rendered

    def _event_version(
        self, acct: str, event: dict[str, Any], version: str | None
    ) -> dict[str, Any]:
        target = version or event["api_version"]
        if target != versions.CURRENT_VERSION:
            event = versions.render(event, target, lookup=self._lookup(acct))
        event["api_version"] = target
        return event

    def _lookup(self, acct: str) -> Callable[[str], dict[str, Any] | None]:
        """What ``versions.render`` needs: stored objects by id, and invoice payments.

        ``invoice_payment_for:<id>`` (an invoice, payment intent or charge id) answers the
        current-shape ``invoice_payment`` linking them, built from the invoice's private
        ``_payments`` record (older versions show ``invoice.charge`` and ``charge.invoice``).
        """

        def lookup(key: str) -> dict[str, Any] | None:
            if key.startswith(versions.INVOICE_PAYMENT_KEY_PREFIX):
                return self._invoice_payment(acct, key[len(versions.INVOICE_PAYMENT_KEY_PREFIX) :])
            return self.db.get(acct, key)

        return lookup

    def _invoice_payment(self, acct: str, obj_id: str) -> dict[str, Any] | None:
        obj = self.db.get(acct, obj_id)
        if obj is None:
            return None
        invoice: dict[str, Any] | None = obj
        if obj.get("object") != "invoice":
            invoice_id = obj.get("_invoice")
            invoice = self.db.get(acct, invoice_id) if isinstance(invoice_id, str) else None
        if invoice is None:
            return None
        payments = invoice.get("_payments") or []
        if not payments:
            return None
        chosen = next(
            (p for p in reversed(payments) if p.get("status") == "succeeded"), payments[-1]
        )
        if obj.get("object") in ("charge", "payment_intent"):
            chosen = next(
                (p for p in payments if obj["id"] in (p.get("charge"), p.get("payment_intent"))),
                chosen,
            )
        paid = chosen.get("status") == "succeeded"
        return {
            "id": "inpay_" + str(chosen.get("payment_intent", ""))[3:],
            "object": "invoice_payment",
            "amount_paid": invoice.get("amount_paid") if paid else None,
            "amount_requested": invoice.get("amount_due"),
            "created": invoice.get("created"),
            "currency": invoice.get("currency"),
            "invoice": invoice["id"],
            "is_default": True,
            "livemode": invoice.get("livemode", False),
            "payment": {
                "type": "payment_intent",
                "payment_intent": chosen.get("payment_intent"),
                "charge": chosen.get("charge"),
            },
            "status": "paid" if paid else "open",
            "status_transitions": {"canceled_at": None, "paid_at": None},
        }

    def render_event(
        self, acct: str, event: dict[str, Any], version: str | None = None
    ) -> dict[str, Any]:
        """An event as Stripe sends it: in its own version, or the endpoint's."""
        return self._event_version(acct, _public(copy.deepcopy(event), root=True), version)

    def _expand(
        self, ctx: Ctx, node: Any, path: list[str], depth: int, version: str | None = None
    ) -> None:
        if depth > 4:  # Stripe's limit; `data` of a list does not count
            raise invalid("You cannot expand more than 4 levels of a property.", param="expand")
        if not path or not isinstance(node, dict):
            return
        head, rest = path[0], path[1:]
        if head == "data" and isinstance(node.get("data"), list):
            for item in node["data"]:
                self._expand(ctx, item, rest, depth, version)
            return
        if head in INCLUDABLE.get(str(node.get("object")), ()):
            node[head] = copy.deepcopy(node.get("_" + head))
            return
        if head not in node:
            raise invalid(f"This property cannot be expanded ({head}).", param="expand")
        value = node[head]
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, str):
                    found = self._lookup_for_expand(ctx, item, version)
                    value[i] = found
                    item = found
                self._expand(ctx, item, rest, depth + 1, version)
            return
        if isinstance(value, str):
            value = self._lookup_for_expand(ctx, value, version)
            node[head] = value
        self._expand(ctx, value, rest, depth + 1, version)

    def _lookup_for_expand(self, ctx: Ctx, obj_id: str, version: str | None = None) -> Any:
        obj = self.db.get(ctx.acct, obj_id, include_deleted=True)
        if obj is None:
            return obj_id
        if self.db.is_deleted(ctx.acct, obj_id):
            return {"id": obj_id, "object": obj["object"], "deleted": True}
        if version is not None:
            # an expanded object appears in the same (older) version as its parent
            return versions.render(obj, version, lookup=self._lookup(ctx.acct))
        return obj

    def list_response(self, ctx: Ctx, url: str, page: Page) -> dict[str, Any]:
        return {
            "object": "list",
            "data": page.data,
            "has_more": page.has_more,
            "url": url,
        }

    def paginate(
        self, ctx: Ctx, params: dict[str, Any], object_type: str, url: str, **filters: Any
    ) -> dict[str, Any]:
        limit = as_int(params, "limit", 10, minimum=1, maximum=100)
        assert limit is not None
        starting_after = params.get("starting_after") or None
        ending_before = params.get("ending_before") or None
        if starting_after and ending_before:
            raise invalid(
                "You may only specify one of these parameters: ending_before, starting_after.",
                param="starting_after",
            )
        try:
            page = self.db.list(
                ctx.acct,
                object_type,
                limit=limit,
                starting_after=starting_after,
                ending_before=ending_before,
                **filters,
            )
        except KeyError as exc:
            param = "starting_after" if starting_after else "ending_before"
            raise missing(str(exc.args[0]), param=param, kind="object") from None
        return self.list_response(ctx, url, page)

    # -- dispatch -----------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        key: str | None = None,
        stripe_version: str | None = None,
        idempotency_key: str | None = None,
        request_id: str | None = None,
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Run one API request; returns (status, rendered body, extra headers)."""
        params = dict(params or {})
        request_id = request_id or "req_" + self.random_chars(14)
        headers = {"Request-Id": request_id}
        try:
            if stripe_version is not None:
                try:
                    versions.is_legacy(stripe_version)
                except ValueError:
                    raise SimAPIError(
                        400, f"Invalid Stripe API version: {stripe_version}"
                    ) from None
            ctx = self.context(key, stripe_version=stripe_version)
            ctx.request_id = request_id
            ctx.idempotency_key = idempotency_key
            matched, path_params = self._match(method, path)
            self._check_permission(ctx, matched)
            ctx.expand = [str(e) for e in as_list(params, "expand")]
            params.pop("expand", None)
            if method == "POST" and idempotency_key:
                status, body, replayed = self._idempotent(ctx, matched, path_params, params, path)
                headers["Idempotency-Key"] = idempotency_key
                if replayed:
                    headers["Idempotent-Replayed"] = "true"
                return status, body, headers
            return 200, self._run(ctx, matched, path_params, params), headers
        except SimAPIError as exc:
            headers.update(exc.headers)
            return exc.status, exc.body(request_id), headers

    def _run(
        self, ctx: Ctx, matched: Route, path_params: dict[str, str], params: dict[str, Any]
    ) -> dict[str, Any]:
        failure: SimAPIError | None = None
        with self.db:
            try:
                body = matched.handler(self, ctx, params, **path_params)
            except SimAPIError as exc:
                if not exc.commit:
                    raise
                failure = exc  # committed, then answered
        if failure is not None:
            raise failure
        return self.render(ctx, body)

    def _idempotent(
        self,
        ctx: Ctx,
        matched: Route,
        path_params: dict[str, str],
        params: dict[str, Any],
        path: str,
    ) -> tuple[int, dict[str, Any], bool]:
        assert ctx.idempotency_key is not None
        fingerprint = hashlib.sha256(
            json.dumps([path, params, ctx.expand], sort_keys=True).encode()
        ).hexdigest()
        rows = self.db.execute(
            "SELECT fingerprint, status, body FROM idempotency WHERE acct=? AND key=?",
            (ctx.acct, ctx.idempotency_key),
        )
        if rows:
            if rows[0][0] != fingerprint:
                raise SimAPIError(
                    400,
                    "Keys for idempotent requests can only be used with the same parameters "
                    "they were first used with. Try using a key other than "
                    f"'{ctx.idempotency_key}' if you meant to execute a different request.",
                    type="idempotency_error",
                )
            return int(rows[0][1]), json.loads(rows[0][2]), True
        try:
            body = self._run(ctx, matched, path_params, params)
            status = 200
        except SimAPIError as exc:
            # Stripe does not save results for 5xx and 429; the request may be retried.
            if exc.status >= 500 or exc.status == 429:
                raise
            status, body = exc.status, exc.body(ctx.request_id)
        with self.db:
            self.db.conn.execute(
                "INSERT OR REPLACE INTO idempotency(acct, key, fingerprint, status, body, created)"
                " VALUES (?,?,?,?,?,?)",
                (ctx.acct, ctx.idempotency_key, fingerprint, status, json.dumps(body), time.time()),
            )
        return status, body, False

    def _match(self, method: str, path: str) -> tuple[Route, dict[str, str]]:
        allowed = False  # Stripe answers 404 for a known path with another method too
        for candidate in ROUTES:
            match = candidate.pattern.match(path)
            if match is None:
                continue
            if candidate.method != method:
                allowed = True
                continue
            return candidate, match.groupdict()
        del allowed
        raise SimAPIError(
            404,
            f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs"
            " or we can help at https://support.stripe.com/.",
        )

    def match_route(self, method: str, path: str) -> Route | None:
        try:
            return self._match(method, path)[0]
        except SimAPIError:
            return None

    def _check_permission(self, ctx: Ctx, matched: Route) -> None:
        if matched.resource is None:
            return
        rows = self.db.execute("SELECT permissions FROM api_keys WHERE key=?", (ctx.key,))
        if not rows or rows[0][0] is None:
            return
        permissions: dict[str, str] = json.loads(rows[0][0])
        granted = permissions.get(matched.resource, "none")
        if granted == "write" or (granted == "read" and matched.access == "read"):
            return
        code = PERMISSION_CODES[matched.resource]
        raise SimAPIError(
            403,
            f"The provided key '{mask_key(ctx.key)}' does not have the required permissions "
            f"for this endpoint on account '{ctx.account}'. Having the "
            f"'{code}_{matched.access}' permission would allow this request to continue.",
            type="invalid_request_error",
        )

    # -- ground truth -------------------------------------------------------------------

    def export_state(self, acct: str | None = None) -> Iterable[dict[str, Any]]:
        """Every object as stored (canonical shape, private fields dropped)."""
        for acct_, obj, deleted in self.db.iter_objects(acct):
            yield {"acct": acct_, "deleted": deleted, "object": _strip_private(obj)}

    def close(self) -> None:
        self.db.close()


def _public(node: Any, *, root: bool = False) -> Any:
    """Drop private ``_``-prefixed fields; truncate nested lists as Stripe embeds them."""
    if isinstance(node, dict):
        out = {k: _public(v) for k, v in node.items() if not k.startswith("_")}
        if (
            not root
            and out.get("object") == "list"
            and isinstance(out.get("data"), list)
            and len(out["data"]) > NESTED_LIST_LIMIT
        ):
            out["data"] = out["data"][:NESTED_LIST_LIMIT]
            out["has_more"] = True
        return out
    if isinstance(node, list):
        return [_public(v) for v in node]
    return node


def _strip_private(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_private(v) for k, v in node.items() if not k.startswith("_")}
    if isinstance(node, list):
        return [_strip_private(v) for v in node]
    return node
