"""Invoices and invoice items: drafts, finalization, payment, voiding, and their lines.

An invoice stores all its lines (``line_item`` objects) in ``lines.data``; the renderer
embeds the first ten with ``has_more`` and ``GET /v1/invoices/{id}/lines`` pages through
the rest. Invoice items (``invoiceitem``) are their own objects: pending until an invoice
takes them, then shown on it as a line whose ``parent`` names the item.

Status machine (Stripe's): ``draft`` → ``open`` (finalize) → ``paid`` | ``void`` |
``uncollectible``; ``uncollectible`` → ``paid`` | ``void``. A finalized invoice whose
amount due is zero is paid at once.

What Stripe does on its own runs from one clock timer per invoice (kind ``invoice``, due
at :func:`next_action_at`): a draft with ``auto_advance`` is finalized an hour after it
was made and charged, a failed automatic payment is retried (``RETRY_SCHEDULE_DAYS``), a
``send_invoice`` invoice passing its due date makes its subscription past due.

Contract with the payments and credit-note modules
--------------------------------------------------
:func:`pay_invoice` collects through ``payments.collect`` (imported lazily, so this module
loads without it) and records each attempt in the private ``_payments`` list
(``{"payment_intent", "charge", "status"}``) that ``versions`` reads for old API shapes.
:func:`payment_intent_succeeded` is what payments calls when an invoice's intent is
confirmed by the client (``default_incomplete``). Credit notes call ``_settle`` to mark
an invoice they bring to zero paid. An invoice item has no ``created`` (its time is
``date``); it is stored with a private ``_created`` that the store orders it by.

Builders for the generator (no database, no clock)
--------------------------------------------------
``build_invoice(...)``          a draft invoice with its lines and totals;
``build_subscription_line(...)`` a line for a subscription item;
``build_invoice_item(...)``     an ``invoiceitem``; ``build_item_line(...)`` its line;
``apply_totals(invoice, discounts, coupons)`` recompute totals and line discounts;
``finalize_fields(...)``, ``paid_fields(...)`` the fields finalization and payment set;
``invoice_links(invoice)``, ``invoice_item_links(item)`` the ``links`` to index them by.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from types import ModuleType
from typing import Any

from stripesync.sim import billing, forms
from stripesync.sim.core import Ctx, Simulator, route, timer_handler
from stripesync.sim.db import clone
from stripesync.sim.errors import SimAPIError, invalid, missing, required
from stripesync.sim.resources import customers
from stripesync.sim.resources.catalog import load_price, make_discount, resolve_coupon
from stripesync.sim.resources.common import (
    check_params,
    deleted_stub,
    emit_updated,
    ensure_currency,
)

DAY = 86400
#: When Stripe retries a failed automatic payment (days after the previous attempt); after
#: the last one the invoice stays open with no next attempt.
RETRY_SCHEDULE_DAYS = (3, 5, 7)
#: A draft made by a subscription waits this long before Stripe finalizes it.
DRAFT_GRACE_SECONDS = 3600
DEFAULT_DAYS_UNTIL_DUE = 30
STATUSES = ("draft", "open", "paid", "uncollectible", "void")
PAYMENT_DESCRIPTIONS = {
    "subscription_create": "Subscription creation",
    "subscription_update": "Subscription update",
    "subscription_cycle": "Subscription cycle",
}


# -- pure builders ----------------------------------------------------------------------


def customer_fields(customer: Mapping[str, Any]) -> dict[str, Any]:
    """The customer details an invoice copies (kept as they were when it was made)."""
    return {
        "customer_address": copy.deepcopy(customer.get("address")),
        "customer_email": customer.get("email"),
        "customer_name": customer.get("name"),
        "customer_phone": customer.get("phone"),
        "customer_shipping": copy.deepcopy(customer.get("shipping")),
        "customer_tax_exempt": customer.get("tax_exempt", "none"),
    }


def build_invoice(
    *,
    invoice_id: str,
    customer: Mapping[str, Any],
    currency: str,
    created: int,
    livemode: bool,
    billing_reason: str,
    collection_method: str = "charge_automatically",
    subscription: Mapping[str, Any] | None = None,
    lines: Sequence[dict[str, Any]] = (),
    discounts: Sequence[Mapping[str, Any]] = (),
    coupons: Mapping[str, Mapping[str, Any]] | None = None,
    auto_advance: bool = True,
    description: str | None = None,
    metadata: Mapping[str, str] | None = None,
    days_until_due: int | None = None,
    due_date: int | None = None,
    period_start: int | None = None,
    period_end: int | None = None,
    default_payment_method: str | None = None,
    footer: str | None = None,
    statement_descriptor: str | None = None,
) -> dict[str, Any]:
    """A draft invoice (``status`` draft, no number) with ``lines`` and its totals."""
    sub_id = subscription["id"] if subscription is not None else None
    parent = None
    if subscription is not None:
        parent = {
            "quote_details": None,
            "subscription_details": {
                "metadata": dict(subscription.get("metadata") or {}),
                "subscription": sub_id,
            },
            "type": "subscription_details",
        }
    if collection_method == "send_invoice" and due_date is None:
        due_date = created + DAY * (
            days_until_due if days_until_due is not None else DEFAULT_DAYS_UNTIL_DUE
        )
    invoice: dict[str, Any] = {
        "id": invoice_id,
        "object": "invoice",
        "account_country": "US",
        "account_name": None,
        "account_tax_ids": None,
        "amount_due": 0,
        "amount_overpaid": 0,
        "amount_paid": 0,
        "amount_remaining": 0,
        "amount_shipping": 0,
        "application": None,
        "attempt_count": 0,
        "attempted": False,
        "auto_advance": auto_advance,
        "automatic_tax": {
            "disabled_reason": None,
            "enabled": False,
            "liability": None,
            "provider": None,
            "status": None,
        },
        "automatically_finalizes_at": created + DRAFT_GRACE_SECONDS if auto_advance else None,
        "billing_reason": billing_reason,
        "collection_method": collection_method,
        "created": created,
        "currency": currency,
        "custom_fields": None,
        "customer": customer["id"],
        "customer_account": None,
        **customer_fields(customer),
        "customer_tax_ids": [],
        "default_payment_method": default_payment_method,
        "default_source": None,
        "default_tax_rates": [],
        "description": description,
        "discounts": [d["id"] for d in discounts if not d.get("_line_only")],
        "due_date": due_date if collection_method == "send_invoice" else None,
        "effective_at": None,
        "ending_balance": None,
        "footer": footer,
        "from_invoice": None,
        "hosted_invoice_url": None,
        "invoice_pdf": None,
        "issuer": {"type": "self"},
        "last_finalization_error": None,
        "latest_revision": None,
        "lines": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/invoices/{invoice_id}/lines",
        },
        "livemode": livemode,
        "metadata": dict(metadata or {}),
        "next_payment_attempt": None,
        "number": None,
        "on_behalf_of": None,
        "parent": parent,
        "payment_settings": {
            "default_mandate": None,
            "payment_method_options": None,
            "payment_method_types": None,
        },
        "period_end": period_end if period_end is not None else created,
        "period_start": period_start if period_start is not None else created,
        "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0,
        "receipt_number": None,
        "rendering": {
            "amount_tax_display": None,
            "pdf": {"page_size": "auto"},
            "template": None,
            "template_version": None,
        },
        "shipping_cost": None,
        "shipping_details": None,
        "starting_balance": 0,
        "statement_descriptor": statement_descriptor,
        "status": "draft",
        "status_transitions": {
            "finalized_at": None,
            "marked_uncollectible_at": None,
            "paid_at": None,
            "voided_at": None,
        },
        "subscription": sub_id,
        "subtotal": 0,
        "subtotal_excluding_tax": 0,
        "test_clock": None,
        "total": 0,
        "total_discount_amounts": [],
        "total_excluding_tax": 0,
        "total_pretax_credit_amounts": [],
        "total_taxes": [],
        "webhooks_delivered_at": created,
        "_payments": [],
    }
    if collection_method == "charge_automatically" and auto_advance:
        invoice["next_payment_attempt"] = created + DRAFT_GRACE_SECONDS
    for line in lines:
        line["invoice"] = invoice_id
        invoice["lines"]["data"].append(line)
    return apply_totals(invoice, discounts, coupons or {})


def apply_totals(
    invoice: dict[str, Any],
    discounts: Sequence[Mapping[str, Any]],
    coupons: Mapping[str, Mapping[str, Any]],
) -> dict[str, Any]:
    """Recompute line discount amounts and the invoice's totals (in place; returned)."""
    lines = invoice["lines"]["data"]
    totals = billing.invoice_totals(lines, discounts, coupons, currency=invoice["currency"])
    for line, amounts in zip(lines, totals.pop("line_discount_amounts"), strict=True):
        line["discount_amounts"] = amounts
    invoice.update(totals)
    if invoice["status"] == "draft":
        invoice["amount_due"] = max(invoice["total"], 0)
        invoice["amount_remaining"] = invoice["amount_due"]
    return invoice


