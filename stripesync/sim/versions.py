"""Render a canonical Stripe object the way an older API version would show it.

The simulator stores every object once, in the shape of `CURRENT_VERSION` (the version
the official SDK pins). Stripe itself does the same and renders each response, and each
event payload, in the caller's version: an account or webhook endpoint still on
``2024-06-20`` receives ``invoice.subscription`` and ``subscription.current_period_end``,
not ``invoice.parent`` and ``items.data[].current_period_end``. Sync engines break on
exactly that difference, so the simulator must be able to produce it.

Breaking changes are kept as data (`CHANGES`): each one names the date from which the
current shape applies. Rendering for a version undoes every change newer than that
version, newest first. Two are modelled, the ones that touch what stripesync reads:

``2025-03-31.basil`` (undone for every version dated before 2025-03-31)
    subscription
        adds ``current_period_start`` (the earliest item start) and
        ``current_period_end`` (the latest item end): under classic billing every item
        shares one period, so both are that period; ``plan`` and ``quantity`` (those of
        the only item, ``None`` when there are several, as Stripe did); ``discount`` (the
        first of ``discounts``, as an object). ``discounts`` stays.
    subscription_item
        drops ``current_period_start``/``current_period_end``: items had no period then,
        and a faithful old shape is what exercises the product's legacy path.
    invoice
        adds ``subscription``, ``subscription_details`` (``{"metadata": ...}``),
        ``subscription_proration_date`` (when the parent has one), ``quote``, ``paid``
        (``status == "paid"``), ``paid_out_of_band`` (paid, with ``amount_paid_off_stripe``),
        ``charge`` and ``payment_intent`` (see *lookup* below), ``discount``, ``tax`` (sum
        of ``total_taxes``, ``None`` without taxes) and ``total_tax_amounts``; drops the
        fields that replaced them: ``parent``, ``total_taxes``, ``payments``.
    line_item (invoice line)
        adds ``type`` (``"invoiceitem"`` when an invoice item backs the line, prorations
        included; ``"subscription"`` for a plain subscription-item line), ``invoice_item``,
        ``subscription_item``, ``proration``, ``proration_details``, ``subscription``
        (when null), ``price`` (from ``pricing.price_details.price``, expanded through
        *lookup*), ``plan`` (that price seen through the Plans API; ``None`` for one-off
        prices) and ``tax_amounts`` (from ``taxes``); drops ``parent``, ``pricing``,
        ``taxes``. Only the details block named by ``parent.type`` is read: Stripe sets
        the other one to null.
    invoiceitem
        adds ``subscription``, ``subscription_item``, ``price``, ``plan``, ``unit_amount``,
        ``unit_amount_decimal``; drops ``parent`` and ``pricing``.
    charge, payment_intent
        add ``invoice`` (see *lookup*).

``2025-09-30.clover`` (undone for every version dated before 2025-09-30)
    discount
        ``source.coupon`` becomes the auto-expanded ``coupon`` object; ``source`` goes.

Fields Stripe added without a breaking change (``billing_mode``, ``amount_overpaid``, ...)
stay: older versions receive new fields too. ``is_legacy`` answers the coarser question
the product cares about: is this version older than the 2025-03-31 split.

Events get ``api_version`` set to the target version; ``data.object`` is rendered like any
object. ``data.previous_attributes`` holds only the changed top-level fields, so it is
rendered against the object: the old values are merged onto the current object, both are
rendered, and the result keeps the fields the event named (hashes only as deep as the
event went) plus every derived old-version field whose value differs (a period roll-over in ``items`` becomes the
``current_period_start``/``current_period_end`` an old-version reader expects).

The *lookup* contract
---------------------
``render(obj, version, lookup=...)`` takes ``lookup(key) -> dict | None``. ``key`` is
either

* a Stripe id (``price_...``, a coupon id, ``di_...``, ``pi_...``): the stored canonical
  object, or ``None``. Keys starting with ``_`` in the returned object are the simulator's
  private fields and never reach the output. It expands what old versions expanded
  (``discount.coupon``, a line's ``price``, ``subscription.discount``) and finds a
  payment intent's ``latest_charge``; or
* ``invoice_payment_key(x)``, i.e. ``"invoice_payment_for:" + x``, where ``x`` is an
  invoice id, a payment intent id or a charge id: the canonical ``invoice_payment`` object
  (shape of ``fixtures3.json``'s ``invoice_payment``) that links them, for an invoice its
  default payment (``is_default``), else its latest paid one; or ``None``. Stripe ids
  never contain ``:``, so the two kinds cannot collide. The simulator may answer it from
  an index, or store each invoice_payment under these keys as alias rows.

From it: ``invoice.payment_intent`` is ``payment.payment_intent``; ``invoice.charge`` is
``payment.charge`` when set, else the ``latest_charge`` of that payment intent;
``charge.invoice`` and ``payment_intent.invoice`` are the linked payment's ``invoice``
(a charge is looked up by its payment intent first, then by its own id). An invoice that
carries an included ``payments`` list uses it before asking *lookup*. Without *lookup*,
or when it answers ``None``, these fields are ``None`` and expandable references stay ids.

Everything here is pure: inputs are never mutated and outputs share no containers with
them.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any, NamedTuple

__all__ = [
    "CHANGES",
    "CURRENT_VERSION",
    "INVOICE_PAYMENT_KEY_PREFIX",
    "LEGACY_VERSION",
    "SUPPORTED_VERSIONS",
    "Change",
    "Lookup",
    "invoice_payment_key",
    "is_legacy",
    "render",
]

CURRENT_VERSION = "2026-10-28.endive"
LEGACY_VERSION = "2024-06-20"
#: The versions whose shapes the test suite pins down field by field. `render` accepts
#: any valid version and renders it with the changes that postdate it.
SUPPORTED_VERSIONS: tuple[str, ...] = (LEGACY_VERSION, CURRENT_VERSION)

INVOICE_PAYMENT_KEY_PREFIX = "invoice_payment_for:"

Lookup = Callable[[str], dict[str, Any] | None]

_BASIL = "2025-03-31.basil"
_CLOVER = "2025-09-30.clover"
_LEGACY_BEFORE = date(2025, 3, 31)
# Since 2024-09-30.acacia every version carries its release name; before, none did.
_FIRST_NAMED = date(2024, 9, 30)
_VERSION_RE = re.compile(r"(\d{4}-\d{2}-\d{2})(?:\.([a-z]+))?")


class Change(NamedTuple):
    """One breaking change: from `version` on, `objects` have the current shape."""

    version: str
    released: date
    objects: tuple[str, ...]
    summary: str


#: Newest first, the order in which rendering undoes them.
CHANGES: tuple[Change, ...] = (
    Change(
        _CLOVER,
        date(2025, 9, 30),
        ("discount",),
        "discount.coupon (auto-expanded) replaced by discount.source.coupon",
    ),
    Change(
        _BASIL,
        _LEGACY_BEFORE,
        (
            "subscription",
            "subscription_item",
            "invoice",
            "line_item",
            "invoiceitem",
            "charge",
            "payment_intent",
        ),
        "periods move to subscription items; invoice and line parent/pricing/taxes; "
        "invoice payments replace invoice.charge/payment_intent and charge.invoice; "
        "singular discount removed",
    ),
)


def invoice_payment_key(target_id: str) -> str:
    """The *lookup* key for the invoice_payment linking an invoice, payment intent or charge."""
    return INVOICE_PAYMENT_KEY_PREFIX + target_id


def _version_date(version: str) -> date:
    """The date of a Stripe API version, refusing what Stripe itself would refuse."""
    match = _VERSION_RE.fullmatch(version) if isinstance(version, str) else None
    hint = f"use a dated version such as {LEGACY_VERSION!r} or {CURRENT_VERSION!r}"
    if match is None:
        raise ValueError(f"unknown Stripe API version {version!r}: {hint}")
    try:
        day = date.fromisoformat(match.group(1))
    except ValueError:
        raise ValueError(f"unknown Stripe API version {version!r}: not a date; {hint}") from None
    named = match.group(2) is not None
    if named and day < _FIRST_NAMED:
        raise ValueError(
            f"unknown Stripe API version {version!r}: versions before 2024-09-30 have no "
            f"release name; {hint}"
        )
    if not named and day >= _FIRST_NAMED:
        raise ValueError(
            f"unknown Stripe API version {version!r}: versions since 2024-09-30 end in "
            f"their release name, as in '2025-03-31.basil'"
        )
    current_day = date.fromisoformat(CURRENT_VERSION.split(".")[0])
    if day > current_day:
        raise ValueError(
            f"unknown Stripe API version {version!r}: newer than {CURRENT_VERSION!r}, the "
            f"newest version the simulator knows"
        )
    if day == current_day and version != CURRENT_VERSION:
        raise ValueError(
            f"unknown Stripe API version {version!r}: the version of that date is "
            f"{CURRENT_VERSION!r}"
        )
    return day


def is_legacy(version: str) -> bool:
    """Whether `version` predates 2025-03-31, where most shapes stripesync reads changed.

    Raises ValueError for a malformed or unknown version, so callers can use it to
    validate a ``Stripe-Version`` header.
    """
    return _version_date(version) < _LEGACY_BEFORE


def render(obj: Mapping[str, Any], version: str, *, lookup: Lookup | None = None) -> dict[str, Any]:
    """`obj` (canonical, current shape) as Stripe would send it in `version`; a new dict."""
    day = _version_date(version)
    undo = frozenset(change.version for change in CHANGES if day < change.released)
    if not undo:
        return copy.deepcopy(dict(obj))
    return _Renderer(version, undo, lookup).obj(obj)


def _object_id(value: Any) -> str | None:
    """The id of an expandable field, whether it holds an id or the expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a hash, else an empty one: Stripe nulls whole sub-hashes."""
    return value if isinstance(value, Mapping) else {}


def _array(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _list_data(value: Any) -> list[Any]:
    if isinstance(value, Mapping) and isinstance(value.get("data"), list):
        return list(value["data"])
    return []


def _deep_merge(base: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `changes` laid over it; nested hashes merge, lists and scalars replace."""
    merged = dict(base)
    for key, value in changes.items():
        below = merged.get(key)
        if isinstance(value, Mapping) and isinstance(below, Mapping):
            merged[key] = _deep_merge(below, value)
        else:
            merged[key] = value
    return merged


