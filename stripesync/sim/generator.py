"""A deterministic SaaS business for the simulator: two years of history, then live.

``generate(sim, customers=N, seed=S)`` fills an account with what a subscription business
leaves in Stripe: a catalogue, customers signing up along a growth curve, trials,
coupons, upgrades and downgrades, seat changes, pauses, cancellations of every kind,
declining cards and recoveries, refunds, credit notes, deleted customers, app ids in
metadata. The same seed gives the same objects with the same ids.

Two phases, because the business must reach 100,000 customers in minutes *and* have
every recent event come out of the code that serves the API:

1. **History** (everything older than the last 30 days) is built in memory, customer by
   customer, with the pure builders of ``resources/*`` and ``billing``: no HTTP, no
   reads. A small event loop per customer interleaves what the customer does (planned
   in advance, :class:`Action`) with what Stripe does on its own, mirroring the clock's
   handlers (trial ends, renewals with their draft hour, retries, scheduled
   cancellations, pauses ending). Objects are written in bulk, with their links and the
   timers of whatever is still live. No events: Stripe keeps only 30 days of them.
2. **The last 30 days** are played through the real code: ``clock.advance`` runs the
   timers, and each planned action due in the window (signups, upgrades, cancellations,
   card updates, refunds, credit notes, deletions...) is an in-process API call
   (``sim.request``) made at its moment. Every event of the window is therefore one the
   API itself emitted, and replaying them rebuilds the objects they describe.

Planned actions are decided when a customer is planned, never from the state they find;
each checks at its moment that it still applies (a subscription canceled by failed
payments is not upgraded), the same way in both phases.
"""

from __future__ import annotations

import copy
import json
import math
import random
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from stripesync.sim import billing, clock
from stripesync.sim.core import DEFAULT_ACCOUNT, Ctx, Simulator
from stripesync.sim.resources import invoices as inv
from stripesync.sim.resources import payment_methods as pms
from stripesync.sim.resources import payments as pay
from stripesync.sim.resources import subscriptions as subs
from stripesync.sim.resources.catalog import plan_from_price
from stripesync.sim.resources.customers import new_customer
from stripesync.sim.timeutil import add_interval, add_months

DAY = 86400
WINDOW_SECONDS = 30 * DAY
#: The metadata key holding the app's own id (customer, or only the subscription).
LINK_KEY = "app_user_id"
TRIAL_DAYS = 14
#: Rows written per transaction during the bulk phase.
CHUNK_ROWS = 4000
#: Window actions (with the clock steps before each) per transaction.
WINDOW_BATCH = 2000
GOOD_CARDS = ("pm_card_visa", "pm_card_visa", "pm_card_mastercard", "pm_card_amex")
FAILING_CARD = "pm_card_chargeCustomerFail"
FEEDBACK = ("too_expensive", "unused", "missing_features", "switched_service", "low_quality")

_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_ALNUM_TABLE = bytes(ord(_ALNUM[i % len(_ALNUM)]) for i in range(256))


class GenerationError(RuntimeError):
    """The generator asked the simulator for something it refused (a generator bug)."""


# -- the catalogue ----------------------------------------------------------------------

PRODUCTS = {
    "starter": "Starter",
    "pro": "Pro",
    "business": "Business",
    "seats": "Team seats",
    "storage": "Storage",
    "enterprise": "Enterprise",
    "api": "API calls",
}
_TIERS_GRADUATED = [
    {"up_to": "10", "unit_amount": "500"},
    {"up_to": "50", "unit_amount": "400"},
    {"up_to": "inf", "unit_amount": "300"},
]
_TIERS_VOLUME = [
    {"up_to": "20", "unit_amount": "2000", "flat_amount": "10000"},
    {"up_to": "100", "unit_amount": "1500", "flat_amount": "10000"},
    {"up_to": "inf", "unit_amount": "1000", "flat_amount": "10000"},
]
#: price key -> (product key, currency, interval, interval_count, extra price params)
PRICES: dict[str, tuple[str, str, str, int, dict[str, Any]]] = {
    "starter_m_usd": ("starter", "usd", "month", 1, {"unit_amount": "1500"}),
    "starter_m_eur": ("starter", "eur", "month", 1, {"unit_amount": "1400"}),
    "starter_m_gbp": ("starter", "gbp", "month", 1, {"unit_amount": "1200"}),
    "starter_y_usd": ("starter", "usd", "year", 1, {"unit_amount": "15000"}),
    "pro_m_usd": ("pro", "usd", "month", 1, {"unit_amount": "4900"}),
    "pro_m_eur": ("pro", "eur", "month", 1, {"unit_amount": "4500"}),
    "pro_m_gbp": ("pro", "gbp", "month", 1, {"unit_amount": "3900"}),
    "pro_q_usd": ("pro", "usd", "month", 3, {"unit_amount": "13900"}),
    "pro_y_usd": ("pro", "usd", "year", 1, {"unit_amount": "49000"}),
    "pro_y_eur": ("pro", "eur", "year", 1, {"unit_amount": "45000"}),
    "business_m_usd": ("business", "usd", "month", 1, {"unit_amount": "9900"}),
    "business_m_eur": ("business", "eur", "month", 1, {"unit_amount": "8900"}),
    "seats_m_usd": ("seats", "usd", "month", 1, {"unit_amount": "1000"}),
    "seats_m_eur": ("seats", "eur", "month", 1, {"unit_amount": "900"}),
    "seats_m_gbp": ("seats", "gbp", "month", 1, {"unit_amount": "800"}),
    "storage_m_usd": (
        "storage",
        "usd",
        "month",
        1,
        {"billing_scheme": "tiered", "tiers_mode": "graduated", "tiers": _TIERS_GRADUATED},
    ),
    "enterprise_m_usd": (
        "enterprise",
        "usd",
        "month",
        1,
        {"billing_scheme": "tiered", "tiers_mode": "volume", "tiers": _TIERS_VOLUME},
    ),
    "api_m_usd": (
        "api",
        "usd",
        "month",
        1,
        {
            "unit_amount": "200",
            "transform_quantity": {"divide_by": "1000", "round": "up"},
            "recurring": {"usage_type": "metered"},
        },
    ),
}
#: The legacy plan, made through ``POST /v1/plans`` (a plan and its price share this id).
LEGACY_PLAN = "basic-monthly-2019"
#: Upgrade paths: same currency and interval, cheapest first.
LADDERS = (
    ("starter_m_usd", "pro_m_usd", "business_m_usd"),
    ("starter_m_eur", "pro_m_eur", "business_m_eur"),
    ("starter_m_gbp", "pro_m_gbp"),
    ("starter_y_usd", "pro_y_usd"),
    (LEGACY_PLAN, "pro_m_usd"),
)
#: Prices billed by quantity (seats, storage units, volume units).
QUANTITY_PRICES = {"seats_m_usd", "seats_m_eur", "seats_m_gbp", "storage_m_usd", "enterprise_m_usd"}
#: coupon id -> creation parameters (every duration; percent and amount; one applies_to).
COUPONS: dict[str, dict[str, Any]] = {
    "WELCOME20": {"percent_off": "20", "duration": "once", "name": "Welcome 20%"},
    "LAUNCH50": {
        "percent_off": "50",
        "duration": "repeating",
        "duration_in_months": "3",
        "name": "Launch: 50% for 3 months",
    },
    "PARTNER15": {"percent_off": "15", "duration": "forever", "name": "Partner discount"},
    "SAVE10USD": {
        "amount_off": "1000",
        "currency": "usd",
        "duration": "once",
        "name": "$10 off",
    },
    "EURO5": {
        "amount_off": "500",
        "currency": "eur",
        "duration": "repeating",
        "duration_in_months": "6",
        "name": "5 € off for 6 months",
    },
    "SEATS25": {"percent_off": "25", "duration": "forever", "name": "25% off seats"},
}


@dataclass
class Catalogue:
    """The stored catalogue objects, by the generator's keys."""

    products: dict[str, dict[str, Any]]
    prices: dict[str, dict[str, Any]]
    coupons: dict[str, dict[str, Any]]

    def product_name(self, product_id: str) -> str:
        for product in self.products.values():
            if product["id"] == product_id:
                return str(product["name"])
        return product_id

    def interval(self, price_key: str) -> tuple[str, int]:
        recurring = self.prices[price_key]["recurring"]
        return str(recurring["interval"]), int(recurring["interval_count"])


