"""Subscriptions through the official SDK: trials, payment, changes, prorations, the clock."""

from __future__ import annotations

from collections.abc import Iterator
from fractions import Fraction
from typing import Any

import httpx
import pytest
import stripe

from stripesync.sim import clock
from stripesync.sim.core import Knobs
from stripesync.sim.server import SimServer

DAY = 86400
#: 2027-01-15 00:00 UTC: tests move the (frozen) clock forward from here.
EPOCH = 1_800_000_000 - 1_800_000_000 % DAY


@pytest.fixture(scope="module", autouse=True)
def _frozen(server: SimServer) -> None:
    server.sim.freeze(EPOCH)


@pytest.fixture
def iso_server() -> Iterator[SimServer]:
    """A simulator of its own, for tests that run the clock (timers of other tests'
    subscriptions would otherwise run too)."""
    with SimServer(knobs=Knobs(rate_limits=False), deliver_webhooks=False) as srv:
        srv.sim.freeze(EPOCH)
        yield srv


def _price(
    client: Any, amount: int = 1000, interval: str = "month", name: str = "Gold", **extra: Any
) -> Any:
    product = client.v1.products.create(params={"name": name})
    params: dict[str, Any] = {
        "product": product.id,
        "currency": "usd",
        "recurring": {"interval": interval},
        **extra,
    }
    if "tiers" not in extra and "unit_amount_decimal" not in extra:
        params["unit_amount"] = amount
    return client.v1.prices.create(params=params)


def _customer(client: Any, pm: str | None = "pm_card_visa") -> Any:
    params: dict[str, Any] = {"email": "jenny.rosen@example.com", "name": "Jenny Rosen"}
    if pm is not None:
        params["payment_method"] = pm
        params["invoice_settings"] = {"default_payment_method": pm}
    customer = client.v1.customers.create(params=params)
    if pm is not None:
        # the magic id made a fresh payment method; make the attached one the default
        pms = client.v1.customers.payment_methods.list(customer.id)
        customer = client.v1.customers.update(
            customer.id, params={"invoice_settings": {"default_payment_method": pms.data[-1].id}}
        )
    return customer


def _events(server: SimServer, *, since: int = 0) -> list[dict[str, Any]]:
    client = server.client()
    events = [e for e in client.v1.events.list(params={"limit": 100}).auto_paging_iter()]
    return [e for e in reversed(events)][since:]


def _half_up(value: Fraction) -> int:
    return int(value + Fraction(1, 2)) if value >= 0 else -int(-value + Fraction(1, 2))


# -- creation -----------------------------------------------------------------------------


def test_trial_subscription_starts_trialing_with_a_free_invoice(
    server: SimServer, client: Any
) -> None:
    price = _price(client, 1500)
    customer = _customer(client, pm=None)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_period_days": 14}
    )
    now = server.sim.now()
    assert sub.status == "trialing"
    assert sub.trial_start == now and sub.trial_end == now + 14 * DAY
    item = sub["items"].data[0]
    assert (item.current_period_start, item.current_period_end) == (now, now + 14 * DAY)
    assert "current_period_end" not in sub  # moved to items in 2025-03-31.basil
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.billing_reason == "subscription_create"
    assert invoice.status == "paid" and invoice.total == 0 and invoice.amount_paid == 0
    assert invoice.lines.data[0].description == "Trial period for Gold"
    assert invoice.lines.data[0].period.end == sub.trial_end
    assert client.v1.customers.retrieve(customer.id).currency == "usd"


def test_trial_end_now_and_trial_from_timestamp(client: Any, server: SimServer) -> None:
    price = _price(client)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_end": "now"}
    )
    assert sub.status == "active" and sub.trial_end is None
    later = server.sim.now() + 5 * DAY
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}], "trial_end": later}
    )
    assert sub.status == "trialing" and sub.trial_end == later
    sub = client.v1.subscriptions.update(sub.id, params={"trial_end": "now"})
    assert sub.status == "active"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.billing_reason == "subscription_update"
    assert invoice.status == "paid" and invoice.amount_paid == 1000