def finalize_fields(
    invoice: dict[str, Any],
    *,
    at: int,
    number: str,
    starting_balance: int,
    account: str,
    token: str,
) -> dict[str, Any]:
    """What finalization sets: number, balance applied, links, status ``open``."""
    amount_due, ending_balance = billing.apply_balance(invoice["total"], starting_balance)
    mode = "live" if invoice.get("livemode") else "test"
    invoice.update(
        {
            "status": "open",
            "number": number,
            "starting_balance": starting_balance,
            "ending_balance": ending_balance,
            "amount_due": amount_due,
            "amount_remaining": amount_due - invoice.get("amount_paid", 0),
            "effective_at": invoice.get("effective_at") or at,
            "automatically_finalizes_at": None,
            "hosted_invoice_url": f"https://invoice.stripe.com/i/{account}/{mode}_{token}?s=ap",
            "invoice_pdf": f"https://pay.stripe.com/invoice/{account}/{mode}_{token}/pdf?s=ap",
        }
    )
    invoice["status_transitions"]["finalized_at"] = at
    if invoice["collection_method"] == "charge_automatically" and invoice["auto_advance"]:
        invoice["next_payment_attempt"] = at + DRAFT_GRACE_SECONDS
    else:
        invoice["next_payment_attempt"] = None
    return invoice


def paid_fields(invoice: dict[str, Any], *, at: int) -> dict[str, Any]:
    """What payment in full sets (status ``paid``, amounts, no further attempts)."""
    invoice["amount_paid"] = invoice.get("amount_paid", 0) + invoice["amount_remaining"]
    invoice["amount_remaining"] = 0
    invoice["status"] = "paid"
    invoice["status_transitions"]["paid_at"] = at
    invoice["next_payment_attempt"] = None
    invoice["auto_advance"] = False
    return invoice


def _unit_decimal(price: Mapping[str, Any], amount: int, quantity: int) -> str | None:
    if price.get("billing_scheme") != "tiered" and price.get("unit_amount_decimal") is not None:
        return str(price["unit_amount_decimal"])
    if quantity <= 0:
        return "0"
    value = Decimal(amount) / quantity
    return format(value.normalize(), "f")


def build_subscription_line(
    *,
    line_id: str,
    subscription_id: str,
    item_id: str,
    price: Mapping[str, Any],
    quantity: int,
    product_name: str,
    period_start: int,
    period_end: int,
    livemode: bool,
    amount: int | None = None,
    description: str | None = None,
    discounts: Sequence[str] = (),
    invoice_id: str | None = None,
) -> dict[str, Any]:
    """The line a subscription item puts on its invoice for one period."""
    if amount is None:
        amount = billing.line_amount(price, quantity)
    return {
        "id": line_id,
        "object": "line_item",
        "amount": amount,
        "currency": price["currency"],
        "description": description or billing.describe_price(price, quantity, product_name),
        "discount_amounts": [],
        "discountable": True,
        "discounts": list(discounts),
        "invoice": invoice_id,
        "livemode": livemode,
        "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None,
                "proration": False,
                "proration_details": {"credited_items": None},
                "subscription": subscription_id,
                "subscription_item": item_id,
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period_end, "start": period_start},
        "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price["id"], "product": price["product"]},
            "type": "price_details",
            "unit_amount_decimal": _unit_decimal(price, amount, quantity),
        },
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "subscription": subscription_id,
        "subtotal": amount,
        "taxes": [],
    }


