"""Subscriptions and subscription items: create, change, pause, cancel, and their billing.

A subscription stores all its items in ``items.data`` (current shape: each item carries
its ``current_period_start``/``current_period_end``); each item is also stored as its own
``subscription_item`` object so that it can be retrieved and expanded by id. The
subscription is the canonical copy; :func:`save_subscription` writes both.

What Stripe does on its own (a trial ending, a period renewing, a scheduled cancellation,
an incomplete subscription expiring, collection resuming) runs from one clock timer per
subscription (kind ``subscription``), due at :func:`next_action_at`.

Builders for the generator (no database, no clock)
--------------------------------------------------
``build_item(...)``           a ``subscription_item`` for a price and quantity;
``build_subscription(...)``   a subscription around built items;
``subscription_links(sub)``   the ``links`` rows to index it by (price, collection method);
``next_action_at(sub)``       when the clock should next look at it (``sim.schedule``).
``invoices.build_subscription_line(...)`` and ``billing.line_amount(...)`` make its invoice.

Contract: :func:`cancel_all_for_customer` (called when a customer is deleted) and
:func:`invoice_settled` (called by invoices when a subscription invoice is paid or fails).
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from stripesync.sim import billing, forms, versions
from stripesync.sim.core import Ctx, Simulator, route, timer_handler
from stripesync.sim.db import clone
from stripesync.sim.errors import SimAPIError, invalid, missing, required
from stripesync.sim.resources import customers, invoices
from stripesync.sim.resources.catalog import (
    _create_price,
    load_price,
    make_discount,
    plan_from_price,
    resolve_coupon,
)
from stripesync.sim.resources.common import check_params, deleted_stub, emit_updated
from stripesync.sim.timeutil import add_interval

DAY = 86400
STATUSES = (
    "active",
    "canceled",
    "incomplete",
    "incomplete_expired",
    "past_due",
    "paused",
    "trialing",
    "unpaid",
)
#: Stripe gives an incomplete subscription 23 hours to be paid before it expires.
INCOMPLETE_EXPIRY_SECONDS = 23 * 3600
TRIAL_WILL_END_SECONDS = 3 * DAY
MAX_ITEMS = 20
#: What happens once every retry of a renewal payment failed (Billing settings; Stripe's
#: default is to cancel the subscription). One of "cancel", "unpaid", "past_due".
RETRIES_EXHAUSTED = "cancel"
PAYMENT_BEHAVIORS = (
    "allow_incomplete",
    "default_incomplete",
    "error_if_incomplete",
    "pending_if_incomplete",
)
PRORATION_BEHAVIORS = ("always_invoice", "create_prorations", "none")

CREATE_PARAMS = {
    "add_invoice_items",
    "application_fee_percent",
    "automatic_tax",
    "backdate_start_date",
    "billing_cycle_anchor",
    "billing_cycle_anchor_config",
    "billing_mode",
    "billing_thresholds",
    "cancel_at",
    "cancel_at_period_end",
    "collection_method",
    "currency",
    "customer",
    "customer_account",
    "days_until_due",
    "default_payment_method",
    "default_source",
    "default_tax_rates",
    "description",
    "discounts",
    "invoice_settings",
    "items",
    "metadata",
    "off_session",
    "on_behalf_of",
    "payment_behavior",
    "payment_settings",
    "pending_invoice_item_interval",
    "proration_behavior",
    "transfer_data",
    "trial_end",
    "trial_from_plan",
    "trial_period_days",
    "trial_settings",
}
UPDATE_PARAMS = {
    "add_invoice_items",
    "application_fee_percent",
    "automatic_tax",
    "billing_cycle_anchor",
    "billing_thresholds",
    "cancel_at",
    "cancel_at_period_end",
    "cancellation_details",
    "collection_method",
    "days_until_due",
    "default_payment_method",
    "default_source",
    "default_tax_rates",
    "description",
    "discounts",
    "invoice_settings",
    "items",
    "metadata",
    "off_session",
    "on_behalf_of",
    "pause_collection",
    "payment_behavior",
    "payment_settings",
    "pending_invoice_item_interval",
    "proration_behavior",
    "proration_date",
    "transfer_data",
    "trial_end",
    "trial_from_plan",
    "trial_settings",
}
#: Parameters the API accepted before 2025-03-31 (``coupon`` became ``discounts``).
LEGACY_PARAMS = {"coupon", "promotion_code"}
ITEM_KEYS = {
    "billing_thresholds",
    "clear_usage",
    "current_trial",
    "deleted",
    "discounts",
    "id",
    "metadata",
    "plan",
    "price",
    "price_data",
    "quantity",
    "tax_rates",
}


# -- pure builders ----------------------------------------------------------------------


def is_metered(price: Mapping[str, Any]) -> bool:
    return ((price.get("recurring") or {}).get("usage_type")) == "metered"


def build_item(
    *,
    item_id: str,
    subscription_id: str,
    price: Mapping[str, Any],
    quantity: int | None,
    created: int,
    period_start: int,
    period_end: int,
    metadata: Mapping[str, str] | None = None,
    discounts: Sequence[str] = (),
) -> dict[str, Any]:
    """A ``subscription_item`` (metered prices carry no quantity, as on Stripe)."""
    item: dict[str, Any] = {
        "id": item_id,
        "object": "subscription_item",
        "billing_thresholds": None,
        "created": created,
        "current_period_end": period_end,
        "current_period_start": period_start,
        "discounts": list(discounts),
        "metadata": dict(metadata or {}),
        "plan": plan_from_price(dict(price)),
        "price": clone(dict(price)),
        "quantity": quantity,
        "subscription": subscription_id,
        "tax_rates": [],
    }
    if is_metered(price):
        del item["quantity"]
    return item


def build_subscription(
    *,
    sub_id: str,
    customer: str,
    items: Sequence[dict[str, Any]],
    created: int,
    currency: str,
    status: str,
    livemode: bool,
    billing_cycle_anchor: int | None = None,
    start_date: int | None = None,
    collection_method: str = "charge_automatically",
    days_until_due: int | None = None,
    default_payment_method: str | None = None,
    description: str | None = None,
    discounts: Sequence[str] = (),
    latest_invoice: str | None = None,
    metadata: Mapping[str, str] | None = None,
    trial_start: int | None = None,
    trial_end: int | None = None,
    cancel_at: int | None = None,
    cancel_at_period_end: bool = False,
    canceled_at: int | None = None,
    ended_at: int | None = None,
    missing_payment_method: str = "create_invoice",
) -> dict[str, Any]:
    """A subscription (current API shape) around ``items`` built with :func:`build_item`."""
    return {
        "id": sub_id,
        "object": "subscription",
        "application": None,
        "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": billing_cycle_anchor if billing_cycle_anchor else created,
        "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"},
        "billing_thresholds": None,
        "cancel_at": cancel_at,
        "cancel_at_period_end": cancel_at_period_end,
        "canceled_at": canceled_at,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": collection_method,
        "created": created,
        "currency": currency,
        "customer": customer,
        "customer_account": None,
        "days_until_due": days_until_due,
        "default_payment_method": default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": description,
        "discounts": list(discounts),
        "ended_at": ended_at,
        "invoice_settings": {"account_tax_ids": None, "issuer": {"type": "self"}},
        "items": {
            "object": "list",
            "data": list(items),
            "has_more": False,
            "url": f"/v1/subscription_items?subscription={sub_id}",
        },
        "latest_invoice": latest_invoice,
        "livemode": livemode,
        "metadata": dict(metadata or {}),
        "next_pending_invoice_item_invoice": None,
        "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {
            "payment_method_options": None,
            "payment_method_types": None,
            "save_default_payment_method": "off",
        },
        "pending_invoice_item_interval": None,
        "pending_setup_intent": None,
        "pending_update": None,
        "schedule": None,
        "start_date": start_date if start_date is not None else created,
        "status": status,
        "test_clock": None,
        "transfer_data": None,
        "trial_end": trial_end,
        "trial_settings": {"end_behavior": {"missing_payment_method": missing_payment_method}},
        "trial_start": trial_start,
    }


def subscription_links(sub: Mapping[str, Any]) -> dict[str, Any]:
    prices = [item["price"]["id"] for item in sub["items"]["data"]]
    return {"price": prices, "collection_method": sub["collection_method"]}


def period_of(sub: Mapping[str, Any]) -> tuple[int, int]:
    """The subscription's current period (classic billing: every item shares it)."""
    data = sub["items"]["data"]
    if not data:
        return int(sub["billing_cycle_anchor"]), int(sub["billing_cycle_anchor"])
    return (
        min(int(i["current_period_start"]) for i in data),
        max(int(i["current_period_end"]) for i in data),
    )


def recurring_of(sub: Mapping[str, Any]) -> tuple[str, int]:
    recurring = sub["items"]["data"][0]["price"]["recurring"]
    return str(recurring["interval"]), int(recurring.get("interval_count") or 1)


def next_action_at(sub: Mapping[str, Any]) -> int | None:
    """When Stripe will next act on this subscription by itself (None: never)."""
    status = sub["status"]
    candidates: list[int] = []
    if status == "incomplete":
        candidates.append(int(sub["created"]) + INCOMPLETE_EXPIRY_SECONDS)
    if sub.get("pending_update"):
        candidates.append(int(sub["pending_update"]["expires_at"]))
    if status in ("trialing", "active", "past_due", "unpaid"):
        _, end = period_of(sub)
        if status == "trialing" and sub.get("trial_end"):
            end = int(sub["trial_end"])
            warn_at = end - TRIAL_WILL_END_SECONDS
            if not sub.get("_trial_will_end_sent") and warn_at > int(sub.get("trial_start") or 0):
                candidates.append(warn_at)
        candidates.append(end)
        if sub.get("cancel_at"):
            candidates.append(int(sub["cancel_at"]))
        pause = sub.get("pause_collection")
        if pause and pause.get("resumes_at"):
            candidates.append(int(pause["resumes_at"]))
    return min(candidates) if candidates else None