def test_immediate_payment_makes_a_paid_invoice_whose_lines_add_up(
    server: SimServer, client: Any
) -> None:
    gold, silver = _price(client, 1000), _price(client, 250, name="Silver")
    customer = _customer(client)
    before = len(_events(server))
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": gold.id, "quantity": 2}, {"price": silver.id, "quantity": 3}],
            "metadata": {"app_user": "u_42"},
        }
    )
    assert sub.status == "active"
    assert sub["items"].url == f"/v1/subscription_items?subscription={sub.id}"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "paid"
    assert sum(line.amount for line in invoice.lines.data) == invoice.subtotal == 2750
    assert invoice.total == invoice.amount_paid == 2750 and invoice.amount_remaining == 0
    assert invoice.number is not None and invoice.number.endswith("-0001")
    assert invoice.parent.type == "subscription_details"
    assert invoice.parent.subscription_details.subscription == sub.id
    assert invoice.parent.subscription_details.metadata.to_dict() == {"app_user": "u_42"}
    assert invoice.status_transitions.paid_at == server.sim.now()
    line = invoice.lines.data[0]
    assert line.description == "2 × Gold (at $10.00 / month)"
    assert line.parent.subscription_item_details.subscription_item == sub["items"].data[0].id
    assert line.pricing.price_details.price == gold.id
    types = [e.type for e in _events(server, since=before)]
    assert types.index("customer.subscription.created") < types.index("invoice.paid")
    assert {"invoice.finalized", "invoice.payment_succeeded", "charge.succeeded"} <= set(types)
    # the subscription goes from incomplete to active once its first invoice is paid
    updated = [
        e for e in _events(server, since=before) if e.type == "customer.subscription.updated"
    ]
    assert updated[-1].data.previous_attributes["status"] == "incomplete"


def test_declined_card_leaves_the_subscription_incomplete(server: SimServer, client: Any) -> None:
    price = _price(client)
    customer = _customer(client, pm="pm_card_chargeCustomerFail")
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    assert sub.status == "incomplete"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "open" and invoice.attempt_count == 1 and invoice.attempted
    assert invoice.amount_remaining == 1000
    assert invoice.next_payment_attempt is None  # a first invoice is not retried
    good = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    paid = client.v1.invoices.pay(invoice.id, params={"payment_method": good.id})
    assert paid.status == "paid" and paid.attempt_count == 2
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
        }
    )
    assert sub.status == "incomplete"
    assert client.v1.invoices.retrieve(sub.latest_invoice).attempt_count == 0


def test_default_incomplete_waits_for_the_intent_to_be_confirmed(client: Any) -> None:
    price = _price(client, 1800)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "payment_behavior": "default_incomplete",
        }
    )
    assert sub.status == "incomplete"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "open" and invoice.amount_remaining == 1800
    intents = client.v1.payment_intents.list(params={"customer": customer.id}).data
    assert [i.status for i in intents] == ["requires_payment_method"]
    client.v1.payment_intents.confirm(intents[0].id, params={"payment_method": "pm_card_visa"})
    assert client.v1.invoices.retrieve(invoice.id).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_error_if_incomplete_answers_402_and_creates_nothing(client: Any) -> None:
    price = _price(client)
    customer = _customer(client, pm="pm_card_chargeCustomerFail")
    with pytest.raises(stripe.CardError) as info:
        client.v1.subscriptions.create(
            params={
                "customer": customer.id,
                "items": [{"price": price.id}],
                "payment_behavior": "error_if_incomplete",
            }
        )
    assert info.value.http_status == 402
    assert info.value.code == "card_declined"
    listed = client.v1.subscriptions.list(params={"customer": customer.id, "status": "all"})
    assert listed.data == []


def test_send_invoice_subscription_is_active_with_an_open_invoice(
    server: SimServer, client: Any
) -> None:
    price = _price(client)
    customer = _customer(client, pm=None)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "collection_method": "send_invoice",
            "days_until_due": 30,
        }
    )
    assert sub.status == "active" and sub.days_until_due == 30
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "open" and invoice.collection_method == "send_invoice"
    assert invoice.due_date == server.sim.now() + 30 * DAY


