"""compute_traits on realistic Stripe objects, and docs/traits.md kept honest against it."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stripesync.errors import InvalidInput
from stripesync.profiles import SINGLE_SUBSCRIPTION_TRAITS, compute_traits, metadata_trait_key
from stripesync.revenue import RevenueRules, customer_revenue
from tests.profiles.factories import (
    CUSTOMER_ID,
    DAY,
    MARCH,
    NOW,
    TRIAL,
    Account,
    Obj,
    make_charge,
    make_coupon,
    make_customer,
    make_deleted_customer,
    make_discount,
    make_invoice,
    make_item,
    make_legacy_card,
    make_payment_method,
    make_price,
    make_product,
    make_subscription,
    realistic_account,
    to_legacy_subscription,
    ts,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "traits.md"

# -- the names the seed documents use (copied from /work/shared/seeds) -------------------

VITALLY_SINGLE = [
    "Account Balance",
    "Cancel At Period End",
    "Canceled At",
    "Card Expiration",
    "Created",
    "Currency",
    "Current Period End",
    "Current Period Start",
    "Current Subscription Status",
    "Customer Id",
    "Delinquent",
    "Discount Amount Off",
    "Discount Duration In Months",
    "Discount Id",
    "Discount Name",
    "Discount Percent Off",
    "Email",  # the seed's table lost this row's name; its description is "The email of..."
    "Last Invoice Id",
    "Last Invoice Amount",
    "Last Invoice Timestamp",
    "Metadata",
    "Mrr",
    "Name",
    "Plan Amounts",
    "Plan Ids",
    "Plan Names",
    "Status",
    "Subscription Amount",
    "Subscription Id",
    "Subscription Interval",
    "Trial Start",
    "Trial End",
]
VITALLY_MULTIPLE = [
    "Subscription Ids",
    "Subscription Status",
    "Subscription Paying Count",
    "Subscription Trialing Count",
    "Subscription Amounts Total",
    "Last Invoice Ids",
    "Last Invoice Amounts",
    "All Mrr",
]
ENCHARGE = [
    "Customer email",
    "Customer name",
    "Customer MRR",
    "Is customer delinquent",
    "Customer Description",
    "Stripe Customer ID",
    "Customer phone number",
    "Customer last sync at",
    "Customer city",
    "Customer address",
    "Customer region",
    "Customer country",
    "Customer postal code",
    "Subscription ID",
    "Status of customer's subscription",
    "Subscription trial ends at",
    "Subscription trial started at",
    "Subscription created at",
    "Subscription canceled at",
    "Subscription current period start",
    "Subscription cancel at period end",
    "Product ID",
    "Product Name",
    "Plan ID",
    "Plan price in cents",
    "Plan currency",
    "Plan interval",
    "Plan nickname",
    "Plan price",
    "Plan interval count",
    "Last amount paid in cents",
    "Payment currency",
    "Payment description",
    "Last amount paid",
]
INTEMPT_CUSTOMER = [
    "City",
    "Country",
    "Address line 1",
    "Address line 2",
    "Postal code",
    "State/province",
    "Email address",
    "Full name/business name",
    "Phone number",
    "Available cash balance",
    "Account creation date",
    "Currency",
    "Subscriptions",
    "MRR",
    "ARR",
    "Receipt email",  # a user attribute of Intempt's charge events
]
INTEMPT_SUBSCRIPTIONS_ARRAY = [
    f"Subscriptions[].{field}"
    for field in (
        "mrr",
        "arr",
        "cancelled_at",
        "expires_at",
        "current_term_start",
        "current_term_end",
        "trial_started_at",
        "trial_ends_at",
        "cancel_at_period_end",
        "created",
        "currency",
        "days_until_due",
        "discounts",
        "ended_at",
        "next_pending_invoice_item_invoice",
        "status",
        "items",
        "items[].price.unit_amount",
        "items[].price.currency",
        "items[].price.product.name",
        "items[].price.recurring.interval",
        "items[].price.recurring.interval_count",
        "items[].quantity",
    )
]
INTEMPT_SUBSCRIPTION_EVENTS = [
    "Value",
    "Change type",
    "Product names",
    "State",
    "Activated at",
    "Cancelled at",
    "Expires at",
    "Current term start",
    "Current term end",
    "Trial started at",
    "Trial ends at",
    "Trial end action",
    "Is trial",
    "MRR",
    "ARR",
]
SEED_004 = ["Subscription MRR", "Subscription Current Period End"]

SEED_NAMES = {
    "Vitally": VITALLY_SINGLE + VITALLY_MULTIPLE,
    "Encharge": ENCHARGE,
    "Intempt": INTEMPT_CUSTOMER + INTEMPT_SUBSCRIPTIONS_ARRAY,
    "Intempt (subscription events)": INTEMPT_SUBSCRIPTION_EVENTS,
    "seed 004": SEED_004,
}

ISO = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")


# -- docs/traits.md ---------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    seed: str
    name: str
    key: str
    type: str
    modes: str


def table_rows() -> list[Row]:
    text = DOCS.read_text(encoding="utf-8")
    section = text.split("## Trait table", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or cells[0] in ("seed", "---"):
            continue
        key = cells[2].strip("`")
        rows.append(Row(cells[0], cells[1], key, cells[3], cells[4]))
    return rows


def tokens(key: str) -> list[str]:
    return re.findall(r"\[\]|[^.\[\]]+", key)


def lookup(traits: Any, key: str) -> list[Any] | None:
    """Every value at ``key`` (``a[].b`` reads ``b`` in each entry of ``a``); None if absent."""
    values = [traits]
    found = True
    for token in tokens(key):
        if token == "[]":
            values = [entry for value in values if isinstance(value, list) for entry in value]
            continue
        holders = [value for value in values if isinstance(value, dict) and token in value]
        found = bool(holders)
        values = [holder[token] for holder in holders]
    return values if found else None


def type_ok(kind: str, value: Any) -> bool:
    if value is None:
        return True
    return {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "date": lambda v: isinstance(v, str) and ISO.match(v) is not None,
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
    }[kind](value)


def documented_paths(traits: dict[str, Any]) -> set[str]:
    """Every key path the traits hold, in the table's notation."""
    paths: set[str] = set()

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                path = f"{prefix}.{key}" if prefix else key
                paths.add(path)
                # Free-form objects: their keys are Stripe's or the user's, not ours.
                if path not in FREE_FORM:
                    walk(inner, path)
        elif isinstance(value, list):
            for entry in value:
                walk(entry, f"{prefix}[]")

    walk(traits, "")
    return paths