# -- storage ----------------------------------------------------------------------------


def save_subscription(
    sim: Simulator, ctx: Ctx, sub: dict[str, Any], *, removed: Iterable[str] = ()
) -> dict[str, Any]:
    sim.save(ctx, sub, links=subscription_links(sub))
    for item in sub["items"]["data"]:
        sim.save(ctx, item, links={"subscription": sub["id"]})
    for item_id in removed:
        sim.db.mark_deleted(ctx.acct, item_id)
    sim.schedule(ctx, "subscription", sub["id"], next_action_at(sub))
    return sub


def load_subscription(sim: Simulator, ctx: Ctx, sub_id: str, param: str = "id") -> dict[str, Any]:
    sub = sim.db.get(ctx.acct, sub_id)
    if sub is None or sub.get("object") != "subscription":
        raise missing(sub_id, param=param, kind="subscription")
    return sub


class _Names:
    """Product names for line descriptions, each looked up once per request."""

    def __init__(self, sim: Simulator, ctx: Ctx) -> None:
        self.sim, self.ctx, self.cache = sim, ctx, dict[str, str]()

    def __call__(self, product_id: str) -> str:
        if product_id not in self.cache:
            product = self.sim.db.get(self.ctx.acct, product_id, include_deleted=True)
            self.cache[product_id] = str((product or {}).get("name") or product_id)
        return self.cache[product_id]


# -- parameters -------------------------------------------------------------------------


def _p(prefix: str, key: str) -> str:
    """A parameter's name under ``items[0]`` (or bare, for the item endpoints)."""
    return f"{prefix}[{key}]" if prefix else key


def _timestamp_or_now(
    params: Mapping[str, Any], name: str, now: int, *, extra: tuple[str, ...] = ()
) -> int | str | None:
    value = params.get(name)
    if value is None or value == "":
        return None
    if value == "now" or value in extra:
        return str(value)
    stamp = forms.as_int(params, name)
    assert stamp is not None
    if stamp < now:
        raise invalid(
            f"Invalid timestamp: must be an integer Unix timestamp in the future. ({name})",
            param=name,
        )
    return stamp


def _item_price(
    sim: Simulator, ctx: Ctx, raw: Mapping[str, Any], param: str
) -> dict[str, Any] | None:
    """The recurring price an item names (``price``, legacy ``plan`` or ``price_data``)."""
    if raw.get("price"):
        name = _p(param, "price")
        price = load_price(sim, ctx, raw["price"], param=name)
    elif raw.get("plan"):
        name = _p(param, "plan")
        found = sim.db.get(ctx.acct, raw["plan"])
        if found is None or found.get("object") != "price" or not found.get("recurring"):
            raise missing(raw["plan"], param=name, kind="plan")
        price = found
    elif raw.get("price_data"):
        data = raw["price_data"]
        name = _p(param, "price_data")
        if not isinstance(data, dict):
            raise invalid(f"Invalid hash: {name}", param=name)
        for key in ("currency", "product", "recurring"):
            if not data.get(key):
                raise required(f"{name}[{key}]")
        price_params = {
            k: data[k]
            for k in (
                "currency",
                "product",
                "recurring",
                "tax_behavior",
                "unit_amount",
                "unit_amount_decimal",
            )
            if k in data
        }
        price_params["active"] = "false"  # inline prices are not offered again
        return _create_price(sim, ctx, price_params)
    else:
        return None
    if price.get("type") != "recurring":
        raise invalid(
            "The price specified is set to `type=one_time` but this field only accepts prices "
            "with `type=recurring`.",
            param=name,
        )
    if not price.get("active"):
        raise invalid(
            "The price specified is inactive. This field only accepts active prices.", param=name
        )
    return price


def _quantity(raw: Mapping[str, Any], param: str, price: Mapping[str, Any]) -> int | None:
    if is_metered(price):
        if raw.get("quantity") not in (None, ""):
            raise invalid(
                "Quantity should not be specified where usage_type is `metered`. Remove "
                f"quantity from `{param or 'the request'}`.",
                param=_p(param, "quantity"),
            )
        return None
    quantity = forms.as_int(raw, "quantity", 1, minimum=0)
    return quantity


def _check_prices(prices: Sequence[Mapping[str, Any]], param: str = "items") -> None:
    """One currency and one billing interval per subscription, as Stripe requires."""
    if not prices:
        raise invalid("Missing required param: items.", param=param)
    if len(prices) > MAX_ITEMS:
        raise invalid(
            f"A subscription can have at most {MAX_ITEMS} items; {len(prices)} were given.",
            param=param,
        )
    first = prices[0]
    seen: set[str] = set()
    for price in prices:
        if price["id"] in seen:
            raise invalid(
                f"Cannot add multiple subscription items with the same plan: {price['id']}",
                param=param,
            )
        seen.add(price["id"])
        if price["currency"] != first["currency"]:
            raise invalid(
                "Currency and interval fields must match across all plans on this "
                "subscription. Found mismatch in currency field.",
                param=param,
            )
        a, b = price["recurring"], first["recurring"]
        if a["interval"] != b["interval"] or a["interval_count"] != b["interval_count"]:
            raise invalid(
                "Currency and interval fields must match across all plans on this "
                "subscription. Found mismatch in interval field.",
                param=param,
            )


def _discounts(
    sim: Simulator,
    ctx: Ctx,
    raw: Any,
    *,
    param: str,
    customer: str,
    subscription: str,
    subscription_item: str | None = None,
) -> list[str]:
    """``discounts[][coupon|discount]`` into stored discount objects; their ids."""
    if raw in (None, ""):
        return []
    if not isinstance(raw, list):
        raise invalid(f"Invalid array: {param} must be an array", param=param)
    ids: list[str] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise invalid(f"Invalid hash: {param}[{i}]", param=f"{param}[{i}]")
        if entry.get("coupon"):
            coupon = resolve_coupon(sim, ctx, entry["coupon"], param=f"{param}[{i}][coupon]")
            discount = make_discount(
                sim,
                ctx,
                coupon,
                customer=customer,
                subscription=subscription,
                subscription_item=subscription_item,
            )
            sim.emit(ctx, "customer.discount.created", discount)
            ids.append(discount["id"])
        elif entry.get("discount"):
            found = sim.db.get(ctx.acct, entry["discount"])
            if found is None or found.get("object") != "discount":
                raise missing(entry["discount"], param=f"{param}[{i}][discount]", kind="discount")
            ids.append(found["id"])
        elif entry.get("promotion_code"):
            raise missing(
                entry["promotion_code"],
                param=f"{param}[{i}][promotion_code]",
                kind="promotion code",
            )
    return ids


def _legacy_coupon(
    sim: Simulator, ctx: Ctx, params: Mapping[str, Any], *, customer: str, subscription: str
) -> list[str] | None:
    """The pre-2025-03-31 ``coupon`` parameter (None when not given)."""
    if params.get("promotion_code"):
        raise missing(params["promotion_code"], param="promotion_code", kind="promotion code")
    if "coupon" not in params:
        return None
    if not params["coupon"]:
        return []
    return _discounts(
        sim,
        ctx,
        [{"coupon": params["coupon"]}],
        param="coupon",
        customer=customer,
        subscription=subscription,
    )


def _allowed(ctx: Ctx, base: set[str]) -> set[str]:
    return base | LEGACY_PARAMS if versions.is_legacy(ctx.api_version) else base


def _payment_method(sim: Simulator, ctx: Ctx, pm_id: str, customer: str, param: str) -> str:
    """A default payment method for the subscription: it must be (or become) the
    customer's."""
    try:
        pms = importlib.import_module("stripesync.sim.resources.payment_methods")
    except ModuleNotFoundError:
        pms = None
    if pms is not None:
        pm = pms.resolve_payment_method(sim, ctx, pm_id, param=param)
        if pm.get("object") == "payment_method" and pm.get("customer") != customer:
            pms.attach(sim, ctx, pm, customer)
        return str(pm["id"])
    found = sim.db.get(ctx.acct, pm_id)
    if found is None:
        raise missing(pm_id, param=param, kind="PaymentMethod")
    return pm_id


def _has_payment_method(sim: Simulator, ctx: Ctx, sub: Mapping[str, Any]) -> bool:
    if sub.get("default_payment_method") or sub.get("default_source"):
        return True
    customer = sim.db.get(ctx.acct, sub["customer"])
    if customer is None:
        return False
    try:
        payments = importlib.import_module("stripesync.sim.resources.payments")
    except ModuleNotFoundError:
        settings = customer.get("invoice_settings") or {}
        return bool(settings.get("default_payment_method") or customer.get("default_source"))
    return payments.default_instrument(sim, ctx, customer) is not None


# -- billing ----------------------------------------------------------------------------


def _active_discount(sim: Simulator, ctx: Ctx, discount_id: str, at: int) -> dict[str, Any] | None:
    discount = sim.db.get(ctx.acct, discount_id)
    if discount is None:
        return None
    if discount.get("end") is not None and int(discount["end"]) <= at:
        return None
    if discount.get("_consumed"):
        return None
    return discount


def _invoice_discounts(
    sim: Simulator, ctx: Ctx, sub: Mapping[str, Any], customer: Mapping[str, Any], at: int
) -> list[str]:
    """The subscription's discounts in force, else the customer's."""
    ids = [d for d in sub.get("discounts") or [] if _active_discount(sim, ctx, d, at)]
    if ids or sub.get("discounts"):
        return ids
    own = customer.get("discount")
    if own and _active_discount(sim, ctx, own["id"], at):
        return [own["id"]]
    return []


