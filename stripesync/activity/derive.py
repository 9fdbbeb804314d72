"""Activity-feed entries derived from one Stripe event.

The feed speaks the seeds' language ("New trial", "Subscription change", "Invoice paid"),
not Stripe's (``customer.subscription.updated``): one Stripe event can mean several things
(a trial that converts while a quantity changes) or nothing worth a feed line (a period
roll-over, ``trial_will_end``). `activity_from_event` is that translation, as a pure
function of the event, so webhooks, event polling and replays all produce the same entries.

Two keys make the feed safe to write more than once (docs/activity.md, "Dedupe rule"):

``dedupe_key``
    ``<event id>/<key>/<object id>``: a replayed or duplicated event yields the same
    entries with the same keys, so an upsert on it never duplicates.
``fact_key``
    ``<object id>/<fact>[@<instance>]``: names the *fact*, whatever produced it. Facts
    that happen once per object (an invoice is paid once) carry no instance; a trial's
    facts carry its ``trial_start``; a scheduled cancellation its ``canceled_at`` (the
    request time Stripe records); repeatable facts ("Invoice updated") the event's time.
    `stripesync.activity.history` builds the same keys from objects, so an entry
    reconstructed at import and the same fact arriving by webhook are recognisably one,
    and so are two Stripe events reporting one fact (``invoice.paid`` and
    ``invoice.payment_succeeded``; ``customer.subscription.updated`` and ``.deleted``).

Every attribute value is plain JSON: strings, integers, booleans, None, lists and dicts of
them. Times in attributes are ISO 8601 UTC strings (the seeds' ``2024-07-05T22:10:00Z``);
``occurred_at`` stays a unix timestamp, as Stripe sends it, for sorting and storage.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Final

from stripesync.errors import InvalidInput
from stripesync.revenue import (
    RevenueRules,
    classify_movement,
    subscription_arr,
    subscription_mrr,
)
from stripesync.stripe_api.shapes import (
    invoice_subscription_id,
    normalize,
    object_id,
    subscription_period,
)

__all__ = [
    "ACTIVITY_NAMES",
    "CHANGE_KINDS",
    "ENDED_STATUSES",
    "HANDLED_EVENT_TYPES",
    "TRIAL_END_GRACE",
    "ActivityEvent",
    "Lookup",
    "activity_from_event",
    "change_kinds",
    "charge_attributes",
    "customer_attributes",
    "ended_trial_outcome",
    "fact_key",
    "invoice_attributes",
    "payment_intent_attributes",
    "refund_attributes",
    "sort_key",
    "sorted_activity",
    "subscription_attributes",
]

#: Fetches a stored Stripe object by id (a customer, a product, a charge), or None.
Lookup = Callable[[str], Mapping[str, Any] | None]

#: Every feed entry's stable key and its display name, in the seeds' wording. The order is
#: also how entries of the same second are sorted: causes before their effects.
ACTIVITY_NAMES: Final[Mapping[str, str]] = MappingProxyType(
    {
        "customer_created": "Customer created",
        "customer_updated": "Customer updated",
        "subscription_created": "Subscription created",
        "new_trial": "New trial",
        "trial_converted": "Trial converted",
        "trial_expired": "Trial expired",
        "trial_cancelled": "Trial cancelled",
        "subscription_change": "Subscription change",
        "invoice_created": "Invoice created",
        "invoice_updated": "Invoice updated",
        "payment_intent_created": "Payment intent created",
        "charge_failed": "Charge failed",
        "invoice_payment_failed": "Invoice payment failed",
        "charge_succeeded": "Charge succeeded",
        "payment_intent_succeeded": "Payment intent succeeded",
        "invoice_paid": "Invoice paid",
        "invoice_voided": "Invoice voided",
        "invoice_marked_uncollectible": "Invoice marked uncollectible",
        "refund_issued": "Refund issued",
        "refund_failed": "Refund failed",
        "subscription_cancelled": "Subscription cancelled",
        "customer_deleted": "Customer deleted",
    }
)

#: The kinds of "Subscription change", in the order that picks the primary ``change_kind``.
CHANGE_KINDS: Final[tuple[str, ...]] = (
    "scheduled_cancellation",
    "cancellation_withdrawn",
    "pause",
    "resume",
    "interval",
    "upgrade",
    "downgrade",
    "quantity",
    "plan",
    "status",
)

#: Statuses after which a subscription never bills again.
ENDED_STATUSES: Final = frozenset({"canceled", "incomplete_expired"})

#: How long after ``trial_end`` a subscription that ends is taken to have ended *with* its
#: trial. Stripe processes trial ends shortly after the scheduled second, not at it.
TRIAL_END_GRACE: Final = 3600

# Facts a Stripe object can have at most once: their fact key needs no instance.
_ONCE: Final = frozenset(
    {
        "customer_created",
        "customer_deleted",
        "subscription_created",
        "subscription_cancelled",
        "charge_succeeded",
        "charge_failed",
        "invoice_created",
        "invoice_paid",
        "invoice_voided",
        "invoice_marked_uncollectible",
        "payment_intent_created",
        "payment_intent_succeeded",
        "refund_issued",
        "refund_failed",
    }
)


@dataclass(frozen=True, kw_only=True)
class ActivityEvent:
    """One line of a customer's activity feed.

    ``event_id``/``event_type`` are None for entries reconstructed from objects
    (``reconstructed`` True); ``object_id``/``object_type`` name the Stripe object the fact
    is about (a subscription for "Trial converted", a refund for "Refund issued").
    ``attributes`` is read-only; `as_dict` gives a JSON-ready copy of the whole entry.
    """

    name: str
    key: str
    occurred_at: int
    customer_id: str | None
    object_type: str
    object_id: str | None
    event_id: str | None
    event_type: str | None
    reconstructed: bool
    dedupe_key: str
    fact_key: str
    attributes: Mapping[str, Any] = field(default_factory=dict, hash=False)
    livemode: bool | None = None
    source: str = "stripe"

    def __post_init__(self) -> None:
        if self.key not in ACTIVITY_NAMES or ACTIVITY_NAMES[self.key] != self.name:
            raise InvalidInput(
                f"activity key {self.key!r} with name {self.name!r} is not a known pair; "
                f"use one of {sorted(ACTIVITY_NAMES)} with its ACTIVITY_NAMES name"
            )
        object.__setattr__(self, "attributes", MappingProxyType(dict(self.attributes)))

    @property
    def occurred_at_iso(self) -> str:
        return _iso(self.occurred_at) or ""

    def as_dict(self) -> dict[str, Any]:
        """The entry as plain JSON-ready values (attributes deep-copied)."""
        return {
            "name": self.name,
            "key": self.key,
            "occurred_at": self.occurred_at,
            "customer_id": self.customer_id,
            "object_type": self.object_type,
            "object_id": self.object_id,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "reconstructed": self.reconstructed,
            "dedupe_key": self.dedupe_key,
            "fact_key": self.fact_key,
            "attributes": copy.deepcopy(dict(self.attributes)),
            "livemode": self.livemode,
            "source": self.source,
        }


def fact_key(object_id: str | None, fact: str, instance: int | None) -> str:
    """The key naming one fact about one object; see the module docstring."""
    base = f"{object_id or '-'}/{fact}"
    return base if instance is None else f"{base}@{instance}"


# -- small readers --------------------------------------------------------------------


def _ts(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _iso(value: Any) -> str | None:
    ts = _ts(value)
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _map(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _int(value: Any) -> int | None:
    return _ts(value)


def _items(sub: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    data = _map(sub.get("items")).get("data")
    if isinstance(data, list):
        return [item for item in data if isinstance(item, Mapping)]
    plan = sub.get("plan")
    if isinstance(plan, Mapping):  # pre-2016 subscriptions: one plan, no items
        return [{"id": None, "plan": plan, "quantity": sub.get("quantity")}]
    return []


@dataclass(frozen=True)
class _ItemFacts:
    item_id: str | None
    price_id: str | None
    product_id: str | None
    product_name: str | None
    quantity: int
    interval: str | None
    interval_count: int


def _item_facts(item: Mapping[str, Any], lookup: Lookup | None) -> _ItemFacts:
    price, plan = item.get("price"), item.get("plan")
    source = price if isinstance(price, Mapping) else _map(plan)
    if isinstance(price, Mapping):
        recurring = _map(price.get("recurring"))
        interval, count = recurring.get("interval"), recurring.get("interval_count")
    else:
        interval, count = source.get("interval"), source.get("interval_count")
    product = source.get("product")
    product_id = object_id(product)
    name = _str(product.get("name")) if isinstance(product, Mapping) else None
    if name is None and product_id is not None and lookup is not None:
        found = lookup(product_id)
        name = _str(found.get("name")) if found is not None else None
    quantity = _int(item.get("quantity"))
    return _ItemFacts(
        item_id=object_id(item.get("id")),
        price_id=object_id(price) or object_id(plan),
        product_id=product_id,
        product_name=name,
        quantity=1 if quantity is None else quantity,
        interval=_str(interval),
        interval_count=_int(count) or 1,
    )


def _customer_of(obj: Mapping[str, Any]) -> str | None:
    return object_id(obj.get("customer"))


# -- attributes -----------------------------------------------------------------------


def _mrr(
    sub: Mapping[str, Any],
    *,
    at: int,
    rules: RevenueRules,
    customer: Mapping[str, Any] | None,
) -> tuple[int | None, int | None]:
    """MRR and ARR by the revenue rules, or (None, None) when the object cannot be read.

    A feed entry is still worth writing when, say, a tiered price arrived without its
    tiers; the figure is left out rather than guessed (the revenue package says why).
    """
    try:
        return (
            subscription_mrr(sub, customer=customer, at=at, rules=rules),
            subscription_arr(sub, customer=customer, at=at, rules=rules),
        )
    except InvalidInput:
        return None, None


def _activated_at(sub: Mapping[str, Any]) -> int | None:
    """When the subscription last became active, as far as the object can tell.

    Stripe records no such time; a subscription that had a trial activated at its end
    (unless it ended during it), any other at its start. Never-active ones give None.
    """
    status = sub.get("status")
    if status in ("trialing", "incomplete", "incomplete_expired"):
        return None
    trial_start, trial_end = _ts(sub.get("trial_start")), _ts(sub.get("trial_end"))
    ended = _ts(sub.get("ended_at"))
    if trial_start is not None and trial_end is not None and trial_end > trial_start:
        if status == "paused" or (ended is not None and ended <= trial_end):
            return None
        return trial_end
    return _ts(sub.get("start_date")) or _ts(sub.get("created"))


def _cancellation_requested(sub: Mapping[str, Any]) -> bool:
    return bool(sub.get("cancel_at_period_end")) or _ts(sub.get("cancel_at")) is not None


def _expires_at(sub: Mapping[str, Any]) -> int | None:
    ended = _ts(sub.get("ended_at"))
    if ended is not None:
        return ended
    cancel_at = _ts(sub.get("cancel_at"))
    if cancel_at is not None:
        return cancel_at
    if sub.get("cancel_at_period_end"):
        return subscription_period(sub)[1]
    return None


def subscription_attributes(
    sub: Mapping[str, Any],
    *,
    at: int,
    rules: RevenueRules | None = None,
    customer: Mapping[str, Any] | None = None,
    lookup: Lookup | None = None,
) -> dict[str, Any]:
    """The seeds' subscription attributes (000's reference), from a current-shape object.

    ``at`` is the moment the entry describes: it decides which discounts still count for
    ``mrr``/``arr`` and keeps the result independent of the clock.
    """
    facts = [_item_facts(item, lookup) for item in _items(sub)]
    start, end = subscription_period(sub)
    mrr, arr = _mrr(sub, at=at, rules=rules or RevenueRules(), customer=customer)
    trial_start, trial_end = _ts(sub.get("trial_start")), _ts(sub.get("trial_end"))
    has_trial = trial_end is not None
    behavior = _map(_map(sub.get("trial_settings")).get("end_behavior"))
    return {
        "value": object_id(sub.get("id")),
        "change_type": facts[0].price_id if facts else None,
        "plan_ids": [f.price_id for f in facts],
        "product_ids": [f.product_id for f in facts],
        "product_names": [f.product_name for f in facts if f.product_name is not None],
        "quantity": sum(f.quantity for f in facts),
        "state": _str(sub.get("status")),
        "activated_at": _iso(_activated_at(sub)),
        "cancelled_at": _iso(sub.get("canceled_at")),
        "expires_at": _iso(_expires_at(sub)),
        "cancel_at_period_end": bool(sub.get("cancel_at_period_end")),
        "current_term_start": _iso(start),
        "current_term_end": _iso(end),
        "trial_started_at": _iso(trial_start),
        "trial_ends_at": _iso(trial_end),
        "trial_end_action": _str(behavior.get("missing_payment_method")) if has_trial else None,
        "is_trial": sub.get("status") == "trialing",
        "currency": _str(sub.get("currency")),
        "collection_method": _str(sub.get("collection_method")),
        "mrr": mrr,
        "arr": arr,
    }


def customer_attributes(customer: Mapping[str, Any]) -> dict[str, Any]:
    """The seeds' customer attributes (000's "Customers" table)."""
    address = _map(customer.get("address"))
    cash = _map(customer.get("cash_balance"))
    delinquent = customer.get("delinquent")
    return {
        "email": _str(customer.get("email")),
        "name": _str(customer.get("name")),
        "phone": _str(customer.get("phone")),
        "description": _str(customer.get("description")),
        "address_line1": _str(address.get("line1")),
        "address_line2": _str(address.get("line2")),
        "city": _str(address.get("city")),
        "state": _str(address.get("state")),
        "postal_code": _str(address.get("postal_code")),
        "country": _str(address.get("country")),
        "currency": _str(customer.get("currency")),
        "balance": _int(customer.get("balance")),
        # Only present when the customer was fetched with expand[]=cash_balance.
        "cash_balance": dict(_map(cash.get("available"))) or None,
        "delinquent": delinquent if isinstance(delinquent, bool) else None,
        "created": _iso(customer.get("created")),
        "metadata": dict(_map(customer.get("metadata"))),
    }


def charge_attributes(charge: Mapping[str, Any]) -> dict[str, Any]:
    """The seeds' charge attributes; ``receipt_email`` falls back on the billing email."""
    receipt = _str(charge.get("receipt_email")) or _str(
        _map(charge.get("billing_details")).get("email")
    )
    return {
        "status": _str(charge.get("status")),
        "amount": _int(charge.get("amount")),
        "amount_refunded": _int(charge.get("amount_refunded")),
        "currency": _str(charge.get("currency")),
        "description": _str(charge.get("description")),
        "receipt_email": receipt,
        "failure_code": _str(charge.get("failure_code")),
        "failure_message": _str(charge.get("failure_message")),
        "paid": bool(charge.get("paid")),
        "refunded": bool(charge.get("refunded")),
        "payment_intent": object_id(charge.get("payment_intent")),
        # Pre-2025-03-31 payloads link the invoice here; current ones through invoice payments.
        "invoice": object_id(charge.get("invoice")),
    }