def build_invoice_item(
    *,
    item_id: str,
    customer: str,
    currency: str,
    amount: int,
    created: int,
    livemode: bool,
    description: str | None = None,
    quantity: int = 1,
    unit_amount_decimal: str | None = None,
    price: Mapping[str, Any] | None = None,
    period: Mapping[str, int] | None = None,
    proration: bool = False,
    proration_details: Mapping[str, Any] | None = None,
    subscription: str | None = None,
    subscription_item: str | None = None,
    invoice: str | None = None,
    discountable: bool = True,
    discounts: Sequence[str] = (),
    metadata: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """An ``invoiceitem`` (pending when ``invoice`` is None)."""
    if unit_amount_decimal is None:
        unit_amount_decimal = (
            str(amount // quantity)
            if quantity and amount % quantity == 0
            else (format((Decimal(amount) / (quantity or 1)).normalize(), "f"))
        )
    parent = None
    if subscription is not None:
        parent = {
            "subscription_details": {
                "subscription": subscription,
                "subscription_item": subscription_item,
            },
            "type": "subscription_details",
        }
    item = {
        "id": item_id,
        "object": "invoiceitem",
        "amount": amount,
        "currency": currency,
        "customer": customer,
        "customer_account": None,
        "date": created,
        "description": description,
        "discountable": False if proration else discountable,
        "discounts": list(discounts),
        "invoice": invoice,
        "livemode": livemode,
        "metadata": dict(metadata or {}),
        "net_amount": amount,
        "parent": parent,
        "period": dict(period) if period else {"end": created, "start": created},
        "pricing": {
            "price_details": (
                {"price": price["id"], "product": price["product"]} if price else None
            ),
            "type": "price_details",
            "unit_amount_decimal": unit_amount_decimal,
        },
        "proration": proration,
        "quantity": quantity,
        "quantity_decimal": str(quantity),
        "tax_rates": [],
        "test_clock": None,
        # Stripe's invoice item has `date`, not `created`; the store orders by this.
        "_created": created,
        "_proration_details": dict(proration_details or {"credited_items": None}),
    }
    return item


def build_item_line(item: Mapping[str, Any], *, line_id: str, invoice_id: str) -> dict[str, Any]:
    """The line an invoice item becomes on ``invoice_id``."""
    parent_details = (item.get("parent") or {}).get("subscription_details") or {}
    subscription = parent_details.get("subscription")
    subscription_item = parent_details.get("subscription_item")
    proration_details = copy.deepcopy(item.get("_proration_details") or {"credited_items": None})
    if subscription_item is not None:
        parent = {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": item["id"],
                "proration": item["proration"],
                "proration_details": proration_details,
                "subscription": subscription,
                "subscription_item": subscription_item,
            },
            "type": "subscription_item_details",
        }
    else:
        parent = {
            "invoice_item_details": {
                "invoice_item": item["id"],
                "proration": item["proration"],
                "proration_details": proration_details,
                "subscription": subscription,
            },
            "subscription_item_details": None,
            "type": "invoice_item_details",
        }
    return {
        "id": line_id,
        "object": "line_item",
        "amount": item["amount"],
        "currency": item["currency"],
        "description": item.get("description"),
        "discount_amounts": [],
        "discountable": item["discountable"],
        "discounts": list(item.get("discounts") or []),
        "invoice": invoice_id,
        "livemode": item["livemode"],
        "metadata": dict(item.get("metadata") or {}),
        "parent": parent,
        "period": dict(item["period"]),
        "pretax_credit_amounts": [],
        "pricing": copy.deepcopy(item.get("pricing")),
        "quantity": item["quantity"],
        "quantity_decimal": item.get("quantity_decimal", str(item["quantity"])),
        "subscription": subscription,
        "subtotal": item["amount"],
        "taxes": [],
    }


Links = dict[str, Iterable[str] | str | None]


def invoice_links(invoice: Mapping[str, Any]) -> Links:
    return {
        "subscription": invoice.get("subscription"),
        "collection_method": invoice.get("collection_method"),
    }


def invoice_item_links(item: Mapping[str, Any]) -> Links:
    details = (item.get("parent") or {}).get("subscription_details") or {}
    return {
        "invoice": item.get("invoice"),
        "pending": "false" if item.get("invoice") else "true",
        "subscription": details.get("subscription"),
    }


# -- storage helpers --------------------------------------------------------------------


def save_invoice(sim: Simulator, ctx: Ctx, invoice: dict[str, Any]) -> dict[str, Any]:
    sim.save(ctx, invoice, links=invoice_links(invoice))
    _schedule(sim, ctx, invoice)
    return invoice


def save_invoice_item(sim: Simulator, ctx: Ctx, item: dict[str, Any]) -> dict[str, Any]:
    sim.save(ctx, item, links=invoice_item_links(item))
    return item


def load_invoice(sim: Simulator, ctx: Ctx, invoice_id: str, param: str = "id") -> dict[str, Any]:
    invoice = sim.db.get(ctx.acct, invoice_id)
    if invoice is None or invoice.get("object") != "invoice":
        raise missing(invoice_id, param=param, kind="invoice")
    return invoice


def load_invoice_item(sim: Simulator, ctx: Ctx, item_id: str, param: str = "id") -> dict[str, Any]:
    item = sim.db.get(ctx.acct, item_id)
    if item is None or item.get("object") != "invoiceitem":
        raise missing(item_id, param=param, kind="invoiceitem")
    return item


def _iter_all(
    sim: Simulator, ctx: Ctx, object_type: str, **filters: Any
) -> Iterable[dict[str, Any]]:
    cursor: str | None = None
    while True:
        page = sim.db.list(ctx.acct, object_type, limit=100, starting_after=cursor, **filters)
        yield from page.data
        if not page.has_more or not page.data:
            return
        cursor = page.data[-1]["id"]


def pending_items(
    sim: Simulator,
    ctx: Ctx,
    customer_id: str,
    *,
    currency: str | None = None,
    subscription: str | None = None,
    only_subscription: bool = False,
) -> list[dict[str, Any]]:
    """A customer's pending invoice items, oldest first (indexed by the `pending` link)."""
    links = {"pending": "true"}
    if only_subscription and subscription is not None:
        links["subscription"] = subscription
    items = []
    ended: dict[str, bool] = {}
    for item in _iter_all(sim, ctx, "invoiceitem", customer=customer_id, links=links):
        if currency is not None and item["currency"] != currency:
            continue
        owner = ((item.get("parent") or {}).get("subscription_details") or {}).get("subscription")
        if owner is not None and owner != subscription:
            # Another live subscription's items wait for that subscription's invoice; an
            # ended one's (its cancellation credit) go on the customer's next invoice.
            if owner not in ended:
                found = sim.db.get(ctx.acct, owner)
                ended[owner] = found is None or found.get("status") in (
                    "canceled",
                    "incomplete_expired",
                )
            if not ended[owner]:
                continue
        items.append(item)
    items.reverse()
    return items


def attach_items(
    sim: Simulator, ctx: Ctx, invoice: dict[str, Any], items: Iterable[dict[str, Any]]
) -> None:
    """Put invoice items on a draft invoice as lines (before its other lines)."""
    new_lines = []
    for item in items:
        item["invoice"] = invoice["id"]
        save_invoice_item(sim, ctx, item)
        new_lines.append(build_item_line(item, line_id=sim.new_id("il"), invoice_id=invoice["id"]))
    invoice["lines"]["data"][0:0] = new_lines


def invoice_discounts(
    sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The discount objects of an invoice (its own, then its lines') and their coupons."""
    found: list[dict[str, Any]] = []
    seen: set[str] = set()
    for discount_id in invoice.get("discounts") or []:
        discount = sim.db.get(ctx.acct, discount_id, include_deleted=True)
        if discount is not None and discount_id not in seen:
            seen.add(discount_id)
            found.append(discount)
    for line in invoice["lines"]["data"]:
        for discount_id in line.get("discounts") or []:
            if discount_id in seen:
                continue
            discount = sim.db.get(ctx.acct, discount_id, include_deleted=True)
            if discount is not None:
                seen.add(discount_id)
                found.append({**discount, "_line_only": True})
    coupons: dict[str, dict[str, Any]] = {}
    for discount in found:
        coupon_id = (discount.get("source") or {}).get("coupon")
        if coupon_id and coupon_id not in coupons:
            coupon = sim.db.get(ctx.acct, coupon_id, include_deleted=True)
            if coupon is not None:
                coupons[coupon_id] = coupon
    return found, coupons


def recompute(sim: Simulator, ctx: Ctx, invoice: dict[str, Any]) -> dict[str, Any]:
    discounts, coupons = invoice_discounts(sim, ctx, invoice)
    return apply_totals(invoice, discounts, coupons)


def new_invoice(
    sim: Simulator,
    ctx: Ctx,
    customer: Mapping[str, Any],
    *,
    currency: str,
    billing_reason: str,
    lines: Sequence[dict[str, Any]] = (),
    discount_ids: Sequence[str] = (),
    items: Iterable[dict[str, Any]] = (),
    subscription: Mapping[str, Any] | None = None,
    automatic: bool = False,
    **fields: Any,
) -> dict[str, Any]:
    """Create, save and announce (``invoice.created``) a draft invoice."""
    now = sim.now()
    invoice = build_invoice(
        invoice_id=sim.new_id("in"),
        customer=customer,
        currency=currency,
        created=now,
        livemode=ctx.livemode,
        billing_reason=billing_reason,
        subscription=subscription,
        lines=lines,
        **fields,
    )
    invoice["discounts"] = list(discount_ids)
    attach_items(sim, ctx, invoice, items)
    recompute(sim, ctx, invoice)
    save_invoice(sim, ctx, invoice)
    sim.emit(ctx, "invoice.created", invoice, automatic=automatic)
    return invoice


def _payments_module() -> ModuleType | None:
    try:
        return importlib.import_module("stripesync.sim.resources.payments")
    except ModuleNotFoundError:
        return None


def _subscriptions_module() -> ModuleType:
    return importlib.import_module("stripesync.sim.resources.subscriptions")


# -- transitions ------------------------------------------------------------------------


def finalize(
    sim: Simulator,
    ctx: Ctx,
    invoice: dict[str, Any],
    *,
    automatic: bool = False,
    collect: bool = False,
    settle_subscription: bool = True,
) -> dict[str, Any]:
    """Finalize a draft: number it, apply the customer's balance, mark it open.

    A zero amount due is paid at once. With ``collect``, an automatic-charge invoice is
    charged right away (what Stripe does for a subscription's first invoice).
    """
    if invoice["status"] != "draft":
        raise invalid(
            "This invoice is already finalized, you can't re-finalize a non-draft invoice."
        )
    now = sim.now()
    customer = customers.load(sim, ctx, invoice["customer"], param="customer")
    recompute(sim, ctx, invoice)
    sequence = int(customer.get("next_invoice_sequence") or 1)
    number = f"{customer['invoice_prefix']}-{sequence:04d}"
    starting_balance = int(customer.get("balance") or 0)
    finalize_fields(
        invoice,
        at=now,
        number=number,
        starting_balance=starting_balance,
        account=ctx.account,
        token=sim.random_chars(24),
    )
    old_customer = clone(customer)
    customer["next_invoice_sequence"] = sequence + 1
    applied = invoice["ending_balance"] if invoice["ending_balance"] is not None else 0
    customer["balance"] = applied
    customers.save_customer(sim, ctx, customer)
    if old_customer.get("balance") != customer["balance"]:
        emit_updated(sim, ctx, "customer.updated", old_customer, customer, automatic=automatic)
    if invoice["collection_method"] == "send_invoice":
        invoice["next_payment_attempt"] = None
    save_invoice(sim, ctx, invoice)
    sim.emit(ctx, "invoice.finalized", invoice, automatic=automatic)
    if invoice["amount_remaining"] <= 0:
        return _settle(sim, ctx, invoice, None, automatic, settle_subscription)
    if invoice["collection_method"] == "send_invoice" and invoice["auto_advance"]:
        sim.emit(ctx, "invoice.sent", invoice, automatic=True)
    elif collect and invoice["collection_method"] == "charge_automatically":
        collect_payment(
            sim, ctx, invoice, automatic=automatic, settle_subscription=settle_subscription
        )
    return invoice


def _settle(
    sim: Simulator,
    ctx: Ctx,
    invoice: dict[str, Any],
    old: dict[str, Any] | None,
    automatic: bool,
    settle_subscription: bool,
) -> dict[str, Any]:
    """Mark paid and announce it (``invoice.updated``, ``.paid``, ``.payment_succeeded``)."""
    old = old if old is not None else clone(invoice)
    paid_fields(invoice, at=sim.now())
    save_invoice(sim, ctx, invoice)
    emit_updated(sim, ctx, "invoice.updated", old, invoice, automatic=automatic)
    sim.emit(ctx, "invoice.paid", invoice, automatic=automatic)
    sim.emit(ctx, "invoice.payment_succeeded", invoice, automatic=automatic)
    if settle_subscription and invoice.get("subscription"):
        _subscriptions_module().invoice_settled(sim, ctx, invoice, paid=True, automatic=automatic)
    return invoice


def _subscription_payment_method(sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]) -> Any:
    sub_id = invoice.get("subscription")
    if not sub_id:
        return None
    sub = sim.db.get(ctx.acct, sub_id)
    return sub.get("default_payment_method") if sub else None


def _waiting_intent(sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]) -> dict[str, Any] | None:
    """The invoice's latest payment intent when it still waits for a payment."""
    attempts = invoice.get("_payments") or []
    intent_id = attempts[-1].get("payment_intent") if attempts else None
    intent = sim.db.get(ctx.acct, intent_id) if isinstance(intent_id, str) else None
    if intent is None or intent.get("status") not in (
        "requires_payment_method",
        "requires_confirmation",
    ):
        return None
    return intent


def collect_payment(
    sim: Simulator,
    ctx: Ctx,
    invoice: dict[str, Any],
    *,
    payment_method: str | None = None,
    automatic: bool,
    settle_subscription: bool = True,
) -> bool:
    """One payment attempt on an open invoice; True when it is paid."""
    old = clone(invoice)
    method = (
        payment_method
        or invoice.get("default_payment_method")
        or _subscription_payment_method(sim, ctx, invoice)
    )
    payments = _payments_module()
    intent: dict[str, Any] | None = None
    charge: dict[str, Any] | None = None
    # Stripe keeps one payment intent per invoice: a retry confirms it again.
    waiting = _waiting_intent(sim, ctx, invoice) if payments is not None else None
    if payments is not None:
        intent, charge = payments.collect(
            sim,
            ctx,
            customer=invoice["customer"],
            amount=invoice["amount_remaining"],
            currency=invoice["currency"],
            payment_method=method,
            description=PAYMENT_DESCRIPTIONS.get(invoice["billing_reason"], "Payment for Invoice"),
            invoice=invoice,
            automatic=automatic,
            payment_intent=waiting,
        )
    if intent is not None:
        record = {
            "payment_intent": intent["id"],
            "charge": charge["id"] if charge else None,
            "status": intent["status"],
        }
        attempts = invoice.setdefault("_payments", [])
        if waiting is not None and attempts[-1].get("payment_intent") == intent["id"]:
            attempts[-1] = record
        else:
            attempts.append(record)
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    now = sim.now()
    if intent is not None and intent.get("status") == "succeeded":
        _settle(sim, ctx, invoice, old, automatic, settle_subscription)
        return True
    retries = len(RETRY_SCHEDULE_DAYS)
    if (
        invoice["collection_method"] == "charge_automatically"
        and invoice["auto_advance"]
        and invoice["attempt_count"] <= retries
        # a first invoice is not retried: its subscription expires after 23 hours
        and invoice["billing_reason"] != "subscription_create"
    ):
        invoice["next_payment_attempt"] = (
            now + DAY * RETRY_SCHEDULE_DAYS[invoice["attempt_count"] - 1]
        )
    else:
        invoice["next_payment_attempt"] = None
    save_invoice(sim, ctx, invoice)
    sim.emit(ctx, "invoice.payment_failed", invoice, automatic=automatic)
    emit_updated(sim, ctx, "invoice.updated", old, invoice, automatic=automatic)
    if settle_subscription and invoice.get("subscription"):
        _subscriptions_module().invoice_settled(sim, ctx, invoice, paid=False, automatic=automatic)
    return False


def pay_invoice(
    sim: Simulator,
    ctx: Ctx,
    invoice: dict[str, Any],
    *,
    payment_method: str | None = None,
    automatic: bool,
    paid_out_of_band: bool = False,
) -> dict[str, Any]:
    """Pay an invoice (the contract the payments and subscription modules rely on).

    A draft is finalized first. On success the invoice is ``paid`` (``invoice.updated``,
    ``invoice.paid``, ``invoice.payment_succeeded``); on failure its attempt count grows,
    ``next_payment_attempt`` is set while retries remain, and ``invoice.payment_failed``
    and ``invoice.updated`` are emitted. The subscription it belongs to follows.
    """
    if invoice["status"] == "draft":
        finalize(sim, ctx, invoice, automatic=automatic)
        if invoice["status"] == "paid":
            return invoice
    _check_payable(invoice)
    if paid_out_of_band or invoice["amount_remaining"] <= 0:
        return _settle(sim, ctx, invoice, None, automatic, True)
    collect_payment(sim, ctx, invoice, payment_method=payment_method, automatic=automatic)
    return invoice


def payment_intent_succeeded(
    sim: Simulator,
    ctx: Ctx,
    payment_intent: Mapping[str, Any],
    charge: Mapping[str, Any] | None = None,
    *,
    automatic: bool = False,
) -> dict[str, Any] | None:
    """An invoice's payment intent succeeded outside the invoice's own attempt (a
    ``default_incomplete`` subscription's intent confirmed by the client): the invoice is
    paid and its subscription follows. For the payments module to call; returns the
    invoice, or None when the intent pays no open invoice."""
    invoice_id = payment_intent.get("_invoice")
    invoice = sim.db.get(ctx.acct, invoice_id) if isinstance(invoice_id, str) else None
    if invoice is None or invoice.get("status") not in ("open", "uncollectible"):
        return None
    old = clone(invoice)
    attempts = invoice.setdefault("_payments", [])
    record = next((a for a in attempts if a.get("payment_intent") == payment_intent["id"]), None)
    if record is None:
        record = {"payment_intent": payment_intent["id"], "charge": None, "status": None}
        attempts.append(record)
    record["status"] = "succeeded"
    record["charge"] = charge["id"] if charge else payment_intent.get("latest_charge")
    invoice["attempt_count"] += 1
    invoice["attempted"] = True
    return _settle(sim, ctx, invoice, old, automatic, True)


def _check_payable(invoice: Mapping[str, Any]) -> None:
    if invoice["status"] == "paid":
        raise invalid("Invoice is already paid")
    if invoice["status"] == "void":
        raise invalid("Voided invoices cannot be paid.")


def void(
    sim: Simulator, ctx: Ctx, invoice: dict[str, Any], *, automatic: bool = False
) -> dict[str, Any]:
    if invoice["status"] not in ("open", "uncollectible"):
        if invoice["status"] == "draft":
            message = (
                "You can only void an invoice that has been finalized. Delete the draft "
                "invoice instead."
            )
        elif invoice["status"] == "paid":
            message = "You cannot void a paid invoice."
        else:
            message = "This invoice is already void."
        raise invalid(message)
    old = clone(invoice)
    payments = _payments_module()
    if payments is not None and hasattr(payments, "cancel_for_invoice"):
        for attempt in invoice.get("_payments") or []:
            if attempt.get("status") != "succeeded" and attempt.get("payment_intent"):
                payments.cancel_for_invoice(
                    sim, ctx, attempt["payment_intent"], automatic=automatic
                )
    invoice["status"] = "void"
    invoice["status_transitions"]["voided_at"] = sim.now()
    invoice["next_payment_attempt"] = None
    invoice["auto_advance"] = False
    save_invoice(sim, ctx, invoice)
    sim.emit(ctx, "invoice.voided", invoice, automatic=automatic)
    emit_updated(sim, ctx, "invoice.updated", old, invoice, automatic=automatic)
    return invoice


def mark_uncollectible(
    sim: Simulator, ctx: Ctx, invoice: dict[str, Any], *, automatic: bool = False
) -> dict[str, Any]:
    if invoice["status"] != "open":
        raise invalid(
            f"You can only mark an open invoice as uncollectible; this invoice is "
            f"{invoice['status']}."
        )
    old = clone(invoice)
    invoice["status"] = "uncollectible"
    invoice["status_transitions"]["marked_uncollectible_at"] = sim.now()
    invoice["next_payment_attempt"] = None
    invoice["auto_advance"] = False
    save_invoice(sim, ctx, invoice)
    sim.emit(ctx, "invoice.marked_uncollectible", invoice, automatic=automatic)
    emit_updated(sim, ctx, "invoice.updated", old, invoice, automatic=automatic)
    return invoice


# -- the clock: drafts finalize, payments retry, due dates pass --------------------------


def next_action_at(invoice: Mapping[str, Any]) -> int | None:
    """When Stripe will next act on this invoice on its own (None: never)."""
    if not invoice.get("auto_advance"):
        if invoice.get("status") == "open" and invoice.get("collection_method") == "send_invoice":
            return invoice.get("due_date")
        return None
    status = invoice.get("status")
    if status == "draft":
        at = invoice.get("automatically_finalizes_at")
        return int(at) if at is not None else None
    if status == "open":
        if invoice.get("collection_method") == "charge_automatically":
            at = invoice.get("next_payment_attempt")
            return int(at) if at is not None else None
        return invoice.get("due_date")
    return None


def _schedule(sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]) -> None:
    at = next_action_at(invoice)
    if at is not None or sim.db.timer_at(ctx.acct, "invoice", invoice["id"]) is not None:
        sim.schedule(ctx, "invoice", invoice["id"], at)