def _consume_once(sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]) -> None:
    """A ``once`` coupon is spent by the first invoice it discounts."""
    for entry in invoice.get("total_discount_amounts") or []:
        if not entry["amount"]:
            continue
        discount = sim.db.get(ctx.acct, entry["discount"])
        if discount is None:
            continue
        coupon = sim.db.get(ctx.acct, (discount.get("source") or {}).get("coupon") or "")
        if coupon is not None and coupon.get("duration") == "once":
            discount["_consumed"] = invoice["id"]
            sim.save(ctx, discount)


def _prune_discounts(
    sim: Simulator, ctx: Ctx, sub: dict[str, Any], at: int, *, automatic: bool
) -> None:
    """Drop discounts that ended (repeating past ``end``, ``once`` already used)."""
    kept = []
    for discount_id in sub.get("discounts") or []:
        if _active_discount(sim, ctx, discount_id, at) is None:
            discount = sim.db.get(ctx.acct, discount_id)
            if discount is not None:
                sim.emit(ctx, "customer.discount.deleted", discount, automatic=automatic)
        else:
            kept.append(discount_id)
    sub["discounts"] = kept
    for item in sub["items"]["data"]:
        item["discounts"] = [d for d in item["discounts"] if _active_discount(sim, ctx, d, at)]


def _period_lines(
    sim: Simulator,
    ctx: Ctx,
    sub: dict[str, Any],
    *,
    start: int,
    end: int,
    trial: bool = False,
    full_start: int | None = None,
) -> list[dict[str, Any]]:
    """The lines of one period for every item; ``full_start`` prorates a short period."""
    names = _Names(sim, ctx)
    lines = []
    for item in sub["items"]["data"]:
        price = item["price"]
        quantity = int(item.get("quantity") or 0)
        name = names(price["product"])
        description = None
        if trial:
            amount = 0
            description = f"Trial period for {name}"
        elif is_metered(price):
            amount, quantity = 0, 0  # no usage recorded: metered items bill nothing
        else:
            amount = billing.line_amount(price, quantity)
            if full_start is not None:
                amount = billing.prorate(amount, full_start, end, start)
                description = billing.proration_description("charge", name, quantity, start)
        line = invoices.build_subscription_line(
            line_id=sim.new_id("il"),
            subscription_id=sub["id"],
            item_id=item["id"],
            price=price,
            quantity=quantity,
            product_name=name,
            period_start=start,
            period_end=end,
            livemode=ctx.livemode,
            amount=amount,
            description=description,
            discounts=[d for d in item["discounts"] if _active_discount(sim, ctx, d, start)],
        )
        if full_start is not None and not trial:
            line["parent"]["subscription_item_details"]["proration"] = True
        item["_billed"] = {"line": line["id"], "invoice": None}
        lines.append(line)
    return lines