def test_legacy_plan_metered_and_unit_amount_decimal_items(client: Any) -> None:
    product = client.v1.products.create(params={"name": "Legacy"})
    plan = client.v1.plans.create(
        params={"product": product.id, "currency": "usd", "amount": 700, "interval": "month"}
    )
    metered = _price(
        client, 5, name="API calls", recurring={"interval": "month", "usage_type": "metered"}
    )
    decimal = _price(client, name="Seats", unit_amount_decimal="12.5")
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [
                {"plan": plan.id},
                {"price": metered.id},
                {"price": decimal.id, "quantity": 3},
            ],
        }
    )
    assert sub["items"].data[0].plan.id == plan.id
    assert "quantity" not in sub["items"].data[1]
    lines = client.v1.invoices.retrieve(sub.latest_invoice).lines.data
    assert [line.amount for line in lines] == [700, 0, 38]  # 37.5 rounds half up


def test_mixed_intervals_and_unknown_params_are_rejected(client: Any) -> None:
    monthly, yearly = _price(client), _price(client, 10000, interval="year")
    customer = _customer(client)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.create(
            params={"customer": customer.id, "items": [{"price": monthly.id}, {"price": yearly.id}]}
        )
    assert info.value.http_status == 400
    assert "interval" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.create(
            params={"customer": customer.id, "items": [{"price": monthly.id}], "colour": "red"}
        )
    assert info.value.http_status == 400
    assert info.value.code == "parameter_unknown" and info.value.param == "colour"


def test_post_cancel_is_not_a_stripe_route(server: SimServer, client: Any) -> None:
    price = _price(client)
    sub = client.v1.subscriptions.create(
        params={"customer": _customer(client).id, "items": [{"price": price.id}]}
    )
    response = httpx.post(
        f"{server.url}/v1/subscriptions/{sub.id}/cancel",
        headers={"Authorization": f"Bearer {server.secret_key}"},
    )
    assert response.status_code == 404
    assert "Unrecognized request URL" in response.json()["error"]["message"]


def test_missing_subscription_is_404(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscriptions.retrieve("sub_doesnotexist")
    assert info.value.http_status == 404
    assert info.value.code == "resource_missing"
    assert "No such subscription: 'sub_doesnotexist'" in str(info.value.user_message)


# -- changes ------------------------------------------------------------------------------


def test_upgrade_mid_period_creates_two_prorations(server: SimServer, client: Any) -> None:
    gold, platinum = _price(client, 1000), _price(client, 3000, name="Platinum")
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": gold.id}]}
    )
    item = sub["items"].data[0]
    start, end = item.current_period_start, item.current_period_end
    at = start + (end - start) // 3
    server.sim.freeze(at)
    sub = client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item.id, "price": platinum.id}]}
    )
    assert sub["items"].data[0].id == item.id  # the item keeps its id
    assert sub["items"].data[0].price.id == platinum.id
    pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    by_amount = sorted(pending.data, key=lambda ii: ii.amount)
    left = Fraction(end - at, end - start)
    assert [ii.amount for ii in by_amount] == [_half_up(-1000 * left), _half_up(3000 * left)]
    credit, charge = by_amount
    assert credit.proration and charge.proration
    assert credit.period.start == at and credit.period.end == end
    assert credit.description.startswith("Unused time on Gold after")
    assert charge.description.startswith("Remaining time on Platinum after")
    assert credit.parent.subscription_details.subscription == sub.id
    # an always_invoice change bills the prorations at once
    server.sim.freeze(at + DAY)
    sub = client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": item.id, "price": gold.id}],
            "proration_behavior": "always_invoice",
        },
    )
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.billing_reason == "subscription_update"
    assert len(invoice.lines.data) == 4  # both earlier prorations and both new ones
    credited = invoice.lines.data[0].parent.subscription_item_details.proration_details
    first_invoice = client.v1.invoices.list(params={"subscription": sub.id}).data[-1]
    assert credited.credited_items.invoice == first_invoice.id
    assert credited.credited_items.invoice_line_items == [first_invoice.lines.data[0].id]
    assert all(line.parent.subscription_item_details.proration for line in invoice.lines.data)
    assert invoice.total == sum(line.amount for line in invoice.lines.data)
    assert (
        client.v1.invoice_items.list(params={"customer": customer.id, "pending": True}).data == []
    )