FREE_FORM = {"metadata", "subscriptions[].metadata", "available_cash_balance"} | {
    "all_mrr_by_currency",
    "arr_by_currency",
}


def test_every_seed_name_is_in_the_table() -> None:
    documented = {(row.seed, row.name) for row in table_rows()}
    missing = [(seed, name) for seed, names in SEED_NAMES.items() for name in names]
    assert [pair for pair in missing if pair not in documented] == []


def test_every_documented_key_is_produced_in_its_modes_with_its_type() -> None:
    account = realistic_account()
    single, multiple = account.traits("single"), account.traits("multiple")
    problems = []
    for row in table_rows():
        if row.key == "metadata_<key>":
            flat = {metadata_trait_key(k) for k in account.customer["metadata"]}
            if not flat or not flat <= set(single) or not flat <= set(multiple):
                problems.append((row.key, "metadata keys not flattened"))
            continue
        assert row.modes in ("both", "single"), row
        in_single, in_multiple = lookup(single, row.key), lookup(multiple, row.key)
        if in_single is None:
            problems.append((row.key, "missing in single mode"))
        if row.modes == "both" and in_multiple is None:
            problems.append((row.key, "missing in multiple mode"))
        if row.modes == "single" and in_multiple is not None:
            problems.append((row.key, "present in multiple mode"))
        for value in (in_single or []) + (in_multiple or []):
            if not type_ok(row.type, value):
                problems.append((row.key, f"{value!r} is not {row.type}"))
    assert problems == []


