"""Customers: create, retrieve, update, delete, list, and their discount."""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

from stripesync.sim import forms
from stripesync.sim.core import Ctx, Simulator, route
from stripesync.sim.errors import SimAPIError, missing
from stripesync.sim.resources.catalog import make_discount, resolve_coupon
from stripesync.sim.resources.common import check_params, deleted_stub, emit_updated

ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")
CREATE_PARAMS = {
    "address",
    "balance",
    "coupon",
    "description",
    "email",
    "invoice_prefix",
    "invoice_settings",
    "metadata",
    "name",
    "next_invoice_sequence",
    "payment_method",
    "phone",
    "preferred_locales",
    "promotion_code",
    "shipping",
    "source",
    "tax",
    "tax_exempt",
    "tax_id_data",
    "test_clock",
    "cash_balance",
}
UPDATE_PARAMS = (CREATE_PARAMS - {"payment_method", "tax_id_data", "test_clock"}) | {
    "default_source",
    "discounts",
}


def _address(value: Any, param: str) -> dict[str, Any] | None:
    if value in (None, ""):
        return None
    if not isinstance(value, dict):
        raise SimAPIError(400, f"Invalid hash: {param}", param=param)
    for key in value:
        if key not in ADDRESS_FIELDS:
            raise SimAPIError(
                400, f"Received unknown parameter: {param}[{key}]", param=f"{param}[{key}]"
            )
    return {f: value.get(f) or None for f in ADDRESS_FIELDS}


def _apply(sim: Simulator, ctx: Ctx, customer: dict[str, Any], params: dict[str, Any]) -> None:
    for field in ("description", "email", "name", "phone"):
        if field in params:
            customer[field] = params[field] or None
    if "address" in params:
        customer["address"] = _address(params["address"], "address")
    if "shipping" in params:
        shipping = params["shipping"]
        if shipping in ("", None):
            customer["shipping"] = None
        else:
            customer["shipping"] = {
                "address": _address(shipping.get("address"), "shipping[address]"),
                "name": shipping.get("name"),
                "phone": shipping.get("phone"),
            }
    if "balance" in params:
        customer["balance"] = forms.as_int(params, "balance")
    if "metadata" in params:
        customer["metadata"] = forms.as_metadata(params, customer.get("metadata"))
    if "preferred_locales" in params:
        customer["preferred_locales"] = forms.as_list(params, "preferred_locales")
    if "tax_exempt" in params:
        customer["tax_exempt"] = forms.as_enum(
            params, "tax_exempt", ("none", "exempt", "reverse"), "none"
        )
    if "invoice_prefix" in params:
        customer["invoice_prefix"] = params["invoice_prefix"]
    if "invoice_settings" in params:
        settings = forms.as_dict(params, "invoice_settings") or {}
        current = customer["invoice_settings"]
        if "default_payment_method" in settings:
            pm_id = settings["default_payment_method"] or None
            if pm_id is not None:
                pm = _resolve_pm(sim, ctx, pm_id, "invoice_settings[default_payment_method]")
                pm_id = pm["id"]  # a magic test id (pm_card_visa) made a fresh one
                if pm.get("customer") not in (None, customer["id"]):
                    raise SimAPIError(
                        400,
                        f"The payment method {pm_id} belongs to another customer.",
                        param="invoice_settings[default_payment_method]",
                    )
                if pm.get("customer") is None:
                    _attach(sim, ctx, pm, customer["id"])
            current["default_payment_method"] = pm_id
        for key in ("footer", "custom_fields"):
            if key in settings:
                current[key] = settings[key] or None
    coupon_id = params.get("coupon") or None
    if coupon_id is None and isinstance(params.get("discounts"), list) and params["discounts"]:
        coupon_id = params["discounts"][0].get("coupon")
    if coupon_id:
        coupon = resolve_coupon(sim, ctx, coupon_id, param="coupon")
        customer["discount"] = make_discount(sim, ctx, coupon, customer=customer["id"])
        sim.save(ctx, customer["discount"])
    elif params.get("coupon") == "" and customer.get("discount"):
        customer["discount"] = None


def _resolve_pm(sim: Simulator, ctx: Ctx, pm_id: str, param: str) -> dict[str, Any]:
    """A payment method by id; with billing loaded, magic test ids make a fresh one."""
    with contextlib.suppress(ModuleNotFoundError):
        module = importlib.import_module("stripesync.sim.resources.payment_methods")
        resolved: dict[str, Any] = module.resolve_payment_method(sim, ctx, pm_id, param=param)
        return resolved
    pm = sim.db.get(ctx.acct, pm_id)
    if pm is None or pm.get("object") != "payment_method":
        raise missing(pm_id, param=param, kind="PaymentMethod")
    return pm


def _attach(sim: Simulator, ctx: Ctx, pm: dict[str, Any], customer_id: str) -> None:
    """Attach a payment method through its own module when billing is loaded."""
    with contextlib.suppress(ModuleNotFoundError):
        module = importlib.import_module("stripesync.sim.resources.payment_methods")
        module.attach(sim, ctx, pm, customer_id)
        return
    pm["customer"] = customer_id
    sim.save(ctx, pm)