def test_quantity_change_prorates_unless_told_not_to(server: SimServer, client: Any) -> None:
    price = _price(client, 1200)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id, "quantity": 1}]}
    )
    item = sub["items"].data[0]
    server.sim.freeze(server.sim.now() + 10 * DAY)
    client.v1.subscription_items.update(item.id, params={"quantity": 3})
    pending = client.v1.invoice_items.list(params={"customer": customer.id, "pending": True})
    assert len(pending.data) == 2
    assert sum(ii.amount for ii in pending.data) > 0
    client.v1.subscriptions.update(
        sub.id,
        params={"items": [{"id": item.id, "quantity": 5}], "proration_behavior": "none"},
    )
    assert (
        len(client.v1.invoice_items.list(params={"customer": customer.id, "pending": True}).data)
        == 2
    )
    assert client.v1.subscription_items.retrieve(item.id).quantity == 5


def test_interval_change_resets_the_cycle_and_invoices_now(server: SimServer, client: Any) -> None:
    monthly, yearly = _price(client, 1000), _price(client, 10000, interval="year")
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": monthly.id}]}
    )
    server.sim.freeze(server.sim.now() + 5 * DAY)
    item = sub["items"].data[0]
    sub = client.v1.subscriptions.update(
        sub.id, params={"items": [{"id": item.id, "price": yearly.id}]}
    )
    now = server.sim.now()
    assert sub.billing_cycle_anchor == now
    assert sub["items"].data[0].current_period_start == now
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "paid"
    assert invoice.lines.data[-1].amount == 10000
    assert invoice.lines.data[0].amount < 0  # credit for the unused month


def test_subscription_item_endpoints(client: Any) -> None:
    gold, extra = _price(client, 1000), _price(client, 300, name="Extra")
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": gold.id}]}
    )
    added = client.v1.subscription_items.create(
        params={
            "subscription": sub.id,
            "price": extra.id,
            "quantity": 2,
            "proration_behavior": "none",
        }
    )
    assert added.subscription == sub.id and added.quantity == 2
    assert client.v1.subscription_items.retrieve(added.id).price.id == extra.id
    deleted = client.v1.subscription_items.delete(added.id, params={"proration_behavior": "none"})
    assert deleted.deleted is True
    assert [i.id for i in client.v1.subscriptions.retrieve(sub.id)["items"].data] == [
        sub["items"].data[0].id
    ]
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.subscription_items.delete(sub["items"].data[0].id)
    assert "at least one active plan" in str(info.value.user_message)


def test_items_beyond_ten_page_through_the_items_list(client: Any) -> None:
    prices = [_price(client, 100 + i, name=f"Add-on {i}") for i in range(13)]
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": p.id} for p in prices]}
    )
    assert len(sub["items"].data) == 10 and sub["items"].has_more is True
    listed = client.v1.subscription_items.list(params={"subscription": sub.id, "limit": 5})
    assert len(listed.data) == 5 and listed.has_more
    every = list(listed.auto_paging_iter())
    assert [i.price.id for i in every] == [p.id for p in prices]
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.lines.has_more and len(invoice.lines.data) == 10
    assert invoice.subtotal == sum(100 + i for i in range(13))


def test_pause_collection_and_resume_it(client: Any) -> None:
    price = _price(client)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    sub = client.v1.subscriptions.update(
        sub.id, params={"pause_collection": {"behavior": "keep_as_draft"}}
    )
    assert sub.status == "active"
    assert sub.pause_collection.behavior == "keep_as_draft"
    assert sub.pause_collection.resumes_at is None
    sub = client.v1.subscriptions.update(sub.id, params={"pause_collection": ""})
    assert sub.pause_collection is None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.resume(sub.id)  # only a paused subscription resumes