def _call(
    sim: Simulator, key: str, method: str, path: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    status, body, _ = sim.request(method, path, params or {}, key=key)
    if status != 200:
        raise GenerationError(f"{method} {path} answered {status}: {body.get('error')}")
    return body


def create_catalogue(sim: Simulator, key: str, acct: str) -> Catalogue:
    """Products, prices, the legacy plan and the coupons, through the API (at ``now``)."""
    products: dict[str, dict[str, Any]] = {}
    for pkey, name in PRODUCTS.items():
        products[pkey] = _call(
            sim, key, "POST", "/v1/products", {"name": name, "metadata": {"sku": pkey}}
        )
    prices: dict[str, dict[str, Any]] = {}
    for price_key, (pkey, currency, interval, count, extra) in PRICES.items():
        params: dict[str, Any] = {
            "product": products[pkey]["id"],
            "currency": currency,
            "lookup_key": price_key,
            "nickname": price_key.replace("_", " "),
            **copy.deepcopy(extra),
        }
        recurring = {"interval": interval, "interval_count": str(count)}
        recurring.update(extra.get("recurring") or {})
        params["recurring"] = recurring
        created = _call(sim, key, "POST", "/v1/prices", params)
        prices[price_key] = _stored(sim, acct, created["id"])
    plan = _call(
        sim,
        key,
        "POST",
        "/v1/plans",
        {
            "id": LEGACY_PLAN,
            "amount": "900",
            "currency": "usd",
            "interval": "month",
            "product": {"name": "Basic (legacy)"},
            "nickname": "Basic 2019",
        },
    )
    prices[LEGACY_PLAN] = _stored(sim, acct, plan["id"])
    legacy_product = _stored(sim, acct, prices[LEGACY_PLAN]["product"])
    products["legacy"] = legacy_product
    coupons: dict[str, dict[str, Any]] = {}
    for coupon_id, params in COUPONS.items():
        body = {"id": coupon_id, **params}
        if coupon_id == "SEATS25":
            body["applies_to"] = {"products": [products["seats"]["id"]]}
        _call(sim, key, "POST", "/v1/coupons", body)
        coupons[coupon_id] = _stored(sim, acct, coupon_id)
    return Catalogue(products, prices, coupons)


def _stored(sim: Simulator, acct: str, obj_id: str) -> dict[str, Any]:
    obj = sim.db.get(acct, obj_id)
    if obj is None:
        raise GenerationError(f"{obj_id} was created but is not stored")
    return obj


# -- planning: who the customers are and what they will do ------------------------------


@dataclass(order=True)
class Action:
    """Something a customer does at ``at`` (planned in advance; checked when due)."""

    at: int
    customer: int
    order: int
    kind: str = field(compare=False)
    slot: int = field(default=0, compare=False)
    args: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass
class SlotPlan:
    """One subscription a customer will take out."""

    price: str
    quantity: int | None
    coupon: str | None = None
    trial: str | None = None  # convert | cancel | pause | user_cancel
    metered_addon: bool = False


@dataclass
class CustomerPlan:
    index: int
    signup: int
    currency: str
    name: str
    email: str
    country: str
    city: str
    card: str | None
    app_id: str | None
    app_id_on_subscription: bool
    slots: list[SlotPlan]
    actions: list[Action]


_FIRST = [
    "Ada",
    "Alan",
    "Grace",
    "Linus",
    "Margaret",
    "Ken",
    "Barbara",
    "Edsger",
    "Frances",
    "Donald",
    "Radia",
    "Guido",
    "Anita",
    "Dennis",
    "Hedy",
    "Tim",
    "Katherine",
    "John",
    "Sophie",
    "Yukihiro",
    "Lin",
    "Carla",
    "Omar",
    "Priya",
    "Mateo",
    "Ingrid",
]
_LAST = [
    "Lovelace",
    "Turing",
    "Hopper",
    "Torvalds",
    "Hamilton",
    "Thompson",
    "Liskov",
    "Dijkstra",
    "Allen",
    "Knuth",
    "Perlman",
    "Rossum",
    "Borg",
    "Ritchie",
    "Lamarr",
    "Berners",
    "Johnson",
    "Backus",
    "Wilson",
    "Matsumoto",
    "Chen",
    "Rossi",
    "Haddad",
    "Patel",
    "Garcia",
    "Berg",
]
_WORDS = [
    "Blue",
    "Quiet",
    "Rapid",
    "Bright",
    "North",
    "Solar",
    "Paper",
    "Iron",
    "Cedar",
    "Lumen",
    "Orbit",
    "Pixel",
    "Harbor",
    "Maple",
    "Signal",
    "Summit",
    "Atlas",
    "Nimbus",
    "Copper",
    "Echo",
    "Prairie",
    "Vertex",
    "Willow",
    "Falcon",
]
_NOUNS = [
    "Labs",
    "Works",
    "Analytics",
    "Studio",
    "Cloud",
    "Systems",
    "Logistics",
    "Health",
    "Foods",
    "Robotics",
    "Media",
    "Bank",
    "Learning",
    "Travel",
    "Energy",
    "Security",
    "Design",
    "Data",
]
_PLACES = {
    "usd": (("US", "San Francisco"), ("US", "New York"), ("US", "Austin"), ("CA", "Toronto")),
    "eur": (("DE", "Berlin"), ("FR", "Paris"), ("NL", "Amsterdam"), ("ES", "Madrid")),
    "gbp": (("GB", "London"), ("GB", "Manchester"), ("GB", "Edinburgh")),
}

#: Scenarios forced on a few customers so that every feature occurs at any size.
SHOWCASE = (
    "trial_convert",
    "trial_cancel",
    "trial_pause",
    "trial_user_cancel",
    "fail_recover",
    "fail_cancel",
    "refund_full",
    "refund_partial",
    "credit_note",
    "pause_resumes",
    "pause_unpause",
    "cancel_period_end",
    "cancel_now",
    "cancel_at",
    "multi_sub",
    "deleted",
    "sub_metadata",
    "shared_a",
    "shared_b",
    "coupon_once",
    "coupon_repeating",
    "coupon_forever",
    "coupon_amount",
    "coupon_applies_to",
    "upgrade",
    "downgrade",
    "seats",
    "tiered",
    "legacy",
    "window_fail_recover",
    "window_refund",
    "window_upgrade",
    "window_cancel",
    "window_credit_note",
)


def signup_times(n: int, start: int, end: int, rng: random.Random) -> list[int]:
    """``n`` signup moments on an exponential growth curve (the last month ~4x the first)."""
    growth = math.log(4.0)
    span = end - start
    times = []
    for _ in range(n):
        u = rng.random()
        x = math.log(1 + u * (math.exp(growth) - 1)) / growth
        times.append(start + int(x * span))
    times.sort()
    return times


class Planner:
    """Decides, from the seed alone, who each customer is and what they will do."""

    def __init__(self, seed: int, catalogue: Catalogue, *, start: int, end: int) -> None:
        self.seed = seed
        self.catalogue = catalogue
        self.start = start
        self.end = end
        self.window_start = end - WINDOW_SECONDS
        self.app_ids: list[str] = []

    def showcase_for(self, signups: Sequence[int]) -> dict[int, str]:
        """Customers (by index) given a forced scenario: long-lived ones, spread out."""
        long_lived = [i for i, t in enumerate(signups) if t < self.end - 200 * DAY]
        if not long_lived:
            return {}
        chosen: dict[int, str] = {}
        step = max(1, len(long_lived) // (len(SHOWCASE) + 1))
        for n, name in enumerate(SHOWCASE):
            pos = min(len(long_lived) - 1, n * step + step // 2)
            index = long_lived[pos]
            while index in chosen and pos + 1 < len(long_lived):
                pos += 1
                index = long_lived[pos]
            if index not in chosen:
                chosen[index] = name
        return chosen

    def signup_for(self, signup: int, force: str | None) -> int:
        """A window scenario's customer signs up some months before a renewal that falls
        in the middle of the window, so that the scenario plays out there."""
        if force is None or not force.startswith("window_"):
            return signup
        months = 4 + (self.seed + len(force)) % 5
        return add_months(self.end - 12 * DAY - (signup % 7200), -months)

    def plan(self, index: int, signup: int, force: str | None = None) -> CustomerPlan:
        signup = self.signup_for(signup, force)
        rng = random.Random(self.seed * 1_000_003 + index * 7919 + 17)
        currency = rng.choices(("usd", "eur", "gbp"), (70, 20, 10))[0]
        if force in ("coupon_amount", "coupon_applies_to", "tiered", "legacy", "seats"):
            currency = "usd"
        if force == "coupon_repeating":
            currency = "usd"
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        company = f"{rng.choice(_WORDS)} {rng.choice(_NOUNS)}"
        domain = company.lower().replace(" ", "") + rng.choice((".com", ".io", ".co", ".dev"))
        country, city = rng.choice(_PLACES[currency])
        # the app's own id: on the customer (most), only on the subscription, or nowhere
        roll = rng.random()
        app_id: str | None = f"usr_{self.seed % 1000:03d}{index:07d}"
        on_sub = False
        if force == "sub_metadata" or (force is None and 0.80 <= roll < 0.92):
            on_sub = True
        elif force is None and roll >= 0.92:
            app_id = None
        if force == "shared_b" and self.app_ids:
            app_id = self.app_ids[-1]  # the same app account as an earlier customer
        elif force is None and app_id and not on_sub and self.app_ids and rng.random() < 0.02:
            app_id = self.app_ids[rng.randrange(len(self.app_ids))]
        if app_id and not on_sub and force != "shared_b":
            self.app_ids.append(app_id)
        if force == "shared_a" and app_id:
            self.app_ids.append(app_id)
        plan = CustomerPlan(
            index=index,
            signup=signup,
            currency=currency,
            name=company,
            email=f"{first}.{last}@{domain}".lower(),
            country=country,
            city=city,
            card=rng.choice(GOOD_CARDS),
            app_id=app_id,
            app_id_on_subscription=on_sub,
            slots=[],
            actions=[],
        )
        self._plan_life(plan, rng, force)
        plan.actions.sort()
        return plan

    # -- the story of one customer --

    def _price_for(self, rng: random.Random, currency: str, force: str | None) -> str:
        forced = {
            "seats": "seats_m_usd",
            "coupon_applies_to": "seats_m_usd",
            "tiered": "storage_m_usd",
            "legacy": LEGACY_PLAN,
            "upgrade": "starter_m_usd" if currency == "usd" else f"starter_m_{currency}",
            "downgrade": "business_m_usd" if currency == "usd" else f"pro_m_{currency}",
        }
        if force in forced:
            return forced[force]
        if force is not None:
            return f"pro_m_{currency}"  # monthly, so that the scenario surely plays out
        weights: dict[str, float] = {
            f"starter_m_{currency}": 30,
            f"pro_m_{currency}": 24,
            f"seats_m_{currency}": 10,
        }
        if currency in ("usd", "eur"):
            weights[f"business_m_{currency}"] = 5
            weights[f"pro_y_{currency}"] = 6
        if currency == "usd":
            weights.update(
                {
                    "starter_y_usd": 5,
                    "pro_q_usd": 5,
                    "storage_m_usd": 5,
                    "enterprise_m_usd": 3,
                    LEGACY_PLAN: 4,
                }
            )
        keys = list(weights)
        return rng.choices(keys, [weights[k] for k in keys])[0]

    def _quantity(self, rng: random.Random, price: str) -> int | None:
        if price.startswith("seats"):
            return rng.randint(2, 25)
        if price == "storage_m_usd":
            return rng.randint(3, 80)
        if price == "enterprise_m_usd":
            return rng.randint(10, 150)
        return 1

    def _coupon(
        self, rng: random.Random, currency: str, price: str, force: str | None
    ) -> str | None:
        forced = {
            "coupon_once": "WELCOME20",
            "coupon_repeating": "LAUNCH50",
            "coupon_forever": "PARTNER15",
            "coupon_amount": "SAVE10USD",
            "coupon_applies_to": "SEATS25",
        }
        if force in forced:
            return forced[force]
        if force is not None or rng.random() >= 0.18:
            return None
        choices = ["WELCOME20", "LAUNCH50", "PARTNER15"]
        if currency == "usd":
            choices.append("SAVE10USD")
        if currency == "eur":
            choices.append("EURO5")
        if price.startswith("seats"):
            choices.append("SEATS25")
        return rng.choice(choices)

    def _period_ends(self, start: int, price: str, first_end: int, until: int) -> Iterator[int]:
        """When the slot's periods are expected to end (for timing card trouble)."""
        interval, count = self.catalogue.interval(price)
        day = datetime.fromtimestamp(first_end, UTC).day
        end = first_end
        while end < until:
            yield end
            end = add_interval(end, interval, count, anchor_day=day)

    def _plan_life(self, plan: CustomerPlan, rng: random.Random, force: str | None) -> None:
        t0 = plan.signup
        order = iter(range(1_000))

        def act(at: int, kind: str, slot: int = 0, **args: Any) -> None:
            if at < t0:
                at = t0
            if at >= self.end:
                return
            plan.actions.append(Action(at, plan.index, next(order), kind, slot, args))

        price = self._price_for(rng, plan.currency, force)
        if price == LEGACY_PLAN and t0 > self.start + 240 * DAY and force != "legacy":
            price = "starter_m_usd"  # the legacy plan stopped being sold after 8 months
        slot = SlotPlan(
            price=price,
            quantity=self._quantity(rng, price),
            coupon=self._coupon(rng, plan.currency, price, force),
        )
        trial_forced = {
            "trial_convert": "convert",
            "trial_cancel": "cancel",
            "trial_pause": "pause",
            "trial_user_cancel": "user_cancel",
        }
        if force in trial_forced:
            slot.trial = trial_forced[force]
        elif force is None and rng.random() < 0.35:
            slot.trial = rng.choices(
                ("convert", "cancel", "pause", "user_cancel"), (65, 15, 10, 10)
            )[0]
        if slot.trial in ("cancel", "pause"):
            plan.card = None
        if force is None and price in ("pro_m_usd", "business_m_usd") and rng.random() < 0.15:
            slot.metered_addon = True
        plan.slots.append(slot)
        act(t0, "signup", 0)
        trial_end = t0 + TRIAL_DAYS * DAY if slot.trial else None
        interval, count = self.catalogue.interval(price)
        first_end = trial_end or add_interval(t0, interval, count)
        live_from = trial_end or t0

        # how the first subscription ends
        churn_at: int | None = None
        if slot.trial == "user_cancel":
            churn_at = t0 + rng.randint(2, TRIAL_DAYS - 2) * DAY + rng.randint(0, DAY)
            act(churn_at, "cancel_now", 0, feedback=rng.choice(FEEDBACK))
        elif slot.trial in ("cancel", "pause"):
            assert trial_end is not None
            churn_at = trial_end
            if slot.trial == "pause" and (force == "trial_pause" or rng.random() < 0.5):
                act(trial_end + rng.randint(3, 40) * DAY, "resume", 0, card=rng.choice(GOOD_CARDS))
        else:
            monthly_churn = {"month": 0.035, "year": 0.02}[interval]
            months = rng.expovariate(monthly_churn) + 0.5
            if force in ("cancel_period_end", "cancel_now", "cancel_at", "deleted"):
                months = rng.uniform(5, 9)
            elif force is not None:
                months = 10_000.0
            lifetime = int(months * 30.4 * DAY)
            if live_from + lifetime < self.end:
                churn_at = live_from + lifetime
                style = rng.choices(("period_end", "now", "at"), (50, 30, 20))[0]
                style = {
                    "cancel_period_end": "period_end",
                    "cancel_now": "now",
                    "cancel_at": "at",
                }.get(force or "", style)
                if style == "period_end":
                    act(churn_at, "cancel_period_end", 0)
                elif style == "now":
                    act(churn_at, "cancel_now", 0, feedback=rng.choice(FEEDBACK))
                else:
                    act(churn_at, "cancel_at", 0, days=rng.randint(10, 45))
        horizon = min(churn_at or self.end, self.end)

        # changes while live: upgrades, downgrades, seats
        if force in ("upgrade", "downgrade"):
            act(live_from + rng.randint(40, 90) * DAY, force, 0)
        elif force in ("seats", "tiered", "coupon_applies_to"):
            act(live_from + rng.randint(40, 90) * DAY, "quantity", 0, factor=1.5)
        elif force is None:
            t = live_from
            while True:
                t += int(rng.expovariate(1 / (300 * DAY)))
                if t >= horizon:
                    break
                if price in QUANTITY_PRICES:
                    act(t, "quantity", 0, factor=rng.choice((0.5, 0.8, 1.25, 1.5, 2.0)))
                else:
                    act(t, rng.choices(("upgrade", "downgrade"), (70, 30))[0], 0)

        # pauses
        if force in ("pause_resumes", "pause_unpause") or (force is None and rng.random() < 0.05):
            at = live_from + rng.randint(35, 200) * DAY
            if at < horizon:
                behavior = rng.choices(
                    ("void", "mark_uncollectible", "keep_as_draft"), (70, 20, 10)
                )[0]
                if force == "pause_unpause" or (force is None and rng.random() < 0.3):
                    act(at, "pause", 0, behavior=behavior, resumes_days=None)
                    act(at + rng.randint(20, 70) * DAY, "unpause", 0)
                else:
                    act(at, "pause", 0, behavior="void", resumes_days=rng.randint(25, 70))

        # a card that starts declining just before a renewal; most customers fix it
        window_force = force in ("window_fail_recover",)
        if force in ("fail_recover", "fail_cancel", "window_fail_recover") or (
            force is None and rng.random() < 0.06
        ):
            if window_force:
                lo, hi = self.window_start + 3 * DAY, self.end - 5 * DAY
            else:
                lo, hi = live_from + 20 * DAY, horizon
            ends = [e for e in self._period_ends(t0, price, first_end, self.end) if lo < e < hi]
            if ends:
                renewal = ends[0] if window_force else rng.choice(ends)
                act(renewal - rng.randint(1, 5) * DAY, "card_fail", 0)
                recover = force in ("fail_recover", "window_fail_recover") or (
                    force is None and rng.random() < 0.65
                )
                if recover:
                    act(
                        renewal + 3600 + rng.randint(1, 12) * DAY + rng.randint(0, DAY),
                        "card_fix",
                        0,
                        card=rng.choice(GOOD_CARDS),
                        pay_now=force == "window_fail_recover" or rng.random() < 0.4,
                    )

        # money back: refunds and credit notes, a few days after a renewal was paid
        def after_renewal(lo: int, hi: int) -> int | None:
            ends = [e for e in self._period_ends(t0, price, first_end, self.end) if lo < e < hi]
            if not ends:
                return None
            return rng.choice(ends) + 3600 + rng.randint(2, 6) * DAY

        money_back: dict[str, tuple[str, dict[str, Any]]] = {
            "refund_full": ("refund", {"fraction": None}),
            "refund_partial": ("refund", {"fraction": 0.4}),
            "credit_note": ("credit_note", {"fraction": 0.3}),
            "window_refund": ("refund", {"fraction": None}),
            "window_credit_note": ("credit_note", {"fraction": 0.5}),
        }
        if force in money_back:
            kind, args = money_back[force]
            when: int | None
            if force and force.startswith("window"):
                when = after_renewal(self.window_start - 5 * DAY, self.end - 8 * DAY)
            else:
                when = after_renewal(live_from, min(horizon, self.window_start - 10 * DAY))
            if when is not None:
                act(when, kind, 0, **args)
        elif force is None:
            if rng.random() < 0.06:
                when = after_renewal(live_from, horizon)
                if when is not None:
                    act(when, "refund", 0, fraction=rng.choice((None, None, 0.25, 0.5)))
            if rng.random() < 0.04:
                when = after_renewal(live_from, horizon)
                if when is not None:
                    act(when, "credit_note", 0, fraction=rng.choice((0.1, 0.25, 0.5)))

        # recent activity showcased in the window
        if force == "window_upgrade":
            act(self.window_start + rng.randint(2, 20) * DAY, "upgrade", 0)
        if force == "window_cancel":
            act(self.window_start + rng.randint(2, 20) * DAY, "cancel_period_end", 0)

        # more subscriptions: an add-on bought later, or a win-back after churning
        next_slot = 1
        if force == "multi_sub" or (force is None and rng.random() < 0.12):
            addon = f"seats_m_{plan.currency}" if not price.startswith("seats") else None
            if plan.currency == "usd":
                addon = rng.choice(("api_m_usd", "storage_m_usd", addon or "storage_m_usd"))
            if addon is not None:
                plan.slots.append(SlotPlan(addon, self._quantity(rng, addon)))
                act(live_from + rng.randint(20, 300) * DAY, "subscribe", next_slot)
                next_slot += 1
        if churn_at is not None and force in (None, "deleted"):
            if force == "deleted" or rng.random() < 0.12:
                act(churn_at + rng.randint(5, 60) * DAY, "delete_customer", 0)
            elif rng.random() < 0.18:
                again = self._price_for(rng, plan.currency, None)
                if again == LEGACY_PLAN:
                    again = "starter_m_usd"
                plan.slots.append(SlotPlan(again, self._quantity(rng, again)))
                act(churn_at + rng.randint(20, 200) * DAY, "subscribe", next_slot)


# -- fast ids for the bulk phase ---------------------------------------------------------


class _Ids:
    """Ids and random strings from the generator's own seed, for the pure builders.

    Stands in for the simulator where a builder only needs ``new_id``, ``random_chars``
    and ``rng`` (never the database or the clock). An id is a per-prefix counter in hex
    (so bulk inserts append to the store's indexes) followed by random characters.
    """

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.counters: dict[str, int] = {}
        self._pool = ""
        self._pos = 0

    def random_chars(self, n: int) -> str:
        if self._pos + n > len(self._pool):
            self._pool = self.rng.randbytes(1 << 16).translate(_ALNUM_TABLE).decode("ascii")
            self._pos = 0
        start = self._pos
        self._pos += n
        return self._pool[start : self._pos]

    def digits(self, n: int) -> str:
        return str(self.rng.getrandbits(64) % 10**n).zfill(n)

    def new_id(self, prefix: str) -> str:
        n = self.counters.get(prefix, 0) + 1
        self.counters[prefix] = n
        return f"{prefix}_1Gen{n:07x}{self.random_chars(13)}"

    def now(self) -> int:
        raise GenerationError("a builder asked for the clock during the bulk phase")

    @property
    def as_sim(self) -> Simulator:
        return cast(Simulator, self)


# -- the bulk phase: one customer's history, in memory -----------------------------------

_LIVE = ("active", "trialing", "past_due", "unpaid", "paused", "incomplete")


@dataclass
class Handle:
    """What the window phase needs to know of a customer built by the bulk phase."""

    plan: CustomerPlan
    customer: str | None = None
    slots: dict[int, str] = field(default_factory=dict)
    deleted: bool = False


class _Book:
    """Everything of one customer while its history is built."""

    def __init__(self, plan: CustomerPlan) -> None:
        self.plan = plan
        self.objects: dict[str, dict[str, Any]] = {}
        self.customer: dict[str, Any] = {}
        self.deleted = False
        self.cards: list[dict[str, Any]] = []
        self.slots: dict[int, dict[str, Any]] = {}
        self.sub_timers: dict[str, int] = {}
        self.invoice_timers: dict[str, int] = {}
        self.pending: list[dict[str, Any]] = []
        self.discounts: dict[str, dict[str, Any]] = {}
        self.charge_templates: dict[tuple[str, str], dict[str, Any]] = {}
        self.intent_template: dict[str, Any] | None = None

    def add(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.objects[obj["id"]] = obj
        return obj

    def sub(self, sub_id: str | None) -> dict[str, Any] | None:
        found = self.objects.get(sub_id or "")
        return found if found is not None and found.get("object") == "subscription" else None


class HistoryBuilder:
    """Builds a customer's history with the pure builders, mirroring the clock handlers
    and the request handlers of ``resources/*`` (see the module docstring)."""

    def __init__(self, catalogue: Catalogue, ids: _Ids, ctx: Ctx, *, window_start: int) -> None:
        self.catalogue = catalogue
        self.ids = ids
        self.ctx = ctx
        self.window_start = window_start
        self.redeemed: dict[str, int] = {}
        self.names = {p["id"]: str(p["name"]) for p in catalogue.products.values()}
        self.price_keys = {p["id"]: k for k, p in catalogue.prices.items()}

    def new_id(self, prefix: str) -> str:
        return self.ids.new_id(prefix)

    # -- the event loop --

    def build(self, plan: CustomerPlan) -> tuple[_Book, list[Action]]:
        """The customer's history up to the window; returns it and the actions left."""
        book = _Book(plan)
        actions = plan.actions
        i = 0
        while True:
            due = self._next_timer(book)
            next_action = actions[i].at if i < len(actions) else None
            if due is not None and (next_action is None or due[0] <= next_action):
                if due[0] >= self.window_start:
                    break
                self._run_timer(book, *due)
                continue
            if next_action is None or next_action >= self.window_start:
                break
            self._run_action(book, actions[i])
            i += 1
        return book, actions[i:]

    def _next_timer(self, book: _Book) -> tuple[int, str, str] | None:
        best: tuple[int, str, str] | None = None
        for kind, timers in (("subscription", book.sub_timers), ("invoice", book.invoice_timers)):
            for obj_id, at in timers.items():
                if best is None or (at, obj_id) < (best[0], best[2]):
                    best = (at, kind, obj_id)
        return best

    def _run_timer(self, book: _Book, at: int, kind: str, obj_id: str) -> None:
        timers = book.sub_timers if kind == "subscription" else book.invoice_timers
        del timers[obj_id]  # the clock pops a timer before running it
        if kind == "subscription":
            self._sub_timer(book, book.objects[obj_id], at)
        else:
            self._invoice_timer(book, book.objects[obj_id], at)

    # -- saving: what the store's timers would hold --

    def _save_sub(self, book: _Book, sub: dict[str, Any]) -> None:
        at = subs.next_action_at(sub)
        if at is None:
            book.sub_timers.pop(sub["id"], None)
        else:
            book.sub_timers[sub["id"]] = at

    def _save_invoice(self, book: _Book, invoice: dict[str, Any]) -> None:
        at = inv.next_action_at(invoice)
        if at is None:
            book.invoice_timers.pop(invoice["id"], None)
        else:
            book.invoice_timers[invoice["id"]] = int(at)

    # -- customers and cards --

    def _signup(self, book: _Book, at: int) -> None:
        plan = book.plan
        customer = new_customer(self.ids.as_sim, self.ctx, created=at)
        customer.update(customer_fields(plan))
        book.customer = book.add(customer)
        if plan.card:
            self._attach_default(book, plan.card, at)
        self._subscribe(book, 0, at)

    def _attach_default(self, book: _Book, magic: str, at: int) -> dict[str, Any]:
        number = pms.magic_number(magic)
        assert number is not None
        pm = pms.new_payment_method(self.ids.as_sim, self.ctx, number, created=at)
        pm["customer"] = book.customer["id"]
        if pm["card"]["checks"].get("cvc_check") == "unchecked":
            pm["card"]["checks"]["cvc_check"] = "pass"
        book.add(pm)
        book.cards.append(pm)
        book.customer["invoice_settings"]["default_payment_method"] = pm["id"]
        return pm

    def _instrument(self, book: _Book) -> dict[str, Any] | None:
        default = book.customer["invoice_settings"].get("default_payment_method")
        if default and default in book.objects:
            return book.objects[default]
        return book.cards[0] if book.cards else None

    # -- discounts --

    def _discount(self, book: _Book, coupon_id: str, sub_id: str, at: int) -> str:
        coupon = self.catalogue.coupons[coupon_id]
        end = None
        if coupon["duration"] == "repeating" and coupon.get("duration_in_months"):
            end = add_months(at, int(coupon["duration_in_months"]))
        discount = {
            "id": self.new_id("di"),
            "object": "discount",
            "checkout_session": None,
            "customer": book.customer["id"],
            "customer_account": None,
            "end": end,
            "invoice": None,
            "invoice_item": None,
            "promotion_code": None,
            "source": {"coupon": coupon_id, "type": "coupon"},
            "start": at,
            "subscription": sub_id,
            "subscription_item": None,
            "created": at,
        }
        self.redeemed[coupon_id] = self.redeemed.get(coupon_id, 0) + 1
        book.discounts[discount["id"]] = book.add(discount)
        return str(discount["id"])

    def _active(self, book: _Book, discount_id: str, at: int) -> bool:
        discount = book.discounts.get(discount_id)
        if discount is None:
            return False
        if discount.get("end") is not None and int(discount["end"]) <= at:
            return False
        return not discount.get("_consumed")

    # -- subscriptions --

    def _subscribe(self, book: _Book, slot: int, at: int) -> None:
        plan = book.plan
        slot_plan = plan.slots[slot]
        sub_id = self.new_id("sub")
        prices = [self.catalogue.prices[slot_plan.price]]
        quantities: list[int | None] = [None if subs.is_metered(prices[0]) else slot_plan.quantity]
        if slot_plan.metered_addon:
            prices.append(self.catalogue.prices["api_m_usd"])
            quantities.append(None)
        trial_end = at + TRIAL_DAYS * DAY if slot_plan.trial and slot == 0 else None
        interval, count = self.catalogue.interval(slot_plan.price)
        anchor = trial_end or at
        anchor_day = datetime.fromtimestamp(anchor, UTC).day
        period = (
            (at, trial_end)
            if trial_end is not None
            else (at, add_interval(at, interval, count, anchor_day=anchor_day))
        )
        items = [
            subs.build_item(
                item_id=self.new_id("si"),
                subscription_id=sub_id,
                price=price,
                quantity=quantity,
                created=at,
                period_start=period[0],
                period_end=period[1],
            )
            for price, quantity in zip(prices, quantities, strict=True)
        ]
        sub = subs.build_subscription(
            sub_id=sub_id,
            customer=book.customer["id"],
            items=items,
            created=at,
            currency=prices[0]["currency"],
            status="trialing" if trial_end else "incomplete",
            livemode=self.ctx.livemode,
            billing_cycle_anchor=anchor,
            start_date=at,
            metadata=subscription_metadata(plan),
            trial_start=at if trial_end else None,
            trial_end=trial_end,
            missing_payment_method=missing_payment_method(slot_plan)
            if slot == 0
            else "create_invoice",
        )
        if slot_plan.coupon and slot == 0:
            sub["discounts"] = [self._discount(book, slot_plan.coupon, sub_id, at)]
        if book.customer.get("currency") is None:
            book.customer["currency"] = sub["currency"]
        book.add(sub)
        for item in items:
            book.add(item)
        book.slots[slot] = sub
        lines = self._period_lines(book, sub, period[0], period[1], trial=trial_end is not None)
        invoice = self._bill(book, sub, "subscription_create", lines, at)
        self._save_sub(book, sub)
        self._finalize(book, invoice, at, collect=True)

    def _period_lines(
        self, book: _Book, sub: dict[str, Any], start: int, end: int, *, trial: bool = False
    ) -> list[dict[str, Any]]:
        lines = []
        for item in sub["items"]["data"]:
            price = item["price"]
            quantity = int(item.get("quantity") or 0)
            name = self.names.get(price["product"], price["product"])
            description = None
            if trial:
                amount = 0
                description = f"Trial period for {name}"
            elif subs.is_metered(price):
                amount, quantity = 0, 0
            else:
                amount = billing.line_amount(price, quantity)
            line = inv.build_subscription_line(
                line_id=self.new_id("il"),
                subscription_id=sub["id"],
                item_id=item["id"],
                price=price,
                quantity=quantity,
                product_name=name,
                period_start=start,
                period_end=end,
                livemode=self.ctx.livemode,
                amount=amount,
                description=description,
                discounts=[d for d in item["discounts"] if self._active(book, d, start)],
            )
            item["_billed"] = {"line": line["id"], "invoice": None}
            lines.append(line)
        return lines

    def _pending_for(
        self, book: _Book, sub: dict[str, Any], *, only_subscription: bool
    ) -> list[dict[str, Any]]:
        taken = []
        for item in book.pending:
            if item["currency"] != sub["currency"]:
                continue
            owner = ((item.get("parent") or {}).get("subscription_details") or {}).get(
                "subscription"
            )
            if only_subscription and owner != sub["id"]:
                continue
            if owner is not None and owner != sub["id"]:
                found = book.sub(owner)
                if found is not None and found["status"] not in ("canceled", "incomplete_expired"):
                    continue
            taken.append(item)
        return taken

    def _bill(
        self,
        book: _Book,
        sub: dict[str, Any],
        reason: str,
        lines: list[dict[str, Any]],
        at: int,
        *,
        period: tuple[int, int] | None = None,
        pending: str = "customer",
    ) -> dict[str, Any]:
        items = (
            self._pending_for(book, sub, only_subscription=pending == "subscription")
            if pending != "none"
            else []
        )
        start, end = period if period is not None else (at, at)
        discount_ids = self._invoice_discounts(book, sub, at)
        discounts = [book.discounts[d] for d in discount_ids]
        invoice = inv.build_invoice(
            invoice_id=self.new_id("in"),
            customer=book.customer,
            currency=sub["currency"],
            created=at,
            livemode=self.ctx.livemode,
            billing_reason=reason,
            subscription=sub,
            lines=lines,
            discounts=discounts,
            coupons={
                d["source"]["coupon"]: self.catalogue.coupons[d["source"]["coupon"]]
                for d in discounts
            },
            collection_method=sub["collection_method"],
            days_until_due=sub.get("days_until_due"),
            auto_advance=True,
            period_start=start,
            period_end=end,
        )
        invoice["discounts"] = discount_ids
        if items or any(line.get("discounts") for line in lines):
            attached = []
            for item in items:
                item["invoice"] = invoice["id"]
                book.pending.remove(item)
                attached.append(
                    inv.build_item_line(item, line_id=self.new_id("il"), invoice_id=invoice["id"])
                )
            invoice["lines"]["data"][0:0] = attached
            self._recompute(book, invoice)
        for item in sub["items"]["data"]:
            billed = item.get("_billed")
            if billed and billed.get("invoice") is None:
                billed["invoice"] = invoice["id"]
        for entry in invoice["total_discount_amounts"]:
            discount = book.discounts.get(entry["discount"])
            if not entry["amount"] or discount is None:
                continue
            coupon = self.catalogue.coupons.get(discount["source"]["coupon"])
            if coupon is not None and coupon["duration"] == "once":
                discount["_consumed"] = invoice["id"]
        sub["latest_invoice"] = invoice["id"]
        book.add(invoice)
        self._save_invoice(book, invoice)
        return invoice

    def _invoice_discounts(self, book: _Book, sub: dict[str, Any], at: int) -> list[str]:
        return [d for d in sub.get("discounts") or [] if self._active(book, d, at)]

    def _recompute(self, book: _Book, invoice: dict[str, Any]) -> None:
        found: list[dict[str, Any]] = []
        seen: set[str] = set()
        for discount_id in invoice.get("discounts") or []:
            if discount_id in book.discounts and discount_id not in seen:
                seen.add(discount_id)
                found.append(book.discounts[discount_id])
        for line in invoice["lines"]["data"]:
            for discount_id in line.get("discounts") or []:
                if discount_id in book.discounts and discount_id not in seen:
                    seen.add(discount_id)
                    found.append({**book.discounts[discount_id], "_line_only": True})
        coupons = {
            d["source"]["coupon"]: self.catalogue.coupons[d["source"]["coupon"]] for d in found
        }
        inv.apply_totals(invoice, found, coupons)

    # -- invoices: finalize, collect, settle --

    def _finalize(
        self,
        book: _Book,
        invoice: dict[str, Any],
        at: int,
        *,
        collect: bool = False,
        settle_subscription: bool = True,
    ) -> None:
        customer = book.customer
        sequence = int(customer.get("next_invoice_sequence") or 1)
        inv.finalize_fields(
            invoice,
            at=at,
            number=f"{customer['invoice_prefix']}-{sequence:04d}",
            starting_balance=int(customer.get("balance") or 0),
            account=self.ctx.account,
            token=self.ids.random_chars(24),
        )
        customer["next_invoice_sequence"] = sequence + 1
        customer["balance"] = (
            invoice["ending_balance"] if invoice["ending_balance"] is not None else 0
        )
        self._save_invoice(book, invoice)
        if invoice["amount_remaining"] <= 0:
            self._settle(book, invoice, at, settle_subscription)
        elif collect and invoice["collection_method"] == "charge_automatically":
            self._collect(book, invoice, at, settle_subscription=settle_subscription)

    def _settle(
        self, book: _Book, invoice: dict[str, Any], at: int, settle_subscription: bool = True
    ) -> None:
        inv.paid_fields(invoice, at=at)
        self._save_invoice(book, invoice)
        if settle_subscription and invoice.get("subscription"):
            self._invoice_settled(book, invoice, paid=True)

    def _collect(
        self, book: _Book, invoice: dict[str, Any], at: int, *, settle_subscription: bool = True
    ) -> bool:
        instrument = self._instrument(book)
        # one payment intent per invoice: a retry confirms the waiting one again
        attempts = invoice["_payments"]
        waiting = book.objects.get(attempts[-1]["payment_intent"] or "") if attempts else None
        if waiting is not None and waiting["status"] not in (
            "requires_payment_method",
            "requires_confirmation",
        ):
            waiting = None
        if waiting is not None:
            intent = waiting
            intent["amount"] = invoice["amount_remaining"]
        else:
            intent = self._intent(book, invoice, at)
            book.add(intent)
        charge: dict[str, Any] | None = None
        if instrument is not None:
            intent["payment_method"] = instrument["id"]
            intent["status"] = "requires_confirmation"
            charge = self._attempt(book, intent, instrument, at)
        record = {
            "payment_intent": intent["id"],
            "charge": charge["id"] if charge else None,
            "status": intent["status"],
        }
        if waiting is not None:
            attempts[-1] = record
        else:
            attempts.append(record)
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        if intent["status"] == "succeeded":
            self._settle(book, invoice, at, settle_subscription)
            return True
        retries = len(inv.RETRY_SCHEDULE_DAYS)
        if (
            invoice["collection_method"] == "charge_automatically"
            and invoice["auto_advance"]
            and invoice["attempt_count"] <= retries
            and invoice["billing_reason"] != "subscription_create"
        ):
            invoice["next_payment_attempt"] = (
                at + DAY * inv.RETRY_SCHEDULE_DAYS[invoice["attempt_count"] - 1]
            )
        else:
            invoice["next_payment_attempt"] = None
        self._save_invoice(book, invoice)
        if settle_subscription and invoice.get("subscription"):
            self._invoice_settled(book, invoice, paid=False)
        return False

    def _attempt(
        self, book: _Book, intent: dict[str, Any], instrument: dict[str, Any], at: int
    ) -> dict[str, Any]:
        decline = pms.card_decline(self.ctx, instrument)
        charge = self._charge(book, intent, instrument, decline, at)
        book.add(charge)
        intent["latest_charge"] = charge["id"]
        if decline is None:
            intent["status"] = "succeeded"
            intent["amount_received"] = intent["amount"]
            intent["last_payment_error"] = None
            intent["payment_method"] = instrument["id"]
        else:
            intent["status"] = "requires_payment_method"
            intent["payment_method"] = None
            intent["last_payment_error"] = pay._payment_error(decline, charge, instrument)
        return charge

    def _charge(
        self,
        book: _Book,
        intent: dict[str, Any],
        instrument: dict[str, Any],
        decline: pms.Decline | None,
        at: int,
    ) -> dict[str, Any]:
        """``payments.new_charge`` for this intent: the card's first charge is built by it,
        later ones copy that template and change what differs from charge to charge."""
        key = (instrument["id"], intent["currency"])
        template = book.charge_templates.get(key)
        if template is None:
            template = pay.new_charge(
                self.ids.as_sim,
                self.ctx,
                amount=0,
                currency=intent["currency"],
                customer=intent.get("customer"),
                instrument=instrument,
                decline=decline,
                receipt_email=book.customer.get("email"),
                created=at,
            )
            book.charge_templates[key] = template
        amount = int(intent["amount"])
        ok = decline is None
        charge_id = self.new_id("ch")
        card = template["payment_method_details"]["card"]
        charge = {
            **template,
            "id": charge_id,
            "amount": amount,
            "amount_captured": amount if ok else 0,
            "balance_transaction": self.new_id("txn") if ok else None,
            "created": at,
            "description": intent.get("description"),
            "metadata": dict(intent.get("metadata") or {}),
            "payment_intent": intent["id"],
            "payment_method_details": {
                "card": {
                    **card,
                    "amount_authorized": amount if ok else None,
                    "authorization_code": self.ids.digits(6) if ok else None,
                    "network_transaction_id": self.ids.digits(15) if ok else None,
                    "overcapture": {**card["overcapture"], "maximum_amount_capturable": amount},
                },
                "type": "card",
            },
            "receipt_url": f"https://pay.stripe.com/receipts/payment/{self.ids.random_chars(96)}",
            "_invoice": intent.get("_invoice"),
            "_refunds": {
                "object": "list",
                "data": [],
                "has_more": False,
                "url": f"/v1/charges/{charge_id}/refunds",
            },
        }
        if template.get("receipt_number") is not None:
            charge["receipt_number"] = f"{self.ids.digits(4)}-{self.ids.digits(4)}"
        return charge

    def _intent(self, book: _Book, invoice: dict[str, Any], at: int) -> dict[str, Any]:
        """``payments.new_payment_intent`` for an invoice (a copy of the customer's first)."""
        description = inv.PAYMENT_DESCRIPTIONS.get(invoice["billing_reason"], "Payment for Invoice")
        template = book.intent_template
        if template is None:
            template = pay.new_payment_intent(
                self.ids.as_sim,
                self.ctx,
                amount=0,
                currency=invoice["currency"],
                customer=book.customer["id"],
                created=at,
            )
            book.intent_template = template
        intent_id = self.new_id("pi")
        return {
            **template,
            "id": intent_id,
            "amount": invoice["amount_remaining"],
            "client_secret": f"{intent_id}_secret_{self.ids.random_chars(25)}",
            "created": at,
            "currency": invoice["currency"],
            "description": description,
            "metadata": {},
            "_invoice": invoice["id"],
        }

    def _invoice_settled(self, book: _Book, invoice: dict[str, Any], *, paid: bool) -> None:
        sub = book.sub(invoice.get("subscription"))
        if sub is None:
            return
        latest = sub.get("latest_invoice") == invoice["id"]
        if paid and latest and sub["status"] in ("incomplete", "past_due", "unpaid"):
            sub["status"] = "active"
        elif (
            not paid
            and sub["status"] == "active"
            and invoice["billing_reason"] != "subscription_create"
        ):
            sub["status"] = "past_due"
        else:
            return
        self._save_sub(book, sub)

    def _void(self, book: _Book, invoice: dict[str, Any], at: int) -> None:
        for attempt in invoice.get("_payments") or []:
            intent = book.objects.get(attempt.get("payment_intent") or "")
            if (
                attempt.get("status") != "succeeded"
                and intent is not None
                and intent["status"] in pay.CANCELABLE
            ):
                intent["status"] = "canceled"
                intent["canceled_at"] = at
                intent["cancellation_reason"] = "void_invoice"
        invoice["status"] = "void"
        invoice["status_transitions"]["voided_at"] = at
        invoice["next_payment_attempt"] = None
        invoice["auto_advance"] = False
        self._save_invoice(book, invoice)

    def _mark_uncollectible(self, book: _Book, invoice: dict[str, Any], at: int) -> None:
        invoice["status"] = "uncollectible"
        invoice["status_transitions"]["marked_uncollectible_at"] = at
        invoice["next_payment_attempt"] = None
        invoice["auto_advance"] = False
        self._save_invoice(book, invoice)

    def _invoice_timer(self, book: _Book, invoice: dict[str, Any], at: int) -> None:
        status = invoice["status"]
        if status == "draft" and invoice.get("auto_advance"):
            self._finalize(book, invoice, at, collect=True)
            return
        if status != "open" or invoice["collection_method"] == "send_invoice":
            return
        self._collect(book, invoice, at)
        if (
            invoice["status"] == "open"
            and invoice["next_payment_attempt"] is None
            and invoice.get("subscription")
        ):
            sub = book.sub(invoice["subscription"])
            if sub is not None and sub["status"] in ("past_due", "active"):
                self._cancel(book, sub, at, reason="payment_failed")

    # -- what the clock does to a subscription --

    def _sub_timer(self, book: _Book, sub: dict[str, Any], at: int) -> None:
        status = sub["status"]
        if status == "incomplete" and at >= int(sub["created"]) + subs.INCOMPLETE_EXPIRY_SECONDS:
            sub["status"] = "incomplete_expired"
            sub["ended_at"] = at
            self._save_sub(book, sub)
            latest = book.objects.get(sub.get("latest_invoice") or "")
            if latest is not None and latest["status"] == "open":
                self._void(book, latest, at)
            return
        if subs.trial_will_end_due(sub, at) and at < int(sub["trial_end"]):
            sub["_trial_will_end_sent"] = True
            self._save_sub(book, sub)
            return
        if sub.get("cancel_at") and at >= int(sub["cancel_at"]) and status != "canceled":
            self._cancel(book, sub, at, scheduled=True)
            return
        pause = sub.get("pause_collection")
        if pause and pause.get("resumes_at") and at >= int(pause["resumes_at"]):
            sub["pause_collection"] = None
            self._save_sub(book, sub)
            return
        if status == "trialing" and sub.get("trial_end") and at >= int(sub["trial_end"]):
            self._end_trial(book, sub, at)
            return
        if status in ("active", "past_due", "unpaid") and at >= subs.period_of(sub)[1]:
            self._renew(book, sub, subs.period_of(sub)[1])
            return
        upcoming = subs.next_action_at(sub)
        if upcoming is not None and upcoming > at:
            book.sub_timers[sub["id"]] = upcoming

    def _end_trial(self, book: _Book, sub: dict[str, Any], at: int) -> None:
        if sub["collection_method"] == "charge_automatically" and self._instrument(book) is None:
            behavior = sub["trial_settings"]["end_behavior"]["missing_payment_method"]
            if behavior == "cancel":
                self._cancel(book, sub, at)
                return
            if behavior == "pause":
                sub["status"] = "paused"
                self._save_sub(book, sub)
                return
        sub["status"] = "active"
        self._renew(book, sub, at)

    def _renew(self, book: _Book, sub: dict[str, Any], at: int) -> None:
        sub["discounts"] = [d for d in sub.get("discounts") or [] if self._active(book, d, at)]
        for item in sub["items"]["data"]:
            item["discounts"] = [d for d in item["discounts"] if self._active(book, d, at)]
        interval, count = subs.recurring_of(sub)
        anchor_day = datetime.fromtimestamp(int(sub["billing_cycle_anchor"]), UTC).day
        previous = subs.period_of(sub)
        end = add_interval(at, interval, count, anchor_day=anchor_day)
        for item in sub["items"]["data"]:
            item["current_period_start"] = at
            item["current_period_end"] = end
        lines = self._period_lines(book, sub, at, end)
        invoice = self._bill(book, sub, "subscription_cycle", lines, at, period=previous)
        self._save_sub(book, sub)
        pause = sub.get("pause_collection")
        if pause:
            invoice["auto_advance"] = False
            if pause["behavior"] == "keep_as_draft":
                invoice["automatically_finalizes_at"] = None
                invoice["next_payment_attempt"] = None
                self._save_invoice(book, invoice)
            else:
                self._finalize(book, invoice, at, settle_subscription=False)
                if invoice["status"] == "open":
                    if pause["behavior"] == "void":
                        self._void(book, invoice, at)
                    else:
                        self._mark_uncollectible(book, invoice, at)

    def _cancel(
        self,
        book: _Book,
        sub: dict[str, Any],
        at: int,
        *,
        reason: str = "cancellation_requested",
        scheduled: bool = False,
        feedback: str | None = None,
    ) -> None:
        sub["status"] = "canceled"
        if not (scheduled and sub.get("canceled_at")):
            sub["canceled_at"] = at
        sub["ended_at"] = at
        sub["pending_update"] = None
        sub["cancellation_details"]["reason"] = reason
        if feedback is not None:
            sub["cancellation_details"]["feedback"] = feedback
        self._save_sub(book, sub)
        # Stripe stops collecting the customer's open invoices once a subscription ends
        for obj in book.objects.values():
            if obj["object"] == "invoice" and obj["status"] == "open" and obj["auto_advance"]:
                obj["auto_advance"] = False
                obj["next_payment_attempt"] = None
                self._save_invoice(book, obj)

    # -- what the customer does --

    def _run_action(self, book: _Book, action: Action) -> None:
        if action.kind == "signup":
            self._signup(book, action.at)
            return
        if book.deleted or not book.customer:
            return
        at = action.at
        sub = book.slots.get(action.slot)
        kind = action.kind
        if kind == "subscribe":
            if action.slot not in book.slots:
                self._subscribe(book, action.slot, at)
        elif kind == "card_fail":
            self._attach_default(book, FAILING_CARD, at)
        elif kind == "card_fix":
            self._attach_default(book, action.args["card"], at)
            if action.args.get("pay_now"):
                for slot_sub in list(book.slots.values()):
                    latest = book.objects.get(slot_sub.get("latest_invoice") or "")
                    if latest is not None and latest["status"] == "open":
                        self._collect(book, latest, at)
        elif kind == "delete_customer":
            if not book.invoice_timers:
                for slot_sub in book.slots.values():
                    if slot_sub["status"] not in ("canceled", "incomplete_expired"):
                        self._cancel(book, slot_sub, at)
                book.deleted = True
        elif sub is not None:
            self._sub_action(book, sub, action)

    def _sub_action(self, book: _Book, sub: dict[str, Any], action: Action) -> None:
        at, kind, args = action.at, action.kind, action.args
        status = sub["status"]
        if kind in ("upgrade", "downgrade", "quantity"):
            if status not in ("active", "trialing", "past_due"):
                return
            change = plan_change(self.catalogue, sub, kind, args)
            if change is not None:
                self._change_item(book, sub, at, *change)
        elif kind == "pause":
            if status in ("active", "past_due") and not sub.get("pause_collection"):
                days = args.get("resumes_days")
                sub["pause_collection"] = {
                    "behavior": args["behavior"],
                    "resumes_at": at + int(days) * DAY if days else None,
                }
                self._save_sub(book, sub)
        elif kind == "unpause":
            if sub.get("pause_collection") and status not in ("canceled", "incomplete_expired"):
                sub["pause_collection"] = None
                self._save_sub(book, sub)
        elif kind == "cancel_now":
            if status not in ("canceled", "incomplete_expired"):
                self._cancel(book, sub, at, feedback=args.get("feedback"))
        elif kind in ("cancel_period_end", "cancel_at"):
            if status in ("active", "trialing", "past_due") and not sub.get("cancel_at"):
                if kind == "cancel_period_end":
                    sub["cancel_at"] = subs.period_of(sub)[1]
                    sub["cancel_at_period_end"] = True
                else:
                    sub["cancel_at"] = at + int(args["days"]) * DAY
                    sub["cancel_at_period_end"] = False
                sub["canceled_at"] = at
                sub["cancellation_details"]["reason"] = "cancellation_requested"
                if status in ("active", "past_due", "unpaid"):
                    self._prorate_cancel_at(book, sub, at)
                self._save_sub(book, sub)
        elif kind == "resume":
            if status == "paused":
                self._attach_default(book, args["card"], at)
                self._resume(book, sub, at)
        elif kind == "refund":
            charge = self._refundable(book, sub)
            if charge is not None:
                amount = refund_amount(charge, args.get("fraction"))
                self._refund(book, charge, amount, at, reason="requested_by_customer")
        elif kind == "credit_note":
            invoice = book.objects.get(sub.get("latest_invoice") or "")
            charge = self._refundable(book, sub)
            if invoice is not None and charge is not None:
                amount = credit_amount(invoice, charge, args["fraction"])
                if amount > 0:
                    self._credit_note(book, invoice, charge, amount, at)

    def _change_item(
        self,
        book: _Book,
        sub: dict[str, Any],
        at: int,
        price: dict[str, Any] | None,
        quantity: int | None,
    ) -> None:
        item = sub["items"]["data"][0]
        before = (item["price"], int(item.get("quantity") or 0))
        if price is not None:
            item["price"] = copy.deepcopy(price)
            item["plan"] = plan_from_price(price)
        if quantity is not None:
            item["quantity"] = quantity
        after = (item["price"], int(item.get("quantity") or 0))
        if sub["status"] in ("active", "past_due", "unpaid") and (
            after[0]["id"] != before[0]["id"] or after[1] != before[1]
        ):
            start, end = int(item["current_period_start"]), int(item["current_period_end"])
            if at < end:
                for side, (side_price, side_quantity) in (("credit", before), ("charge", after)):
                    if subs.is_metered(side_price):
                        continue
                    amount = billing.prorate(
                        billing.line_amount(side_price, side_quantity), start, end, at
                    )
                    if amount:
                        self._proration(
                            book,
                            sub,
                            item,
                            side=side,
                            price=side_price,
                            quantity=side_quantity,
                            amount=amount,
                            period=(at, end),
                            at=at,
                        )
        self._save_sub(book, sub)

    def _proration(
        self,
        book: _Book,
        sub: dict[str, Any],
        item: dict[str, Any],
        *,
        side: str,
        price: dict[str, Any],
        quantity: int,
        amount: int,
        period: tuple[int, int],
        at: int,
    ) -> None:
        """A pending proration, as ``invoices.create_proration_item`` makes it."""
        billed = item.get("_billed") or {}
        credited = (
            {"invoice": billed["invoice"], "invoice_line_items": [billed["line"]]}
            if billed.get("invoice") and side == "credit"
            else None
        )
        name = self.names.get(price["product"], price["product"])
        proration = inv.build_invoice_item(
            item_id=self.new_id("ii"),
            customer=sub["customer"],
            currency=sub["currency"],
            amount=-amount if side == "credit" else amount,
            created=at,
            livemode=self.ctx.livemode,
            description=billing.proration_description(side, name, quantity, period[0]),
            quantity=quantity,
            unit_amount_decimal=price.get("unit_amount_decimal"),
            price=price,
            period={"end": period[1], "start": period[0]},
            proration=True,
            proration_details={"credited_items": credited},
            subscription=sub["id"],
            subscription_item=str(item["id"]),
        )
        book.add(proration)
        book.pending.append(proration)

    def _prorate_cancel_at(self, book: _Book, sub: dict[str, Any], at: int) -> None:
        """A ``cancel_at`` inside the current period credits the time it will not run."""
        start, end = subs.period_of(sub)
        until = min(int(sub["cancel_at"]), end)
        if until >= end:
            return
        for item in sub["items"]["data"]:
            price, quantity = item["price"], int(item.get("quantity") or 0)
            if subs.is_metered(price):
                continue
            amount = billing.prorate(billing.line_amount(price, quantity), start, end, until)
            if amount:
                self._proration(
                    book,
                    sub,
                    item,
                    side="credit",
                    price=price,
                    quantity=quantity,
                    amount=amount,
                    period=(until, end),
                    at=at,
                )

    def _resume(self, book: _Book, sub: dict[str, Any], at: int) -> None:
        sub["status"] = "active"
        interval, count = subs.recurring_of(sub)
        end = add_interval(at, interval, count)
        sub["billing_cycle_anchor"] = at
        for item in sub["items"]["data"]:
            item["current_period_start"] = at
            item["current_period_end"] = end
        lines = self._period_lines(book, sub, at, end)
        invoice = self._bill(book, sub, "subscription_update", lines, at)
        self._save_sub(book, sub)
        self._finalize(book, invoice, at, collect=True)

    def _refundable(self, book: _Book, sub: dict[str, Any]) -> dict[str, Any] | None:
        invoice = book.objects.get(sub.get("latest_invoice") or "")
        if invoice is None or invoice["status"] != "paid":
            return None
        for attempt in reversed(invoice.get("_payments") or []):
            if attempt.get("status") == "succeeded" and attempt.get("charge"):
                charge = book.objects.get(attempt["charge"])
                if charge is not None and charge["amount_captured"] > charge["amount_refunded"]:
                    return charge
                return None
        return None

    def _refund(
        self, book: _Book, charge: dict[str, Any], amount: int, at: int, *, reason: str | None
    ) -> dict[str, Any]:
        refund = pay.new_refund(
            self.ids.as_sim, self.ctx, charge, amount, reason=reason, metadata={}, created=at
        )
        book.add(refund)
        charge["amount_refunded"] = int(charge["amount_refunded"]) + amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
        charge["_refunds"]["data"].insert(0, copy.deepcopy(refund))
        return refund

    def _credit_note(
        self, book: _Book, invoice: dict[str, Any], charge: dict[str, Any], amount: int, at: int
    ) -> None:
        line = {
            "id": self.new_id("cnli"),
            "object": "credit_note_line_item",
            "amount": amount,
            "description": None,
            "discount_amount": 0,
            "discount_amounts": [],
            "invoice_line_item": None,
            "livemode": self.ctx.livemode,
            "metadata": {},
            "pretax_credit_amounts": [],
            "quantity": 1,
            "tax_rates": [],
            "taxes": [],
            "type": "custom_line_item",
            "unit_amount": amount,
            "unit_amount_decimal": str(amount),
        }
        note_id = self.new_id("cn")
        mode = "live" if self.ctx.livemode else "test"
        note: dict[str, Any] = {
            "id": note_id,
            "object": "credit_note",
            "amount": amount,
            "amount_shipping": 0,
            "created": at,
            "currency": invoice["currency"],
            "customer": invoice["customer"],
            "customer_account": None,
            "customer_balance_transaction": None,
            "discount_amount": 0,
            "discount_amounts": [],
            "effective_at": at,
            "invoice": invoice["id"],
            "lines": {
                "object": "list",
                "data": [line],
                "has_more": False,
                "url": f"/v1/credit_notes/{note_id}/lines",
            },
            "livemode": self.ctx.livemode,
            "memo": CREDIT_NOTE_MEMO,
            "metadata": {},
            "number": f"{invoice.get('number') or invoice['id']}-CN-01",
            "out_of_band_amount": None,
            "pdf": f"https://pay.stripe.com/credit_notes/{self.ctx.account}/{mode}_"
            f"{self.ids.random_chars(64)}/pdf?s=ap",
            "post_payment_amount": amount,
            "pre_payment_amount": 0,
            "pretax_credit_amounts": [],
            "reason": CREDIT_NOTE_REASON,
            "refunds": [],
            "shipping_cost": None,
            "status": "issued",
            "subtotal": amount,
            "subtotal_excluding_tax": amount,
            "total": amount,
            "total_excluding_tax": amount,
            "total_taxes": [],
            "type": "post_payment",
            "voided_at": None,
        }
        book.add(note)
        refund = self._refund(book, charge, amount, at, reason=None)
        note["refunds"].append(
            {
                "amount_refunded": refund["amount"],
                "payment_record_refund": None,
                "refund": refund["id"],
                "type": "refund",
            }
        )
        invoice["post_payment_credit_notes_amount"] = (
            int(invoice["post_payment_credit_notes_amount"]) + amount
        )


CREDIT_NOTE_MEMO = "Credit for service interruption"
CREDIT_NOTE_REASON = "product_unsatisfactory"


def customer_fields(plan: CustomerPlan) -> dict[str, Any]:
    """The details a customer is created with (as ``POST /v1/customers`` stores them)."""
    metadata = {} if plan.app_id is None or plan.app_id_on_subscription else {LINK_KEY: plan.app_id}
    return {
        "email": plan.email,
        "name": plan.name,
        "address": {
            "city": plan.city,
            "country": plan.country,
            "line1": None,
            "line2": None,
            "postal_code": None,
            "state": None,
        },
        "metadata": metadata,
    }


def subscription_metadata(plan: CustomerPlan) -> dict[str, str]:
    if plan.app_id is not None and plan.app_id_on_subscription:
        return {LINK_KEY: plan.app_id}
    return {}


def missing_payment_method(slot: SlotPlan) -> str:
    return {"cancel": "cancel", "pause": "pause"}.get(slot.trial or "", "create_invoice")


def plan_change(
    catalogue: Catalogue, sub: Mapping[str, Any], kind: str, args: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, int | None] | None:
    """The new price or quantity of a subscription's first item (None: nothing to do)."""
    item = sub["items"]["data"][0]
    price_id = item["price"]["id"]
    if kind == "quantity":
        if item.get("quantity") is None:
            return None
        current = int(item["quantity"])
        wanted = max(1, round(current * float(args.get("factor", 1.5))))
        return (None, wanted) if wanted != current else None
    keys = {p["id"]: k for k, p in catalogue.prices.items()}
    key = keys.get(price_id)
    for ladder in LADDERS:
        if key in ladder:
            pos = ladder.index(key) + (1 if kind == "upgrade" else -1)
            if 0 <= pos < len(ladder) and ladder[pos] != LEGACY_PLAN:
                return catalogue.prices[ladder[pos]], None
    return None


def refund_amount(charge: Mapping[str, Any], fraction: float | None) -> int:
    left = int(charge["amount_captured"]) - int(charge["amount_refunded"])
    if fraction is None:
        return left
    return max(1, min(left, int(int(charge["amount_captured"]) * fraction)))


def credit_amount(invoice: Mapping[str, Any], charge: Mapping[str, Any], fraction: float) -> int:
    """A credit note's amount: part of the invoice, refunded, within what is left."""
    left = int(charge["amount_captured"]) - int(charge["amount_refunded"])
    creditable = (
        int(invoice["total"])
        - int(invoice["post_payment_credit_notes_amount"])
        - int(invoice["pre_payment_credit_notes_amount"])
    )
    if invoice.get("amount_paid", 0) <= 0:
        return 0
    return max(0, min(left, creditable, int(int(invoice["total"]) * fraction)))


# -- writing the bulk phase --------------------------------------------------------------


def link_rows(acct: str, obj: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    """The ``links`` rows ``SimDB.put`` would write for this object (its save function's)."""
    kind = obj["object"]
    links: Mapping[str, Any]
    if kind == "customer":
        links = {"email": obj.get("email")}
    elif kind == "subscription":
        links = subs.subscription_links(obj)
    elif kind == "subscription_item":
        links = {"subscription": obj["subscription"]}
    elif kind == "invoice":
        links = inv.invoice_links(obj)
    elif kind == "invoiceitem":
        links = inv.invoice_item_links(obj)
    elif kind == "charge":
        links = {"payment_intent": obj.get("payment_intent")}
    elif kind == "refund":
        links = {"charge": obj["charge"], "payment_intent": obj.get("payment_intent")}
    elif kind == "credit_note":
        links = {"invoice": obj["invoice"]}
    else:
        return []
    rows: list[tuple[str, str, str, str]] = []
    for key, values in links.items():
        if values is None:
            continue
        items = [values] if isinstance(values, str) else list(values)
        rows.extend((acct, key, value, obj["id"]) for value in sorted(set(items)) if value)
    return rows


class _Writer:
    """Buffers the bulk phase's rows and writes them a chunk per transaction."""

    def __init__(self, sim: Simulator, acct: str) -> None:
        self.sim = sim
        self.acct = acct
        self.rows: list[tuple[str, dict[str, Any]]] = []
        self.links: list[tuple[str, str, str, str]] = []
        self.timers: list[tuple[str, str, str, int]] = []
        self.deleted: list[tuple[str, str]] = []
        self.written = 0

    def add(self, book: _Book) -> None:
        acct = self.acct
        for obj in book.objects.values():
            self.rows.append((acct, obj))
            self.links.extend(link_rows(acct, obj))
        self.timers.extend((acct, "subscription", k, at) for k, at in book.sub_timers.items())
        self.timers.extend((acct, "invoice", k, at) for k, at in book.invoice_timers.items())
        if book.deleted:
            self.deleted.append((acct, book.customer["id"]))
        if len(self.rows) >= CHUNK_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.rows and not self.timers:
            return
        db = self.sim.db
        with db:
            db.put_many(self.rows)
            db.add_links(self.links)
            db.set_timers(self.timers)
            if self.deleted:
                db.conn.executemany(
                    "UPDATE objects SET deleted=1 WHERE acct=? AND id=?", self.deleted
                )
        self.written += len(self.rows)
        self.rows, self.links, self.timers, self.deleted = [], [], [], []


# -- the window (and live mode): the same actions through the API ------------------------


class ApiActions:
    """Planned actions as in-process API calls, each checking first that it still applies."""

    def __init__(self, sim: Simulator, key: str, acct: str, catalogue: Catalogue) -> None:
        self.sim = sim
        self.key = key
        self.acct = acct
        self.catalogue = catalogue
        self.calls = 0

    def call(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        *,
        allow: tuple[int, ...] = (200,),
    ) -> dict[str, Any]:
        self.calls += 1
        status, body, _ = self.sim.request(method, path, params or {}, key=self.key)
        if status not in allow:
            raise GenerationError(f"{method} {path} answered {status}: {body.get('error')}")
        return body

    def get(self, obj_id: str | None) -> dict[str, Any] | None:
        return self.sim.db.get(self.acct, obj_id) if obj_id else None

    # -- customers --

    def signup(self, handle: Handle) -> None:
        plan = handle.plan
        fields = customer_fields(plan)
        params: dict[str, Any] = {
            "email": fields["email"],
            "name": fields["name"],
            "address": {"city": plan.city, "country": plan.country},
        }
        if fields["metadata"]:
            params["metadata"] = fields["metadata"]
        customer = self.call("POST", "/v1/customers", params)
        handle.customer = customer["id"]
        if plan.card:
            self.attach_default(handle, plan.card)
        self.subscribe(handle, 0)

    def attach_default(self, handle: Handle, magic: str) -> str:
        assert handle.customer is not None
        return self.attach_card(handle.customer, magic)

    def attach_card(self, customer: str, magic: str) -> str:
        """A test card attached and made the customer's default for invoices."""
        pm = self.call("POST", f"/v1/payment_methods/{magic}/attach", {"customer": customer})
        self.call(
            "POST",
            f"/v1/customers/{customer}",
            {"invoice_settings": {"default_payment_method": pm["id"]}},
        )
        return str(pm["id"])

    def subscribe(self, handle: Handle, slot: int) -> None:
        plan = handle.plan
        slot_plan = plan.slots[slot]
        price = self.catalogue.prices[slot_plan.price]
        item: dict[str, Any] = {"price": price["id"]}
        if not subs.is_metered(price) and slot_plan.quantity is not None:
            item["quantity"] = str(slot_plan.quantity)
        items = [item]
        if slot_plan.metered_addon:
            items.append({"price": self.catalogue.prices["api_m_usd"]["id"]})
        params: dict[str, Any] = {"customer": handle.customer, "items": items}
        metadata = subscription_metadata(plan)
        if metadata:
            params["metadata"] = metadata
        if slot == 0 and slot_plan.trial:
            params["trial_period_days"] = str(TRIAL_DAYS)
            params["trial_settings"] = {
                "end_behavior": {"missing_payment_method": missing_payment_method(slot_plan)}
            }
        if slot == 0 and slot_plan.coupon:
            params["discounts"] = [{"coupon": slot_plan.coupon}]
        sub = self.call("POST", "/v1/subscriptions", params)
        handle.slots[slot] = sub["id"]

    # -- one planned action --

    def run(self, handle: Handle, action: Action) -> bool:
        """Perform ``action`` if it still applies; returns whether it did."""
        if action.kind == "signup":
            self.signup(handle)
            return True
        if handle.customer is None or handle.deleted:
            return False
        if self.sim.db.is_deleted(self.acct, handle.customer):
            handle.deleted = True
            return False
        kind, args = action.kind, action.args
        if kind == "subscribe":
            if action.slot in handle.slots:
                return False
            self.subscribe(handle, action.slot)
            return True
        if kind == "card_fail":
            self.attach_default(handle, FAILING_CARD)
            return True
        if kind == "card_fix":
            self.attach_default(handle, args["card"])
            if args.get("pay_now"):
                for sub_id in handle.slots.values():
                    sub = self.get(sub_id)
                    latest = self.get(sub.get("latest_invoice") if sub else None)
                    if latest is not None and latest["status"] == "open":
                        self.call("POST", f"/v1/invoices/{latest['id']}/pay", allow=(200, 402))
            return True
        if kind == "delete_customer":
            waiting = self.sim.db.execute(
                "SELECT count(*) FROM timers t JOIN objects o ON o.acct=t.acct AND o.id=t.obj_id"
                " WHERE t.acct=? AND t.kind='invoice' AND o.customer=?",
                (self.acct, handle.customer),
            )[0][0]
            if waiting:
                return False
            self.call("DELETE", f"/v1/customers/{handle.customer}")
            handle.deleted = True
            return True
        sub = self.get(handle.slots.get(action.slot))
        if sub is None:
            return False
        return self._sub_action(handle, sub, action)

    def _sub_action(self, handle: Handle, sub: dict[str, Any], action: Action) -> bool:
        kind, args, status = action.kind, action.args, sub["status"]
        path = f"/v1/subscriptions/{sub['id']}"
        if kind in ("upgrade", "downgrade", "quantity"):
            if status not in ("active", "trialing", "past_due"):
                return False
            change = plan_change(self.catalogue, sub, kind, args)
            if change is None:
                return False
            price, quantity = change
            entry: dict[str, Any] = {"id": sub["items"]["data"][0]["id"]}
            if price is not None:
                entry["price"] = price["id"]
            if quantity is not None:
                entry["quantity"] = str(quantity)
            self.call("POST", path, {"items": [entry]})
            return True
        if kind == "pause":
            if status not in ("active", "past_due") or sub.get("pause_collection"):
                return False
            pause: dict[str, Any] = {"behavior": args["behavior"]}
            if args.get("resumes_days"):
                pause["resumes_at"] = str(self.sim.now() + int(args["resumes_days"]) * DAY)
            self.call("POST", path, {"pause_collection": pause})
            return True
        if kind == "unpause":
            if not sub.get("pause_collection") or status in ("canceled", "incomplete_expired"):
                return False
            self.call("POST", path, {"pause_collection": ""})
            return True
        if kind == "cancel_now":
            if status in ("canceled", "incomplete_expired"):
                return False
            details = {"feedback": args["feedback"]} if args.get("feedback") else {}
            self.call("DELETE", path, {"cancellation_details": details} if details else {})
            return True
        if kind in ("cancel_period_end", "cancel_at"):
            if status not in ("active", "trialing", "past_due") or sub.get("cancel_at"):
                return False
            if kind == "cancel_period_end":
                self.call("POST", path, {"cancel_at_period_end": "true"})
            else:
                cancel_at = self.sim.now() + int(args["days"]) * DAY
                self.call("POST", path, {"cancel_at": str(cancel_at)})
            return True
        if kind == "resume":
            if status != "paused":
                return False
            self.attach_default(handle, args["card"])
            self.call("POST", f"{path}/resume")
            return True
        if kind in ("refund", "credit_note"):
            invoice = self.get(sub.get("latest_invoice"))
            charge = self._refundable(invoice)
            if invoice is None or charge is None:
                return False
            if kind == "refund":
                params: dict[str, Any] = {"charge": charge["id"], "reason": "requested_by_customer"}
                if args.get("fraction") is not None:
                    params["amount"] = str(refund_amount(charge, args["fraction"]))
                self.call("POST", "/v1/refunds", params)
                return True
            amount = credit_amount(invoice, charge, args["fraction"])
            if amount <= 0:
                return False
            self.call(
                "POST",
                "/v1/credit_notes",
                {
                    "invoice": invoice["id"],
                    "amount": str(amount),
                    "refund_amount": str(amount),
                    "reason": CREDIT_NOTE_REASON,
                    "memo": CREDIT_NOTE_MEMO,
                },
            )
            return True
        return False

    def _refundable(self, invoice: Mapping[str, Any] | None) -> dict[str, Any] | None:
        if invoice is None or invoice["status"] != "paid":
            return None
        for attempt in reversed(invoice.get("_payments") or []):
            if attempt.get("status") == "succeeded" and attempt.get("charge"):
                charge = self.get(attempt["charge"])
                if charge is not None and charge["amount_captured"] > charge["amount_refunded"]:
                    return charge
                return None
        return None


# -- generate ------------------------------------------------------------------------------


@dataclass
class GenerationReport:
    """What :func:`generate` made, and how long each phase took."""

    customers: int
    seed: int
    start: int
    end: int
    window_start: int
    objects: dict[str, int]
    events: int
    history_seconds: float
    window_seconds: float
    seconds: float
    window_actions: int
    window_calls: int
    history_rows: int

    @property
    def total_objects(self) -> int:
        return sum(self.objects.values())


def _account(sim: Simulator, acct: str | None) -> tuple[str, Ctx]:
    """The secret key and context of the partition to fill (default: the test mode of
    the default account; ``acct`` may be an account id or ``acct_x:live``)."""
    account, _, mode = (acct or DEFAULT_ACCOUNT).partition(":")
    livemode = mode == "live"
    for entry in sim.keys():  # noqa: SIM118 (API keys, not a dict)
        if (
            entry["account"] == account
            and entry["livemode"] == livemode
            and entry["permissions"] is None
            and not entry["revoked"]
        ):
            return str(entry["key"]), sim.context(str(entry["key"]))
    raise GenerationError(f"no secret key for {account} ({'live' if livemode else 'test'} mode)")


def _say(progress: bool, message: str) -> None:
    if progress:
        print(message, file=sys.stderr, flush=True)


def generate(
    sim: Simulator,
    *,
    customers: int,
    seed: int,
    progress: bool = False,
    years: float = 2.0,
    acct: str | None = None,
) -> GenerationReport:
    """Fill the account with ``customers`` customers and ~``years`` of history ending now.

    Deterministic: the same seed into a fresh simulator gives the same objects and ids.
    The clock is frozen while generating and put back as it was (real time by default).
    """
    began = time.monotonic()
    key, ctx = _account(sim, acct)
    db = sim.db
    if already_generated(sim):
        raise GenerationError(
            f"{db.path} already holds a generated business; generate into a new file"
            " (another --db) or reuse it as it is"
        )
    saved_clock = {k: db.meta_get(k) for k in ("clock_mode", "clock_offset", "clock_now")}
    end = sim.now()
    start = end - int(years * 365.25 * DAY)
    window_start = max(start, end - WINDOW_SECONDS)
    hooks = list(clock.ACTIVITY_HOOKS)
    clock.ACTIVITY_HOOKS.clear()
    rng_state = sim.rng.getstate()
    sim.rng.seed(seed * 7_777_777 + 1)  # the window's ids, reproducible too
    db.conn.execute("PRAGMA synchronous=OFF")
    db.conn.execute("PRAGMA cache_size=-262144")
    try:
        sim.freeze(start - DAY)
        # the bulk rows go straight into the file, not through the WAL and back (half the
        # writes); the WAL is back before anything else can read the file
        db.conn.execute("PRAGMA journal_mode=MEMORY")
        catalogue = create_catalogue(sim, key, ctx.acct)
        planner = Planner(seed, catalogue, start=start, end=end)
        signups = signup_times(customers, start, end, random.Random(seed))
        showcase = planner.showcase_for(signups)
        builder = HistoryBuilder(catalogue, _Ids(seed), ctx, window_start=window_start)
        writer = _Writer(sim, ctx.acct)
        handles: dict[int, Handle] = {}
        pending: list[Action] = []
        step = max(1, customers // 10)
        for index, signup in enumerate(signups):
            plan = planner.plan(index, signup, showcase.get(index))
            if plan.signup >= window_start:
                handles[index] = Handle(plan)
                pending.extend(plan.actions)
                continue
            book, left = builder.build(plan)
            writer.add(book)
            if left:
                handles[index] = Handle(
                    plan,
                    customer=book.customer["id"],
                    slots={slot: sub["id"] for slot, sub in book.slots.items()},
                    deleted=book.deleted,
                )
                pending.extend(left)
            if (index + 1) % step == 0:
                _say(progress, f"  history: {index + 1:,}/{customers:,} customers")
        writer.flush()
        with db:
            for coupon_id, count in builder.redeemed.items():
                coupon = db.get(ctx.acct, coupon_id)
                if coupon is not None:
                    coupon["times_redeemed"] = int(coupon["times_redeemed"]) + count
                    db.put(ctx.acct, coupon)
        db.conn.execute("PRAGMA journal_mode=WAL")
        history_done = time.monotonic()
        _say(progress, f"  history written ({writer.written:,} objects); playing the last 30 days")

        sim.freeze(window_start)
        db.prune_events(window_start)
        api = ApiActions(sim, key, ctx.acct, catalogue)
        pending.sort()
        step = max(1, len(pending) // 10)
        batch = 0
        db.__enter__()
        try:
            for n, action in enumerate(pending):
                clock.advance(sim, max(action.at, sim.now()))
                api.run(handles[action.customer], action)
                batch += 1
                if batch >= WINDOW_BATCH:
                    db.__exit__(None, None, None)
                    db.__enter__()
                    batch = 0
                if (n + 1) % step == 0:
                    _say(progress, f"  window: {n + 1:,}/{len(pending):,} actions")
            clock.advance(sim, max(end, sim.now()))
        except BaseException as exc:
            db.__exit__(type(exc), exc, exc.__traceback__)
            raise
        db.__exit__(None, None, None)
        window_done = time.monotonic()
    finally:
        db.conn.execute("PRAGMA journal_mode=WAL")
        db.conn.execute("PRAGMA synchronous=NORMAL")
        db.conn.execute("PRAGMA cache_size=-65536")
        clock.ACTIVITY_HOOKS[:] = hooks
        sim.rng.setstate(rng_state)
        for name, value in saved_clock.items():
            if value is not None:
                db.meta_set(name, value)
        if saved_clock.get("clock_mode") == "frozen":
            sim.freeze(max(end, sim.now()))
    info = {
        "seed": seed,
        "customers": customers,
        "acct": ctx.acct,
        "end": end,
        "prices": {k: p["id"] for k, p in catalogue.prices.items()},
        "coupons": sorted(catalogue.coupons),
        "products": {k: p["id"] for k, p in catalogue.products.items()},
    }
    db.meta_set("generator", json.dumps(info))
    report = GenerationReport(
        customers=customers,
        seed=seed,
        start=start,
        end=end,
        window_start=window_start,
        objects=db.counts(ctx.acct),
        events=int(db.execute("SELECT count(*) FROM events WHERE acct=?", (ctx.acct,))[0][0]),
        history_seconds=history_done - began,
        window_seconds=window_done - history_done,
        seconds=time.monotonic() - began,
        window_actions=len(pending),
        window_calls=api.calls,
        history_rows=writer.written,
    )
    _say(
        progress,
        f"  done in {report.seconds:.1f}s: {report.total_objects:,} objects, "
        f"{report.events:,} events in the last 30 days",
    )
    return report


def already_generated(sim: Simulator) -> bool:
    """Whether :func:`generate` already filled this simulator (a restart keeps it)."""
    return sim.db.meta_get("generator") is not None


def load_catalogue(sim: Simulator, acct: str) -> Catalogue | None:
    """The catalogue a previous :func:`generate` made in this simulator, if any."""
    raw = sim.db.meta_get("generator")
    if raw is None:
        return None
    info = json.loads(raw)
    if info.get("acct") != acct:
        return None
    prices = {k: sim.db.get(acct, v) for k, v in info["prices"].items()}
    products = {k: sim.db.get(acct, v) for k, v in info["products"].items()}
    coupons = {c: sim.db.get(acct, c) for c in info["coupons"]}
    if any(v is None for v in (*prices.values(), *products.values(), *coupons.values())):
        return None
    return Catalogue(
        cast(dict[str, dict[str, Any]], products),
        cast(dict[str, dict[str, Any]], prices),
        cast(dict[str, dict[str, Any]], coupons),
    )