def _bill(
    sim: Simulator,
    ctx: Ctx,
    sub: dict[str, Any],
    *,
    billing_reason: str,
    lines: Sequence[dict[str, Any]],
    at: int,
    pending: str = "customer",
    automatic: bool = False,
    period: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """A draft invoice for the subscription; ``pending`` picks the waiting invoice items
    it takes: ``customer`` (the subscription's and the customer's own), ``subscription``
    (only the subscription's) or ``none``."""
    customer = customers.load(sim, ctx, sub["customer"], param="customer")
    items: list[dict[str, Any]] = []
    if pending != "none":
        items = invoices.pending_items(
            sim,
            ctx,
            customer["id"],
            currency=sub["currency"],
            subscription=sub["id"],
            only_subscription=pending == "subscription",
        )
    start, end = period if period is not None else (at, at)
    invoice = invoices.new_invoice(
        sim,
        ctx,
        customer,
        currency=sub["currency"],
        billing_reason=billing_reason,
        lines=lines,
        discount_ids=_invoice_discounts(sim, ctx, sub, customer, at),
        items=items,
        subscription=sub,
        automatic=automatic,
        collection_method=sub["collection_method"],
        days_until_due=sub.get("days_until_due"),
        auto_advance=True,
        period_start=start,
        period_end=end,
    )
    for item in sub["items"]["data"]:
        billed = item.get("_billed")
        if billed and billed.get("invoice") is None:
            billed["invoice"] = invoice["id"]
    _consume_once(sim, ctx, invoice)
    sub["latest_invoice"] = invoice["id"]
    return invoice


def _pending_intent(sim: Simulator, ctx: Ctx, invoice: dict[str, Any]) -> None:
    """``default_incomplete``: the invoice waits with an unconfirmed payment intent."""
    try:
        payments = importlib.import_module("stripesync.sim.resources.payments")
    except ModuleNotFoundError:
        return
    intent = payments.new_payment_intent(
        sim,
        ctx,
        amount=invoice["amount_remaining"],
        currency=invoice["currency"],
        customer=invoice["customer"],
        description=invoices.PAYMENT_DESCRIPTIONS.get(invoice["billing_reason"]),
    )
    intent["_invoice"] = invoice["id"]
    payments.save_payment_intent(sim, ctx, intent)
    sim.emit(ctx, "payment_intent.created", intent)
    invoice.setdefault("_payments", []).append(
        {"payment_intent": intent["id"], "charge": None, "status": intent["status"]}
    )
    invoice["next_payment_attempt"] = None
    invoices.save_invoice(sim, ctx, invoice)


def _charge_now(
    sim: Simulator,
    ctx: Ctx,
    invoice: dict[str, Any],
    *,
    payment_behavior: str,
    automatic: bool = False,
    settle: bool = True,
) -> None:
    """Finalize an invoice made by a request and collect it at once (or leave it open
    for ``default_incomplete``); ``error_if_incomplete`` turns a failure into a 402."""
    if payment_behavior == "default_incomplete" and invoice["collection_method"] == (
        "charge_automatically"
    ):
        invoices.finalize(sim, ctx, invoice, automatic=automatic, settle_subscription=settle)
        if invoice["status"] == "open":
            _pending_intent(sim, ctx, invoice)
        return
    invoices.finalize(
        sim, ctx, invoice, automatic=automatic, collect=True, settle_subscription=settle
    )
    if (
        payment_behavior == "error_if_incomplete"
        and invoice["status"] == "open"
        and (invoice["collection_method"] == "charge_automatically")
    ):
        error = invoices.payment_error(sim, ctx, invoice)
        error.commit = False  # nothing of the request stays, as on Stripe
        raise error


# -- create -----------------------------------------------------------------------------


@route("POST", "/v1/subscriptions", resource="subscriptions")
def create(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, _allowed(ctx, CREATE_PARAMS))
    if not params.get("customer"):
        raise required("customer")
    customer = customers.load(sim, ctx, params["customer"], param="customer")
    raw_items = forms.as_list(params, "items")
    if not raw_items:
        raise required("items")
    now = sim.now()
    sub_id = sim.new_id("sub")
    prices: list[dict[str, Any]] = []
    quantities: list[int | None] = []
    for i, raw in enumerate(raw_items):
        param = f"items[{i}]"
        if not isinstance(raw, dict):
            raise invalid(f"Invalid hash: {param}", param=param)
        for key in raw:
            if key not in ITEM_KEYS - {"id", "deleted", "clear_usage"}:
                raise SimAPIError(
                    400,
                    f"Received unknown parameter: {param}[{key}]",
                    code="parameter_unknown",
                    param=f"{param}[{key}]",
                )
        price = _item_price(sim, ctx, raw, param)
        if price is None:
            raise required(f"{param}[price]")
        prices.append(price)
        quantities.append(_quantity(raw, param, price))
    _check_prices(prices)
    currency = prices[0]["currency"]
    if params.get("currency") and str(params["currency"]).lower() != currency:
        raise invalid(
            f"The price {prices[0]['id']} has no currency option for "
            f"{str(params['currency']).lower()}.",
            param="currency",
        )
    payment_behavior = forms.as_enum(
        params, "payment_behavior", PAYMENT_BEHAVIORS, "allow_incomplete"
    )
    if payment_behavior == "pending_if_incomplete":
        raise invalid(
            "payment_behavior=pending_if_incomplete is only supported when updating a "
            "subscription.",
            param="payment_behavior",
        )
    proration_behavior = forms.as_enum(
        params, "proration_behavior", PRORATION_BEHAVIORS, "create_prorations"
    )
    collection_method = forms.as_enum(
        params,
        "collection_method",
        ("charge_automatically", "send_invoice"),
        "charge_automatically",
    )
    assert collection_method is not None
    days_until_due = forms.as_int(params, "days_until_due", minimum=0)
    if collection_method == "send_invoice" and days_until_due is None:
        raise required("days_until_due")
    if collection_method != "send_invoice" and days_until_due is not None:
        raise invalid(
            "days_until_due can only be set when collection_method is send_invoice.",
            param="days_until_due",
        )

    # trial and periods
    start = forms.as_int(params, "backdate_start_date") or now
    if start > now:
        raise invalid("backdate_start_date must be in the past.", param="backdate_start_date")
    trial_end: int | None = None
    raw_trial = _timestamp_or_now(params, "trial_end", now)
    if isinstance(raw_trial, int):
        trial_end = raw_trial
    elif raw_trial is None and params.get("trial_period_days") not in (None, ""):
        days = forms.as_int(params, "trial_period_days", minimum=0, maximum=730)
        trial_end = now + DAY * days if days else None
    elif raw_trial is None and forms.as_bool(params, "trial_from_plan", False):
        days = max(int(p["recurring"].get("trial_period_days") or 0) for p in prices)
        trial_end = now + DAY * days if days else None
    interval, count = prices[0]["recurring"]["interval"], prices[0]["recurring"]["interval_count"]
    anchor_param = forms.as_int(params, "billing_cycle_anchor")
    anchor_config = forms.as_dict(params, "billing_cycle_anchor_config")
    if anchor_param is None and anchor_config:
        anchor_param = _anchor_from_config(trial_end or start, anchor_config, interval)
    if anchor_param is not None:
        base = trial_end or now
        if anchor_param < base:
            raise invalid(
                "billing_cycle_anchor cannot be earlier than the trial end or the current time.",
                param="billing_cycle_anchor",
            )
        if anchor_param > add_interval(base, interval, count):
            raise invalid(
                "billing_cycle_anchor cannot be later than next natural billing date "
                f"({add_interval(base, interval, count)}) for plan",
                param="billing_cycle_anchor",
            )
    anchor = anchor_param if anchor_param is not None else (trial_end or start)
    anchor_day = datetime.fromtimestamp(anchor, UTC).day
    if trial_end is not None:
        period = (start, trial_end)
    elif anchor_param is not None and anchor_param > start:
        period = (start, anchor_param)
    else:
        period = (start, add_interval(start, interval, count, anchor_day=anchor_day))

    items = [
        build_item(
            item_id=sim.new_id("si"),
            subscription_id=sub_id,
            price=price,
            quantity=quantity,
            created=now,
            period_start=period[0],
            period_end=period[1],
            metadata=forms.as_metadata(raw) if isinstance(raw, dict) else None,
        )
        for price, quantity, raw in zip(prices, quantities, raw_items, strict=True)
    ]
    for i, (item, raw) in enumerate(zip(items, raw_items, strict=True)):
        item["discounts"] = _discounts(
            sim,
            ctx,
            raw.get("discounts"),
            param=f"items[{i}][discounts]",
            customer=customer["id"],
            subscription=sub_id,
            subscription_item=item["id"],
        )
    trial_settings = forms.as_dict(params, "trial_settings") or {}
    end_behavior = forms.as_dict(trial_settings, "end_behavior") or {}
    missing_pm = forms.as_enum(
        end_behavior,
        "missing_payment_method",
        ("cancel", "create_invoice", "pause"),
        "create_invoice",
    )
    assert missing_pm is not None
    sub = build_subscription(
        sub_id=sub_id,
        customer=customer["id"],
        items=items,
        created=now,
        currency=currency,
        status="trialing" if trial_end else "incomplete",
        livemode=ctx.livemode,
        billing_cycle_anchor=anchor,
        start_date=start,
        collection_method=collection_method,
        days_until_due=days_until_due,
        description=params.get("description") or None,
        metadata=forms.as_metadata(params),
        trial_start=now if trial_end else None,
        trial_end=trial_end,
        missing_payment_method=missing_pm,
    )
    if anchor_config:
        sub["billing_cycle_anchor_config"] = {
            "day_of_month": forms.as_int(anchor_config, "day_of_month"),
            "hour": forms.as_int(anchor_config, "hour"),
            "minute": forms.as_int(anchor_config, "minute"),
            "month": forms.as_int(anchor_config, "month"),
            "second": forms.as_int(anchor_config, "second"),
        }
    if params.get("default_payment_method"):
        sub["default_payment_method"] = _payment_method(
            sim, ctx, params["default_payment_method"], customer["id"], "default_payment_method"
        )
    sub["discounts"] = _discounts(
        sim,
        ctx,
        params.get("discounts"),
        param="discounts",
        customer=customer["id"],
        subscription=sub_id,
    )
    legacy = _legacy_coupon(sim, ctx, params, customer=customer["id"], subscription=sub_id)
    if legacy:
        sub["discounts"] = legacy
    _apply_settings(sub, params)
    _apply_cancel_at(sim, sub, params, now)
    if customer.get("currency") is None:
        old_customer = clone(customer)
        customer["currency"] = currency
        customers.save_customer(sim, ctx, customer)
        emit_updated(sim, ctx, "customer.updated", old_customer, customer)
    _add_invoice_items(sim, ctx, sub, params, now)

    # the first invoice: a trial's is free, a short first period is prorated
    full_start = None
    if trial_end is None and anchor_param is not None and anchor_param > start:
        full_start = add_interval(anchor_param, interval, -count, anchor_day=anchor_day)
    lines = _period_lines(
        sim,
        ctx,
        sub,
        start=period[0],
        end=period[1],
        trial=trial_end is not None,
        full_start=full_start,
    )
    if full_start is not None and proration_behavior == "none":
        for line in lines:
            line["amount"] = line["subtotal"] = 0
    invoice = _bill(sim, ctx, sub, billing_reason="subscription_create", lines=lines, at=now)
    if collection_method == "send_invoice" and sub["status"] == "incomplete":
        sub["status"] = "active"
    save_subscription(sim, ctx, sub)
    sim.emit(ctx, "customer.subscription.created", sub)
    _warn_if_trial_ends_soon(sim, ctx, sub)
    _charge_now(sim, ctx, invoice, payment_behavior=payment_behavior or "allow_incomplete")
    return load_subscription(sim, ctx, sub_id)


def _warn_if_trial_ends_soon(sim: Simulator, ctx: Ctx, sub: dict[str, Any]) -> None:
    """A trial set to end in less than three days is warned about at once (Stripe sends
    ``trial_will_end`` immediately when it can no longer send it three days ahead)."""
    now = sim.now()
    if (
        sub["status"] == "trialing"
        and sub.get("trial_end")
        and not sub.get("_trial_will_end_sent")
        and now < int(sub["trial_end"]) <= now + TRIAL_WILL_END_SECONDS
    ):
        sub["_trial_will_end_sent"] = True
        save_subscription(sim, ctx, sub)
        sim.emit(ctx, "customer.subscription.trial_will_end", sub)


def _anchor_from_config(base: int, config: Mapping[str, Any], interval: str) -> int:
    """The first moment after ``base`` matching ``billing_cycle_anchor_config``."""
    day = forms.as_int(config, "day_of_month", minimum=1, maximum=31)
    if day is None:
        raise required("billing_cycle_anchor_config[day_of_month]")
    dt = datetime.fromtimestamp(base, UTC)
    month = forms.as_int(config, "month", minimum=1, maximum=12)
    hour = forms.as_int(config, "hour", dt.hour, minimum=0, maximum=23)
    minute = forms.as_int(config, "minute", dt.minute, minimum=0, maximum=59)
    second = forms.as_int(config, "second", dt.second, minimum=0, maximum=59)
    step = 12 if interval == "year" else 1
    year, mon = dt.year, (month if month and interval == "year" else dt.month)
    for _ in range(30):
        import calendar

        clamped = min(day, calendar.monthrange(year, mon)[1])
        candidate = int(
            datetime(
                year, mon, clamped, hour or 0, minute or 0, second or 0, tzinfo=UTC
            ).timestamp()
        )
        if candidate > base:
            return candidate
        mon += step
        year, mon = year + (mon - 1) // 12, (mon - 1) % 12 + 1
    return base


def _apply_settings(sub: dict[str, Any], params: Mapping[str, Any]) -> None:
    """Settings stored as given (no behaviour beyond the shape)."""
    if "payment_settings" in params:
        settings = forms.as_dict(params, "payment_settings") or {}
        save = settings.get("save_default_payment_method")
        if save:
            sub["payment_settings"]["save_default_payment_method"] = save
        if settings.get("payment_method_types"):
            sub["payment_settings"]["payment_method_types"] = forms.as_list(
                settings, "payment_method_types"
            )
    if "invoice_settings" in params:
        settings = forms.as_dict(params, "invoice_settings") or {}
        if "account_tax_ids" in settings:
            sub["invoice_settings"]["account_tax_ids"] = (
                forms.as_list(settings, "account_tax_ids") or None
            )
    if "on_behalf_of" in params:
        sub["on_behalf_of"] = params["on_behalf_of"] or None
    if "application_fee_percent" in params:
        value = params["application_fee_percent"]
        sub["application_fee_percent"] = float(value) if value not in ("", None) else None
    if "pending_invoice_item_interval" in params:
        value = forms.as_dict(params, "pending_invoice_item_interval")
        sub["pending_invoice_item_interval"] = (
            {
                "interval": value.get("interval"),
                "interval_count": forms.as_int(value, "interval_count", 1),
            }
            if value
            else None
        )


def _apply_cancel_at(
    sim: Simulator, sub: dict[str, Any], params: Mapping[str, Any], now: int
) -> None:
    if "cancel_at" not in params and "cancel_at_period_end" not in params:
        return
    _, end = period_of(sub)
    if "cancel_at" in params:
        value = _timestamp_or_now(
            params, "cancel_at", now, extra=("max_period_end", "min_period_end")
        )
        if value in ("max_period_end", "min_period_end"):
            value = end
        if value == "now":
            value = now
        sub["cancel_at"] = value
        sub["cancel_at_period_end"] = False
    if "cancel_at_period_end" in params:
        flag = bool(forms.as_bool(params, "cancel_at_period_end", False))
        sub["cancel_at_period_end"] = flag
        if flag:
            sub["cancel_at"] = end
        elif "cancel_at" not in params:
            sub["cancel_at"] = None
    if sub.get("cancel_at"):
        sub["canceled_at"] = now  # Stripe: when the cancellation was asked for
        sub["cancellation_details"]["reason"] = "cancellation_requested"
    else:
        sub["canceled_at"] = None
        sub["cancellation_details"] = {"comment": None, "feedback": None, "reason": None}


def _add_invoice_items(
    sim: Simulator, ctx: Ctx, sub: Mapping[str, Any], params: Mapping[str, Any], now: int
) -> None:
    """``add_invoice_items``: one-off prices waiting for the subscription's next invoice."""
    for i, entry in enumerate(forms.as_list(params, "add_invoice_items")):
        param = f"add_invoice_items[{i}]"
        if not isinstance(entry, dict):
            raise invalid(f"Invalid hash: {param}", param=param)
        quantity = forms.as_int(entry, "quantity", 1, minimum=1) or 1
        if entry.get("price"):
            price = load_price(sim, ctx, entry["price"], param=f"{param}[price]")
            if price["type"] != "one_time":
                raise invalid(
                    "The price specified is set to `type=recurring` but this field only "
                    "accepts prices with `type=one_time`.",
                    param=f"{param}[price]",
                )
        elif entry.get("price_data"):
            data = dict(entry["price_data"])
            price = _create_price(sim, ctx, {**data, "active": "false"})
        else:
            raise required(f"{param}[price]")
        names = _Names(sim, ctx)
        item = invoices.build_invoice_item(
            item_id=sim.new_id("ii"),
            customer=sub["customer"],
            currency=price["currency"],
            amount=billing.line_amount(price, quantity),
            created=now,
            livemode=ctx.livemode,
            description=names(price["product"]),
            quantity=quantity,
            unit_amount_decimal=price.get("unit_amount_decimal"),
            price=price,
            subscription=sub["id"],
        )
        invoices.save_invoice_item(sim, ctx, item)
        sim.emit(ctx, "invoiceitem.created", item)


# -- retrieve and list ------------------------------------------------------------------


@route("GET", "/v1/subscriptions/{sub_id}", resource="subscriptions")
def retrieve(sim: Simulator, ctx: Ctx, params: dict[str, Any], sub_id: str) -> dict[str, Any]:
    check_params(params, set())
    return load_subscription(sim, ctx, sub_id)


LIST_PARAMS = {
    "automatic_tax",
    "collection_method",
    "created",
    "current_period_end",
    "current_period_start",
    "customer",
    "customer_account",
    "ending_before",
    "limit",
    "plan",
    "price",
    "starting_after",
    "status",
    "test_clock",
}


@route("GET", "/v1/subscriptions", resource="subscriptions")
def list_(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    """Stripe's semantics: without ``status``, every subscription not canceled."""
    check_params(params, LIST_PARAMS)
    status = forms.as_enum(params, "status", (*STATUSES, "all", "ended"))
    statuses: list[str] | None = None
    exclude: list[str] | None = None
    if status is None:
        exclude = ["canceled"]
    elif status == "ended":
        statuses = ["canceled", "incomplete_expired"]
    elif status != "all":
        statuses = [status]
    links: dict[str, str] = {}
    price = params.get("price") or params.get("plan")
    if price:
        links["price"] = price
    if params.get("collection_method"):
        links["collection_method"] = str(
            forms.as_enum(params, "collection_method", ("charge_automatically", "send_invoice"))
        )
    filters = {
        "created": forms.created_filter(params),
        "customer": params.get("customer") or None,
        "statuses": statuses,
        "exclude_statuses": exclude,
        "links": links or None,
    }
    period_filters = {
        name: forms.created_filter(params, name)
        for name in ("current_period_start", "current_period_end")
        if params.get(name) not in (None, "")
    }
    if not period_filters:
        return sim.paginate(ctx, params, "subscription", "/v1/subscriptions", **filters)
    return _list_by_period(sim, ctx, params, filters, period_filters)


def _list_by_period(
    sim: Simulator,
    ctx: Ctx,
    params: Mapping[str, Any],
    filters: dict[str, Any],
    period_filters: Mapping[str, dict[str, int] | None],
) -> dict[str, Any]:
    """Period filters are not indexed: read the indexed pages until the page is full."""
    limit = forms.as_int(params, "limit", 10, minimum=1, maximum=100) or 10
    ops = {
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "eq": lambda a, b: a == b,
    }

    def keep(sub: Mapping[str, Any]) -> bool:
        start, end = period_of(sub)
        values = {"current_period_start": start, "current_period_end": end}
        return all(
            ops[op](values[name], bound)
            for name, conditions in period_filters.items()
            for op, bound in (conditions or {}).items()
        )

    found: list[dict[str, Any]] = []
    cursor = params.get("starting_after") or None
    has_more = False
    while True:
        page = sim.db.list(ctx.acct, "subscription", limit=100, starting_after=cursor, **filters)
        for sub in page.data:
            if keep(sub):
                if len(found) == limit:
                    has_more = True
                    break
                found.append(sub)
        if has_more or not page.has_more or not page.data:
            break
        cursor = page.data[-1]["id"]
    return {"object": "list", "data": found, "has_more": has_more, "url": "/v1/subscriptions"}


# -- update -----------------------------------------------------------------------------


def _credited(item: Mapping[str, Any]) -> dict[str, Any] | None:
    billed = item.get("_billed") or {}
    if not billed.get("invoice"):
        return None
    return {"invoice": billed["invoice"], "invoice_line_items": [billed["line"]]}


def _prorate_change(
    sim: Simulator,
    ctx: Ctx,
    sub: Mapping[str, Any],
    item: Mapping[str, Any],
    *,
    old: tuple[Mapping[str, Any], int] | None,
    new: tuple[Mapping[str, Any], int] | None,
    at: int,
    names: _Names,
) -> None:
    """Unused time on the old price as a credit, remaining time on the new as a charge."""
    start, end = int(item["current_period_start"]), int(item["current_period_end"])
    if at >= end:
        return
    for kind, side in (("credit", old), ("charge", new)):
        if side is None:
            continue
        price, quantity = side
        if is_metered(price):
            continue
        full = billing.line_amount(price, quantity)
        amount = billing.prorate(full, start, end, at)
        if amount == 0:
            continue
        name = names(price["product"])
        invoices.create_proration_item(
            sim,
            ctx,
            customer=sub["customer"],
            currency=sub["currency"],
            amount=-amount if kind == "credit" else amount,
            description=billing.proration_description(kind, name, quantity, at),
            quantity=quantity,
            price=price,
            period={"end": end, "start": at},
            subscription=sub["id"],
            subscription_item=str(item["id"]),
            credited=_credited(item) if kind == "credit" else None,
        )


def _apply_items(
    sim: Simulator,
    ctx: Ctx,
    sub: dict[str, Any],
    raw_items: Sequence[Any],
    *,
    param: str = "items",
) -> tuple[list[tuple[dict[str, Any], Any, Any]], list[str]]:
    """Apply item changes; returns (changes, removed item ids).

    Each change is (item, (old price, old quantity) or None, (new price, new quantity)
    or None): None on the old side for an added item, on the new side for a removed one.
    """
    by_id = {item["id"]: item for item in sub["items"]["data"]}
    start, end = period_of(sub)
    changes: list[tuple[dict[str, Any], Any, Any]] = []
    removed: list[str] = []
    for i, raw in enumerate(raw_items):
        name = f"{param}[{i}]" if param else ""
        if not isinstance(raw, dict):
            raise invalid(f"Invalid hash: {name}", param=name)
        for key in raw:
            if key not in ITEM_KEYS:
                raise SimAPIError(
                    400,
                    f"Received unknown parameter: {_p(name, key)}",
                    code="parameter_unknown",
                    param=_p(name, key),
                )
        item_id = raw.get("id")
        if item_id:
            item = by_id.get(item_id)
            if item is None:
                raise invalid(
                    f"Subscription item {item_id} does not belong to this subscription "
                    f"({sub['id']}).",
                    param=_p(name, "id"),
                )
            before = (item["price"], int(item.get("quantity") or 0))
            if forms.as_bool(raw, "deleted", False):
                sub["items"]["data"].remove(item)
                del by_id[item_id]
                removed.append(item_id)
                changes.append((item, before, None))
                continue
            price = _item_price(sim, ctx, raw, name)
            if price is not None and price["id"] != item["price"]["id"]:
                item["price"] = copy.deepcopy(price)
                item["plan"] = plan_from_price(price)
                if is_metered(price):
                    item.pop("quantity", None)
                elif "quantity" not in item:
                    item["quantity"] = 1
            if "quantity" in raw:
                quantity = _quantity(raw, name, item["price"])
                if quantity is not None:
                    item["quantity"] = quantity
            if "metadata" in raw:
                item["metadata"] = forms.as_metadata(raw, item["metadata"])
            if "discounts" in raw:
                item["discounts"] = _discounts(
                    sim,
                    ctx,
                    raw["discounts"],
                    param=_p(name, "discounts"),
                    customer=sub["customer"],
                    subscription=sub["id"],
                    subscription_item=item_id,
                )
            after = (item["price"], int(item.get("quantity") or 0))
            if after[0]["id"] != before[0]["id"] or after[1] != before[1]:
                changes.append((item, before, after))
            continue
        price = _item_price(sim, ctx, raw, name)
        if price is None:
            raise required(_p(name, "price"))
        item = build_item(
            item_id=sim.new_id("si"),
            subscription_id=sub["id"],
            price=price,
            quantity=_quantity(raw, name, price),
            created=sim.now(),
            period_start=start,
            period_end=end,
            metadata=forms.as_metadata(raw),
        )
        item["discounts"] = _discounts(
            sim,
            ctx,
            raw.get("discounts"),
            param=_p(name, "discounts"),
            customer=sub["customer"],
            subscription=sub["id"],
            subscription_item=item["id"],
        )
        sub["items"]["data"].append(item)
        by_id[item["id"]] = item
        changes.append((item, None, (price, int(item.get("quantity") or 0))))
    if not sub["items"]["data"]:
        raise invalid(
            "A subscription must have at least one active plan. To cancel a subscription, "
            f"please use the cancel API endpoint on /v1/subscriptions/{sub['id']}.",
            param=param,
        )
    _check_prices([item["price"] for item in sub["items"]["data"]], param or "price")
    return changes, removed


def _reset_period(sub: dict[str, Any], at: int) -> tuple[int, int]:
    interval, count = recurring_of(sub)
    end = add_interval(at, interval, count)
    sub["billing_cycle_anchor"] = at
    for item in sub["items"]["data"]:
        item["current_period_start"] = at
        item["current_period_end"] = end
    return at, end


def update_subscription(
    sim: Simulator,
    ctx: Ctx,
    sub: dict[str, Any],
    params: dict[str, Any],
    *,
    items_param: str = "items",
) -> dict[str, Any]:
    """Everything ``POST /v1/subscriptions/{id}`` does (the item endpoints use it too)."""
    now = sim.now()
    if sub["status"] in ("canceled", "incomplete_expired"):
        extra = set(params) - {"metadata", "cancellation_details"}
        if extra:
            raise invalid(
                "A canceled subscription can only update its cancellation_details and metadata.",
                param=sorted(extra)[0],
            )
    old = clone(sub)
    at = forms.as_int(params, "proration_date") or now
    proration_behavior = forms.as_enum(
        params, "proration_behavior", PRORATION_BEHAVIORS, "create_prorations"
    )
    payment_behavior = forms.as_enum(
        params, "payment_behavior", PAYMENT_BEHAVIORS, "allow_incomplete"
    )
    assert payment_behavior is not None
    names = _Names(sim, ctx)
    old_interval = recurring_of(sub)
    removed: list[str] = []
    changes: list[tuple[dict[str, Any], Any, Any]] = []
    if params.get("items"):
        changes, removed = _apply_items(
            sim, ctx, sub, forms.as_list(params, "items"), param=items_param
        )
    billable = sub["status"] in ("active", "past_due", "unpaid")
    reset = False
    anchor = forms.as_enum(params, "billing_cycle_anchor", ("now", "unchanged"))
    if billable and (recurring_of(sub) != old_interval or anchor == "now"):
        reset = True  # a new billing period starts now, invoiced at once
    invoice_lines: list[dict[str, Any]] = []
    invoice_now = False
    if billable and changes and proration_behavior != "none" and not reset:
        for item, before, after in changes:
            _prorate_change(sim, ctx, sub, item, old=before, new=after, at=at, names=names)
        invoice_now = proration_behavior == "always_invoice"
    if reset:
        if proration_behavior != "none":
            for item in old["items"]["data"]:
                before = (item["price"], int(item.get("quantity") or 0))
                _prorate_change(sim, ctx, sub, item, old=before, new=None, at=now, names=names)
        start, end = _reset_period(sub, now)
        invoice_lines = _period_lines(sim, ctx, sub, start=start, end=end)
        invoice_now = True

    # trial changes
    trial_param = _timestamp_or_now(params, "trial_end", now) if "trial_end" in params else None
    ended_trial = False
    if trial_param == "now" and sub["status"] == "trialing":
        sub["trial_end"] = now
        start, end = _reset_period(sub, now)
        invoice_lines = _period_lines(sim, ctx, sub, start=start, end=end)
        sub["status"] = "active"
        invoice_now = ended_trial = True
        # Stripe sends trial_will_end when a trial is ended early, too
        sim.emit(ctx, "customer.subscription.trial_will_end", sub)
    elif isinstance(trial_param, int):
        if trial_param != sub.get("trial_end"):
            sub.pop("_trial_will_end_sent", None)  # a new end gets its own warning
        sub["trial_end"] = trial_param
        if sub["status"] in ("trialing", "active"):
            if sub["status"] == "active":
                sub["trial_start"] = now
            sub["status"] = "trialing"
            for item in sub["items"]["data"]:
                item["current_period_end"] = trial_param

    # plain fields
    if "metadata" in params:
        sub["metadata"] = forms.as_metadata(params, sub["metadata"])
    if "description" in params:
        sub["description"] = params["description"] or None
    if "default_payment_method" in params:
        sub["default_payment_method"] = (
            _payment_method(
                sim,
                ctx,
                params["default_payment_method"],
                sub["customer"],
                "default_payment_method",
            )
            if params["default_payment_method"]
            else None
        )
    if "collection_method" in params or "days_until_due" in params:
        method = forms.as_enum(
            params,
            "collection_method",
            ("charge_automatically", "send_invoice"),
            sub["collection_method"],
        )
        assert method is not None
        sub["collection_method"] = method
        days = forms.as_int(params, "days_until_due", minimum=0)
        if method == "send_invoice":
            sub["days_until_due"] = days if days is not None else sub.get("days_until_due")
            if sub["days_until_due"] is None:
                raise required("days_until_due")
        else:
            if days is not None:
                raise invalid(
                    "days_until_due can only be set when collection_method is send_invoice.",
                    param="days_until_due",
                )
            sub["days_until_due"] = None
    if "trial_settings" in params:
        settings = forms.as_dict(params, "trial_settings") or {}
        behavior = forms.as_dict(settings, "end_behavior") or {}
        value = forms.as_enum(
            behavior, "missing_payment_method", ("cancel", "create_invoice", "pause")
        )
        if value:
            sub["trial_settings"]["end_behavior"]["missing_payment_method"] = value
    if "cancellation_details" in params:
        details = forms.as_dict(params, "cancellation_details") or {}
        for key in ("comment", "feedback"):
            if key in details:
                sub["cancellation_details"][key] = details[key] or None
    if "discounts" in params:
        sub["discounts"] = _discounts(
            sim,
            ctx,
            params["discounts"],
            param="discounts",
            customer=sub["customer"],
            subscription=sub["id"],
        )
    legacy = _legacy_coupon(sim, ctx, params, customer=sub["customer"], subscription=sub["id"])
    if legacy is not None:
        sub["discounts"] = legacy
    for discount_id in old.get("discounts") or []:
        if discount_id not in sub["discounts"]:
            gone = sim.db.get(ctx.acct, discount_id)
            if gone is not None:
                sim.emit(ctx, "customer.discount.deleted", gone)
    if "pause_collection" in params:
        sub["pause_collection"] = _pause_collection(params, now)
    _apply_cancel_at(sim, sub, params, now)
    if billable and not reset and proration_behavior != "none":
        _prorate_cancel_at(sim, ctx, sub, old, names=names)
    _apply_settings(sub, params)
    _add_invoice_items(sim, ctx, sub, params, now)

    if invoice_now and payment_behavior == "pending_if_incomplete":
        return _pending_update(sim, ctx, sub, old, removed, invoice_lines, at=now)
    if invoice_now:
        invoice = _bill(
            sim,
            ctx,
            sub,
            billing_reason="subscription_update",
            lines=invoice_lines,
            at=now,
            pending="subscription" if not (reset or ended_trial) else "customer",
        )
        save_subscription(sim, ctx, sub, removed=removed)
        emit_updated(sim, ctx, "customer.subscription.updated", old, sub)
        _charge_now(sim, ctx, invoice, payment_behavior=payment_behavior)
        return load_subscription(sim, ctx, sub["id"])
    save_subscription(sim, ctx, sub, removed=removed)
    emit_updated(sim, ctx, "customer.subscription.updated", old, sub)
    _warn_if_trial_ends_soon(sim, ctx, sub)
    return sub


def _prorate_cancel_at(
    sim: Simulator, ctx: Ctx, sub: Mapping[str, Any], old: Mapping[str, Any], *, names: _Names
) -> None:
    """``cancel_at`` moved inside the current period: Stripe prorates the time the
    subscription no longer runs (a credit), or runs again (a charge)."""
    start, end = period_of(sub)

    def runs_until(value: Any) -> int:
        return min(int(value), end) if value else end

    before, after = runs_until(old.get("cancel_at")), runs_until(sub.get("cancel_at"))
    if before == after:
        return
    kind = "credit" if after < before else "charge"
    for item in sub["items"]["data"]:
        price, quantity = item["price"], int(item.get("quantity") or 0)
        if is_metered(price):
            continue
        full = billing.line_amount(price, quantity)
        amount = billing.prorate(full, start, end, min(before, after)) - billing.prorate(
            full, start, end, max(before, after)
        )
        if amount == 0:
            continue
        invoices.create_proration_item(
            sim,
            ctx,
            customer=sub["customer"],
            currency=sub["currency"],
            amount=-amount if kind == "credit" else amount,
            description=billing.proration_description(
                kind, names(price["product"]), quantity, min(before, after)
            ),
            quantity=quantity,
            price=price,
            period={"end": max(before, after), "start": min(before, after)},
            subscription=sub["id"],
            subscription_item=str(item["id"]),
            credited=_credited(item) if kind == "credit" else None,
        )


def _pause_collection(params: Mapping[str, Any], now: int) -> dict[str, Any] | None:
    value = params.get("pause_collection")
    if value in ("", None):
        return None
    if not isinstance(value, dict):
        raise invalid("Invalid hash: pause_collection", param="pause_collection")
    behavior = forms.as_enum(value, "behavior", ("keep_as_draft", "mark_uncollectible", "void"))
    if behavior is None:
        raise required("pause_collection[behavior]")
    resumes_at = forms.as_int(value, "resumes_at")
    if resumes_at is not None and resumes_at <= now:
        raise invalid(
            "Invalid timestamp: must be an integer Unix timestamp in the future.",
            param="pause_collection[resumes_at]",
        )
    return {"behavior": behavior, "resumes_at": resumes_at}


def _pending_update(
    sim: Simulator,
    ctx: Ctx,
    sub: dict[str, Any],
    old: dict[str, Any],
    removed: list[str],
    lines: list[dict[str, Any]],
    *,
    at: int,
) -> dict[str, Any]:
    """``pending_if_incomplete``: the change applies only once its invoice is paid."""
    invoice = _bill(
        sim,
        ctx,
        sub,
        billing_reason="subscription_update",
        lines=lines,
        at=at,
        pending="subscription",
    )
    invoices.finalize(sim, ctx, invoice, collect=True, settle_subscription=False)
    if invoice["status"] == "paid":
        save_subscription(sim, ctx, sub, removed=removed)
        emit_updated(sim, ctx, "customer.subscription.updated", old, sub)
        return sub
    pending_state = copy.deepcopy(sub)
    current = copy.deepcopy(old)
    current["latest_invoice"] = invoice["id"]
    current["pending_update"] = {
        "billing_cycle_anchor": sub["billing_cycle_anchor"]
        if sub["billing_cycle_anchor"] != old["billing_cycle_anchor"]
        else None,
        "discounts": None,
        "expires_at": at + INCOMPLETE_EXPIRY_SECONDS,
        "subscription_items": copy.deepcopy(sub["items"]["data"]),
        "trial_end": sub["trial_end"] if sub["trial_end"] != old["trial_end"] else None,
        "trial_from_plan": None,
    }
    current["_pending_state"] = {"sub": pending_state, "removed": removed, "invoice": invoice["id"]}
    save_subscription(sim, ctx, current)
    emit_updated(sim, ctx, "customer.subscription.updated", old, current)
    return current


@route("POST", "/v1/subscriptions/{sub_id}", resource="subscriptions")
def update(sim: Simulator, ctx: Ctx, params: dict[str, Any], sub_id: str) -> dict[str, Any]:
    check_params(params, _allowed(ctx, UPDATE_PARAMS))
    sub = load_subscription(sim, ctx, sub_id)
    return update_subscription(sim, ctx, sub, params)


# -- cancel, resume ---------------------------------------------------------------------


def cancel(
    sim: Simulator,
    ctx: Ctx,
    sub: dict[str, Any],
    *,
    reason: str = "cancellation_requested",
    automatic: bool = False,
    scheduled: bool = False,
    invoice_now: bool = False,
    prorate: bool = False,
    comment: str | None = None,
    feedback: str | None = None,
) -> dict[str, Any]:
    """End a subscription now (``customer.subscription.deleted``)."""
    now = sim.now()
    if prorate and sub["status"] in ("active", "past_due", "unpaid"):
        names = _Names(sim, ctx)
        for item in sub["items"]["data"]:
            before = (item["price"], int(item.get("quantity") or 0))
            _prorate_change(sim, ctx, sub, item, old=before, new=None, at=now, names=names)
    if invoice_now:
        pending = invoices.pending_items(
            sim,
            ctx,
            sub["customer"],
            currency=sub["currency"],
            subscription=sub["id"],
            only_subscription=True,
        )
        if pending:
            invoice = _bill(
                sim,
                ctx,
                sub,
                billing_reason="subscription_update",
                lines=[],
                at=now,
                pending="subscription",
                automatic=automatic,
            )
            invoices.finalize(
                sim, ctx, invoice, automatic=automatic, collect=True, settle_subscription=False
            )
    sub["status"] = "canceled"
    if not (scheduled and sub.get("canceled_at")):
        sub["canceled_at"] = now  # a scheduled end keeps the time it was asked for
    sub["ended_at"] = now
    sub["pending_update"] = None
    sub.pop("_pending_state", None)
    details = sub["cancellation_details"]
    details["reason"] = reason
    if comment is not None:
        details["comment"] = comment
    if feedback is not None:
        details["feedback"] = feedback
    save_subscription(sim, ctx, sub)
    sim.emit(ctx, "customer.subscription.deleted", sub, automatic=automatic)
    _stop_automatic_collection(sim, ctx, sub["customer"], automatic=automatic)
    return sub


def _stop_automatic_collection(
    sim: Simulator, ctx: Ctx, customer_id: str, *, automatic: bool
) -> None:
    """Stripe stops automatic collection of the customer's finalized invoices when a
    subscription is canceled, so that nobody is charged after leaving."""
    open_invoices = list(
        invoices._iter_all(sim, ctx, "invoice", customer=customer_id, statuses=["open"])
    )
    for invoice in open_invoices:
        if not invoice.get("auto_advance"):
            continue
        old = clone(invoice)
        invoice["auto_advance"] = False
        invoice["next_payment_attempt"] = None
        invoices.save_invoice(sim, ctx, invoice)
        emit_updated(sim, ctx, "invoice.updated", old, invoice, automatic=automatic)


@route("DELETE", "/v1/subscriptions/{sub_id}", resource="subscriptions")
def cancel_route(sim: Simulator, ctx: Ctx, params: dict[str, Any], sub_id: str) -> dict[str, Any]:
    check_params(params, {"cancellation_details", "invoice_now", "prorate"})
    sub = load_subscription(sim, ctx, sub_id)
    if sub["status"] in ("canceled", "incomplete_expired"):
        raise SimAPIError(
            400,
            f"A canceled subscription can only update its cancellation_details and metadata. "
            f"({sub_id} is already {sub['status']}.)",
        )
    details = forms.as_dict(params, "cancellation_details") or {}
    feedback = forms.as_enum(
        details,
        "feedback",
        (
            "customer_service",
            "low_quality",
            "missing_features",
            "other",
            "switched_service",
            "too_complex",
            "too_expensive",
            "unused",
        ),
    )
    return cancel(
        sim,
        ctx,
        sub,
        invoice_now=bool(forms.as_bool(params, "invoice_now", False)),
        prorate=bool(forms.as_bool(params, "prorate", False)),
        comment=details.get("comment") or None,
        feedback=feedback,
    )


def cancel_all_for_customer(sim: Simulator, ctx: Ctx, customer_id: str) -> None:
    """A deleted customer's subscriptions end first, each with its own event."""
    live = list(
        invoices._iter_all(
            sim,
            ctx,
            "subscription",
            customer=customer_id,
            exclude_statuses=["canceled", "incomplete_expired"],
        )
    )
    for sub in live:
        cancel(sim, ctx, sub)


@route("POST", "/v1/subscriptions/{sub_id}/resume", resource="subscriptions")
def resume(sim: Simulator, ctx: Ctx, params: dict[str, Any], sub_id: str) -> dict[str, Any]:
    check_params(
        params,
        {"billing_cycle_anchor", "payment_behavior", "proration_behavior", "proration_date"},
    )
    sub = load_subscription(sim, ctx, sub_id)
    if sub["status"] != "paused":
        raise invalid(
            "Subscription cannot be resumed because it is not paused. Only subscriptions "
            "with `status=paused` can be resumed."
        )
    anchor = forms.as_enum(params, "billing_cycle_anchor", ("now", "unchanged"), "now")
    payment_behavior = forms.as_enum(
        params,
        "payment_behavior",
        ("allow_incomplete", "error_if_incomplete", "pending_if_incomplete"),
        "allow_incomplete",
    )
    now = sim.now()
    old = clone(sub)
    sub["status"] = "active"
    if anchor == "now":
        start, end = _reset_period(sub, now)
    else:
        start, end = period_of(sub)
    lines = _period_lines(sim, ctx, sub, start=start, end=end)
    invoice = _bill(sim, ctx, sub, billing_reason="subscription_update", lines=lines, at=now)
    save_subscription(sim, ctx, sub)
    sim.emit(ctx, "customer.subscription.resumed", sub)
    emit_updated(sim, ctx, "customer.subscription.updated", old, sub)
    _charge_now(sim, ctx, invoice, payment_behavior=payment_behavior or "allow_incomplete")
    return load_subscription(sim, ctx, sub_id)


@route("DELETE", "/v1/subscriptions/{sub_id}/discount", resource="subscriptions")
def delete_discount(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], sub_id: str
) -> dict[str, Any]:
    sub = load_subscription(sim, ctx, sub_id)
    if not sub["discounts"]:
        raise SimAPIError(
            404, f"No active discount for subscription: {sub_id}", code="resource_missing"
        )
    old = clone(sub)
    first = sim.db.get(ctx.acct, sub["discounts"][0]) or {"id": sub["discounts"][0]}
    for discount_id in sub["discounts"]:
        gone = sim.db.get(ctx.acct, discount_id)
        if gone is not None:
            sim.emit(ctx, "customer.discount.deleted", gone)
    sub["discounts"] = []
    save_subscription(sim, ctx, sub)
    emit_updated(sim, ctx, "customer.subscription.updated", old, sub)
    return {**first, "object": "discount", "deleted": True}


# -- what invoices tell us --------------------------------------------------------------


def invoice_settled(
    sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any], *, paid: bool, automatic: bool
) -> None:
    """A subscription invoice was paid or its payment failed: the status follows."""
    sub = sim.db.get(ctx.acct, str(invoice.get("subscription")))
    if sub is None or sub.get("object") != "subscription":
        return
    old = clone(sub)
    pending = sub.get("_pending_state")
    if paid and pending and pending.get("invoice") == invoice["id"]:
        applied = pending["sub"]
        applied["latest_invoice"] = invoice["id"]
        applied["pending_update"] = None
        save_subscription(sim, ctx, applied, removed=pending.get("removed") or [])
        sim.emit(ctx, "customer.subscription.pending_update_applied", applied, automatic=automatic)
        emit_updated(sim, ctx, "customer.subscription.updated", old, applied, automatic=automatic)
        return
    latest = sub.get("latest_invoice") == invoice["id"]
    if paid and latest and sub["status"] in ("incomplete", "past_due", "unpaid"):
        sub["status"] = "active"
    elif (
        not paid
        and sub["status"] == "active"
        and invoice["billing_reason"] != ("subscription_create")
    ):
        sub["status"] = "past_due"
    else:
        return
    save_subscription(sim, ctx, sub)
    emit_updated(sim, ctx, "customer.subscription.updated", old, sub, automatic=automatic)