def test_cancel_at_period_end_and_undo(server: SimServer, client: Any) -> None:
    price = _price(client)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    sub = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    assert sub.status == "active" and sub.cancel_at_period_end is True
    assert sub.cancel_at == sub["items"].data[0].current_period_end
    assert sub.canceled_at == server.sim.now()
    assert sub.cancellation_details.reason == "cancellation_requested"
    sub = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": False})
    assert sub.cancel_at is None and sub.canceled_at is None


def test_immediate_cancel_and_list_semantics(server: SimServer, client: Any) -> None:
    price = _price(client)
    customer = _customer(client)
    keep = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    gone = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    canceled = client.v1.subscriptions.cancel(
        gone.id, params={"cancellation_details": {"feedback": "too_expensive"}}
    )
    assert canceled.status == "canceled"
    assert canceled.ended_at == canceled.canceled_at == server.sim.now()
    assert canceled.cancellation_details.feedback == "too_expensive"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.subscriptions.cancel(gone.id)

    def ids(**params: Any) -> set[str]:
        listed = client.v1.subscriptions.list(params={"customer": customer.id, **params})
        return {s.id for s in listed.auto_paging_iter()}

    assert ids() == {keep.id}
    assert ids(status="all") == {keep.id, gone.id}
    assert ids(status="canceled") == {gone.id}
    assert ids(status="ended") == {gone.id}
    assert ids(status="active") == {keep.id}
    assert ids(price=price.id, status="all") == {keep.id, gone.id}
    assert ids(collection_method="send_invoice") == set()
    types = [e.type for e in _events(server)[-10:]]
    assert "customer.subscription.deleted" in types


def test_deleting_a_customer_cancels_its_subscriptions(client: Any) -> None:
    price = _price(client)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    client.v1.customers.delete(customer.id)
    assert client.v1.subscriptions.retrieve(sub.id).status == "canceled"


def test_update_with_previous_attributes(server: SimServer, client: Any) -> None:
    price = _price(client)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    client.v1.subscriptions.update(sub.id, params={"metadata": {"plan": "pro"}})
    event = _events(server)[-1]
    assert event.type == "customer.subscription.updated"
    # Stripe names an added metadata key with its old value, null
    assert event.data.previous_attributes.to_dict() == {"metadata": {"plan": None}}
    assert event.data.object.metadata.to_dict() == {"plan": "pro"}


# -- the clock ----------------------------------------------------------------------------


def test_renewal_invoices_the_next_period(iso_server: SimServer) -> None:
    client = iso_server.client()
    price = _price(client, 2000)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    end = sub["items"].data[0].current_period_end
    clock.advance(iso_server.sim, end)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub["items"].data[0].current_period_start == end
    draft = client.v1.invoices.retrieve(sub.latest_invoice)
    assert draft.status == "draft" and draft.billing_reason == "subscription_cycle"
    assert draft.lines.data[0].period.start == end
    clock.advance(iso_server.sim, end + 3600)
    paid = client.v1.invoices.retrieve(sub.latest_invoice)
    assert paid.status == "paid" and paid.amount_paid == 2000
    assert paid.number.endswith("-0002")


def test_trial_ending_without_a_payment_method_pauses_then_resumes(
    iso_server: SimServer,
) -> None:
    client = iso_server.client()
    price = _price(client, 900)
    customer = _customer(client, pm=None)
    sub = client.v1.subscriptions.create(
        params={
            "customer": customer.id,
            "items": [{"price": price.id}],
            "trial_period_days": 7,
            "trial_settings": {"end_behavior": {"missing_payment_method": "pause"}},
        }
    )
    clock.advance(iso_server.sim, sub.trial_end)
    assert client.v1.subscriptions.retrieve(sub.id).status == "paused"
    types = [e.type for e in _events(iso_server)]
    assert "customer.subscription.trial_will_end" in types
    assert "customer.subscription.paused" in types
    _attach_default(client, customer.id)
    sub = client.v1.subscriptions.resume(sub.id)
    assert sub.status == "active"
    assert client.v1.invoices.retrieve(sub.latest_invoice).status == "paid"
    assert "customer.subscription.resumed" in [e.type for e in _events(iso_server)]