def invoice_attributes(invoice: Mapping[str, Any]) -> dict[str, Any]:
    """The seeds' invoice attributes; ``paid`` is derived where the payload lacks it."""
    paid = invoice.get("paid")
    transitions = _map(invoice.get("status_transitions"))
    return {
        "number": _str(invoice.get("number")),
        "status": _str(invoice.get("status")),
        "total": _int(invoice.get("total")),
        "subtotal": _int(invoice.get("subtotal")),
        "amount_paid": _int(invoice.get("amount_paid")),
        "amount_due": _int(invoice.get("amount_due")),
        "amount_remaining": _int(invoice.get("amount_remaining")),
        # `paid` left the invoice in 2025-03-31.basil; status carries the same fact.
        "paid": paid if isinstance(paid, bool) else invoice.get("status") == "paid",
        "collection_method": _str(invoice.get("collection_method")),
        "currency": _str(invoice.get("currency")),
        "billing_reason": _str(invoice.get("billing_reason")),
        "subscription_id": invoice_subscription_id(invoice),
        "attempt_count": _int(invoice.get("attempt_count")),
        "next_payment_attempt": _iso(invoice.get("next_payment_attempt")),
        "due_date": _iso(invoice.get("due_date")),
        "paid_at": _iso(transitions.get("paid_at")),
        "hosted_invoice_url": _str(invoice.get("hosted_invoice_url")),
    }