_MISSING = object()


def _changed(
    before: Mapping[str, Any], after: Mapping[str, Any], named: Mapping[str, Any]
) -> dict[str, Any]:
    """The fields `named` (as deep as it goes) plus every field that differs."""
    out: dict[str, Any] = {}
    for key, val in before.items():
        if key in named:
            inner, now = named[key], after.get(key)
            if isinstance(inner, Mapping) and isinstance(val, Mapping) and isinstance(now, Mapping):
                out[key] = _changed(val, now, inner)
            else:
                out[key] = val
        elif after.get(key, _MISSING) != val:
            out[key] = val
    return out


def _legacy_tax_amount(tax: Any) -> dict[str, Any]:
    """A current ``taxes[]`` / ``total_taxes[]`` entry as an old ``tax_amounts[]`` entry."""
    tax = tax if isinstance(tax, Mapping) else {}
    details = tax.get("tax_rate_details")
    return {
        "amount": tax.get("amount"),
        "inclusive": tax.get("tax_behavior") == "inclusive",
        "tax_rate": details.get("tax_rate") if isinstance(details, Mapping) else None,
        "taxability_reason": tax.get("taxability_reason"),
        "taxable_amount": tax.get("taxable_amount"),
    }


def _plan_from_price(price: Any) -> dict[str, Any] | None:
    """A recurring price as the Plans API shows it (plan ids are price ids at Stripe)."""
    if not isinstance(price, Mapping) or not isinstance(price.get("recurring"), Mapping):
        return None
    recurring = price["recurring"]
    plan = {
        "id": price.get("id"),
        "object": "plan",
        "active": price.get("active"),
        "aggregate_usage": recurring.get("aggregate_usage"),
        "amount": price.get("unit_amount"),
        "amount_decimal": price.get("unit_amount_decimal"),
        "billing_scheme": price.get("billing_scheme"),
        "created": price.get("created"),
        "currency": price.get("currency"),
        "interval": recurring.get("interval"),
        "interval_count": recurring.get("interval_count"),
        "livemode": price.get("livemode"),
        "metadata": copy.deepcopy(price.get("metadata")),
        "meter": recurring.get("meter"),
        "nickname": price.get("nickname"),
        "product": copy.deepcopy(price.get("product")),
        "tiers_mode": price.get("tiers_mode"),
        "transform_usage": copy.deepcopy(price.get("transform_quantity")),
        "trial_period_days": recurring.get("trial_period_days"),
        "usage_type": recurring.get("usage_type"),
    }
    if "tiers" in price:
        plan["tiers"] = copy.deepcopy(price["tiers"])
    return plan