@timer_handler("invoice")
def _on_timer(sim: Simulator, ctx: Ctx, invoice_id: str, at: int) -> None:
    invoice = sim.db.get(ctx.acct, invoice_id)
    if invoice is None:
        return
    status = invoice["status"]
    if status == "draft" and invoice.get("auto_advance"):
        finalize(sim, ctx, invoice, automatic=True, collect=True)
        return
    if status != "open":
        return
    if invoice["collection_method"] == "send_invoice":
        if invoice.get("subscription"):
            _subscriptions_module().invoice_overdue(sim, ctx, invoice)
        return
    collect_payment(sim, ctx, invoice, automatic=True)
    if (
        invoice["status"] == "open"
        and invoice["next_payment_attempt"] is None
        and invoice.get("subscription")
    ):
        _subscriptions_module().retries_exhausted(sim, ctx, invoice)


# -- invoice endpoints ------------------------------------------------------------------

CREATE_PARAMS = {
    "account_tax_ids",
    "application_fee_amount",
    "auto_advance",
    "automatic_tax",
    "automatically_finalizes_at",
    "collection_method",
    "currency",
    "custom_fields",
    "customer",
    "customer_account",
    "days_until_due",
    "default_payment_method",
    "default_source",
    "default_tax_rates",
    "description",
    "discounts",
    "due_date",
    "effective_at",
    "footer",
    "from_invoice",
    "issuer",
    "metadata",
    "number",
    "on_behalf_of",
    "payment_settings",
    "pending_invoice_items_behavior",
    "rendering",
    "shipping_cost",
    "shipping_details",
    "statement_descriptor",
    "subscription",
    "transfer_data",
}
UPDATE_PARAMS = CREATE_PARAMS - {
    "currency",
    "customer",
    "customer_account",
    "from_invoice",
    "pending_invoice_items_behavior",
    "subscription",
}
#: What may still change once an invoice is finalized.
FINALIZED_UPDATABLE = {
    "auto_advance",
    "default_payment_method",
    "default_source",
    "metadata",
    "payment_settings",
    "rendering",
    "custom_fields",
    "footer",
    "description",
}