def payment_intent_attributes(intent: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "amount": _int(intent.get("amount")),
        "amount_received": _int(intent.get("amount_received")),
        "currency": _str(intent.get("currency")),
        "status": _str(intent.get("status")),
        "description": _str(intent.get("description")),
    }


def refund_attributes(refund: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "amount": _int(refund.get("amount")),
        "currency": _str(refund.get("currency")),
        "reason": _str(refund.get("reason")),
        "status": _str(refund.get("status")),
        "charge": object_id(refund.get("charge")),
        "payment_intent": object_id(refund.get("payment_intent")),
        "failure_reason": _str(refund.get("failure_reason")),
    }


# -- trials that end with their subscription -------------------------------------------


def ended_trial_outcome(sub: Mapping[str, Any], *, was_trialing: bool | None) -> str | None:
    """How a subscription that has ended (status canceled or incomplete_expired) ended its
    trial: ``"trial_cancelled"``, ``"trial_expired"``, or None when it ended after one.

    ``was_trialing`` is the status just before, when known. Without it the object decides:
    ending before ``trial_end`` is a cancellation during the trial; ending at the trial's
    end (within `TRIAL_END_GRACE`) is an expiry, unless a cancellation had been requested
    (then the customer cancelled the trial and it ran out its days).
    """
    if was_trialing is False:
        return None
    trial_end = _ts(sub.get("trial_end"))
    ended = _ts(sub.get("ended_at")) or _ts(sub.get("canceled_at"))
    if trial_end is None or ended is None:
        return "trial_cancelled" if was_trialing else None
    if ended < trial_end:
        return "trial_cancelled"
    if was_trialing or ended - trial_end <= TRIAL_END_GRACE:
        return "trial_cancelled" if _cancellation_requested(sub) else "trial_expired"
    return None


