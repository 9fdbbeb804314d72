"""The catalogue: products, prices, legacy plans, coupons, and discounts made from coupons.

Stripe's plans are prices seen through the older API: a plan and its price share one id.
The simulator stores the price and renders a plan from it. ``price.tiers`` and
``coupon.applies_to`` are *includable*: Stripe returns them only when expanded.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from stripesync.sim import forms
from stripesync.sim.core import Ctx, Simulator, route
from stripesync.sim.errors import SimAPIError, missing, required
from stripesync.sim.resources.common import (
    check_params,
    deleted_stub,
    emit_updated,
    ensure_currency,
)
from stripesync.sim.timeutil import add_months

INTERVALS = ("day", "week", "month", "year")
MAX_INTERVAL = {"day": 365 * 3, "week": 156, "month": 36, "year": 3}


def _decimal_str(value: Any, param: str) -> str:
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        raise SimAPIError(400, f"Invalid decimal: {value}", param=param) from None
    if number < 0:
        raise SimAPIError(400, f"Invalid {param}: must be at least 0", param=param)
    text = format(number.normalize(), "f")
    return text


# -- products ---------------------------------------------------------------------------

PRODUCT_PARAMS = {
    "active",
    "default_price_data",
    "description",
    "id",
    "images",
    "marketing_features",
    "metadata",
    "name",
    "package_dimensions",
    "shippable",
    "statement_descriptor",
    "tax_code",
    "type",
    "unit_label",
    "url",
}


def new_product(
    sim: Simulator,
    ctx: Ctx,
    name: str,
    *,
    product_id: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    now = created if created is not None else sim.now()
    return {
        "id": product_id or sim.new_id("prod"),
        "object": "product",
        "active": True,
        "created": now,
        "default_price": None,
        "description": None,
        "images": [],
        "livemode": ctx.livemode,
        "marketing_features": [],
        "metadata": {},
        "name": name,
        "package_dimensions": None,
        "shippable": None,
        "statement_descriptor": None,
        "tax_code": None,
        "type": "service",
        "unit_label": None,
        "updated": now,
        "url": None,
    }


def _apply_product(product: dict[str, Any], params: dict[str, Any]) -> None:
    for field in ("description", "statement_descriptor", "unit_label", "url", "tax_code"):
        if field in params:
            product[field] = params[field] or None
    if "name" in params:
        if not params["name"]:
            raise SimAPIError(400, "You must supply a name.", param="name")
        product["name"] = params["name"]
    if "active" in params:
        product["active"] = bool(forms.as_bool(params, "active"))
    if "images" in params:
        product["images"] = forms.as_list(params, "images")
    if "metadata" in params:
        product["metadata"] = forms.as_metadata(params, product.get("metadata"))


@route("POST", "/v1/products", resource="products")
def create_product(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, PRODUCT_PARAMS)
    if not params.get("name"):
        raise required("name")
    if params.get("id") and sim.db.get(ctx.acct, params["id"], include_deleted=True):
        raise SimAPIError(
            400, "Product already exists.", code="resource_already_exists", param="id"
        )
    product = new_product(sim, ctx, params["name"], product_id=params.get("id") or None)
    _apply_product(product, params)
    sim.save(ctx, product, links={"active": str(product["active"]).lower()})
    sim.emit(ctx, "product.created", product)
    if params.get("default_price_data"):
        data = dict(params["default_price_data"])
        data["product"] = product["id"]
        price = _create_price(sim, ctx, data)
        old = dict(product)
        product["default_price"] = price["id"]
        sim.save(ctx, product, links={"active": str(product["active"]).lower()})
        emit_updated(sim, ctx, "product.updated", old, product)
    return product


def load_product(sim: Simulator, ctx: Ctx, product_id: str, param: str = "id") -> dict[str, Any]:
    product = sim.db.get(ctx.acct, product_id)
    if product is None or product.get("object") != "product":
        raise missing(product_id, param=param, kind="product")
    return product


@route("GET", "/v1/products/{product_id}", resource="products")
def retrieve_product(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], product_id: str
) -> dict[str, Any]:
    return load_product(sim, ctx, product_id)


@route("POST", "/v1/products/{product_id}", resource="products")
def update_product(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], product_id: str
) -> dict[str, Any]:
    check_params(params, PRODUCT_PARAMS - {"id", "default_price_data", "type"} | {"default_price"})
    product = load_product(sim, ctx, product_id)
    old = dict(product)
    _apply_product(product, params)
    if "default_price" in params:
        price_id = params["default_price"] or None
        if price_id is not None:
            price = load_price(sim, ctx, price_id, param="default_price")
            if price["product"] != product_id:
                raise SimAPIError(
                    400, "The default price must belong to this product.", param="default_price"
                )
        product["default_price"] = price_id
    product["updated"] = sim.now()
    sim.save(ctx, product, links={"active": str(product["active"]).lower()})
    emit_updated(sim, ctx, "product.updated", old, product)
    return product


@route("DELETE", "/v1/products/{product_id}", resource="products")
def delete_product(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], product_id: str
) -> dict[str, Any]:
    product = load_product(sim, ctx, product_id)
    if sim.db.list(ctx.acct, "price", limit=1, links={"product": product_id}).data:
        raise SimAPIError(
            400,
            "This product cannot be deleted because it has one or more user-created prices.",
            code="product_has_prices" if False else None,
        )
    sim.db.mark_deleted(ctx.acct, product_id)
    sim.emit(ctx, "product.deleted", product)
    return deleted_stub(product)


@route("GET", "/v1/products", resource="products")
def list_products(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {
            "active",
            "created",
            "ending_before",
            "ids",
            "limit",
            "shippable",
            "starting_after",
            "url",
        },
    )
    links = {}
    if params.get("active") not in (None, ""):
        links["active"] = str(forms.as_bool(params, "active")).lower()
    return sim.paginate(
        ctx,
        params,
        "product",
        "/v1/products",
        created=forms.created_filter(params),
        links=links or None,
    )


# -- prices -----------------------------------------------------------------------------

PRICE_PARAMS = {
    "active",
    "billing_scheme",
    "currency",
    "currency_options",
    "custom_unit_amount",
    "lookup_key",
    "metadata",
    "nickname",
    "product",
    "product_data",
    "recurring",
    "tax_behavior",
    "tiers",
    "tiers_mode",
    "transfer_lookup_key",
    "transform_quantity",
    "unit_amount",
    "unit_amount_decimal",
}


def _tiers(params: dict[str, Any], currency: str) -> list[dict[str, Any]]:
    raw = forms.as_list(params, "tiers")
    if not raw:
        raise SimAPIError(400, "Tiers are required when billing_scheme is tiered.", param="tiers")
    tiers = []
    for i, tier in enumerate(raw):
        if not isinstance(tier, dict) or "up_to" not in tier:
            raise required(f"tiers[{i}][up_to]")
        up_to = None if tier["up_to"] == "inf" else forms.as_int(tier, "up_to", minimum=1)
        flat = tier.get("flat_amount_decimal") or tier.get("flat_amount")
        unit = tier.get("unit_amount_decimal") or tier.get("unit_amount")
        flat_dec = (
            _decimal_str(flat, f"tiers[{i}][flat_amount]") if flat not in (None, "") else None
        )
        unit_dec = (
            _decimal_str(unit, f"tiers[{i}][unit_amount]") if unit not in (None, "") else None
        )
        tiers.append(
            {
                "flat_amount": int(Decimal(flat_dec))
                if flat_dec is not None and Decimal(flat_dec) == int(Decimal(flat_dec))
                else None,
                "flat_amount_decimal": flat_dec,
                "unit_amount": int(Decimal(unit_dec))
                if unit_dec is not None and Decimal(unit_dec) == int(Decimal(unit_dec))
                else None,
                "unit_amount_decimal": unit_dec,
                "up_to": up_to,
            }
        )
    if tiers[-1]["up_to"] is not None:
        raise SimAPIError(
            400,
            "The last tier must have up_to set to inf.",
            param=f"tiers[{len(tiers) - 1}][up_to]",
        )
    return tiers


def _create_price(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], *, created: int | None = None
) -> dict[str, Any]:
    check_params(params, PRICE_PARAMS)
    if not params.get("currency"):
        raise required("currency")
    currency = ensure_currency(params["currency"])
    if params.get("product"):
        product = load_product(sim, ctx, params["product"], param="product")
    elif params.get("product_data"):
        data = params["product_data"]
        if not isinstance(data, dict) or not data.get("name"):
            raise required("product_data[name]")
        product = new_product(sim, ctx, data["name"], product_id=data.get("id"))
        if "metadata" in data:
            product["metadata"] = forms.as_metadata(data)
        sim.save(ctx, product, links={"active": "true"})
        sim.emit(ctx, "product.created", product)
    else:
        raise SimAPIError(400, "You must specify either product or product_data.", param="product")
    billing_scheme = forms.as_enum(params, "billing_scheme", ("per_unit", "tiered"), "per_unit")
    recurring = None
    if params.get("recurring"):
        rec = forms.as_dict(params, "recurring") or {}
        interval = forms.as_enum(rec, "interval", INTERVALS)
        if interval is None:
            raise required("recurring[interval]")
        count = forms.as_int(rec, "interval_count", 1, minimum=1)
        assert count is not None
        if count > MAX_INTERVAL[interval]:
            raise SimAPIError(
                400,
                "The maximum billing interval is 3 years (e.g. 36 months or 156 weeks).",
                param="recurring[interval_count]",
            )
        recurring = {
            "interval": interval,
            "interval_count": count,
            "meter": rec.get("meter") or None,
            "trial_period_days": forms.as_int(rec, "trial_period_days"),
            "usage_type": forms.as_enum(rec, "usage_type", ("licensed", "metered"), "licensed"),
        }
    unit_amount: int | None = None
    unit_amount_decimal: str | None = None
    tiers = None
    tiers_mode = None
    if billing_scheme == "tiered":
        tiers_mode = forms.as_enum(params, "tiers_mode", ("graduated", "volume"))
        if tiers_mode is None:
            raise required("tiers_mode")
        tiers = _tiers(params, currency)
    else:
        if params.get("unit_amount_decimal") not in (None, ""):
            unit_amount_decimal = _decimal_str(params["unit_amount_decimal"], "unit_amount_decimal")
            number = Decimal(unit_amount_decimal)
            unit_amount = int(number) if number == int(number) else None
        elif params.get("unit_amount") not in (None, ""):
            unit_amount = forms.as_int(params, "unit_amount", minimum=0)
            unit_amount_decimal = str(unit_amount)
        elif not params.get("custom_unit_amount"):
            raise SimAPIError(
                400,
                "You must pass either unit_amount, unit_amount_decimal or custom_unit_amount.",
                param="unit_amount",
            )
    transform = None
    if params.get("transform_quantity"):
        tq = forms.as_dict(params, "transform_quantity") or {}
        divide_by = forms.as_int(tq, "divide_by", minimum=1)
        if divide_by is None:
            raise required("transform_quantity[divide_by]")
        transform = {
            "divide_by": divide_by,
            "round": forms.as_enum(tq, "round", ("up", "down")) or "up",
        }
        if billing_scheme == "tiered":
            raise SimAPIError(
                400,
                "transform_quantity cannot be used with tiered prices.",
                param="transform_quantity",
            )
    price = {
        "id": sim.new_id("price"),
        "object": "price",
        "active": forms.as_bool(params, "active", True),
        "billing_scheme": billing_scheme,
        "created": created if created is not None else sim.now(),
        "currency": currency,
        "custom_unit_amount": None,
        "livemode": ctx.livemode,
        "lookup_key": params.get("lookup_key") or None,
        "metadata": forms.as_metadata(params),
        "nickname": params.get("nickname") or None,
        "product": product["id"],
        "recurring": recurring,
        "tax_behavior": forms.as_enum(
            params, "tax_behavior", ("inclusive", "exclusive", "unspecified"), "unspecified"
        ),
        "tiers_mode": tiers_mode,
        "transform_quantity": transform,
        "type": "recurring" if recurring else "one_time",
        "unit_amount": unit_amount,
        "unit_amount_decimal": unit_amount_decimal,
    }
    if tiers is not None:
        price["_tiers"] = tiers
    save_price(sim, ctx, price)
    sim.emit(ctx, "price.created", price)
    return price


def save_price(sim: Simulator, ctx: Ctx, price: dict[str, Any]) -> None:
    sim.save(
        ctx,
        price,
        links={
            "product": price["product"],
            "active": str(price["active"]).lower(),
            "currency": price["currency"],
            "type": price["type"],
            "lookup_key": price.get("lookup_key"),
        },
    )


@route("POST", "/v1/prices", resource="prices")
def create_price(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    return _create_price(sim, ctx, params)


def load_price(sim: Simulator, ctx: Ctx, price_id: str, param: str = "id") -> dict[str, Any]:
    price = sim.db.get(ctx.acct, price_id)
    if price is None or price.get("object") != "price":
        raise missing(price_id, param=param, kind="price")
    return price


@route("GET", "/v1/prices/{price_id}", resource="prices")
def retrieve_price(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], price_id: str
) -> dict[str, Any]:
    return load_price(sim, ctx, price_id)


@route("POST", "/v1/prices/{price_id}", resource="prices")
def update_price(sim: Simulator, ctx: Ctx, params: dict[str, Any], price_id: str) -> dict[str, Any]:
    check_params(
        params,
        {
            "active",
            "lookup_key",
            "metadata",
            "nickname",
            "tax_behavior",
            "transfer_lookup_key",
            "currency_options",
        },
    )
    price = load_price(sim, ctx, price_id)
    old = dict(price)
    if "active" in params:
        price["active"] = forms.as_bool(params, "active")
    if "nickname" in params:
        price["nickname"] = params["nickname"] or None
    if "lookup_key" in params:
        price["lookup_key"] = params["lookup_key"] or None
    if "metadata" in params:
        price["metadata"] = forms.as_metadata(params, price["metadata"])
    if "tax_behavior" in params:
        if price["tax_behavior"] != "unspecified":
            raise SimAPIError(400, "tax_behavior cannot be changed once set.", param="tax_behavior")
        price["tax_behavior"] = forms.as_enum(
            params, "tax_behavior", ("inclusive", "exclusive", "unspecified")
        )
    save_price(sim, ctx, price)
    emit_updated(sim, ctx, "price.updated", old, price)
    return price


@route("GET", "/v1/prices", resource="prices")
def list_prices(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {
            "active",
            "created",
            "currency",
            "ending_before",
            "limit",
            "lookup_keys",
            "product",
            "recurring",
            "starting_after",
            "type",
        },
    )
    links: dict[str, str] = {}
    if params.get("active") not in (None, ""):
        links["active"] = str(forms.as_bool(params, "active")).lower()
    for key in ("product", "currency", "type"):
        if params.get(key):
            links[key] = params[key]
    if params.get("lookup_keys"):
        keys = forms.as_list(params, "lookup_keys")
        links["lookup_key"] = keys[0]
    return sim.paginate(
        ctx,
        params,
        "price",
        "/v1/prices",
        created=forms.created_filter(params),
        links=links or None,
    )


# -- plans (legacy) ---------------------------------------------------------------------


def plan_from_price(price: dict[str, Any]) -> dict[str, Any] | None:
    """The legacy plan view of a recurring price (same id)."""
    recurring = price.get("recurring")
    if not recurring:
        return None
    amount_decimal = price.get("unit_amount_decimal")
    return {
        "id": price["id"],
        "object": "plan",
        "active": price["active"],
        "amount": price.get("unit_amount"),
        "amount_decimal": amount_decimal,
        "billing_scheme": price["billing_scheme"],
        "created": price["created"],
        "currency": price["currency"],
        "interval": recurring["interval"],
        "interval_count": recurring["interval_count"],
        "livemode": price["livemode"],
        "metadata": price["metadata"],
        "meter": recurring.get("meter"),
        "nickname": price.get("nickname"),
        "product": price["product"],
        "tiers_mode": price.get("tiers_mode"),
        "transform_usage": price.get("transform_quantity"),
        "trial_period_days": recurring.get("trial_period_days"),
        "usage_type": recurring["usage_type"],
        **({"_tiers": price["_tiers"]} if "_tiers" in price else {}),
    }


@route("POST", "/v1/plans", resource="plans")
def create_plan(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {
            "active",
            "amount",
            "amount_decimal",
            "billing_scheme",
            "currency",
            "id",
            "interval",
            "interval_count",
            "metadata",
            "meter",
            "nickname",
            "product",
            "tiers",
            "tiers_mode",
            "transform_usage",
            "trial_period_days",
            "usage_type",
        },
    )
    if not params.get("interval"):
        raise required("interval")
    price_params: dict[str, Any] = {
        "currency": params.get("currency"),
        "recurring": {
            "interval": params["interval"],
            "interval_count": params.get("interval_count", "1"),
            "usage_type": params.get("usage_type", "licensed"),
            **(
                {"trial_period_days": params["trial_period_days"]}
                if params.get("trial_period_days")
                else {}
            ),
        },
    }
    product = params.get("product")
    if isinstance(product, dict):
        price_params["product_data"] = product
    elif product:
        price_params["product"] = product
    else:
        raise required("product")
    for src, dst in (
        ("amount", "unit_amount"),
        ("amount_decimal", "unit_amount_decimal"),
        ("transform_usage", "transform_quantity"),
    ):
        if params.get(src) not in (None, ""):
            price_params[dst] = params[src]
    for key in ("billing_scheme", "tiers", "tiers_mode", "nickname", "metadata", "active"):
        if key in params:
            price_params[key] = params[key]
    price = _create_price(sim, ctx, price_params)
    if params.get("id"):
        if sim.db.get(ctx.acct, params["id"], include_deleted=True):
            raise SimAPIError(
                400, "Plan already exists.", code="resource_already_exists", param="id"
            )
        sim.db.execute("DELETE FROM objects WHERE acct=? AND id=?", (ctx.acct, price["id"]))
        sim.db.execute("DELETE FROM links WHERE acct=? AND id=?", (ctx.acct, price["id"]))
        price["id"] = params["id"]
        save_price(sim, ctx, price)
    plan = plan_from_price(price)
    assert plan is not None
    sim.emit(ctx, "plan.created", plan)
    return plan


@route("GET", "/v1/plans/{plan_id}", resource="plans")
def retrieve_plan(sim: Simulator, ctx: Ctx, params: dict[str, Any], plan_id: str) -> dict[str, Any]:
    price = sim.db.get(ctx.acct, plan_id)
    plan = plan_from_price(price) if price and price.get("object") == "price" else None
    if plan is None:
        raise missing(plan_id, kind="plan")
    return plan


@route("GET", "/v1/plans", resource="plans")
def list_plans(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params, {"active", "created", "ending_before", "limit", "product", "starting_after"}
    )
    links: dict[str, str] = {"type": "recurring"}
    if params.get("active") not in (None, ""):
        links["active"] = str(forms.as_bool(params, "active")).lower()
    if params.get("product"):
        links["product"] = params["product"]
    body = sim.paginate(
        ctx, params, "price", "/v1/plans", created=forms.created_filter(params), links=links
    )
    body["data"] = [plan_from_price(p) for p in body["data"]]
    return body


# -- coupons and discounts --------------------------------------------------------------

COUPON_PARAMS = {
    "amount_off",
    "applies_to",
    "currency",
    "currency_options",
    "duration",
    "duration_in_months",
    "id",
    "max_redemptions",
    "metadata",
    "name",
    "percent_off",
    "redeem_by",
}


@route("POST", "/v1/coupons", resource="coupons")
def create_coupon(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, COUPON_PARAMS)
    percent = params.get("percent_off")
    amount = params.get("amount_off")
    if (percent in (None, "")) == (amount in (None, "")):
        raise SimAPIError(
            400, "You must pass exactly one of percent_off or amount_off.", param="percent_off"
        )
    percent_off: float | None = None
    if percent not in (None, ""):
        try:
            percent_off = float(percent)
        except ValueError:
            raise SimAPIError(400, f"Invalid decimal: {percent}", param="percent_off") from None
        if not 0 < percent_off <= 100:
            raise SimAPIError(
                400, "Invalid percent_off: must be between 0 and 100.", param="percent_off"
            )
    amount_off = forms.as_int(params, "amount_off", minimum=1) if amount not in (None, "") else None
    currency = None
    if amount_off is not None:
        if not params.get("currency"):
            raise SimAPIError(
                400, "You must pass currency when passing amount_off.", param="currency"
            )
        currency = ensure_currency(params["currency"])
    duration = forms.as_enum(params, "duration", ("forever", "once", "repeating"), "once")
    months = forms.as_int(params, "duration_in_months", minimum=1)
    if duration == "repeating" and months is None:
        raise SimAPIError(
            400,
            "You must pass duration_in_months when duration is repeating.",
            param="duration_in_months",
        )
    coupon_id = params.get("id") or sim.random_chars(8)
    if sim.db.get(ctx.acct, coupon_id, include_deleted=True):
        raise SimAPIError(400, "Coupon already exists.", code="resource_already_exists", param="id")
    coupon: dict[str, Any] = {
        "id": coupon_id,
        "object": "coupon",
        "amount_off": amount_off,
        "created": sim.now(),
        "currency": currency,
        "duration": duration,
        "duration_in_months": months if duration == "repeating" else None,
        "livemode": ctx.livemode,
        "max_redemptions": forms.as_int(params, "max_redemptions", minimum=1),
        "metadata": forms.as_metadata(params),
        "name": params.get("name") or None,
        "percent_off": percent_off,
        "redeem_by": forms.as_int(params, "redeem_by"),
        "times_redeemed": 0,
        "valid": True,
    }
    if params.get("applies_to"):
        products = forms.as_list(forms.as_dict(params, "applies_to") or {}, "products")
        coupon["_applies_to"] = {"products": products}
    sim.save(ctx, coupon)
    sim.emit(ctx, "coupon.created", coupon)
    return coupon


def resolve_coupon(
    sim: Simulator, ctx: Ctx, coupon_id: str, *, param: str = "coupon"
) -> dict[str, Any]:
    coupon = sim.db.get(ctx.acct, coupon_id)
    if coupon is None or coupon.get("object") != "coupon":
        raise missing(coupon_id, param=param, kind="coupon")
    if not coupon["valid"]:
        raise SimAPIError(400, f"Coupon expired: {coupon_id}", param=param)
    return coupon


def make_discount(
    sim: Simulator,
    ctx: Ctx,
    coupon: dict[str, Any],
    *,
    customer: str | None = None,
    subscription: str | None = None,
    subscription_item: str | None = None,
    invoice: str | None = None,
    start: int | None = None,
) -> dict[str, Any]:
    """A discount applying a coupon, stored so that it can be expanded by id."""
    start = start if start is not None else sim.now()
    end = None
    if coupon["duration"] == "repeating" and coupon.get("duration_in_months"):
        end = add_months(start, int(coupon["duration_in_months"]))
    discount = {
        "id": sim.new_id("di"),
        "object": "discount",
        "checkout_session": None,
        "customer": customer,
        "customer_account": None,
        "end": end,
        "invoice": invoice,
        "invoice_item": None,
        "promotion_code": None,
        "source": {"coupon": coupon["id"], "type": "coupon"},
        "start": start,
        "subscription": subscription,
        "subscription_item": subscription_item,
        "created": start,
    }
    sim.save(ctx, discount)
    coupon["times_redeemed"] += 1
    if coupon.get("max_redemptions") and coupon["times_redeemed"] >= coupon["max_redemptions"]:
        coupon["valid"] = False
    sim.save(ctx, coupon)
    return discount


@route("GET", "/v1/coupons/{coupon_id}", resource="coupons")
def retrieve_coupon(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], coupon_id: str
) -> dict[str, Any]:
    return sim.get(ctx, coupon_id, kind="coupon", object_type="coupon")


@route("POST", "/v1/coupons/{coupon_id}", resource="coupons")
def update_coupon(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], coupon_id: str
) -> dict[str, Any]:
    check_params(params, {"metadata", "name", "currency_options"})
    coupon = sim.get(ctx, coupon_id, kind="coupon", object_type="coupon")
    old = dict(coupon)
    if "name" in params:
        coupon["name"] = params["name"] or None
    if "metadata" in params:
        coupon["metadata"] = forms.as_metadata(params, coupon["metadata"])
    sim.save(ctx, coupon)
    emit_updated(sim, ctx, "coupon.updated", old, coupon)
    return coupon


@route("DELETE", "/v1/coupons/{coupon_id}", resource="coupons")
def delete_coupon(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], coupon_id: str
) -> dict[str, Any]:
    coupon = sim.get(ctx, coupon_id, kind="coupon", object_type="coupon")
    sim.db.mark_deleted(ctx.acct, coupon_id)
    sim.emit(ctx, "coupon.deleted", coupon)
    return deleted_stub(coupon)


@route("GET", "/v1/coupons", resource="coupons")
def list_coupons(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, {"created", "ending_before", "limit", "starting_after"})
    return sim.paginate(ctx, params, "coupon", "/v1/coupons", created=forms.created_filter(params))