def invoice_overdue(sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]) -> None:
    """A ``send_invoice`` invoice passed its due date unpaid."""
    invoice_settled(
        sim, ctx, {**invoice, "billing_reason": "subscription_cycle"}, paid=False, automatic=True
    )


def retries_exhausted(sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]) -> None:
    """Every retry of a subscription invoice failed: Billing's setting decides."""
    sub = sim.db.get(ctx.acct, str(invoice.get("subscription")))
    if sub is None or sub["status"] not in ("past_due", "active"):
        return
    if RETRIES_EXHAUSTED == "cancel":
        cancel(sim, ctx, sub, reason="payment_failed", automatic=True)
    elif RETRIES_EXHAUSTED == "unpaid":
        old = clone(sub)
        sub["status"] = "unpaid"
        save_subscription(sim, ctx, sub)
        emit_updated(sim, ctx, "customer.subscription.updated", old, sub, automatic=True)


# -- the clock --------------------------------------------------------------------------


def trial_will_end_due(sub: Mapping[str, Any], at: int) -> bool:
    """Whether ``customer.subscription.trial_will_end`` is due (three days ahead)."""
    return (
        sub["status"] == "trialing"
        and bool(sub.get("trial_end"))
        and not sub.get("_trial_will_end_sent")
        and at >= int(sub["trial_end"]) - TRIAL_WILL_END_SECONDS
    )