def test_cancel_at_period_end_ends_the_subscription(iso_server: SimServer) -> None:
    client = iso_server.client()
    price = _price(client)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    sub = client.v1.subscriptions.update(sub.id, params={"cancel_at_period_end": True})
    clock.advance(iso_server.sim, sub.cancel_at + 10)
    ended = client.v1.subscriptions.retrieve(sub.id)
    assert ended.status == "canceled" and ended.ended_at == sub.cancel_at
    assert ended.canceled_at == sub.canceled_at  # when it was asked for
    assert client.v1.invoices.list(params={"subscription": sub.id}).data[0].id == sub.latest_invoice


def test_incomplete_subscription_expires_after_23_hours(iso_server: SimServer) -> None:
    client = iso_server.client()
    price = _price(client)
    customer = _customer(client, pm="pm_card_chargeCustomerFail")
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    clock.advance(iso_server.sim, sub.created + 23 * 3600)
    assert client.v1.subscriptions.retrieve(sub.id).status == "incomplete_expired"
    assert client.v1.invoices.retrieve(sub.latest_invoice).status == "void"


def test_failed_renewal_makes_the_subscription_past_due(iso_server: SimServer) -> None:
    client = iso_server.client()
    price = _price(client)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    failing = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": customer.id}
    )
    client.v1.subscriptions.update(sub.id, params={"default_payment_method": failing.id})
    end = sub["items"].data[0].current_period_end
    clock.advance(iso_server.sim, end + 3600)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "past_due"
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "open" and invoice.attempt_count == 1
    assert invoice.next_payment_attempt == end + 3600 + 3 * DAY
    # three retries (3, 5 and 7 days apart), then Billing's default: cancel
    clock.advance(iso_server.sim, end + 3600 + 15 * DAY)
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert invoice.attempt_count == 4 and invoice.next_payment_attempt is None
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "canceled"
    assert sub.cancellation_details.reason == "payment_failed"


def _attach_default(client: Any, customer_id: str) -> None:
    pm = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer_id})
    client.v1.customers.update(
        customer_id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )


def test_pending_if_incomplete_applies_once_paid(server: SimServer, client: Any) -> None:
    gold, platinum = _price(client, 1000), _price(client, 3000, name="Platinum")
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": gold.id}]}
    )
    failing = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": customer.id}
    )
    client.v1.subscriptions.update(sub.id, params={"default_payment_method": failing.id})
    server.sim.freeze(server.sim.now() + 3 * DAY)
    item = sub["items"].data[0]
    sub = client.v1.subscriptions.update(
        sub.id,
        params={
            "items": [{"id": item.id, "price": platinum.id}],
            "proration_behavior": "always_invoice",
            "payment_behavior": "pending_if_incomplete",
        },
    )
    assert sub["items"].data[0].price.id == gold.id  # not applied yet
    assert sub.pending_update.subscription_items[0].price.id == platinum.id
    assert sub.pending_update.expires_at == server.sim.now() + 23 * 3600
    good = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    client.v1.invoices.pay(sub.latest_invoice, params={"payment_method": good.id})
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.pending_update is None
    assert sub["items"].data[0].price.id == platinum.id
    assert "customer.subscription.pending_update_applied" in [e.type for e in _events(server)]


def test_paused_collection_voids_the_renewal_invoice(iso_server: SimServer) -> None:
    client = iso_server.client()
    price = _price(client)
    customer = _customer(client)
    sub = client.v1.subscriptions.create(
        params={"customer": customer.id, "items": [{"price": price.id}]}
    )
    client.v1.subscriptions.update(sub.id, params={"pause_collection": {"behavior": "void"}})
    end = sub["items"].data[0].current_period_end
    clock.advance(iso_server.sim, end + 2 * 3600)
    sub = client.v1.subscriptions.retrieve(sub.id)
    assert sub.status == "active" and sub["items"].data[0].current_period_start == end
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    assert invoice.status == "void" and invoice.billing_reason == "subscription_cycle"