# -- the event translation ------------------------------------------------------------


@dataclass(frozen=True)
class _Ctx:
    event_id: str
    event_type: str
    created: int
    livemode: bool | None
    obj: Mapping[str, Any]
    previous: Mapping[str, Any] | None
    changed: frozenset[str]
    rules: RevenueRules
    customer_lookup: Lookup | None
    lookup: Lookup | None

    def entry(
        self,
        key: str,
        *,
        object_type: str,
        obj_id: str | None,
        customer_id: str | None,
        attributes: Mapping[str, Any],
        instance: int | None,
        fact: str | None = None,
    ) -> ActivityEvent:
        return ActivityEvent(
            name=ACTIVITY_NAMES[key],
            key=key,
            occurred_at=self.created,
            customer_id=customer_id,
            object_type=object_type,
            object_id=obj_id,
            event_id=self.event_id,
            event_type=self.event_type,
            reconstructed=False,
            dedupe_key=f"{self.event_id}/{key}/{obj_id or '-'}",
            fact_key=fact_key(obj_id, fact or key, instance),
            attributes=attributes,
            livemode=self.livemode,
        )

    def customer(self, customer_id: str | None) -> Mapping[str, Any] | None:
        if customer_id is None or self.customer_lookup is None:
            return None
        found = self.customer_lookup(customer_id)
        return normalize(found) if found is not None else None