def _discount_ids(
    sim: Simulator, ctx: Ctx, raw: Any, *, param: str, customer: str | None, invoice: str | None
) -> list[str]:
    """``discounts[][coupon|discount]`` made into stored discounts; returns their ids."""
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
            ids.append(make_discount(sim, ctx, coupon, customer=customer, invoice=invoice)["id"])
        elif entry.get("discount"):
            discount = sim.db.get(ctx.acct, entry["discount"])
            if discount is None or discount.get("object") != "discount":
                raise missing(entry["discount"], param=f"{param}[{i}][discount]", kind="discount")
            ids.append(discount["id"])
        elif entry.get("promotion_code"):
            raise missing(
                entry["promotion_code"],
                param=f"{param}[{i}][promotion_code]",
                kind="promotion code",
            )
    return ids


def _discount_in_force(sim: Simulator, ctx: Ctx, discount_id: str) -> bool:
    discount = sim.db.get(ctx.acct, discount_id)
    if discount is None or discount.get("_consumed"):
        return False
    return discount.get("end") is None or int(discount["end"]) > sim.now()


def _collection(
    params: Mapping[str, Any], current: str = "charge_automatically"
) -> tuple[str, int | None]:
    method = forms.as_enum(
        params, "collection_method", ("charge_automatically", "send_invoice"), current
    )
    assert method is not None
    days = forms.as_int(params, "days_until_due", minimum=0)
    if days is not None and method != "send_invoice":
        raise invalid(
            "Invoices with `collection_method=charge_automatically` cannot have "
            "`days_until_due` set.",
            param="days_until_due",
        )
    return method, days