def test_every_produced_key_is_documented() -> None:
    account = realistic_account()
    documented = {row.key for row in table_rows()}
    for mode in ("single", "multiple"):
        produced = documented_paths(account.traits(mode))
        undocumented = {
            path for path in produced if path not in documented and not path.startswith("metadata_")
        }
        assert undocumented == set(), mode


def test_single_mode_rows_are_exactly_the_single_subscription_traits() -> None:
    single_rows = {row.key for row in table_rows() if row.modes == "single"}
    assert single_rows == set(SINGLE_SUBSCRIPTION_TRAITS)


# -- the realistic account --------------------------------------------------------------


def test_single_mode_traits_of_a_realistic_account() -> None:
    traits = realistic_account().traits("single")
    expected = {
        "customer_id": CUSTOMER_ID,
        "deleted": False,
        "email": "ops@acme.test",
        "name": "Acme Corp",
        "phone": "+1-415-555-0134",
        "description": "Acme Corp (enterprise pilot)",
        "address_line1": "548 Market St",
        "address_line2": "Suite 400",
        "city": "San Francisco",
        "state": "CA",
        "postal_code": "94104",
        "country": "US",
        "currency": "usd",
        "created": "2025-01-10T09:00:00Z",
        "account_balance": -500,
        "available_cash_balance": {"usd": 1000},
        "delinquent": False,
        "card_brand": "visa",
        "card_last4": "4242",
        "card_expiration": "2030-08-31T23:59:59Z",
        # The customer has no discount of its own: the primary subscription's is shown.
        "discount_coupon_id": "LOYALTY20",
        "discount_name": "Loyalty 20",
        "discount_percent_off": 20.0,
        "discount_amount_off": None,
        "discount_duration_in_months": None,
        # (9900 + 8 × 1500) × 0.8: the coupon was named by id and resolved from the store.
        "mrr": 17520,
        "mrr_currency": "usd",
        "all_mrr": 17520,
        "arr": 210240,
        "revenue_currency": "usd",
        "all_mrr_by_currency": {"usd": 17520},
        "subscription_amount": 17520,
        "subscription_amounts_total": 17520,
        "subscription_paying_count": 1,
        "subscription_trialing_count": 1,
        "subscription_ids": ["sub_1QStarterAcme01", "sub_1QGrowthAcme002", "sub_1QAnalyticsAc03"],
        "subscription_statuses": ["canceled", "active", "trialing"],
        "current_subscription_status": "active",
        "subscription_id": "sub_1QGrowthAcme002",
        "subscription_status": "active",
        "subscription_interval": "month",
        "subscription_created": "2025-06-01T00:00:00Z",
        "current_period_start": "2026-03-01T00:00:00Z",
        "current_period_end": "2026-04-01T00:00:00Z",
        "renewal_date": "2026-04-01T00:00:00Z",
        "trial_start": None,
        "trial_end": None,
        "cancel_at_period_end": False,
        "canceled_at": None,
        "plan_names": ["Growth monthly", "Extra seats", "Analytics monthly"],
        "plan_amounts": [9900, 1500, 4900],
        "product_names": ["Growth", "Extra seats", "Analytics add-on"],
        "plan_amount": 9900,
        "plan_amount_major": 99.0,
        "plan_currency": "usd",
        "plan_interval": "month",
        "plan_interval_count": 1,
        "plan_nickname": "Growth monthly",
        "product_id": "prod_GrowthPlan01",
        "product_name": "Growth",
        # The $0 invoice opening the trial is the newest issued invoice.
        "last_invoice_amount": 0,
        "last_invoice_timestamp": "2026-03-05T00:00:00Z",
        "last_invoice_amounts": [2900, 17520, 0],
        "last_amount_paid": 17520,
        "last_amount_paid_major": 175.2,
        "last_payment_currency": "usd",
        "last_payment_description": "Subscription update",
        "last_payment_at": "2026-03-01T01:00:00Z",
        "receipt_email": "billing@acme.test",
        "metadata": {"accountId": "acct_42", "Plan Tier": "growth", "csm": "dana@vendor.test"},
        "metadata_account_id": "acct_42",
        "metadata_plan_tier": "growth",
        "metadata_csm": "dana@vendor.test",
        "last_sync_at": "2026-03-15T12:00:00Z",
    }
    assert {key: traits[key] for key in expected} == expected
    assert len(traits["last_invoice_ids"]) == 3