def _merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with Stripe's ``previous_attributes`` laid over it (hashes merge, the rest
    replaces), which is the object as it was before the event."""
    merged = dict(base)
    for key, value in changes.items():
        below = merged.get(key)
        merged[key] = (
            _merge(below, value)
            if isinstance(value, Mapping) and isinstance(below, Mapping)
            else value
        )
    return merged


def activity_from_event(
    event: Mapping[str, Any],
    *,
    previous_object: Mapping[str, Any] | None = None,
    rules: RevenueRules | None = None,
    customer_lookup: Lookup | None = None,
    lookup: Lookup | None = None,
) -> list[ActivityEvent]:
    """The feed entries one Stripe event stands for (docs/activity.md has the table).

    ``event`` is the event envelope in any API version's shape. ``previous_object`` is the
    object as stored before this event, used when the event carries no
    ``previous_attributes`` (``customer.subscription.deleted``, the ``paused`` and
    ``resumed`` events); ``previous_attributes`` win when both exist, being Stripe's own
    account of the change. ``customer_lookup`` returns a stored customer by id, for the
    customer-level discount in MRR (rule 6); ``lookup`` returns any stored object by id,
    for product names of unexpanded prices and a refund's customer through its charge.
    Both must be pure reads; without them the entry simply lacks what they would add.

    Event types the feed does not show return ``[]``, as do unknown ones.
    Raises :class:`~stripesync.errors.InvalidInput` when ``event`` is not an event.
    """
    if not isinstance(event, Mapping) or event.get("object") != "event":
        kind = event.get("object") if isinstance(event, Mapping) else type(event).__name__
        raise InvalidInput(
            f"expected a Stripe event envelope (object 'event'), got {kind!r}; pass the "
            "whole event as received, not its data.object"
        )
    event_type = event.get("type")
    handler = _HANDLERS.get(event_type) if isinstance(event_type, str) else None
    if handler is None:
        return []
    normalized = normalize(event)
    data = _map(normalized.get("data"))
    obj = data.get("object")
    event_id, created = _str(normalized.get("id")), _ts(normalized.get("created"))
    if not isinstance(obj, Mapping) or event_id is None or created is None:
        raise InvalidInput(
            f"event {event.get('id')!r} ({event_type}) lacks an id, a created time or "
            "data.object; pass the event exactly as Stripe sent it"
        )
    prev_attrs = data.get("previous_attributes")
    previous: Mapping[str, Any] | None = None
    changed: frozenset[str] = frozenset()
    if isinstance(prev_attrs, Mapping) and prev_attrs:
        previous = _merge(obj, prev_attrs)
        changed = frozenset(prev_attrs)
    elif previous_object is not None:
        previous = normalize(previous_object)
    livemode = normalized.get("livemode")
    ctx = _Ctx(
        event_id=event_id,
        event_type=str(event_type),
        created=created,
        livemode=livemode if isinstance(livemode, bool) else None,
        obj=obj,
        previous=previous,
        changed=changed,
        rules=rules or RevenueRules(),
        customer_lookup=customer_lookup,
        lookup=lookup,
    )
    return handler(ctx)


# -- customers --------------------------------------------------------------------------


def _customer_event(key: str) -> Callable[[_Ctx], list[ActivityEvent]]:
    def handle(ctx: _Ctx) -> list[ActivityEvent]:
        cid = object_id(ctx.obj.get("id"))
        attributes = customer_attributes(ctx.obj)
        if key == "customer_updated":
            attributes["changed_fields"] = sorted(ctx.changed)
        instance = None if key in _ONCE else ctx.created
        return [
            ctx.entry(
                key,
                object_type="customer",
                obj_id=cid,
                customer_id=cid,
                attributes=attributes,
                instance=instance,
            )
        ]

    return handle


# -- subscriptions ----------------------------------------------------------------------


def _sub_entry(
    ctx: _Ctx,
    key: str,
    sub: Mapping[str, Any],
    *,
    instance: int | None,
    extra: Mapping[str, Any] | None = None,
    fact: str | None = None,
) -> ActivityEvent:
    cid = _customer_of(sub)
    attributes = subscription_attributes(
        sub, at=ctx.created, rules=ctx.rules, customer=ctx.customer(cid), lookup=ctx.lookup
    )
    if extra:
        attributes.update(extra)
    return ctx.entry(
        key,
        object_type="subscription",
        obj_id=object_id(sub.get("id")),
        customer_id=cid,
        attributes=attributes,
        instance=instance,
        fact=fact,
    )


def _trial_instance(sub: Mapping[str, Any], fallback: int) -> int:
    return _ts(sub.get("trial_start")) or _ts(sub.get("trial_end")) or fallback


def _mrr_pair(
    ctx: _Ctx, before: Mapping[str, Any] | None, after: Mapping[str, Any]
) -> dict[str, Any]:
    customer = ctx.customer(_customer_of(after))
    mrr_after, _ = _mrr(after, at=ctx.created, rules=ctx.rules, customer=customer)
    mrr_before = None
    if before is not None:
        mrr_before, _ = _mrr(before, at=ctx.created, rules=ctx.rules, customer=customer)
    return {"mrr_before": mrr_before, "mrr_after": mrr_after}


def _ending_entry(
    ctx: _Ctx, sub: Mapping[str, Any], *, was_trialing: bool | None, mrr_before: int | None
) -> ActivityEvent:
    """The one entry for a subscription that ended: a trial's end, or a cancellation."""
    outcome = ended_trial_outcome(sub, was_trialing=was_trialing)
    extra: dict[str, Any] = {
        "mrr_before": mrr_before,
        "mrr_after": 0,
        "cancellation_reason": _str(_map(sub.get("cancellation_details")).get("reason")),
    }
    if outcome is not None:
        return _sub_entry(
            ctx, outcome, sub, instance=_trial_instance(sub, ctx.created), extra=extra
        )
    return _sub_entry(ctx, "subscription_cancelled", sub, instance=None, extra=extra)