def new_customer(sim: Simulator, ctx: Ctx, created: int | None = None) -> dict[str, Any]:
    return {
        "id": sim.new_id("cus"),
        "object": "customer",
        "address": None,
        "balance": 0,
        "created": created if created is not None else sim.now(),
        "currency": None,
        "default_source": None,
        "delinquent": False,
        "description": None,
        "discount": None,
        "email": None,
        "invoice_prefix": sim.random_chars(8).upper(),
        "invoice_settings": {
            "custom_fields": None,
            "default_payment_method": None,
            "footer": None,
            "rendering_options": None,
        },
        "livemode": ctx.livemode,
        "metadata": {},
        "name": None,
        "next_invoice_sequence": 1,
        "phone": None,
        "preferred_locales": [],
        "shipping": None,
        "tax_exempt": "none",
        "test_clock": None,
    }


def save_customer(sim: Simulator, ctx: Ctx, customer: dict[str, Any]) -> None:
    sim.save(ctx, customer, links={"email": customer.get("email")})


@route("POST", "/v1/customers", resource="customers")
def create(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, CREATE_PARAMS)
    customer = new_customer(sim, ctx)
    save_customer(sim, ctx, customer)  # so a payment method can be attached to it
    _apply(sim, ctx, customer, params)
    if params.get("payment_method"):
        pm = _resolve_pm(sim, ctx, params["payment_method"], "payment_method")
        _attach(sim, ctx, pm, customer["id"])
    save_customer(sim, ctx, customer)
    sim.emit(ctx, "customer.created", customer)
    if customer.get("discount"):
        sim.emit(ctx, "customer.discount.created", customer["discount"])
    return customer


def load(sim: Simulator, ctx: Ctx, customer_id: str, param: str = "id") -> dict[str, Any]:
    customer = sim.db.get(ctx.acct, customer_id)
    if customer is None or customer.get("object") != "customer":
        raise missing(customer_id, param=param, kind="customer")
    return customer


@route("GET", "/v1/customers/{customer_id}", resource="customers")
def retrieve(sim: Simulator, ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    obj = sim.db.get(ctx.acct, customer_id, include_deleted=True)
    if obj is None or obj.get("object") != "customer":
        raise missing(customer_id, kind="customer")
    if sim.db.is_deleted(ctx.acct, customer_id):
        return deleted_stub(obj)
    return obj


@route("POST", "/v1/customers/{customer_id}", resource="customers")
def update(sim: Simulator, ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    check_params(params, UPDATE_PARAMS)
    customer = load(sim, ctx, customer_id)
    old = {**customer, "invoice_settings": dict(customer["invoice_settings"])}
    had_discount = customer.get("discount")
    _apply(sim, ctx, customer, params)
    save_customer(sim, ctx, customer)
    emit_updated(sim, ctx, "customer.updated", old, customer)
    if customer.get("discount") and customer["discount"] != had_discount:
        sim.emit(ctx, "customer.discount.created", customer["discount"])
    elif had_discount and not customer.get("discount"):
        sim.emit(ctx, "customer.discount.deleted", had_discount)
    return customer


@route("DELETE", "/v1/customers/{customer_id}", resource="customers")
def delete(sim: Simulator, ctx: Ctx, params: dict[str, Any], customer_id: str) -> dict[str, Any]:
    customer = load(sim, ctx, customer_id)
    delete_customer(sim, ctx, customer)
    return deleted_stub(customer)


def delete_customer(
    sim: Simulator, ctx: Ctx, customer: dict[str, Any], *, automatic: bool = False
) -> None:
    """Stripe cancels a deleted customer's subscriptions first, each with its own event."""
    with contextlib.suppress(ModuleNotFoundError):
        subs = importlib.import_module("stripesync.sim.resources.subscriptions")
        subs.cancel_all_for_customer(sim, ctx, customer["id"])
    sim.db.mark_deleted(ctx.acct, customer["id"])
    sim.emit(ctx, "customer.deleted", customer, automatic=automatic)


@route("DELETE", "/v1/customers/{customer_id}/discount", resource="customers")
def delete_discount(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], customer_id: str
) -> dict[str, Any]:
    customer = load(sim, ctx, customer_id)
    discount = customer.get("discount")
    if not discount:
        raise SimAPIError(
            404, f"No active discount for customer: {customer_id}", code="resource_missing"
        )
    old = dict(customer)
    customer["discount"] = None
    save_customer(sim, ctx, customer)
    sim.emit(ctx, "customer.discount.deleted", discount)
    emit_updated(sim, ctx, "customer.updated", old, customer)
    return {
        **deleted_stub(discount),
        **{k: discount[k] for k in discount if k != "object"},
        "object": "discount",
        "deleted": True,
    }


@route("GET", "/v1/customers", resource="customers")
def list_(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params, {"created", "email", "ending_before", "limit", "starting_after", "test_clock"}
    )
    links = {"email": params["email"]} if params.get("email") else None
    return sim.paginate(
        ctx, params, "customer", "/v1/customers", created=forms.created_filter(params), links=links
    )