def test_intempt_subscriptions_array() -> None:
    traits = realistic_account().traits("single")
    growth = traits["subscriptions"][1]
    # Every field of the seed's example entry is there.
    seed_fields = {
        "mrr", "arr", "cancelled_at", "expires_at", "current_term_start", "current_term_end",
        "trial_started_at", "trial_ends_at", "cancel_at_period_end", "created", "currency",
        "days_until_due", "discounts", "ended_at", "next_pending_invoice_item_invoice",
        "status", "items",
    }  # fmt: skip
    assert seed_fields <= set(growth)
    assert growth["mrr"] == 17520 and growth["arr"] == 210240
    assert growth["current_term_end"] == "2026-04-01T00:00:00Z"
    assert growth["activated_at"] == "2025-06-01T00:00:00Z"
    assert growth["discounts"][0]["name"] == "Loyalty 20"
    assert growth["items"][1] == {
        "id": growth["items"][1]["id"],
        "price": {
            "id": growth["items"][1]["price"]["id"],
            "nickname": None,
            "unit_amount": 1500,
            "currency": "usd",
            "product": {"id": "prod_ExtraSeats01", "name": "Extra seats"},
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
        },
        "quantity": 8,
    }
    starter, trial = traits["subscriptions"][0], traits["subscriptions"][2]
    assert starter["expires_at"] == starter["ended_at"] == "2025-06-01T00:00:00Z"
    assert starter["mrr"] == 0
    assert trial["is_trial"] is True
    assert trial["trial_ends_at"] == "2026-03-19T00:00:00Z"
    assert trial["trial_end_action"] == "create_invoice"


def test_multiple_mode_leaves_out_single_subscription_traits() -> None:
    account = realistic_account()
    single, multiple = account.traits("single"), account.traits("multiple")
    assert set(single) - set(multiple) == SINGLE_SUBSCRIPTION_TRAITS
    assert set(multiple) <= set(single)
    assert multiple["all_mrr"] == 17520
    assert multiple["subscription_paying_count"] == 1
    assert multiple["subscription_trialing_count"] == 1
    # Renewal: the earliest period end of the live subscriptions, the trial's.
    assert multiple["renewal_date"] == "2026-03-19T00:00:00Z"
    # No customer discount, and no single subscription to borrow one from.
    assert multiple["discount_id"] is None
    same = {k for k in multiple if k not in ("renewal_date",) and not k.startswith("discount_")}
    assert {k: multiple[k] for k in same} == {k: single[k] for k in same}


@pytest.mark.parametrize("mode", ["single", "multiple"])
def test_legacy_shapes_give_the_same_traits(mode: str) -> None:
    """Top-level periods, `plan`, one embedded `discount`, `invoice.subscription`."""
    legacy = realistic_account(legacy=True)
    growth = legacy.subscription("active")
    assert growth["current_period_end"] == MARCH[1]
    assert growth["plan"] is None  # two items: Stripe sent no single plan
    assert "discounts" not in growth and growth["discount"]["coupon"]["id"] == "LOYALTY20"
    assert "current_period_end" not in growth["items"]["data"][0]
    assert "parent" not in legacy.invoices[0]
    assert legacy.traits(mode) == realistic_account().traits(mode)


def test_a_single_item_legacy_subscription_with_plan() -> None:
    product = make_product("Solo")
    price = make_price(1200, product=product["id"], nickname="Solo monthly")
    sub = make_subscription([make_item(price, period=MARCH)], created=ts(2025, 9, 1))
    legacy = to_legacy_subscription(sub)
    assert legacy["plan"]["amount"] == 1200 and legacy["quantity"] == 1
    account = Account(make_customer(), [legacy], products={product["id"]: product})
    traits = account.traits()
    assert traits["mrr"] == 1200
    assert traits["current_period_end"] == "2026-04-01T00:00:00Z"
    assert traits["plan_names"] == ["Solo monthly"]