@route("POST", "/v1/invoices", resource="invoices")
def create(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, CREATE_PARAMS)
    if not params.get("customer"):
        raise required("customer")
    customer = customers.load(sim, ctx, params["customer"], param="customer")
    subscription = None
    if params.get("subscription"):
        subscription = sim.db.get(ctx.acct, params["subscription"])
        if subscription is None or subscription.get("object") != "subscription":
            raise missing(params["subscription"], param="subscription", kind="subscription")
        if subscription["customer"] != customer["id"]:
            raise invalid(
                "The subscription does not belong to this customer.", param="subscription"
            )
    currency = (
        ensure_currency(params["currency"])
        if params.get("currency")
        else (subscription or {}).get("currency") or customer.get("currency") or "usd"
    )
    method, days = _collection(params)
    due_date = forms.as_int(params, "due_date")
    behavior = forms.as_enum(
        params, "pending_invoice_items_behavior", ("exclude", "include"), "exclude"
    )
    items: list[dict[str, Any]] = []
    if behavior == "include" or subscription is not None:
        items = pending_items(
            sim,
            ctx,
            customer["id"],
            currency=currency,
            subscription=subscription["id"] if subscription else None,
            only_subscription=subscription is not None and behavior != "include",
        )
    discount_ids = _discount_ids(
        sim, ctx, params.get("discounts"), param="discounts", customer=None, invoice=None
    )
    own = customer.get("discount")
    if "discounts" not in params and own and _discount_in_force(sim, ctx, own["id"]):
        discount_ids = [own["id"]]
    invoice = new_invoice(
        sim,
        ctx,
        customer,
        currency=currency,
        billing_reason="manual",
        items=items,
        discount_ids=discount_ids,
        subscription=subscription,
        collection_method=method,
        days_until_due=days,
        due_date=due_date,
        auto_advance=bool(forms.as_bool(params, "auto_advance", False)),
        description=params.get("description") or None,
        metadata=forms.as_metadata(params),
        default_payment_method=params.get("default_payment_method") or None,
        footer=params.get("footer") or None,
        statement_descriptor=params.get("statement_descriptor") or None,
    )
    if params.get("effective_at"):
        invoice["effective_at"] = forms.as_int(params, "effective_at")
        save_invoice(sim, ctx, invoice)
    return invoice