@dataclass(frozen=True)
class _Renderer:
    """One rendering pass: the target version, the changes to undo, the store to ask."""

    version: str
    undo: frozenset[str]
    lookup: Lookup | None

    # -- walking -------------------------------------------------------------------

    def value(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return self.obj(value)
        if isinstance(value, list | tuple):
            return [self.value(item) for item in value]
        return value

    def obj(self, src: Mapping[str, Any]) -> dict[str, Any]:
        kind = src.get("object")
        if kind == "event":
            return self.event(src)
        out = {key: self.value(val) for key, val in src.items()}
        if src.get("deleted") is True or not isinstance(kind, str):
            return out
        for change in CHANGES:
            if change.version in self.undo and kind in change.objects:
                _HANDLERS[change.version][kind](self, src, out)
        return out

    def event(self, src: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, val in src.items():
            if key != "data" or not isinstance(val, Mapping):
                out[key] = self.value(val)
                continue
            current = val.get("object")
            data: dict[str, Any] = {}
            for data_key, data_val in val.items():
                if (
                    data_key == "previous_attributes"
                    and isinstance(data_val, Mapping)
                    and isinstance(current, Mapping)
                ):
                    data[data_key] = self.previous(data_val, current)
                else:
                    data[data_key] = self.value(data_val)
            out[key] = data
        out["api_version"] = self.version
        return out

    def previous(self, prev: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
        """Old values of the changed fields, in the old shape (see the module docstring)."""
        return _changed(self.obj(_deep_merge(current, prev)), self.obj(current), prev)

    # -- lookups -------------------------------------------------------------------

    def fetch(self, key: str | None) -> dict[str, Any] | None:
        if key is None or self.lookup is None:
            return None
        found = self.lookup(key)
        if not isinstance(found, Mapping):
            return None
        return {k: v for k, v in found.items() if not str(k).startswith("_")}

    def expanded(self, value: Any) -> Any:
        """An expandable field as old versions auto-expanded it: object if known, else id."""
        if isinstance(value, Mapping):
            return self.obj(value)
        if isinstance(value, str):
            found = self.fetch(value)
            return self.obj(found) if found is not None else value
        return value

    def first_discount(self, discounts: Any) -> Any:
        if isinstance(discounts, list | tuple) and discounts:
            return self.expanded(discounts[0])
        return None

    def invoice_payment(self, invoice: Mapping[str, Any]) -> dict[str, Any] | None:
        included = [p for p in _list_data(invoice.get("payments")) if isinstance(p, Mapping)]
        if included:
            for pick in (
                lambda p: p.get("is_default") is True,
                lambda p: p.get("status") == "paid",
                lambda p: True,
            ):
                chosen = [p for p in included if pick(p)]
                if chosen:
                    return dict(chosen[0])
        invoice_id = _object_id(invoice.get("id"))
        return self.fetch(invoice_payment_key(invoice_id)) if invoice_id else None

    def paid_by(self, invoice: Mapping[str, Any]) -> tuple[str | None, str | None]:
        """(charge id, payment intent id) of the payment that settles `invoice`."""
        link = self.invoice_payment(invoice)
        payment = link.get("payment") if link else None
        if not isinstance(payment, Mapping):
            return None, None
        intent_id = _object_id(payment.get("payment_intent"))
        charge_id = _object_id(payment.get("charge"))
        if charge_id is None and intent_id is not None:
            intent = self.fetch(intent_id)
            charge_id = _object_id(intent.get("latest_charge")) if intent else None
        return charge_id, intent_id

    def invoice_of(self, *payment_ids: str | None) -> str | None:
        for payment_id in payment_ids:
            link = self.fetch(invoice_payment_key(payment_id)) if payment_id else None
            if link is not None:
                return _object_id(link.get("invoice"))
        return None

    # -- 2025-03-31.basil ----------------------------------------------------------

    def basil_subscription(self, src: Mapping[str, Any], out: dict[str, Any]) -> None:
        items = [i for i in _list_data(src.get("items")) if isinstance(i, Mapping)]
        starts = [
            i["current_period_start"]
            for i in items
            if isinstance(i.get("current_period_start"), int)
        ]
        ends = [
            i["current_period_end"] for i in items if isinstance(i.get("current_period_end"), int)
        ]
        out["current_period_start"] = min(starts) if starts else None
        out["current_period_end"] = max(ends) if ends else None
        rendered = [i for i in _list_data(out.get("items")) if isinstance(i, Mapping)]
        has_more = isinstance(src.get("items"), Mapping) and src["items"].get("has_more") is True
        single = rendered[0] if len(rendered) == 1 and not has_more else None
        out["plan"] = copy.deepcopy(single.get("plan")) if single else None
        out["quantity"] = single.get("quantity") if single else None
        out["discount"] = self.first_discount(src.get("discounts"))

    def basil_subscription_item(self, src: Mapping[str, Any], out: dict[str, Any]) -> None:
        out.pop("current_period_start", None)
        out.pop("current_period_end", None)

    def basil_invoice(self, src: Mapping[str, Any], out: dict[str, Any]) -> None:
        parent = _mapping(src.get("parent"))
        kind = parent.get("type")
        sub = parent.get("subscription_details") if kind == "subscription_details" else None
        quote = parent.get("quote_details") if kind == "quote_details" else None
        if isinstance(sub, Mapping):
            out["subscription"] = self.value(sub.get("subscription"))
            out["subscription_details"] = {"metadata": self.value(sub.get("metadata"))}
            if "subscription_proration_date" in sub:
                out["subscription_proration_date"] = sub["subscription_proration_date"]
        else:
            out["subscription"] = None
            out["subscription_details"] = None
        out["quote"] = quote.get("quote") if isinstance(quote, Mapping) else None
        paid = src.get("status") == "paid"
        out["paid"] = paid
        out["paid_out_of_band"] = paid and bool(src.get("amount_paid_off_stripe"))
        out["charge"], out["payment_intent"] = self.paid_by(src)
        out["discount"] = self.first_discount(src.get("discounts"))
        taxes = _array(src.get("total_taxes"))
        out["total_tax_amounts"] = [_legacy_tax_amount(t) for t in taxes]
        amounts = [t.get("amount") for t in taxes if isinstance(t, Mapping)]
        out["tax"] = sum(a for a in amounts if isinstance(a, int)) if taxes else None
        for key in ("parent", "total_taxes", "payments"):
            out.pop(key, None)

    def price_and_plan(self, pricing: Any) -> tuple[Any, Any]:
        details = None
        if isinstance(pricing, Mapping) and pricing.get("type") == "price_details":
            details = pricing.get("price_details")
        if not isinstance(details, Mapping):
            return None, None
        price = self.expanded(details.get("price"))
        return price, _plan_from_price(price)

    def basil_line_item(self, src: Mapping[str, Any], out: dict[str, Any]) -> None:
        parent = _mapping(src.get("parent"))
        kind = parent.get("type")
        details = _mapping(parent.get(kind)) if isinstance(kind, str) else {}
        invoice_item = details.get("invoice_item")
        subscription_only = kind == "subscription_item_details" and invoice_item is None
        out["type"] = "subscription" if subscription_only else "invoiceitem"
        out["invoice_item"] = invoice_item
        out["subscription_item"] = details.get("subscription_item")
        out["proration"] = bool(details.get("proration"))
        proration_details = details.get("proration_details")
        out["proration_details"] = (
            self.value(proration_details)
            if isinstance(proration_details, Mapping)
            else {"credited_items": None}
        )
        if out.get("subscription") is None:
            out["subscription"] = self.value(details.get("subscription"))
        out["price"], out["plan"] = self.price_and_plan(src.get("pricing"))
        taxes = _array(src.get("taxes"))
        out["tax_amounts"] = [_legacy_tax_amount(t) for t in taxes]
        for key in ("parent", "pricing", "taxes"):
            out.pop(key, None)

    def basil_invoiceitem(self, src: Mapping[str, Any], out: dict[str, Any]) -> None:
        parent = _mapping(src.get("parent"))
        details = _mapping(parent.get("subscription_details"))
        out["subscription"] = self.value(details.get("subscription"))
        out["subscription_item"] = details.get("subscription_item")
        price, plan = self.price_and_plan(src.get("pricing"))
        out["price"], out["plan"] = price, plan
        pricing = _mapping(src.get("pricing"))
        decimal = pricing.get("unit_amount_decimal")
        out["unit_amount_decimal"] = decimal
        if isinstance(price, Mapping):
            out["unit_amount"] = price.get("unit_amount")
        else:
            # Without the price, the decimal amount is all there is; whole cents only.
            whole = isinstance(decimal, str) and decimal.isdigit()
            out["unit_amount"] = int(str(decimal)) if whole else None
        for key in ("parent", "pricing"):
            out.pop(key, None)

    def basil_charge(self, src: Mapping[str, Any], out: dict[str, Any]) -> None:
        out["invoice"] = self.invoice_of(
            _object_id(src.get("payment_intent")), _object_id(src.get("id"))
        )

    def basil_payment_intent(self, src: Mapping[str, Any], out: dict[str, Any]) -> None:
        out["invoice"] = self.invoice_of(_object_id(src.get("id")))

    # -- 2025-09-30.clover ---------------------------------------------------------

    def clover_discount(self, src: Mapping[str, Any], out: dict[str, Any]) -> None:
        source = _mapping(src.get("source"))
        out.pop("source", None)
        out["coupon"] = self.expanded(source.get("coupon"))


_Handler = Callable[[_Renderer, Mapping[str, Any], dict[str, Any]], None]

_HANDLERS: dict[str, dict[str, _Handler]] = {
    _BASIL: {
        "subscription": _Renderer.basil_subscription,
        "subscription_item": _Renderer.basil_subscription_item,
        "invoice": _Renderer.basil_invoice,
        "line_item": _Renderer.basil_line_item,
        "invoiceitem": _Renderer.basil_invoiceitem,
        "charge": _Renderer.basil_charge,
        "payment_intent": _Renderer.basil_payment_intent,
    },
    _CLOVER: {"discount": _Renderer.clover_discount},
}
