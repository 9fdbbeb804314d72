"""What the backfill imports: one stream per Stripe list, and how to read it completely.

Each stream names its list endpoint, the parameters that make the list complete
(``status=all`` on subscriptions, which otherwise hides canceled ones), what to expand
(price ``tiers`` and coupon ``applies_to`` are only returned when asked for), the
permission it needs, and the nested lists Stripe truncates to ten entries (subscription
items, invoice lines, credit note lines) with where to fetch the rest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["STREAMS", "Nested", "Stream", "stream"]


@dataclass(frozen=True)
class Nested:
    """A list embedded in each object that Stripe cuts at ten entries (``has_more``)."""

    name: str
    #: ``{id}`` is the parent's id: ``/v1/invoices/{id}/lines``.
    path: str
    #: Extra parameters; ``{id}`` in a value is replaced too (``subscription={id}``).
    params: Mapping[str, str] = field(default_factory=dict)

    def request(self, parent_id: str) -> tuple[str, dict[str, Any]]:
        params = {k: v.replace("{id}", parent_id) for k, v in self.params.items()}
        return self.path.replace("{id}", parent_id), params


@dataclass(frozen=True)
class Stream:
    name: str
    object_type: str
    path: str
    permission: str
    params: Mapping[str, Any] = field(default_factory=dict)
    expand: tuple[str, ...] = ()
    nested: tuple[Nested, ...] = ()

    def list_params(self, limit: int = 100) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit, **self.params}
        if self.expand:
            params["expand"] = list(self.expand)
        return params


STREAMS: tuple[Stream, ...] = (
    Stream("products", "product", "/v1/products", "products"),
    Stream("prices", "price", "/v1/prices", "prices", expand=("data.tiers",)),
    Stream("plans", "plan", "/v1/plans", "plans", expand=("data.tiers",)),
    Stream("coupons", "coupon", "/v1/coupons", "coupons", expand=("data.applies_to",)),
    Stream("customers", "customer", "/v1/customers", "customers"),
    Stream(
        "subscriptions",
        "subscription",
        "/v1/subscriptions",
        "subscriptions",
        params={"status": "all"},
        expand=("data.discounts",),
        nested=(Nested("items", "/v1/subscription_items", {"subscription": "{id}"}),),
    ),
    Stream(
        "invoices",
        "invoice",
        "/v1/invoices",
        "invoices",
        nested=(Nested("lines", "/v1/invoices/{id}/lines"),),
    ),
    Stream("charges", "charge", "/v1/charges", "charges"),
    Stream("payment_intents", "payment_intent", "/v1/payment_intents", "payment_intents"),
    Stream("refunds", "refund", "/v1/refunds", "refunds"),
    Stream(
        "credit_notes",
        "credit_note",
        "/v1/credit_notes",
        "credit_notes",
        nested=(Nested("lines", "/v1/credit_notes/{id}/lines"),),
    ),
)

_BY_NAME = {s.name: s for s in STREAMS}


def stream(name: str) -> Stream:
    return _BY_NAME[name]