def test_a_subscription_from_before_multi_item_subscriptions() -> None:
    """Before 2016-07-06 a subscription had one plan and a quantity, no items."""
    product = make_product("Team")
    price = make_price(5000, product=product["id"], nickname=None, interval="year")
    sub = to_legacy_subscription(
        make_subscription([make_item(price, quantity=3, period=MARCH)], created=ts(2015, 4, 1))
    )
    del sub["items"]
    del sub["plan"]["nickname"]
    account = Account(make_customer(), [sub], products={product["id"]: product})
    traits = account.traits()
    assert traits["plan_ids"] == [price["id"]]
    assert traits["plan_names"] == ["Team"]  # no nickname: the product's name
    assert traits["subscriptions"][0]["items"][0]["quantity"] == 3
    assert traits["mrr"] == 1250  # 3 × 5000 a year / 12
    assert traits["subscription_interval"] == "year"
    assert traits["current_period_end"] == "2026-04-01T00:00:00Z"


def test_items_with_a_plan_and_no_price() -> None:
    """Subscription items from before prices (2020) carry only `plan`."""
    product = make_product("Legacy Pro")
    price = make_price(3000, product=product["id"], nickname="Pro (2019)")
    sub = make_subscription(
        [make_item(price, quantity=2, period=MARCH, plan_only=True)], created=ts(2019, 3, 1)
    )
    traits = Account(make_customer(), [sub], products={product["id"]: product}).traits()
    assert traits["plan_names"] == ["Pro (2019)"]
    assert traits["product_name"] == "Legacy Pro"
    assert traits["plan_amount"] == 3000
    assert traits["mrr"] == 6000


# -- cards ------------------------------------------------------------------------------


def _one_sub(**kwargs: Any) -> Obj:
    price = make_price(2000, product=make_product("Basic")["id"])
    return make_subscription([make_item(price, period=MARCH)], created=ts(2025, 8, 1), **kwargs)


def test_card_of_a_subscription_created_by_checkout() -> None:
    """Checkout puts the payment method on the subscription, not on the customer."""
    old = make_payment_method(brand="amex", last4="0005", exp_month=1, exp_year=2027)
    chosen = make_payment_method(brand="mastercard", last4="4444", exp_month=11, exp_year=2029)
    sub = _one_sub(default_payment_method=chosen["id"])
    account = Account(make_customer(), [sub], payment_methods=[old, chosen])
    traits = account.traits()
    assert (traits["card_brand"], traits["card_last4"]) == ("mastercard", "4444")
    assert traits["card_expiration"] == "2029-11-30T23:59:59Z"


def test_legacy_card_source() -> None:
    card = make_legacy_card(brand="MasterCard", last4="5100", exp_month=2, exp_year=2028)
    customer = make_customer(default_source=card["id"])
    customer["sources"] = {
        "object": "list",
        "data": [card],
        "has_more": False,
        "url": f"/v1/customers/{CUSTOMER_ID}/sources",
    }
    traits = Account(customer, [_one_sub()]).traits()
    assert (traits["card_brand"], traits["card_last4"]) == ("mastercard", "5100")
    assert traits["card_expiration"] == "2028-02-29T23:59:59Z"  # a leap year


def test_newest_card_when_none_is_the_default() -> None:
    older = make_payment_method(last4="1111", created=ts(2025, 1, 1))
    newer = make_payment_method(last4="2222", created=ts(2025, 9, 1))
    traits = Account(make_customer(), [_one_sub()], payment_methods=[newer, older]).traits()
    assert traits["card_last4"] == "2222"


def test_no_card() -> None:
    traits = Account(make_customer(), [_one_sub()]).traits()
    assert (traits["card_brand"], traits["card_last4"], traits["card_expiration"]) == (
        None,
        None,
        None,
    )


