"""Invoices and invoice items through the official SDK, and the invoice arithmetic."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from stripesync.sim import billing, clock
from stripesync.sim.core import Knobs
from stripesync.sim.server import SimServer

DAY = 86400
EPOCH = 1_800_000_000 - 1_800_000_000 % DAY


@pytest.fixture(scope="module", autouse=True)
def _frozen(server: SimServer) -> None:
    server.sim.freeze(EPOCH)


@pytest.fixture
def iso_server() -> Iterator[SimServer]:
    with SimServer(knobs=Knobs(rate_limits=False), deliver_webhooks=False) as srv:
        srv.sim.freeze(EPOCH)
        yield srv


def _customer(client: Any, pm: str | None = "pm_card_visa", **extra: Any) -> Any:
    params: dict[str, Any] = {"email": "ada@example.com", "name": "Ada Lovelace", **extra}
    customer = client.v1.customers.create(params=params)
    if pm is not None:
        attached = client.v1.payment_methods.attach(pm, params={"customer": customer.id})
        customer = client.v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": attached.id}}
        )
    return customer


def _recurring(client: Any, name: str = "Gold", **price: Any) -> Any:
    product = client.v1.products.create(params={"name": name})
    return client.v1.prices.create(
        params={
            "product": product.id,
            "currency": "usd",
            "recurring": {"interval": "month"},
            **price,
        }
    )


def _draft(client: Any, customer: Any, amounts: list[int]) -> Any:
    for amount in amounts:
        client.v1.invoice_items.create(
            params={
                "customer": customer.id,
                "amount": amount,
                "currency": "usd",
                "description": f"Consulting ({amount})",
            }
        )
    return client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )


# -- invoices and their lines -------------------------------------------------------------


def test_invoice_with_25_lines_embeds_10_and_pages_the_rest(client: Any) -> None:
    customer = _customer(client)
    invoice = _draft(client, customer, [100 * (i + 1) for i in range(25)])
    assert invoice.status == "draft" and invoice.number is None
    assert len(invoice.lines.data) == 10 and invoice.lines.has_more is True
    assert invoice.lines.url == f"/v1/invoices/{invoice.id}/lines"
    lines = list(client.v1.invoices.line_items.list(invoice.id).auto_paging_iter())
    assert len(lines) == 25
    assert len({line.id for line in lines}) == 25
    assert sum(line.amount for line in lines) == invoice.subtotal == invoice.total == 32500
    assert lines[0].parent.type == "invoice_item_details"
    item_id = lines[0].parent.invoice_item_details.invoice_item
    assert client.v1.invoice_items.retrieve(item_id).invoice == invoice.id
    assert (
        client.v1.invoice_items.list(params={"customer": customer.id, "pending": True}).data == []
    )
    page = client.v1.invoices.line_items.list(
        invoice.id, params={"limit": 3, "starting_after": lines[20].id}
    )
    assert [line.id for line in page.data] == [line.id for line in lines[21:24]]


def test_manual_invoice_excludes_pending_items_by_default(client: Any) -> None:
    customer = _customer(client)
    client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": 500, "currency": "usd"}
    )
    invoice = client.v1.invoices.create(params={"customer": customer.id})
    assert invoice.lines.data == [] and invoice.billing_reason == "manual"
    assert invoice.auto_advance is False and invoice.parent is None
    # a zero invoice is paid as soon as it is finalized
    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    assert invoice.status == "paid" and invoice.amount_paid == 0
    pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    assert [ii.amount for ii in pending.data] == [500]


def test_status_transitions_and_their_errors(server: SimServer, client: Any) -> None:
    customer = _customer(client)
    invoice = _draft(client, customer, [1200])
    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    assert invoice.status == "open"
    assert invoice.status_transitions.finalized_at == server.sim.now()
    assert invoice.number is not None and invoice.hosted_invoice_url.startswith("https://")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.invoices.finalize_invoice(invoice.id)
    assert "already finalized" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.delete(invoice.id)
    invoice = client.v1.invoices.pay(invoice.id)
    assert invoice.status == "paid" and invoice.amount_paid == 1200
    assert invoice.amount_remaining == 0 and invoice.attempt_count == 1
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.invoices.pay(invoice.id)
    assert "Invoice is already paid" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.void_invoice(invoice.id)

    voided = client.v1.invoices.void_invoice(
        client.v1.invoices.finalize_invoice(_draft(client, customer, [300]).id).id
    )
    assert voided.status == "void" and voided.status_transitions.voided_at is not None
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.invoices.pay(voided.id)
    assert info.value.http_status == 400
    assert "Voided invoices cannot be paid" in str(info.value.user_message)

    doubtful = client.v1.invoices.finalize_invoice(_draft(client, customer, [400]).id)
    doubtful = client.v1.invoices.mark_uncollectible(doubtful.id)
    assert doubtful.status == "uncollectible"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.mark_uncollectible(doubtful.id)
    doubtful = client.v1.invoices.pay(doubtful.id, params={"paid_out_of_band": True})
    assert doubtful.status == "paid"

    draft = _draft(client, customer, [50])
    deleted = client.v1.invoices.delete(draft.id)
    assert deleted.deleted is True
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.invoices.retrieve(draft.id)
    assert info.value.http_status == 404
    pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    assert [ii.amount for ii in pending.data] == [50]  # back to pending with its draft gone
    types = {e.type for e in client.v1.events.list(params={"limit": 100}).data}
    assert {
        "invoice.created",
        "invoice.finalized",
        "invoice.paid",
        "invoice.voided",
        "invoice.marked_uncollectible",
        "invoice.deleted",
        "invoice.updated",
    } <= types


def test_paying_with_a_declined_card_answers_402_and_keeps_the_attempt(client: Any) -> None:
    customer = _customer(client, pm="pm_card_chargeCustomerFail")
    invoice = client.v1.invoices.finalize_invoice(_draft(client, customer, [2500]).id)
    with pytest.raises(stripe.CardError) as info:
        client.v1.invoices.pay(invoice.id)
    assert info.value.http_status == 402
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert invoice.status == "open" and invoice.attempt_count == 1 and invoice.attempted
    good = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    invoice = client.v1.invoices.pay(invoice.id, params={"payment_method": good.id})
    assert invoice.status == "paid" and invoice.attempt_count == 2


def test_update_draft_and_finalized_restrictions(client: Any) -> None:
    customer = _customer(client)
    invoice = _draft(client, customer, [700])
    invoice = client.v1.invoices.update(
        invoice.id,
        params={
            "description": "March work",
            "metadata": {"po": "42"},
            "collection_method": "send_invoice",
            "days_until_due": 14,
        },
    )
    assert invoice.description == "March work" and invoice.metadata.to_dict() == {"po": "42"}
    assert invoice.collection_method == "send_invoice" and invoice.due_date is not None
    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    assert invoice.status == "open" and invoice.attempt_count == 0
    sent = client.v1.invoices.send_invoice(invoice.id)
    assert sent.status == "open"
    client.v1.invoices.update(invoice.id, params={"metadata": {"po": "43"}})
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.invoices.update(invoice.id, params={"days_until_due": 3})
    assert info.value.code == "invoice_not_editable"


def test_invoice_items_crud_updates_the_draft(client: Any) -> None:
    customer = _customer(client)
    invoice = client.v1.invoices.create(params={"customer": customer.id})
    item = client.v1.invoice_items.create(
        params={
            "customer": customer.id,
            "invoice": invoice.id,
            "unit_amount_decimal": "250",
            "quantity": 4,
            "currency": "usd",
            "description": "Seats",
            "period": {"start": 1_799_000_000, "end": 1_799_500_000},
        }
    )
    assert item.amount == 1000 and item.quantity == 4 and item.invoice == invoice.id
    assert item.period.start == 1_799_000_000
    assert client.v1.invoices.retrieve(invoice.id).total == 1000
    item = client.v1.invoice_items.update(item.id, params={"quantity": 6})
    assert item.amount == 1500
    assert client.v1.invoices.retrieve(invoice.id).lines.data[0].amount == 1500
    client.v1.invoice_items.delete(item.id)
    assert client.v1.invoices.retrieve(invoice.id).lines.data == []
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.invoice_items.retrieve(item.id)
    assert info.value.http_status == 404
    listed = client.v1.invoice_items.list(params={"invoice": invoice.id})
    assert listed.data == []


def test_customer_credit_balance_is_applied_at_finalization(client: Any) -> None:
    customer = _customer(client, balance=-500)
    invoice = client.v1.invoices.finalize_invoice(_draft(client, customer, [1200]).id)
    assert invoice.starting_balance == -500 and invoice.ending_balance == 0
    assert invoice.total == 1200 and invoice.amount_due == 700
    assert client.v1.customers.retrieve(customer.id).balance == 0
    big_credit = _customer(client, balance=-5000)
    invoice = client.v1.invoices.finalize_invoice(_draft(client, big_credit, [1200]).id)
    assert invoice.amount_due == 0 and invoice.status == "paid"
    assert invoice.ending_balance == -3800
    assert client.v1.customers.retrieve(big_credit.id).balance == -3800


def test_list_filters(client: Any) -> None:
    customer = _customer(client)
    paid = client.v1.invoices.pay(_draft(client, customer, [100]).id)
    draft = _draft(client, customer, [200])

    def ids(**params: Any) -> list[str]:
        listed = client.v1.invoices.list(params={"customer": customer.id, **params})
        return [i.id for i in listed.auto_paging_iter()]

    assert ids() == [draft.id, paid.id]
    assert ids(status="paid") == [paid.id]
    assert ids(status="draft") == [draft.id]
    assert ids(collection_method="send_invoice") == []
    price = _recurring(client, unit_amount=900)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    assert ids(subscription=sub.id) == [sub.latest_invoice]


# -- amounts --------------------------------------------------------------------------------


def test_graduated_and_volume_tiers(client: Any) -> None:
    tiers = [
        {"up_to": 5, "unit_amount": 1000},
        {"up_to": 10, "unit_amount": 800, "flat_amount": 500},
        {"up_to": "inf", "unit_amount": 500, "flat_amount": 2000},
    ]
    graduated = _recurring(
        client, "Graduated", billing_scheme="tiered", tiers_mode="graduated", tiers=tiers
    )
    volume = _recurring(client, "Volume", billing_scheme="tiered", tiers_mode="volume", tiers=tiers)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [
                {"price": graduated.id, "quantity": 12},
                {"price": volume.id, "quantity": 12},
            ],
        }
    )
    lines = client.v1.invoices.retrieve(sub.latest_invoice).lines.data
    # graduated: 5×10.00 + (5×8.00 + 5.00) + (2×5.00 + 20.00); volume: 12×5.00 + 20.00
    assert [line.amount for line in lines] == [5000 + 4500 + 3000, 8000]
    assert lines[0].description == "12 × Graduated"


def test_transform_quantity_rounds_up_or_down(client: Any) -> None:
    up = _recurring(
        client, "Per 10 up", unit_amount=1000, transform_quantity={"divide_by": 10, "round": "up"}
    )
    down = _recurring(
        client,
        "Per 10 down",
        unit_amount=1000,
        transform_quantity={"divide_by": 10, "round": "down"},
    )
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": up.id, "quantity": 25}, {"price": down.id, "quantity": 25}],
        }
    )
    lines = client.v1.invoices.retrieve(sub.latest_invoice).lines.data
    assert [line.amount for line in lines] == [3000, 2000]


def test_coupon_applies_to_one_product(client: Any) -> None:
    gold, silver = (
        _recurring(client, "Gold", unit_amount=2000),
        _recurring(client, "Silver", unit_amount=1000),
    )
    coupon = client.v1.coupons.create(
        params={
            "percent_off": 50,
            "duration": "forever",
            "applies_to": {"products": [gold.product]},
        }
    )
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": gold.id}, {"price": silver.id}],
            "discounts": [{"coupon": coupon.id}],
        }
    )
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.subtotal == 3000 and invoice.total == 2000
    assert invoice.total_discount_amounts[0].amount == 1000
    assert invoice.total_discount_amounts[0].discount == sub.discounts[0]
    assert [len(line.discount_amounts) for line in invoice.lines.data] == [1, 0]
    assert invoice.discounts == sub.discounts
    discount = client.v1.subscriptions.retrieve(sub.id, params={"expand": ["discounts"]}).discounts[
        0
    ]
    assert discount.source.coupon == coupon.id and discount.subscription == sub.id


def test_amount_off_coupon_spreads_over_lines(client: Any) -> None:
    gold, silver = (
        _recurring(client, "Gold", unit_amount=2000),
        _recurring(client, "Silver", unit_amount=1000),
    )
    coupon = client.v1.coupons.create(
        params={"amount_off": 1000, "currency": "usd", "duration": "forever"}
    )
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": gold.id}, {"price": silver.id}],
            "discounts": [{"coupon": coupon.id}],
        }
    )
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.total == 2000 and invoice.amount_paid == 2000
    assert [line.discount_amounts[0].amount for line in invoice.lines.data] == [667, 333]


@pytest.mark.parametrize(
    ("duration", "months", "discounted"),
    [
        ("forever", None, [True, True, True]),
        ("once", None, [True, False, False]),
        ("repeating", 2, [True, True, False]),
    ],
    ids=["forever", "once", "repeating"],
)
def test_coupon_durations_across_renewals(
    iso_server: SimServer, duration: str, months: int | None, discounted: list[bool]
) -> None:
    client = iso_server.client()
    price = _recurring(client, unit_amount=4000)
    params: dict[str, Any] = {"percent_off": 25, "duration": duration}
    if months:
        params["duration_in_months"] = months
    coupon = client.v1.coupons.create(params=params)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "discounts": [{"coupon": coupon.id}],
        }
    )
    totals = [client.v1.invoices.retrieve(sub.latest_invoice).total]
    for _ in range(2):
        end = client.v1.subscriptions.retrieve(sub.id)["items"].data[0].current_period_end
        clock.advance(iso_server.sim, end + 3600)
        invoice = client.v1.invoices.retrieve(
            client.v1.subscriptions.retrieve(sub.id).latest_invoice
        )
        assert invoice.status == "paid" and invoice.billing_reason == "subscription_cycle"
        totals.append(invoice.total)
    assert [total == 3000 for total in totals] == discounted
    assert all(total in (3000, 4000) for total in totals)


# -- the arithmetic itself --------------------------------------------------------------------


def test_line_amount_pure() -> None:
    per_unit = {"billing_scheme": "per_unit", "unit_amount": 999, "unit_amount_decimal": "999"}
    assert billing.line_amount(per_unit, 3) == 2997
    assert billing.line_amount({**per_unit, "unit_amount_decimal": "0.333"}, 10) == 3
    tiered = {
        "billing_scheme": "tiered",
        "tiers_mode": "graduated",
        "_tiers": [
            {"up_to": 1, "unit_amount_decimal": "0", "flat_amount_decimal": "500"},
            {"up_to": None, "unit_amount_decimal": "100", "flat_amount_decimal": None},
        ],
    }
    assert billing.line_amount(tiered, 0) == 0
    assert billing.line_amount(tiered, 1) == 500
    assert billing.line_amount(tiered, 4) == 800
    assert billing.line_amount({**tiered, "tiers_mode": "volume"}, 4) == 400


def test_prorate_and_balance_pure() -> None:
    assert billing.prorate(1000, 0, 30 * DAY, 15 * DAY) == 500
    assert billing.prorate(1000, 0, 3, 1) == 667  # 666.67 rounds half up
    assert billing.prorate(1000, 0, 30 * DAY, 30 * DAY) == 0
    assert billing.apply_balance(1000, -300) == (700, 0)
    assert billing.apply_balance(1000, -3000) == (0, -2000)
    assert billing.apply_balance(1000, 250) == (1250, 0)
    assert billing.apply_balance(-400, 0) == (0, -400)


def test_invoice_totals_pure() -> None:
    lines = [
        {"id": "il_a", "amount": 1001, "discountable": True, "discounts": []},
        {"id": "il_b", "amount": 2002, "discountable": True, "discounts": []},
        {"id": "il_c", "amount": -500, "discountable": False, "discounts": []},
    ]
    discounts = [
        {"id": "di_1", "source": {"coupon": "half"}},
        {"id": "di_2", "source": {"coupon": "ten"}},
    ]
    coupons = {"half": {"percent_off": 50.0}, "ten": {"amount_off": 1000, "currency": "usd"}}
    totals = billing.invoice_totals(lines, discounts, coupons, currency="usd")
    assert totals["subtotal"] == 2503
    half = [a[0]["amount"] for a in totals["line_discount_amounts"][:2]]
    assert half == [501, 1001]
    assert totals["total_discount_amounts"] == [
        {"amount": 1502, "discount": "di_1"},
        {"amount": 1000, "discount": "di_2"},
    ]
    assert totals["total"] == 2503 - 2502
    assert totals["line_discount_amounts"][2] == []


def test_builders_make_fixture_shaped_objects_without_a_database(
    stripe_fixtures: dict[str, dict[str, Any]],
) -> None:
    """The generator's path: objects built in memory have Stripe's field sets and add up."""
    from stripesync.sim.resources import invoices, subscriptions

    price = {
        "id": "price_1",
        "object": "price",
        "active": True,
        "billing_scheme": "per_unit",
        "created": EPOCH,
        "currency": "eur",
        "livemode": False,
        "metadata": {},
        "nickname": None,
        "product": "prod_1",
        "recurring": {
            "interval": "month",
            "interval_count": 1,
            "meter": None,
            "trial_period_days": None,
            "usage_type": "licensed",
        },
        "tiers_mode": None,
        "transform_quantity": None,
        "type": "recurring",
        "unit_amount": 1250,
        "unit_amount_decimal": "1250",
    }
    end = EPOCH + 31 * DAY
    item = subscriptions.build_item(
        item_id="si_1",
        subscription_id="sub_1",
        price=price,
        quantity=2,
        created=EPOCH,
        period_start=EPOCH,
        period_end=end,
    )
    sub = subscriptions.build_subscription(
        sub_id="sub_1",
        customer="cus_1",
        items=[item],
        created=EPOCH,
        currency="eur",
        status="active",
        livemode=False,
        latest_invoice="in_1",
    )
    line = invoices.build_subscription_line(
        line_id="il_1",
        subscription_id="sub_1",
        item_id="si_1",
        price=price,
        quantity=2,
        product_name="Gold",
        period_start=EPOCH,
        period_end=end,
        livemode=False,
    )
    customer = {
        "id": "cus_1",
        "email": "a@example.com",
        "name": "A",
        "address": None,
        "phone": None,
        "shipping": None,
        "tax_exempt": "none",
    }
    invoice = invoices.build_invoice(
        invoice_id="in_1",
        customer=customer,
        currency="eur",
        created=EPOCH,
        livemode=False,
        billing_reason="subscription_create",
        subscription=sub,
        lines=[line],
    )
    invoices.finalize_fields(
        invoice, at=EPOCH, number="ABC-0001", starting_balance=0, account="acct_1", token="tok"
    )
    invoices.paid_fields(invoice, at=EPOCH)
    item_obj = invoices.build_invoice_item(
        item_id="ii_1",
        customer="cus_1",
        currency="eur",
        amount=300,
        created=EPOCH,
        livemode=False,
    )
    public = {k for k in invoice if not k.startswith("_")}
    assert public == set(stripe_fixtures["invoice"])
    assert set(sub) == set(stripe_fixtures["subscription"]) - {
        "billing_schedules",
        "managed_payments",
    }
    assert set(item) == set(stripe_fixtures["subscription_item"])
    assert set(line) == set(stripe_fixtures["line_item"])
    assert {k for k in item_obj if not k.startswith("_")} == set(stripe_fixtures["invoiceitem"])
    assert invoice["total"] == invoice["amount_paid"] == 2500 and invoice["status"] == "paid"
    assert line["description"] == "2 × Gold (at €12.50 / month)"
    assert subscriptions.next_action_at(sub) == end
    assert subscriptions.subscription_links(sub) == {
        "price": ["price_1"],
        "collection_method": "charge_automatically",
    }