@timer_handler("subscription")
def _on_timer(sim: Simulator, ctx: Ctx, sub_id: str, at: int) -> None:
    sub = sim.db.get(ctx.acct, sub_id)
    if sub is None or sub.get("object") != "subscription":
        return
    old = clone(sub)
    status = sub["status"]
    if status == "incomplete" and at >= int(sub["created"]) + INCOMPLETE_EXPIRY_SECONDS:
        _expire(sim, ctx, sub, old)
        return
    pending = sub.get("pending_update")
    if pending and at >= int(pending["expires_at"]):
        sub["pending_update"] = None
        sub.pop("_pending_state", None)
        save_subscription(sim, ctx, sub)
        sim.emit(ctx, "customer.subscription.pending_update_expired", sub, automatic=True)
        emit_updated(sim, ctx, "customer.subscription.updated", old, sub, automatic=True)
        return
    if trial_will_end_due(sub, at) and at < int(sub["trial_end"]):
        sub["_trial_will_end_sent"] = True
        save_subscription(sim, ctx, sub)
        sim.emit(ctx, "customer.subscription.trial_will_end", sub, automatic=True)
        return
    if sub.get("cancel_at") and at >= int(sub["cancel_at"]) and status != "canceled":
        cancel(sim, ctx, sub, automatic=True, scheduled=True)
        return
    pause = sub.get("pause_collection")
    if pause and pause.get("resumes_at") and at >= int(pause["resumes_at"]):
        sub["pause_collection"] = None
        save_subscription(sim, ctx, sub)
        emit_updated(sim, ctx, "customer.subscription.updated", old, sub, automatic=True)
        return
    if status == "trialing" and sub.get("trial_end") and at >= int(sub["trial_end"]):
        _end_trial(sim, ctx, sub, old, at)
        return
    if status in ("active", "past_due", "unpaid") and at >= period_of(sub)[1]:
        renew(sim, ctx, sub, at=period_of(sub)[1])
        return
    # Nothing due (a timer set for a state that has since changed): look again later,
    # never at a moment already past, so the clock cannot spin on it.
    upcoming = next_action_at(sub)
    sim.schedule(ctx, "subscription", sub_id, upcoming if upcoming and upcoming > at else None)