def _subscription_created(ctx: _Ctx) -> list[ActivityEvent]:
    sub = ctx.obj
    entries = [_sub_entry(ctx, "subscription_created", sub, instance=None)]
    if sub.get("status") == "trialing":
        entries.append(
            _sub_entry(ctx, "new_trial", sub, instance=_trial_instance(sub, ctx.created))
        )
    return entries


def _scheduled(sub: Mapping[str, Any]) -> bool:
    return sub.get("status") not in ENDED_STATUSES and _cancellation_requested(sub)


def _paused(sub: Mapping[str, Any]) -> bool:
    return bool(sub.get("pause_collection")) or sub.get("status") == "paused"


def change_kinds(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    *,
    mrr_before: int | None,
    mrr_after: int | None,
) -> list[str]:
    """What a subscription update changed, as "Subscription change" kinds, in
    `CHANGE_KINDS` order. Trial starts and ends and cancellations are not kinds: they
    have entries of their own. An empty list means nothing the feed shows (a period
    roll-over, metadata, the default payment method)."""
    kinds: set[str] = set()
    b_status, a_status = before.get("status"), after.get("status")
    ended = a_status in ENDED_STATUSES
    if _paused(after) and not _paused(before):
        kinds.add("pause")
    elif _paused(before) and not _paused(after) and not ended:
        kinds.add("resume")
    if _scheduled(after) and (
        not _scheduled(before)
        or _expires_at(before) != _expires_at(after)
        or before.get("canceled_at") != after.get("canceled_at")
    ):
        kinds.add("scheduled_cancellation")
    elif _scheduled(before) and not _cancellation_requested(after) and not ended:
        kinds.add("cancellation_withdrawn")

    items_before = [_item_facts(item, None) for item in _items(before)]
    items_after = [_item_facts(item, None) for item in _items(after)]
    prices_before = sorted(f.price_id or "" for f in items_before)
    prices_after = sorted(f.price_id or "" for f in items_after)
    intervals_before = {(f.interval, f.interval_count) for f in items_before}
    intervals_after = {(f.interval, f.interval_count) for f in items_after}
    if intervals_before != intervals_after:
        kinds.add("interval")
    if prices_before != prices_after:
        movement = None
        if mrr_before is not None and mrr_after is not None:
            movement = classify_movement(mrr_before, mrr_after, paid_before=mrr_before > 0)
        if movement in ("new", "reactivation", "expansion"):
            kinds.add("upgrade")
        elif movement in ("contraction", "churn"):
            kinds.add("downgrade")
        else:
            kinds.add("plan")
    else:
        qty_before = {f.price_id: f.quantity for f in items_before}
        qty_after = {f.price_id: f.quantity for f in items_after}
        if qty_before != qty_after:
            kinds.add("quantity")

    status_handled = (
        b_status == "trialing" or a_status == "trialing" or ended or kinds & {"pause", "resume"}
    )
    if b_status != a_status and not status_handled:
        kinds.add("status")
    return [kind for kind in CHANGE_KINDS if kind in kinds]