@route("GET", "/v1/invoices/{invoice_id}", resource="invoices")
def retrieve(sim: Simulator, ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    check_params(params, set())
    return load_invoice(sim, ctx, invoice_id)


@route("POST", "/v1/invoices/{invoice_id}", resource="invoices")
def update(sim: Simulator, ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    check_params(params, UPDATE_PARAMS)
    invoice = load_invoice(sim, ctx, invoice_id)
    if invoice["status"] != "draft":
        for name in params:
            if name not in FINALIZED_UPDATABLE:
                raise SimAPIError(
                    400,
                    f"Finalized invoices can't be updated in this way ({name}).",
                    code="invoice_not_editable",
                    param=name,
                )
        if invoice["status"] in ("paid", "void") and "auto_advance" in params:
            raise SimAPIError(
                400,
                f"Cannot set auto_advance on an invoice that is {invoice['status']}.",
                code="invoice_not_editable",
                param="auto_advance",
            )
    old = clone(invoice)
    for name in ("description", "footer", "statement_descriptor", "default_payment_method"):
        if name in params:
            invoice[name] = params[name] or None
    if "metadata" in params:
        invoice["metadata"] = forms.as_metadata(params, invoice["metadata"])
    if "auto_advance" in params:
        invoice["auto_advance"] = bool(forms.as_bool(params, "auto_advance"))
        if invoice["status"] == "draft":
            invoice["automatically_finalizes_at"] = (
                max(sim.now(), invoice["created"] + DRAFT_GRACE_SECONDS)
                if invoice["auto_advance"]
                else None
            )
    if "collection_method" in params or "days_until_due" in params or "due_date" in params:
        method, days = _collection(params, invoice["collection_method"])
        invoice["collection_method"] = method
        if method == "send_invoice":
            due = forms.as_int(params, "due_date")
            invoice["due_date"] = (
                due
                if due is not None
                else sim.now() + DAY * (days if days is not None else DEFAULT_DAYS_UNTIL_DUE)
            )
        else:
            invoice["due_date"] = None
    if "discounts" in params:
        invoice["discounts"] = _discount_ids(
            sim, ctx, params["discounts"], param="discounts", customer=None, invoice=invoice_id
        )
    if "effective_at" in params:
        invoice["effective_at"] = forms.as_int(params, "effective_at")
    recompute(sim, ctx, invoice)
    save_invoice(sim, ctx, invoice)
    emit_updated(sim, ctx, "invoice.updated", old, invoice)
    return invoice


@route("DELETE", "/v1/invoices/{invoice_id}", resource="invoices")
def delete(sim: Simulator, ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    invoice = load_invoice(sim, ctx, invoice_id)
    if invoice["status"] != "draft":
        raise invalid(
            "You can only delete draft invoices. Void or mark the invoice uncollectible instead."
        )
    # Its invoice items go back to pending, ready for the next invoice.
    for line in invoice["lines"]["data"]:
        details = (line.get("parent") or {}).get(line["parent"]["type"]) or {}
        item_id = details.get("invoice_item")
        if item_id:
            item = sim.db.get(ctx.acct, item_id)
            if item is not None:
                item["invoice"] = None
                save_invoice_item(sim, ctx, item)
    sim.db.mark_deleted(ctx.acct, invoice_id)
    sim.schedule(ctx, "invoice", invoice_id, None)
    sim.emit(ctx, "invoice.deleted", invoice)
    return deleted_stub(invoice)


@route("POST", "/v1/invoices/{invoice_id}/finalize", resource="invoices")
def finalize_route(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], invoice_id: str
) -> dict[str, Any]:
    check_params(params, {"auto_advance"})
    invoice = load_invoice(sim, ctx, invoice_id)
    if invoice["status"] == "draft" and "auto_advance" in params:
        invoice["auto_advance"] = bool(forms.as_bool(params, "auto_advance"))
    return finalize(sim, ctx, invoice)


@route("POST", "/v1/invoices/{invoice_id}/pay", resource="invoices")
def pay_route(sim: Simulator, ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    check_params(
        params,
        {"forgive", "mandate", "off_session", "paid_out_of_band", "payment_method", "source"},
    )
    invoice = load_invoice(sim, ctx, invoice_id)
    _check_payable(invoice)
    payment_method = params.get("payment_method") or params.get("source") or None
    pay_invoice(
        sim,
        ctx,
        invoice,
        payment_method=payment_method,
        automatic=False,
        paid_out_of_band=bool(forms.as_bool(params, "paid_out_of_band", False)),
    )
    if invoice["status"] != "paid":
        raise payment_error(sim, ctx, invoice)
    return invoice


def payment_error(sim: Simulator, ctx: Ctx, invoice: Mapping[str, Any]) -> SimAPIError:
    """The error Stripe answers when paying an invoice fails (the attempt stays recorded:
    ``commit`` is set; a caller that must undo everything clears it)."""
    attempts = invoice.get("_payments") or []
    last = attempts[-1] if attempts else {}
    intent = sim.db.get(ctx.acct, last["payment_intent"]) if last.get("payment_intent") else None
    error = (intent or {}).get("last_payment_error") if intent else None
    if not error:
        return SimAPIError(
            400,
            "This customer has no attached payment source or default payment method. "
            "Please consider adding a default payment method. For more information, visit "
            "https://stripe.com/docs/billing/subscriptions/payment-methods-setting.",
            commit=True,
        )
    extra: dict[str, Any] = {"payment_intent": sim.render(ctx, intent or {}, expand=[])}
    for key in ("charge", "payment_method", "advice_code"):
        if error.get(key) is not None:
            extra[key] = copy.deepcopy(error[key])
    return SimAPIError(
        402,
        str(error.get("message") or "Your card was declined."),
        type=str(error.get("type") or "card_error"),
        code=error.get("code"),
        decline_code=error.get("decline_code"),
        param=error.get("param"),
        extra=extra,
        commit=True,
    )


@route("POST", "/v1/invoices/{invoice_id}/void", resource="invoices")
def void_route(sim: Simulator, ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    check_params(params, set())
    return void(sim, ctx, load_invoice(sim, ctx, invoice_id))


@route("POST", "/v1/invoices/{invoice_id}/mark_uncollectible", resource="invoices")
def mark_uncollectible_route(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], invoice_id: str
) -> dict[str, Any]:
    check_params(params, set())
    return mark_uncollectible(sim, ctx, load_invoice(sim, ctx, invoice_id))


@route("POST", "/v1/invoices/{invoice_id}/send", resource="invoices")
def send_route(sim: Simulator, ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    check_params(params, set())
    invoice = load_invoice(sim, ctx, invoice_id)
    if invoice["collection_method"] != "send_invoice":
        raise invalid(
            "You can only manually send an invoice if its collection method is 'send_invoice'."
        )
    if invoice["status"] == "draft":
        finalize(sim, ctx, invoice)
    if invoice["status"] not in ("open", "paid", "uncollectible"):
        raise invalid(f"You can't send an invoice that is {invoice['status']}.")
    sim.emit(ctx, "invoice.sent", invoice)
    return invoice


@route("GET", "/v1/invoices", resource="invoices")
def list_(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {
            "collection_method",
            "created",
            "customer",
            "customer_account",
            "due_date",
            "ending_before",
            "limit",
            "starting_after",
            "status",
            "subscription",
        },
    )
    status = forms.as_enum(params, "status", STATUSES)
    links: dict[str, str] = {}
    if params.get("subscription"):
        links["subscription"] = params["subscription"]
    if params.get("collection_method"):
        links["collection_method"] = str(
            forms.as_enum(params, "collection_method", ("charge_automatically", "send_invoice"))
        )
    return sim.paginate(
        ctx,
        params,
        "invoice",
        "/v1/invoices",
        created=forms.created_filter(params),
        customer=params.get("customer") or None,
        statuses=[status] if status else None,
        links=links or None,
    )


def page_embedded(
    data: Sequence[dict[str, Any]], params: Mapping[str, Any], url: str, kind: str
) -> dict[str, Any]:
    """Page a list kept inside its parent (invoice lines, subscription items) in order."""
    limit = forms.as_int(params, "limit", 10, minimum=1, maximum=100)
    assert limit is not None
    after, before = params.get("starting_after") or None, params.get("ending_before") or None
    if after and before:
        raise invalid(
            "You may only specify one of these parameters: ending_before, starting_after.",
            param="starting_after",
        )
    ids = [d["id"] for d in data]
    if after:
        if after not in ids:
            raise missing(after, param="starting_after", kind=kind)
        start = ids.index(after) + 1
        chunk = list(data[start : start + limit])
        has_more = start + limit < len(data)
    elif before:
        if before not in ids:
            raise missing(before, param="ending_before", kind=kind)
        end = ids.index(before)
        chunk = list(data[max(0, end - limit) : end])
        has_more = end - limit > 0
    else:
        chunk = list(data[:limit])
        has_more = len(data) > limit
    return {"object": "list", "data": chunk, "has_more": has_more, "url": url}


@route("GET", "/v1/invoices/{invoice_id}/lines", resource="invoices")
def list_lines(sim: Simulator, ctx: Ctx, params: dict[str, Any], invoice_id: str) -> dict[str, Any]:
    check_params(params, {"ending_before", "limit", "starting_after"})
    invoice = load_invoice(sim, ctx, invoice_id)
    return page_embedded(
        invoice["lines"]["data"], params, f"/v1/invoices/{invoice_id}/lines", "line item"
    )


# -- invoice items ----------------------------------------------------------------------

ITEM_CREATE_PARAMS = {
    "amount",
    "currency",
    "customer",
    "customer_account",
    "description",
    "discountable",
    "discounts",
    "invoice",
    "metadata",
    "period",
    "price_data",
    "pricing",
    "quantity",
    "quantity_decimal",
    "subscription",
    "tax_behavior",
    "tax_code",
    "tax_rates",
    "unit_amount_decimal",
}
ITEM_UPDATE_PARAMS = {
    "amount",
    "description",
    "discountable",
    "discounts",
    "invoicing_rules",
    "metadata",
    "period",
    "price_data",
    "pricing",
    "quantity",
    "quantity_decimal",
    "tax_behavior",
    "tax_code",
    "tax_rates",
    "unit_amount_decimal",
}


def _item_pricing(
    sim: Simulator, ctx: Ctx, params: Mapping[str, Any], currency: str | None, quantity: int
) -> tuple[int, str, str | None, dict[str, Any] | None]:
    """(amount, currency, unit_amount_decimal, price) from amount / pricing / price_data."""
    pricing = forms.as_dict(params, "pricing") or {}
    if pricing.get("price"):
        price = load_price(sim, ctx, pricing["price"], param="pricing[price]")
        if price["type"] != "one_time":
            raise invalid(
                "The price specified is set to `type=recurring` but this field only accepts "
                "prices with `type=one_time`.",
                param="pricing[price]",
            )
        return (
            billing.line_amount(price, quantity),
            price["currency"],
            price.get("unit_amount_decimal"),
            price,
        )
    if params.get("price_data"):
        data = forms.as_dict(params, "price_data") or {}
        if not data.get("currency"):
            raise required("price_data[currency]")
        if not data.get("product"):
            raise required("price_data[product]")
        unit = data.get("unit_amount_decimal") or data.get("unit_amount")
        if unit in (None, ""):
            raise required("price_data[unit_amount]")
        decimal = Decimal(str(unit))
        price_like = {
            "id": None,
            "currency": ensure_currency(data["currency"], "price_data[currency]"),
            "product": data["product"],
            "unit_amount_decimal": format(decimal.normalize(), "f"),
        }
        return (
            billing.round_half_up(decimal * quantity),
            price_like["currency"],
            price_like["unit_amount_decimal"],
            None,
        )
    if params.get("unit_amount_decimal") not in (None, ""):
        if not currency:
            raise required("currency")
        decimal = Decimal(str(params["unit_amount_decimal"]))
        return (
            billing.round_half_up(decimal * quantity),
            currency,
            format(decimal.normalize(), "f"),
            None,
        )
    if params.get("amount") in (None, ""):
        raise required("amount")
    if not currency:
        raise required("currency")
    amount = forms.as_int(params, "amount")
    assert amount is not None
    return amount, currency, None, None


def _period(params: Mapping[str, Any], now: int) -> dict[str, int]:
    period = forms.as_dict(params, "period")
    if not period:
        return {"end": now, "start": now}
    start = forms.as_int(period, "start")
    end = forms.as_int(period, "end")
    if start is None:
        raise required("period[start]")
    if end is None:
        raise required("period[end]")
    if end < start:
        raise invalid("The period end must be after the period start.", param="period[end]")
    return {"end": end, "start": start}


def _draft_for_item(sim: Simulator, ctx: Ctx, invoice_id: str) -> dict[str, Any]:
    invoice = load_invoice(sim, ctx, invoice_id, param="invoice")
    if invoice["status"] != "draft":
        raise SimAPIError(
            400,
            "Invoice items can only be added to or changed on draft invoices; this invoice "
            f"is {invoice['status']}.",
            code="invoice_not_editable",
            param="invoice",
        )
    return invoice


@route("POST", "/v1/invoiceitems", resource="invoices")
def create_item(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, ITEM_CREATE_PARAMS)
    if not params.get("customer"):
        raise required("customer")
    customer = customers.load(sim, ctx, params["customer"], param="customer")
    quantity = forms.as_int(params, "quantity", 1, minimum=0)
    assert quantity is not None
    currency = ensure_currency(params["currency"]) if params.get("currency") else None
    amount, currency, unit_decimal, price = _item_pricing(sim, ctx, params, currency, quantity)
    invoice = None
    if params.get("invoice"):
        invoice = _draft_for_item(sim, ctx, params["invoice"])
        if invoice["customer"] != customer["id"]:
            raise invalid("The invoice does not belong to this customer.", param="invoice")
        if invoice["currency"] != currency:
            raise invalid(
                f"The currency of the invoice item ({currency}) must match the invoice's "
                f"({invoice['currency']}).",
                param="currency",
            )
    subscription = None
    if params.get("subscription"):
        subscription = sim.db.get(ctx.acct, params["subscription"])
        if subscription is None or subscription.get("object") != "subscription":
            raise missing(params["subscription"], param="subscription", kind="subscription")
    now = sim.now()
    item = build_invoice_item(
        item_id=sim.new_id("ii"),
        customer=customer["id"],
        currency=currency,
        amount=amount,
        created=now,
        livemode=ctx.livemode,
        description=params.get("description") or None,
        quantity=quantity,
        unit_amount_decimal=unit_decimal,
        price=price,
        period=_period(params, now),
        subscription=subscription["id"] if subscription else None,
        invoice=invoice["id"] if invoice else None,
        discountable=bool(forms.as_bool(params, "discountable", True)),
        metadata=forms.as_metadata(params),
    )
    if params.get("discounts"):
        item["discounts"] = _discount_ids(
            sim, ctx, params["discounts"], param="discounts", customer=None, invoice=None
        )
    save_invoice_item(sim, ctx, item)
    sim.emit(ctx, "invoiceitem.created", item)
    if invoice is not None:
        old = clone(invoice)
        invoice["lines"]["data"].append(
            build_item_line(item, line_id=sim.new_id("il"), invoice_id=invoice["id"])
        )
        recompute(sim, ctx, invoice)
        save_invoice(sim, ctx, invoice)
        emit_updated(sim, ctx, "invoice.updated", old, invoice)
    return item


def create_proration_item(
    sim: Simulator,
    ctx: Ctx,
    *,
    customer: str,
    currency: str,
    amount: int,
    description: str,
    quantity: int,
    price: Mapping[str, Any],
    period: Mapping[str, int],
    subscription: str,
    subscription_item: str,
    credited: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A pending proration (``proration: true``) for a subscription change."""
    item = build_invoice_item(
        item_id=sim.new_id("ii"),
        customer=customer,
        currency=currency,
        amount=amount,
        created=sim.now(),
        livemode=ctx.livemode,
        description=description,
        quantity=quantity,
        unit_amount_decimal=price.get("unit_amount_decimal"),
        price=price,
        period=period,
        proration=True,
        proration_details={"credited_items": dict(credited) if credited else None},
        subscription=subscription,
        subscription_item=subscription_item,
    )
    save_invoice_item(sim, ctx, item)
    sim.emit(ctx, "invoiceitem.created", item)
    return item


@route("GET", "/v1/invoiceitems/{item_id}", resource="invoices")
def retrieve_item(sim: Simulator, ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    check_params(params, set())
    return load_invoice_item(sim, ctx, item_id)


def _line_of_item(invoice: dict[str, Any], item_id: str) -> dict[str, Any] | None:
    line: dict[str, Any]
    for line in invoice["lines"]["data"]:
        details = (line.get("parent") or {}).get(line["parent"]["type"]) or {}
        if details.get("invoice_item") == item_id:
            return line
    return None


@route("POST", "/v1/invoiceitems/{item_id}", resource="invoices")
def update_item(sim: Simulator, ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    check_params(params, ITEM_UPDATE_PARAMS)
    item = load_invoice_item(sim, ctx, item_id)
    invoice = _draft_for_item(sim, ctx, item["invoice"]) if item.get("invoice") else None
    old = clone(item)
    if "description" in params:
        item["description"] = params["description"] or None
    if "metadata" in params:
        item["metadata"] = forms.as_metadata(params, item["metadata"])
    if "discountable" in params and not item["proration"]:
        item["discountable"] = bool(forms.as_bool(params, "discountable"))
    if "period" in params:
        item["period"] = _period(params, item["date"])
    pricing_keys = {"amount", "price_data", "pricing", "quantity", "unit_amount_decimal"}
    if pricing_keys & set(params):
        quantity = forms.as_int(params, "quantity", item["quantity"], minimum=0)
        assert quantity is not None
        source: dict[str, Any] = dict(params)
        if not ({"amount", "price_data", "pricing", "unit_amount_decimal"} & set(params)):
            source["unit_amount_decimal"] = (item.get("pricing") or {}).get(
                "unit_amount_decimal"
            ) or str(item["amount"] // max(item["quantity"], 1))
        amount, _, unit_decimal, price = _item_pricing(sim, ctx, source, item["currency"], quantity)
        item["amount"] = item["net_amount"] = amount
        item["quantity"] = quantity
        item["quantity_decimal"] = str(quantity)
        details = (item.get("pricing") or {}).get("price_details")
        item["pricing"] = {
            "price_details": {"price": price["id"], "product": price["product"]}
            if price
            else details,
            "type": "price_details",
            "unit_amount_decimal": unit_decimal
            or (format((Decimal(amount) / (quantity or 1)).normalize(), "f")),
        }
    if "discounts" in params:
        item["discounts"] = _discount_ids(
            sim, ctx, params["discounts"], param="discounts", customer=None, invoice=None
        )
    save_invoice_item(sim, ctx, item)
    emit_updated(sim, ctx, "invoiceitem.updated", old, item)
    if invoice is not None:
        old_invoice = copy.deepcopy(invoice)
        line = _line_of_item(invoice, item_id)
        if line is not None:
            index = invoice["lines"]["data"].index(line)
            invoice["lines"]["data"][index] = build_item_line(
                item, line_id=line["id"], invoice_id=invoice["id"]
            )
        recompute(sim, ctx, invoice)
        save_invoice(sim, ctx, invoice)
        emit_updated(sim, ctx, "invoice.updated", old_invoice, invoice)
    return item


@route("DELETE", "/v1/invoiceitems/{item_id}", resource="invoices")
def delete_item(sim: Simulator, ctx: Ctx, params: dict[str, Any], item_id: str) -> dict[str, Any]:
    item = load_invoice_item(sim, ctx, item_id)
    invoice = _draft_for_item(sim, ctx, item["invoice"]) if item.get("invoice") else None
    sim.db.mark_deleted(ctx.acct, item_id)
    sim.emit(ctx, "invoiceitem.deleted", item)
    if invoice is not None:
        old = clone(invoice)
        line = _line_of_item(invoice, item_id)
        if line is not None:
            invoice["lines"]["data"].remove(line)
        recompute(sim, ctx, invoice)
        save_invoice(sim, ctx, invoice)
        emit_updated(sim, ctx, "invoice.updated", old, invoice)
    return deleted_stub(item)


@route("GET", "/v1/invoiceitems", resource="invoices")
def list_items(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {
            "created",
            "customer",
            "customer_account",
            "ending_before",
            "invoice",
            "limit",
            "pending",
            "starting_after",
        },
    )
    links: dict[str, str] = {}
    if params.get("invoice"):
        links["invoice"] = params["invoice"]
    if params.get("pending") not in (None, ""):
        links["pending"] = str(forms.as_bool(params, "pending")).lower()
    return sim.paginate(
        ctx,
        params,
        "invoiceitem",
        "/v1/invoiceitems",
        created=forms.created_filter(params),
        customer=params.get("customer") or None,
        links=links or None,
    )
