"""One shape for every Stripe object the product reads: the current API version's.

The product pins ``2026-10-28.endive`` for the calls it makes, but it does not choose the
shape of everything it receives: Stripe renders an event's ``data.object`` in the version
in force when the event was created, and a webhook endpoint without a pinned version
uses the account's default. Engines that read one shape stored NULLs for invoice fields
after 2025-03-31 and lost ``current_period_*`` when it moved onto subscription items.
So every object goes through `normalize` before anything reads it, and the small readers
below (`subscription_period`, `invoice_subscription_id`, ...) accept either shape, for
the places that see raw payloads.

`normalize` detects old shapes by their fields, field by field, so it needs no version
and a current object comes back equal. It moves what has a current home:

* subscription: top-level ``current_period_start``/``current_period_end`` go onto the
  items that lack them (kept at the top when there are no items to carry them);
  ``plan``/``quantity`` (copies of the only item's) go; the singular ``discount`` joins
  ``discounts``, replacing its id there by the object, which carries the coupon.
* discount: ``coupon`` becomes ``source: {"type": "coupon", "coupon": ...}``.
* invoice: ``subscription``/``subscription_details``/``subscription_proration_date``/
  ``quote`` become ``parent``; ``total_tax_amounts`` becomes ``total_taxes`` (and the
  derived ``tax`` goes); ``discount`` joins ``discounts``.
* invoice line (``line_item``): ``price``/``plan`` become ``pricing``; ``type``,
  ``invoice_item``, ``subscription_item``, ``proration``, ``proration_details`` become
  ``parent`` (``subscription_item_details`` when a subscription item backs the line,
  else ``invoice_item_details``); ``tax_amounts`` becomes ``taxes``.
* invoiceitem: ``price``/``plan``/``unit_amount*`` become ``pricing``;
  ``subscription``/``subscription_item`` become ``parent``.
* event: ``data.object`` as above; ``data.previous_attributes`` (changed fields only) is
  normalized against the object, so an old period roll-over arrives as the previous
  ``items``, the way current versions report it.

Fields with no current home stay as they are: ``invoice.paid``, ``invoice.charge``,
``invoice.payment_intent``, ``charge.invoice`` (current versions link payments through
invoice_payment objects, which a payload cannot produce), and anything unknown.
Expanded objects stay expanded. The result is a new dict; the input is never mutated;
``normalize(normalize(x)) == normalize(x)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "discount_coupon",
    "discount_coupon_id",
    "invoice_subscription_id",
    "line_is_proration",
    "line_price_id",
    "line_subscription_item_id",
    "normalize",
    "object_id",
    "subscription_period",
]

_MISSING = object()


# -- readers that accept either shape ---------------------------------------------------


def object_id(value: Any) -> str | None:
    """The id behind an expandable field, whether it holds the id or the expanded object."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def subscription_period(sub: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """The subscription's current period: (earliest item start, latest item end).

    Items carry the period since 2025-03-31; with classic billing they all share it, and
    with flexible billing the span from the earliest start to the latest end covers them
    all. Old-shape payloads carry one top-level period instead, used when no item has one.
    """
    items = [item for item in _list_data(sub.get("items")) if isinstance(item, Mapping)]
    starts = [s for s in (_timestamp(i.get("current_period_start")) for i in items) if s]
    ends = [e for e in (_timestamp(i.get("current_period_end")) for i in items) if e]
    if starts or ends:
        return (min(starts) if starts else None, max(ends) if ends else None)
    return _timestamp(sub.get("current_period_start")), _timestamp(sub.get("current_period_end"))


def invoice_subscription_id(inv: Mapping[str, Any]) -> str | None:
    """The subscription that generated the invoice, if one did."""
    parent = inv.get("parent")
    if isinstance(parent, Mapping) and parent.get("type") == "subscription_details":
        found = object_id(_mapping(parent.get("subscription_details")).get("subscription"))
        if found is not None:
            return found
    return object_id(inv.get("subscription"))


def line_price_id(line: Mapping[str, Any]) -> str | None:
    """The price an invoice line (or invoice item) bills, if it bills one."""
    details = _price_details(line.get("pricing"))
    if details is not None:
        return object_id(details.get("price"))
    return object_id(line.get("price")) or object_id(line.get("plan"))


def line_is_proration(line: Mapping[str, Any]) -> bool:
    """Whether an invoice line is a proration (a credit or charge for a partial period)."""
    details = _line_parent_details(line)
    if details is not None:
        return bool(details.get("proration"))
    return bool(line.get("proration"))


def line_subscription_item_id(line: Mapping[str, Any]) -> str | None:
    """The subscription item behind an invoice line, if one is."""
    details = _line_parent_details(line)
    if details is not None:
        return object_id(details.get("subscription_item"))
    return object_id(line.get("subscription_item"))


def discount_coupon(discount: Mapping[str, Any]) -> dict[str, Any] | None:
    """The discount's coupon object, when the payload has it expanded.

    Current versions send the coupon id only (``source.coupon``) unless asked to expand;
    old versions always expanded ``coupon``. Use `discount_coupon_id` for the id alone.
    """
    coupon = _coupon_field(discount)
    return dict(coupon) if isinstance(coupon, Mapping) else None


def discount_coupon_id(discount: Mapping[str, Any]) -> str | None:
    """The id of the coupon a discount redeems."""
    return object_id(_coupon_field(discount))


# -- normalize -------------------------------------------------------------------------


def normalize(obj: Mapping[str, Any]) -> dict[str, Any]:
    """`obj` in the current shape, whatever version it was rendered in; a new dict."""
    return _obj(obj)


def _value(value: Any) -> Any:
    if isinstance(value, Mapping):
        return _obj(value)
    if isinstance(value, list | tuple):
        return [_value(item) for item in value]
    return value


def _obj(src: Mapping[str, Any]) -> dict[str, Any]:
    kind = src.get("object")
    if kind == "event":
        return _event(src)
    out = {key: _value(val) for key, val in src.items()}
    if src.get("deleted") is True or not isinstance(kind, str):
        return out
    fix = _FIXES.get(kind)
    if fix is not None:
        fix(out)
    return out


def _event(src: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, val in src.items():
        if key != "data" or not isinstance(val, Mapping):
            out[key] = _value(val)
            continue
        current = val.get("object")
        data: dict[str, Any] = {}
        for data_key, data_val in val.items():
            if (
                data_key == "previous_attributes"
                and isinstance(data_val, Mapping)
                and isinstance(current, Mapping)
            ):
                data[data_key] = _previous(data_val, current)
            else:
                data[data_key] = _value(data_val)
        out[key] = data
    return out


def _previous(prev: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    """Normalize changed fields, which only make sense against the object they changed on.

    The old values are laid over the object and both are normalized; what the event
    named is kept (hashes only as deep as the event went), plus every field whose
    normalized value differs, which is where moved fields land.
    """
    return _changed(_obj(_deep_merge(current, prev)), _obj(current), prev)


def _changed(
    before: Mapping[str, Any], after: Mapping[str, Any], named: Mapping[str, Any]
) -> dict[str, Any]:
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


def _fix_subscription(out: dict[str, Any]) -> None:
    items = [item for item in _list_data(out.get("items")) if isinstance(item, dict)]
    if items and ("current_period_start" in out or "current_period_end" in out):
        start = out.pop("current_period_start", None)
        end = out.pop("current_period_end", None)
        for item in items:
            if item.get("current_period_start") is None:
                item["current_period_start"] = start
            if item.get("current_period_end") is None:
                item["current_period_end"] = end
    if items:
        out.pop("plan", None)
        out.pop("quantity", None)
    _merge_discount(out)


def _fix_discount(out: dict[str, Any]) -> None:
    if "source" not in out and "coupon" in out:
        out["source"] = {"coupon": out.pop("coupon"), "type": "coupon"}


_INVOICE_PARENT_FIELDS = (
    "subscription",
    "subscription_details",
    "subscription_proration_date",
    "quote",
)


def _fix_invoice(out: dict[str, Any]) -> None:
    # Current payloads may still carry "subscription": null next to "parent".
    if "parent" not in out and any(key in out for key in _INVOICE_PARENT_FIELDS):
        sub = out.pop("subscription", None)
        metadata = _mapping(out.pop("subscription_details", None)).get("metadata")
        has_proration_date = "subscription_proration_date" in out
        proration_date = out.pop("subscription_proration_date", None)
        quote = out.pop("quote", None)
        parent: dict[str, Any] | None = None
        if sub is not None:
            details: dict[str, Any] = {"metadata": metadata, "subscription": sub}
            if has_proration_date:
                details["subscription_proration_date"] = proration_date
            parent = {
                "quote_details": None,
                "subscription_details": details,
                "type": "subscription_details",
            }
        elif quote is not None:
            parent = {
                "quote_details": {"quote": object_id(quote)},
                "subscription_details": None,
                "type": "quote_details",
            }
        out["parent"] = parent
    if "total_taxes" not in out and "total_tax_amounts" in out:
        out["total_taxes"] = [_current_tax(t) for t in _array(out.pop("total_tax_amounts"))]
        out.pop("tax", None)
    _merge_discount(out)


_LINE_PARENT_FIELDS = (
    "type",
    "invoice_item",
    "subscription_item",
    "proration",
    "proration_details",
)


def _fix_line_item(out: dict[str, Any]) -> None:
    if "pricing" not in out and ("price" in out or "plan" in out):
        price, plan = out.pop("price", None), out.pop("plan", None)
        out["pricing"] = _pricing(price if price is not None else plan)
    if "parent" not in out and any(key in out for key in _LINE_PARENT_FIELDS):
        kind = out.pop("type", None)
        invoice_item = out.pop("invoice_item", None)
        subscription_item = out.pop("subscription_item", None)
        proration = bool(out.pop("proration", False))
        proration_details = out.pop("proration_details", None)
        sub = object_id(out.get("subscription"))
        parent: dict[str, Any] | None = None
        if subscription_item is not None or kind == "subscription":
            parent = {
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": invoice_item,
                    "proration": proration,
                    "proration_details": proration_details,
                    "subscription": sub,
                    "subscription_item": subscription_item,
                },
                "type": "subscription_item_details",
            }
        elif invoice_item is not None or kind == "invoiceitem":
            parent = {
                "invoice_item_details": {
                    "invoice_item": invoice_item,
                    "proration": proration,
                    "proration_details": proration_details,
                    "subscription": sub,
                },
                "subscription_item_details": None,
                "type": "invoice_item_details",
            }
        out["parent"] = parent
    if "taxes" not in out and "tax_amounts" in out:
        out["taxes"] = [_current_tax(t) for t in _array(out.pop("tax_amounts"))]


def _fix_invoiceitem(out: dict[str, Any]) -> None:
    legacy_pricing = ("price", "plan", "unit_amount", "unit_amount_decimal")
    if "pricing" not in out and any(key in out for key in legacy_pricing):
        price, plan = out.pop("price", None), out.pop("plan", None)
        out.pop("unit_amount", None)
        decimal = out.pop("unit_amount_decimal", None)
        pricing = _pricing(price if price is not None else plan)
        if pricing is not None and decimal is not None:
            pricing["unit_amount_decimal"] = decimal
        out["pricing"] = pricing
    if "parent" not in out and ("subscription" in out or "subscription_item" in out):
        sub = object_id(out.pop("subscription", None))
        subscription_item = out.pop("subscription_item", None)
        out["parent"] = (
            {
                "subscription_details": {
                    "subscription": sub,
                    "subscription_item": subscription_item,
                },
                "type": "subscription_details",
            }
            if sub is not None
            else None
        )


_FIXES = {
    "subscription": _fix_subscription,
    "discount": _fix_discount,
    "invoice": _fix_invoice,
    "line_item": _fix_line_item,
    "invoiceitem": _fix_invoiceitem,
}


# -- helpers ---------------------------------------------------------------------------


def _mapping(value: Any) -> Mapping[str, Any]:
    """`value` when it is a hash, else an empty one: Stripe nulls whole sub-hashes."""
    return value if isinstance(value, Mapping) else {}


def _array(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else []


def _list_data(value: Any) -> list[Any]:
    return _array(_mapping(value).get("data"))


def _timestamp(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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


def _merge_discount(out: dict[str, Any]) -> None:
    """Fold the old singular ``discount`` into ``discounts``, keeping the richer form."""
    discounts = out.get("discounts")
    if "discount" not in out or not isinstance(discounts, list):
        return
    single = out.pop("discount")
    if single is None:
        return
    single_id = object_id(single)
    for index, entry in enumerate(discounts):
        if single_id is not None and object_id(entry) == single_id:
            if isinstance(single, Mapping):
                discounts[index] = single
            return
    discounts.append(single)


def _price_details(pricing: Any) -> Mapping[str, Any] | None:
    if isinstance(pricing, Mapping) and pricing.get("type") == "price_details":
        details = pricing.get("price_details")
        return details if isinstance(details, Mapping) else None
    return None


def _pricing(price: Any) -> dict[str, Any] | None:
    """An old line's ``price`` (or ``plan``) as the current ``pricing`` hash."""
    if price is None:
        return None
    decimal = None
    if isinstance(price, Mapping):
        is_plan = price.get("object") == "plan"
        decimal = price.get("amount_decimal" if is_plan else "unit_amount_decimal")
        product = object_id(price.get("product"))
        if is_plan:
            price = object_id(price)
    else:
        product = None
    return {
        "price_details": {"price": price, "product": product},
        "type": "price_details",
        "unit_amount_decimal": decimal,
    }


def _current_tax(tax: Any) -> dict[str, Any]:
    """An old ``tax_amounts[]`` entry as a current ``taxes[]`` entry."""
    tax = _mapping(tax)
    rate = object_id(tax.get("tax_rate"))
    return {
        "amount": tax.get("amount"),
        "tax_behavior": "inclusive" if tax.get("inclusive") else "exclusive",
        "tax_rate_details": {"tax_rate": rate} if rate is not None else None,
        "taxability_reason": tax.get("taxability_reason"),
        "taxable_amount": tax.get("taxable_amount"),
        "type": "tax_rate_details",
    }


def _line_parent_details(line: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The details block named by ``parent.type``; Stripe nulls the other one."""
    parent = line.get("parent")
    if not isinstance(parent, Mapping):
        return None
    kind = parent.get("type")
    details = parent.get(kind) if isinstance(kind, str) else None
    return details if isinstance(details, Mapping) else None


def _coupon_field(discount: Mapping[str, Any]) -> Any:
    source = discount.get("source")
    if isinstance(source, Mapping):
        return source.get("coupon")
    return discount.get("coupon")