# -- discounts --------------------------------------------------------------------------


def test_the_customers_own_discount_wins() -> None:
    own = make_coupon(
        name="Partner $50", amount_off=5000, duration="repeating", duration_in_months=6
    )
    discount = make_discount(own, expand_coupon=True, start=ts(2026, 1, 1), end=ts(2026, 7, 1))
    account = realistic_account()
    account.customer["discount"] = discount
    traits = account.traits()
    assert traits["discount_id"] == discount["id"]
    assert traits["discount_name"] == "Partner $50"
    assert traits["discount_amount_off"] == 5000
    assert traits["discount_percent_off"] is None
    assert traits["discount_duration_in_months"] == 6
    assert account.traits("multiple")["discount_name"] == "Partner $50"


def test_an_ended_customer_discount_is_not_shown() -> None:
    expired = make_coupon(name="Launch week", percent_off=50.0, duration="once")
    account = realistic_account()
    account.customer["discount"] = make_discount(
        expired, expand_coupon=True, start=ts(2025, 1, 10), end=ts(2025, 2, 10)
    )
    assert account.traits()["discount_name"] == "Loyalty 20"


def test_a_coupon_the_store_does_not_hold_is_unnamed_and_does_not_count() -> None:
    account = realistic_account()
    account.coupons = {}
    traits = account.traits()
    assert traits["discount_coupon_id"] == "LOYALTY20"
    assert traits["discount_name"] is None
    assert traits["mrr"] == 21900  # the revenue rules cannot read the coupon either


# -- metadata ---------------------------------------------------------------------------


def test_metadata_keys_become_flat_traits() -> None:
    customer = make_customer(
        metadata={
            "accountId": "acct_7",
            "plan_tier": "gold",
            "planTier": "silver",
            "seats (max)": "25",
            "--": "ignored as a flat trait",
        }
    )
    traits = Account(customer, []).traits()
    assert traits["metadata"]["--"] == "ignored as a flat trait"
    assert traits["metadata_account_id"] == "acct_7"
    assert traits["metadata_seats_max"] == "25"
    # "planTier" sorts before "plan_tier": it keeps the flat name, both stay in metadata.
    assert traits["metadata_plan_tier"] == "silver"
    assert traits["metadata"]["plan_tier"] == "gold"
    assert [k for k in traits if k.startswith("metadata_")] == [
        "metadata_account_id",
        "metadata_plan_tier",
        "metadata_seats_max",
    ]


# -- customers in other states ----------------------------------------------------------


def test_a_deleted_customer() -> None:
    account = realistic_account()
    for sub in account.subscriptions:
        sub["status"] = "canceled"
        sub["ended_at"] = ts(2026, 3, 10)
    account.customer = make_deleted_customer()
    traits = account.traits()
    assert traits["deleted"] is True
    assert traits["customer_id"] == CUSTOMER_ID
    assert traits["email"] is None and traits["metadata"] == {}
    assert traits["current_subscription_status"] == "canceled"
    assert traits["mrr"] == traits["all_mrr"] == 0
    assert traits["renewal_date"] is None
    # It still says what it had last: its newest subscription, the primary one.
    assert traits["subscription_id"] == "sub_1QAnalyticsAc03"
    assert traits["product_names"] == ["Analytics add-on"]


def test_a_customer_without_subscriptions() -> None:
    customer = make_customer(currency=None)
    customer["currency"] = None
    traits = Account(customer, []).traits()
    assert traits["mrr"] == traits["all_mrr"] == traits["arr"] == 0
    assert traits["revenue_currency"] is None
    assert traits["subscription_ids"] == traits["plan_ids"] == traits["subscriptions"] == []
    assert traits["subscription_id"] is None and traits["subscription_status"] is None
    assert traits["current_subscription_status"] is None
    assert traits["renewal_date"] is None and traits["current_period_end"] is None
    assert traits["cancel_at_period_end"] is None
    assert traits["last_invoice_id"] is None and traits["last_invoice_ids"] == []