def _change_entry(
    ctx: _Ctx, before: Mapping[str, Any], after: Mapping[str, Any]
) -> ActivityEvent | None:
    mrr = _mrr_pair(ctx, before, after)
    kinds = change_kinds(before, after, mrr_before=mrr["mrr_before"], mrr_after=mrr["mrr_after"])
    if not kinds:
        return None
    before_facts = [_item_facts(item, None) for item in _items(before)]
    extra: dict[str, Any] = {
        "change_kind": kinds[0],
        "change_kinds": kinds,
        **mrr,
        "previous_state": _str(before.get("status")),
        "previous_plan_ids": [f.price_id for f in before_facts],
        "previous_quantity": sum(f.quantity for f in before_facts),
    }
    if "scheduled_cancellation" in kinds:
        # The request time Stripe keeps in canceled_at is what reconstruction sees too.
        instance = _ts(after.get("canceled_at")) or ctx.created
        fact = "subscription_change.scheduled_cancellation"
    else:
        instance = ctx.created
        fact = "subscription_change." + "+".join(kinds)
    return _sub_entry(ctx, "subscription_change", after, instance=instance, extra=extra, fact=fact)


def _subscription_updated(ctx: _Ctx) -> list[ActivityEvent]:
    after = ctx.obj
    before = ctx.previous
    if before is None:
        return []
    b_status, a_status = before.get("status"), after.get("status")
    entries: list[ActivityEvent] = []
    if b_status != a_status:
        if a_status in ENDED_STATUSES:
            mrr_before = _mrr_pair(ctx, before, after)["mrr_before"]
            entries.append(
                _ending_entry(
                    ctx, after, was_trialing=b_status == "trialing", mrr_before=mrr_before
                )
            )
        elif b_status == "trialing":
            key = "trial_converted" if a_status == "active" else "trial_expired"
            extra = _mrr_pair(ctx, before, after)
            entries.append(
                _sub_entry(
                    ctx, key, after, instance=_trial_instance(after, ctx.created), extra=extra
                )
            )
        if a_status == "trialing":
            entries.append(
                _sub_entry(ctx, "new_trial", after, instance=_trial_instance(after, ctx.created))
            )
    change = _change_entry(ctx, before, after)
    if change is not None:
        entries.append(change)
    return entries


def _subscription_deleted(ctx: _Ctx) -> list[ActivityEvent]:
    was_trialing: bool | None = None
    mrr_before = None
    if ctx.previous is not None:
        was_trialing = ctx.previous.get("status") == "trialing"
        mrr_before = _mrr_pair(ctx, ctx.previous, ctx.obj)["mrr_before"]
    return [_ending_entry(ctx, ctx.obj, was_trialing=was_trialing, mrr_before=mrr_before)]


def _subscription_paused_or_resumed(kind: str) -> Callable[[_Ctx], list[ActivityEvent]]:
    """``customer.subscription.paused``/``resumed`` repeat what ``.updated`` reports for
    the same transition; the entry has the same fact key when both events carry the same
    second, which Stripe's do, being created by one transition."""

    def handle(ctx: _Ctx) -> list[ActivityEvent]:
        before = ctx.previous
        extra: dict[str, Any] = {
            "change_kind": kind,
            "change_kinds": [kind],
            **_mrr_pair(ctx, before, ctx.obj),
            "previous_state": _str(before.get("status")) if before is not None else None,
        }
        return [
            _sub_entry(
                ctx,
                "subscription_change",
                ctx.obj,
                instance=ctx.created,
                extra=extra,
                fact=f"subscription_change.{kind}",
            )
        ]

    return handle


# -- payments ---------------------------------------------------------------------------


def _charge_event(key: str) -> Callable[[_Ctx], list[ActivityEvent]]:
    def handle(ctx: _Ctx) -> list[ActivityEvent]:
        charge = ctx.obj
        return [
            ctx.entry(
                key,
                object_type="charge",
                obj_id=object_id(charge.get("id")),
                customer_id=_customer_of(charge),
                attributes=charge_attributes(charge),
                instance=None,
            )
        ]

    return handle


def _refund_customer(ctx: _Ctx, refund: Mapping[str, Any]) -> str | None:
    found = _customer_of(refund)
    if found is not None:
        return found
    charge = refund.get("charge")
    if isinstance(charge, Mapping):
        return _customer_of(charge)
    charge_id = object_id(charge)
    if charge_id is not None and ctx.lookup is not None:
        stored = ctx.lookup(charge_id)
        return _customer_of(stored) if stored is not None else None
    return None


def _refund_entries(
    ctx: _Ctx, refund: Mapping[str, Any], *, customer_id: str | None = None
) -> list[ActivityEvent]:
    rid = object_id(refund.get("id"))
    cid = customer_id or _refund_customer(ctx, refund)
    status = refund.get("status")
    key = "refund_failed" if status in ("failed", "canceled") else "refund_issued"
    return [
        ctx.entry(
            key,
            object_type="refund",
            obj_id=rid,
            customer_id=cid,
            attributes=refund_attributes(refund),
            instance=None,
        )
    ]