def _expire(sim: Simulator, ctx: Ctx, sub: dict[str, Any], old: dict[str, Any]) -> None:
    """Unpaid for 23 hours: ``incomplete_expired``, and its first invoice is voided."""
    sub["status"] = "incomplete_expired"
    sub["ended_at"] = sim.now()
    save_subscription(sim, ctx, sub)
    emit_updated(sim, ctx, "customer.subscription.updated", old, sub, automatic=True)
    invoice = sim.db.get(ctx.acct, str(sub.get("latest_invoice")))
    if invoice is not None and invoice["status"] == "open":
        invoices.void(sim, ctx, invoice, automatic=True)


def _end_trial(sim: Simulator, ctx: Ctx, sub: dict[str, Any], old: dict[str, Any], at: int) -> None:
    if sub["collection_method"] == "charge_automatically" and not _has_payment_method(
        sim, ctx, sub
    ):
        behavior = sub["trial_settings"]["end_behavior"]["missing_payment_method"]
        if behavior == "cancel":
            cancel(sim, ctx, sub, automatic=True)
            return
        if behavior == "pause":
            sub["status"] = "paused"
            save_subscription(sim, ctx, sub)
            sim.emit(ctx, "customer.subscription.paused", sub, automatic=True)
            emit_updated(sim, ctx, "customer.subscription.updated", old, sub, automatic=True)
            return
    sub["status"] = "active"
    renew(sim, ctx, sub, at=at, old=old)


