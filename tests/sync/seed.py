"""A small but complete Stripe account in the simulator, built through its API handlers.

Every object is made the way a Stripe user makes it (products, prices, customers with
cards, subscriptions, invoices with many lines, refunds, credit notes, cancellations),
at creation times spread over months, so the slices have real ranges to cut.
"""

from __future__ import annotations

from typing import Any

from stripesync.sim.clock import advance
from stripesync.sim.core import Simulator

DAY = 86_400


def call(
    sim: Simulator,
    method: str,
    path: str,
    params: dict[str, Any] | None = None,
    *,
    key: str | None = None,
) -> dict[str, Any]:
    status, body, _ = sim.request(method, path, params or {}, key=key)
    assert status == 200, (method, path, status, body)
    return body


def seed_account(
    sim: Simulator,
    *,
    customers: int = 12,
    start: int = 1_700_000_000,
    months: int = 3,
    key: str | None = None,
) -> dict[str, Any]:
    """Build the account; returns a few ids the tests look at."""
    assert customers >= 3, "the seed gives the third customer a subscription with 12 items"
    sim.freeze(start)
    product = call(sim, "POST", "/v1/products", {"name": "Pro"}, key=key)
    addon = call(sim, "POST", "/v1/products", {"name": "Seats"}, key=key)
    monthly = call(
        sim,
        "POST",
        "/v1/prices",
        {
            "product": product["id"],
            "currency": "usd",
            "unit_amount": "4900",
            "recurring": {"interval": "month"},
        },
        key=key,
    )
    tiered = call(
        sim,
        "POST",
        "/v1/prices",
        {
            "product": addon["id"],
            "currency": "usd",
            "recurring": {"interval": "month"},
            "billing_scheme": "tiered",
            "tiers_mode": "graduated",
            "tiers": [
                {"up_to": "10", "unit_amount": "500"},
                {"up_to": "inf", "unit_amount": "300"},
            ],
        },
        key=key,
    )
    plan = call(
        sim,
        "POST",
        "/v1/plans",
        {
            "product": product["id"],
            "currency": "usd",
            "amount": "9900",
            "interval": "year",
            "id": "legacy-annual",
        },
        key=key,
    )
    coupon = call(sim, "POST", "/v1/coupons", {"percent_off": "20", "duration": "forever"}, key=key)
    # Twelve add-on prices, so one subscription has more items than Stripe embeds (10).
    extras = [
        call(
            sim,
            "POST",
            "/v1/prices",
            {
                "product": addon["id"],
                "currency": "usd",
                "unit_amount": str(100 + i),
                "recurring": {"interval": "month"},
            },
            key=key,
        )
        for i in range(12)
    ]
    subs: list[str] = []
    customer_ids: list[str] = []
    for i in range(customers):
        sim.freeze(start + i * DAY // 2)
        customer = call(
            sim,
            "POST",
            "/v1/customers",
            {
                "email": f"user{i}@example.com",
                "name": f"User {i}",
                "payment_method": "pm_card_visa",
                "invoice_settings": {"default_payment_method": "pm_card_visa"},
            },
            key=key,
        )
        customer_ids.append(customer["id"])
        items: list[dict[str, Any]] = [{"price": monthly["id"]}]
        if i % 4 == 1:
            items.append({"price": tiered["id"], "quantity": "12"})
        if i == 2:
            items = [{"price": p["id"]} for p in extras]
        params: dict[str, Any] = {"customer": customer["id"], "items": items}
        if i % 5 == 3:
            params["discounts"] = [{"coupon": coupon["id"]}]
        if i == 4:
            params = {"customer": customer["id"], "items": [{"price": plan["id"]}]}
        subs.append(call(sim, "POST", "/v1/subscriptions", params, key=key)["id"])
    # An invoice with more lines than Stripe embeds (10).
    sim.freeze(start + customers * DAY // 2 + 3600)
    for n in range(13):
        call(
            sim,
            "POST",
            "/v1/invoiceitems",
            {
                "customer": customer_ids[0],
                "amount": str(1000 + n),
                "currency": "usd",
                "description": f"Setup {n}",
            },
            key=key,
        )
    big = call(
        sim,
        "POST",
        "/v1/invoices",
        {"customer": customer_ids[0], "pending_invoice_items_behavior": "include"},
        key=key,
    )
    call(sim, "POST", f"/v1/invoices/{big['id']}/finalize", {}, key=key)
    call(sim, "POST", f"/v1/invoices/{big['id']}/pay", {}, key=key)
    # History: renewals month after month, then a cancellation, a refund, a credit note.
    advance(sim, start + months * 30 * DAY)
    sim.freeze(start + months * 30 * DAY + 60)
    call(sim, "DELETE", f"/v1/subscriptions/{subs[1]}", {}, key=key)
    charges = call(sim, "GET", "/v1/charges", {"limit": "3"}, key=key)["data"]
    if charges:
        call(sim, "POST", "/v1/refunds", {"charge": charges[0]["id"], "amount": "500"}, key=key)
    paid = [
        inv
        for inv in call(sim, "GET", "/v1/invoices", {"limit": "20"}, key=key)["data"]
        if inv["status"] == "paid" and inv["amount_paid"] > 0
    ]
    if paid:
        inv = paid[0]
        call(
            sim,
            "POST",
            "/v1/credit_notes",
            {"invoice": inv["id"], "amount": "300", "refund_amount": "300"},
            key=key,
        )
    return {
        "subscriptions": subs,
        "customers": customer_ids,
        "big_invoice": big["id"],
        "many_items_subscription": subs[2],
        "canceled": subs[1],
    }