def _refund_event(ctx: _Ctx) -> list[ActivityEvent]:
    return _refund_entries(ctx, ctx.obj)


def _charge_refunded(ctx: _Ctx) -> list[ActivityEvent]:
    """One "Refund issued" per refund the charge embeds that was not there before.

    Since 2022-11-15 charges no longer embed their refunds; then this event adds nothing
    and ``refund.created`` (sent for every refund) carries the fact. Embedded or not, the
    fact key is the refund's, so both events together still make one entry.
    """
    charge = ctx.obj
    listed = _map(charge.get("refunds")).get("data")
    if not isinstance(listed, list):
        return []
    known: set[str] = set()
    if ctx.previous is not None:
        old = _map(ctx.previous.get("refunds")).get("data")
        if isinstance(old, list):
            known = {rid for rid in (object_id(r) for r in old) if rid is not None}
    entries: list[ActivityEvent] = []
    for refund in listed:
        if isinstance(refund, Mapping) and object_id(refund) not in known:
            entries.extend(_refund_entries(ctx, refund, customer_id=_customer_of(charge)))
    return entries


def _payment_intent_event(key: str) -> Callable[[_Ctx], list[ActivityEvent]]:
    def handle(ctx: _Ctx) -> list[ActivityEvent]:
        intent = ctx.obj
        return [
            ctx.entry(
                key,
                object_type="payment_intent",
                obj_id=object_id(intent.get("id")),
                customer_id=_customer_of(intent),
                attributes=payment_intent_attributes(intent),
                instance=None,
            )
        ]

    return handle


# -- invoices ---------------------------------------------------------------------------


def _invoice_event(key: str) -> Callable[[_Ctx], list[ActivityEvent]]:
    def handle(ctx: _Ctx) -> list[ActivityEvent]:
        invoice = ctx.obj
        attributes = invoice_attributes(invoice)
        if ctx.changed:
            attributes["changed_fields"] = sorted(ctx.changed)
        instance = None if key in _ONCE else ctx.created
        if key == "invoice_payment_failed":
            # One failure per payment attempt: a retry is a new fact, a replay is not.
            instance = _int(invoice.get("attempt_count"))
        return [
            ctx.entry(
                key,
                object_type="invoice",
                obj_id=object_id(invoice.get("id")),
                customer_id=_customer_of(invoice),
                attributes=attributes,
                instance=instance,
            )
        ]

    return handle


def _none(ctx: _Ctx) -> list[ActivityEvent]:
    """Event types the feed deliberately leaves out (docs/activity.md says why)."""
    return []


_HANDLERS: Final[Mapping[str, Callable[[_Ctx], list[ActivityEvent]]]] = {
    "customer.created": _customer_event("customer_created"),
    "customer.updated": _customer_event("customer_updated"),
    "customer.deleted": _customer_event("customer_deleted"),
    "customer.subscription.created": _subscription_created,
    "customer.subscription.updated": _subscription_updated,
    "customer.subscription.deleted": _subscription_deleted,
    "customer.subscription.paused": _subscription_paused_or_resumed("pause"),
    "customer.subscription.resumed": _subscription_paused_or_resumed("resume"),
    "customer.subscription.trial_will_end": _none,
    "charge.succeeded": _charge_event("charge_succeeded"),
    "charge.failed": _charge_event("charge_failed"),
    "charge.refunded": _charge_refunded,
    "charge.refund.updated": _refund_event,
    "refund.created": _refund_event,
    "refund.updated": _refund_event,
    "refund.failed": _refund_event,
    "invoice.created": _invoice_event("invoice_created"),
    "invoice.updated": _invoice_event("invoice_updated"),
    "invoice.finalized": _invoice_event("invoice_updated"),
    "invoice.paid": _invoice_event("invoice_paid"),
    "invoice.payment_succeeded": _invoice_event("invoice_paid"),
    "invoice.payment_failed": _invoice_event("invoice_payment_failed"),
    "invoice.voided": _invoice_event("invoice_voided"),
    "invoice.marked_uncollectible": _invoice_event("invoice_marked_uncollectible"),
    "payment_intent.created": _payment_intent_event("payment_intent_created"),
    "payment_intent.succeeded": _payment_intent_event("payment_intent_succeeded"),
}

#: Every Stripe event type `activity_from_event` reads (some to return nothing on purpose).
HANDLED_EVENT_TYPES: Final[frozenset[str]] = frozenset(_HANDLERS)


def sort_key(entry: ActivityEvent) -> tuple[int, int, str, str]:
    """Feed order: time, then causes before effects within one second, then ids."""
    return (entry.occurred_at, _RANK[entry.key], entry.object_id or "", entry.fact_key)


_RANK: Final[Mapping[str, int]] = {key: index for index, key in enumerate(ACTIVITY_NAMES)}


def sorted_activity(entries: Iterable[ActivityEvent]) -> list[ActivityEvent]:
    return sorted(entries, key=sort_key)