def renew(
    sim: Simulator,
    ctx: Ctx,
    sub: dict[str, Any],
    *,
    at: int,
    old: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Start the next period and invoice it (``subscription_cycle``; a draft that Stripe
    finalizes and collects an hour later). Paused collection voids, keeps as draft or
    marks uncollectible, as ``pause_collection.behavior`` says."""
    old = old if old is not None else clone(sub)
    _prune_discounts(sim, ctx, sub, at, automatic=True)
    interval, count = recurring_of(sub)
    anchor_day = datetime.fromtimestamp(int(sub["billing_cycle_anchor"]), UTC).day
    previous = period_of(sub)
    start = at
    end = add_interval(start, interval, count, anchor_day=anchor_day)
    for item in sub["items"]["data"]:
        item["current_period_start"] = start
        item["current_period_end"] = end
    lines = _period_lines(sim, ctx, sub, start=start, end=end)
    invoice = _bill(
        sim,
        ctx,
        sub,
        billing_reason="subscription_cycle",
        lines=lines,
        at=at,
        automatic=True,
        period=previous,
    )
    save_subscription(sim, ctx, sub)
    emit_updated(sim, ctx, "customer.subscription.updated", old, sub, automatic=True)
    pause = sub.get("pause_collection")
    if pause:
        if pause["behavior"] == "keep_as_draft":
            drafted = clone(invoice)
            invoice["auto_advance"] = False
            invoice["automatically_finalizes_at"] = None
            invoice["next_payment_attempt"] = None
            invoices.save_invoice(sim, ctx, invoice)
            emit_updated(sim, ctx, "invoice.updated", drafted, invoice, automatic=True)
        else:
            invoice["auto_advance"] = False
            invoices.finalize(sim, ctx, invoice, automatic=True, settle_subscription=False)
            if invoice["status"] == "open":
                if pause["behavior"] == "void":
                    invoices.void(sim, ctx, invoice, automatic=True)
                else:
                    invoices.mark_uncollectible(sim, ctx, invoice, automatic=True)
    return sub


# -- subscription items -----------------------------------------------------------------

ITEM_CREATE_PARAMS = {
    "billing_thresholds",
    "current_trial",
    "discounts",
    "metadata",
    "payment_behavior",
    "plan",
    "price",
    "price_data",
    "proration_behavior",
    "proration_date",
    "quantity",
    "subscription",
    "tax_rates",
}
ITEM_UPDATE_PARAMS = (ITEM_CREATE_PARAMS - {"subscription"}) | {"off_session"}
_SUB_LEVEL = {"payment_behavior", "proration_behavior", "proration_date", "off_session"}


def _item_and_subscription(
    sim: Simulator, ctx: Ctx, item_id: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    row = sim.db.get(ctx.acct, item_id)
    if row is None or row.get("object") != "subscription_item":
        raise missing(item_id, kind="subscription_item")
    sub = load_subscription(sim, ctx, row["subscription"])
    for item in sub["items"]["data"]:
        if item["id"] == item_id:
            return item, sub
    raise missing(item_id, kind="subscription_item")


def _item_request(params: Mapping[str, Any], item_id: str | None) -> dict[str, Any]:
    """An item endpoint's parameters as a subscription update's ``items[0]``."""
    entry = {k: v for k, v in params.items() if k not in _SUB_LEVEL | {"subscription"}}
    if item_id is not None:
        entry["id"] = item_id
    request: dict[str, Any] = {k: params[k] for k in _SUB_LEVEL if k in params}
    request["items"] = [entry]
    return request


@route("GET", "/v1/subscription_items", resource="subscriptions")
def list_items(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, {"ending_before", "limit", "starting_after", "subscription"})
    if not params.get("subscription"):
        raise required("subscription")
    sub = load_subscription(sim, ctx, params["subscription"], param="subscription")
    return invoices.page_embedded(
        sub["items"]["data"],
        params,
        f"/v1/subscription_items?subscription={sub['id']}",
        "subscription_item",
    )


@route("POST", "/v1/subscription_items", resource="subscriptions")
def create_item(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, ITEM_CREATE_PARAMS)
    if not params.get("subscription"):
        raise required("subscription")
    sub = load_subscription(sim, ctx, params["subscription"], param="subscription")
    before = {item["id"] for item in sub["items"]["data"]}
    updated = update_subscription(sim, ctx, sub, _item_request(params, None), items_param="")
    item: dict[str, Any]
    for item in updated["items"]["data"]:
        if item["id"] not in before:
            return item
    raise SimAPIError(500, "The subscription item was not created.", type="api_error")


@route("GET", "/v1/subscription_items/{item_id}", resource="subscriptions")
def retrieve_item(sim: Simulator, ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    check_params(params, set())
    return _item_and_subscription(sim, ctx, item_id)[0]


@route("POST", "/v1/subscription_items/{item_id}", resource="subscriptions")
def update_item(sim: Simulator, ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    check_params(params, ITEM_UPDATE_PARAMS)
    _, sub = _item_and_subscription(sim, ctx, item_id)
    updated = update_subscription(sim, ctx, sub, _item_request(params, item_id), items_param="")
    item: dict[str, Any]
    for item in updated["items"]["data"]:
        if item["id"] == item_id:
            return item
    raise missing(item_id, kind="subscription_item")


@route("DELETE", "/v1/subscription_items/{item_id}", resource="subscriptions")
def delete_item(sim: Simulator, ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    check_params(
        params, {"clear_usage", "payment_behavior", "proration_behavior", "proration_date"}
    )
    item, sub = _item_and_subscription(sim, ctx, item_id)
    request = _item_request({k: v for k, v in params.items() if k != "clear_usage"}, item_id)
    request["items"][0]["deleted"] = "true"
    update_subscription(sim, ctx, sub, request, items_param="")
    return deleted_stub(item)