def test_a_churned_customer_shows_its_last_plan_and_no_renewal() -> None:
    account = realistic_account()
    account.subscriptions = [account.subscriptions[0]]  # the canceled Starter only
    traits = account.traits()
    assert traits["subscription_status"] == "canceled"
    assert traits["current_period_end"] == "2025-06-01T00:00:00Z"
    assert traits["renewal_date"] is None
    assert traits["plan_names"] == ["Starter monthly"]
    assert traits["mrr"] == 0  # its last invoice is not revenue any more (MRR.md rule 13)


def test_cancellation_at_period_end() -> None:
    sub = _one_sub(cancel_at_period_end=True, canceled_at=ts(2026, 3, 10))
    traits = Account(make_customer(), [sub]).traits()
    assert traits["cancel_at_period_end"] is True
    assert traits["canceled_at"] == "2026-03-10T00:00:00Z"
    assert traits["subscriptions"][0]["expires_at"] == "2026-04-01T00:00:00Z"
    assert traits["mrr"] == 2000  # still counts until it ends (MRR.md rule 3)


def test_trial_converted_to_active() -> None:
    price = make_price(4900, product=make_product("Analytics")["id"])
    sub = make_subscription(
        [make_item(price, period=(TRIAL[1], TRIAL[1] + 31 * DAY))],
        created=TRIAL[0],
        trial=TRIAL,
    )
    traits = Account(make_customer(), [sub]).traits(at=ts(2026, 3, 20))
    assert traits["trial_start"] == "2026-03-05T00:00:00Z"
    assert traits["trial_end"] == "2026-03-19T00:00:00Z"
    assert traits["subscriptions"][0]["activated_at"] == "2026-03-19T00:00:00Z"
    assert traits["subscriptions"][0]["is_trial"] is False


# -- payments and invoices --------------------------------------------------------------


def test_last_payment_falls_back_on_paid_invoices_without_charges() -> None:
    account = realistic_account()
    account.charges = []
    traits = account.traits()
    growth_march = account.invoices[2]
    assert traits["last_amount_paid"] == 17520
    assert traits["last_payment_at"] == "2026-03-01T00:01:00Z"  # paid_at, a minute in
    assert growth_march["status_transitions"]["paid_at"] == MARCH[0] + 60


def test_failed_charges_are_not_payments() -> None:
    account = realistic_account()
    account.charges.append(
        make_charge(amount=4900, created=ts(2026, 3, 14), status="failed", receipt_email=None)
    )
    traits = account.traits()
    assert traits["last_amount_paid"] == 17520
    assert traits["receipt_email"] == "billing@acme.test"


def test_drafts_and_void_invoices_are_not_the_last_invoice() -> None:
    account = realistic_account()
    growth = account.subscription("active")
    draft = make_invoice(growth, total=17520, created=ts(2026, 3, 14), status="draft")
    void = make_invoice(growth, total=999, created=ts(2026, 3, 13), status="void")
    account.invoices += [draft, void]
    traits = account.traits()
    assert traits["last_invoice_timestamp"] == "2026-03-05T00:00:00Z"
    assert traits["last_invoice_amounts"] == [2900, 17520, 0]


def test_rule_13_takes_the_last_invoice_when_it_is_higher() -> None:
    """A downgrade mid-period: the last invoice still bills the old, higher amount."""
    account = realistic_account()
    growth = account.subscription("active")
    growth["items"]["data"][1]["quantity"] = 2  # 8 seats down to 2
    traits = account.traits()
    assert traits["subscription_amount"] == round((9900 + 2 * 1500) * Decimal("0.8"))
    assert traits["mrr"] == 17520  # the March invoice per month
    assert traits["all_mrr"] == traits["subscription_amount"]


# -- revenue settings -------------------------------------------------------------------


def test_reporting_currency() -> None:
    account = realistic_account()
    eur_price = make_price(10000, product=make_product("EU seats")["id"], currency="eur")
    eur = make_subscription(
        [make_item(eur_price, period=MARCH)], created=ts(2026, 2, 1), currency="eur"
    )
    account.subscriptions.append(eur)
    rules = RevenueRules(reporting_currency="usd", exchange_rates={"eur": "1.10"})
    traits = account.traits(rules=rules)
    assert traits["all_mrr_by_currency"] == {"usd": 17520, "eur": 10000}
    assert traits["revenue_currency"] == "usd"
    assert traits["all_mrr"] == 17520 + 11000
    # The primary subscription is now the newest counting one, in euros, unconverted.
    assert (traits["mrr"], traits["mrr_currency"]) == (10000, "eur")
    without = account.traits()
    assert without["revenue_currency"] == "eur" and without["all_mrr"] == 10000


def test_churn_at_cancellation_request() -> None:
    sub = _one_sub(cancel_at_period_end=True, canceled_at=ts(2026, 3, 10))
    rules = RevenueRules(churn_at_cancellation_request=True)
    traits = Account(make_customer(), [sub]).traits(rules=rules)
    assert traits["mrr"] == traits["all_mrr"] == 0
    assert traits["subscription_paying_count"] == 0


# -- contract ---------------------------------------------------------------------------


def test_objects_of_other_customers_are_left_out() -> None:
    account = realistic_account()
    stranger = make_subscription(
        [make_item(make_price(99900, product="prod_X"), period=MARCH)],
        created=ts(2026, 3, 1),
        customer="cus_SomeoneElse000",
    )
    account.subscriptions.append(stranger)
    account.charges.append(make_charge(amount=99900, created=NOW, customer="cus_SomeoneElse000"))
    assert account.traits() == realistic_account().traits()


def test_inputs_are_not_mutated_and_results_repeat() -> None:
    account = realistic_account()
    before = copy.deepcopy(account)
    first = account.traits()
    assert account == before
    assert account.traits() == first


def test_unknown_mode_and_missing_id_are_refused() -> None:
    account = realistic_account()
    with pytest.raises(InvalidInput, match="'both'"):
        account.traits("both")
    customer = make_customer()
    del customer["id"]
    with pytest.raises(InvalidInput, match="no id"):
        compute_traits(customer, [], [], [], [], mode="single", at=NOW, rules=None)


# -- properties -------------------------------------------------------------------------

STATUSES = ["active", "past_due", "trialing", "canceled", "unpaid", "incomplete", "paused"]


@st.composite
def subscription_sets(draw: st.DrawFn) -> list[Obj]:
    count = draw(st.integers(min_value=0, max_value=4))
    subs = []
    for index in range(count):
        prices = [
            make_price(
                draw(st.integers(min_value=0, max_value=50_000)),
                product=f"prod_Prop{index}{n}",
                interval=draw(st.sampled_from(["month", "year", "week"])),
            )
            for n in range(draw(st.integers(min_value=1, max_value=3)))
        ]
        items = [
            make_item(p, quantity=draw(st.integers(min_value=0, max_value=20)), period=MARCH)
            for p in prices
        ]
        subs.append(
            make_subscription(
                items,
                status=draw(st.sampled_from(STATUSES)),
                created=ts(2025, 1, 1) + draw(st.integers(min_value=0, max_value=400)) * DAY,
            )
        )
    return subs


@settings(max_examples=40, deadline=None)
@given(subscription_sets())
def test_traits_agree_with_the_revenue_module(subs: list[Obj]) -> None:
    customer = make_customer()
    single = Account(customer, subs).traits("single")
    multiple = Account(customer, subs).traits("multiple")
    revenue = customer_revenue(customer, subs, [], at=NOW)
    assert single["mrr"] == revenue.mrr
    assert single["all_mrr"] == sum(entry["mrr"] for entry in single["subscriptions"])
    assert single["arr"] == sum(entry["arr"] for entry in single["subscriptions"])
    assert single["subscription_paying_count"] == revenue.subscription_paying_count
    assert single["subscription_id"] == revenue.primary_subscription_id
    assert set(single) - set(multiple) == SINGLE_SUBSCRIPTION_TRAITS
    created = [entry["created"] for entry in single["subscriptions"]]
    assert created == sorted(created)
