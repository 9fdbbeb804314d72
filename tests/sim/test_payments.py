"""Payment methods, payment intents, charges and refunds, driven through the official SDK."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import stripe

from stripesync.sim.core import DEFAULT_ACCOUNT
from stripesync.sim.resources import payments
from stripesync.sim.server import SimServer

# -- helpers -------------------------------------------------------------------------------


def _customer(client: Any, payment_method: str | None = "pm_card_visa", **params: Any) -> Any:
    params.setdefault("email", f"{uuid.uuid4().hex[:8]}@example.com")
    if payment_method is not None:
        params["payment_method"] = payment_method
        params["invoice_settings"] = {"default_payment_method": payment_method}
    return client.v1.customers.create(params=params)


def _default_pm(customer: Any) -> str:
    return str(customer.invoice_settings.default_payment_method)


def _events(client: Any, event_type: str, object_id: str) -> list[Any]:
    page = client.v1.events.list(params={"type": event_type, "limit": 100})
    return [e for e in page.data if e.data.object.id == object_id]


def _keys(obj: Any) -> set[str]:
    return set(obj.to_dict())


# -- payment methods -------------------------------------------------------------------------


def test_payment_method_from_token_and_from_raw_number(client: Any, server: SimServer) -> None:
    by_token = client.v1.payment_methods.create(
        params={"type": "card", "card": {"token": "tok_mastercard"}}
    )
    assert by_token.id.startswith("pm_")
    assert (by_token.card.brand, by_token.card.last4) == ("mastercard", "4444")
    assert by_token.customer is None
    raw = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2034, "cvc": "314"},
            "billing_details": {"name": "Jenny Rosen", "address": {"country": "US"}},
            "metadata": {"app_user": "u1"},
        }
    )
    assert (raw.card.brand, raw.card.last4, raw.card.exp_year) == ("visa", "4242", 2034)
    assert raw.card.checks.cvc_check == "unchecked"
    assert raw.billing_details.name == "Jenny Rosen"
    assert raw.billing_details.address.country == "US"
    assert raw.metadata.to_dict() == {"app_user": "u1"}
    # The same card number has the same fingerprint in one account, as on Stripe.
    again = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    assert again.card.fingerprint == raw.card.fingerprint
    assert client.v1.payment_methods.retrieve(raw.id).id == raw.id


def test_payment_method_has_stripes_field_set(
    client: Any, stripe_fixtures: dict[str, dict[str, Any]]
) -> None:
    pm = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    assert _keys(pm) == set(stripe_fixtures["payment_method"])
    assert set(pm.card.to_dict()) == set(stripe_fixtures["payment_method"]["card"])


@pytest.mark.parametrize(
    ("card", "code", "param"),
    [
        (
            {"number": "4242424242424241", "exp_month": 1, "exp_year": 2035},
            "incorrect_number",
            "number",
        ),
        (
            {"number": "4242424242424242", "exp_month": 13, "exp_year": 2035},
            "invalid_expiry_month",
            "exp_month",
        ),
        (
            {"number": "4242424242424242", "exp_month": 1, "exp_year": 2001},
            "invalid_expiry_year",
            "exp_year",
        ),
        (
            {"number": "4242424242424242", "exp_month": 1, "exp_year": 2035, "cvc": "1"},
            "invalid_cvc",
            "cvc",
        ),
    ],
    ids=["luhn", "month", "year", "cvc"],
)
def test_bad_card_data_is_a_card_error(
    client: Any, card: dict[str, Any], code: str, param: str
) -> None:
    with pytest.raises(stripe.CardError) as info:
        client.v1.payment_methods.create(params={"type": "card", "card": card})
    assert info.value.http_status == 402
    assert info.value.code == code
    assert info.value.param == param


def test_payment_method_params_are_checked(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_methods.create(params={"card": {"token": "tok_visa"}})
    assert info.value.param == "type"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_methods.create(params={"type": "card", "colour": "red"})
    assert info.value.param == "colour"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_methods.retrieve("pm_doesnotexist")
    assert info.value.http_status == 404
    assert info.value.code == "resource_missing"
    assert "No such PaymentMethod: 'pm_doesnotexist'" in str(info.value.user_message)


def test_magic_ids_make_a_fresh_payment_method_each_time(client: Any) -> None:
    customer = _customer(client, payment_method=None)
    first = client.v1.payment_methods.attach("pm_card_visa", params={"customer": customer.id})
    second = client.v1.payment_methods.attach("pm_card_amex", params={"customer": customer.id})
    assert first.id != "pm_card_visa" and first.id != second.id
    assert (first.customer, second.card.brand, second.card.last4) == (customer.id, "amex", "0005")
    listed = client.v1.customers.payment_methods.list(customer.id)
    assert [pm.id for pm in listed.data] == [second.id, first.id]  # newest first
    # Customer creation and invoice defaults accept them too.
    other = _customer(client, payment_method="pm_card_mastercard")
    assert _default_pm(other).startswith("pm_1")
    assert client.v1.payment_methods.retrieve(_default_pm(other)).customer == other.id


def test_attach_update_detach_with_events(client: Any) -> None:
    customer = _customer(client, payment_method=None)
    pm = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_methods.update(pm.id, params={"metadata": {"k": "v"}})
    assert "save this PaymentMethod to a customer" in str(info.value.user_message)
    attached = client.v1.payment_methods.attach(pm.id, params={"customer": customer.id})
    assert attached.customer == customer.id
    assert attached.card.checks.cvc_check == "pass"
    assert len(_events(client, "payment_method.attached", pm.id)) == 1
    client.v1.customers.update(
        customer.id, params={"invoice_settings": {"default_payment_method": pm.id}}
    )
    updated = client.v1.payment_methods.update(
        pm.id,
        params={
            "billing_details": {"name": "Ada Lovelace", "address": {"postal_code": "94107"}},
            "card": {"exp_month": 3, "exp_year": 2033},
            "metadata": {"source": "portal"},
        },
    )
    assert (updated.card.exp_month, updated.card.exp_year) == (3, 2033)
    assert updated.billing_details.address.postal_code == "94107"
    (event,) = _events(client, "payment_method.updated", pm.id)
    previous = event.data.previous_attributes.to_dict()
    assert previous["billing_details"]["name"] is None
    assert previous["metadata"] == {"source": None}  # Stripe names the added key
    detached = client.v1.payment_methods.detach(pm.id)
    assert detached.customer is None
    (event,) = _events(client, "payment_method.detached", pm.id)
    assert event.data.previous_attributes.customer == customer.id
    # Stripe clears the default and never lets a detached payment method back.
    assert client.v1.customers.retrieve(customer.id).invoice_settings.default_payment_method is None
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_methods.attach(pm.id, params={"customer": customer.id})
    assert "may not be used again" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_methods.detach(pm.id)


def test_attaching_to_a_second_customer_is_refused(client: Any) -> None:
    one, two = _customer(client), _customer(client, payment_method=None)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_methods.attach(_default_pm(one), params={"customer": two.id})
    assert "already been attached" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_methods.attach("pm_card_visa", params={"customer": "cus_nope"})
    assert info.value.http_status == 404 and info.value.param == "customer"


def test_list_payment_methods_by_customer_and_type(client: Any) -> None:
    customer = _customer(client)
    client.v1.payment_methods.attach("pm_card_discover", params={"customer": customer.id})
    listed = client.v1.payment_methods.list(params={"customer": customer.id, "type": "card"})
    assert {pm.card.brand for pm in listed.data} == {"visa", "discover"}
    assert listed.url == "/v1/payment_methods"
    none = client.v1.payment_methods.list(params={"customer": customer.id, "type": "sepa_debit"})
    assert none.data == []
    # Payment methods have no `created` filter, as on Stripe.
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_methods.list(params={"customer": customer.id, "created": {"gt": 1}})
    assert info.value.param == "created"
    one = client.v1.customers.payment_methods.list(customer.id, params={"limit": 1})
    assert len(one.data) == 1 and one.has_more
    assert client.v1.customers.payment_methods.retrieve(customer.id, one.data[0].id).id == (
        one.data[0].id
    )


@pytest.mark.parametrize(
    ("magic", "code", "decline_code"),
    [
        ("pm_card_visa_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclined", "card_declined", "generic_decline"),
        ("pm_card_chargeDeclinedInsufficientFunds", "card_declined", "insufficient_funds"),
        ("pm_card_visa_chargeDeclinedLostCard", "card_declined", "lost_card"),
        ("pm_card_chargeDeclinedExpiredCard", "expired_card", None),
        ("pm_card_chargeDeclinedIncorrectCvc", "incorrect_cvc", None),
        ("pm_card_chargeDeclinedProcessingError", "processing_error", None),
    ],
)
def test_decline_table_cards_cannot_be_attached(
    client: Any, magic: str, code: str, decline_code: str | None
) -> None:
    customer = _customer(client, payment_method=None)
    with pytest.raises(stripe.CardError) as info:
        client.v1.payment_methods.attach(magic, params={"customer": customer.id})
    assert info.value.http_status == 402
    assert info.value.code == code
    assert info.value.error.decline_code == decline_code
    assert client.v1.customers.payment_methods.list(customer.id).data == []
    # Nor can a customer be created with one (nothing is created).
    with pytest.raises(stripe.CardError):
        client.v1.customers.create(params={"email": "x@example.com", "payment_method": magic})


def test_charge_customer_fail_card_attaches(client: Any) -> None:
    customer = _customer(client, payment_method="pm_card_chargeCustomerFail")
    pm = client.v1.payment_methods.retrieve(_default_pm(customer))
    assert (pm.customer, pm.card.last4) == (customer.id, "0341")


# -- payment intents -------------------------------------------------------------------------


def test_payment_intent_lifecycle_and_charge(
    client: Any, stripe_fixtures: dict[str, dict[str, Any]]
) -> None:
    customer = _customer(client, payment_method="pm_card_visa", name="Grace Hopper")
    pi = client.v1.payment_intents.create(
        params={
            "amount": 2500,
            "currency": "usd",
            "customer": customer.id,
            "description": "Order #1001",
            "metadata": {"order": "1001"},
            "receipt_email": "grace@example.com",
        }
    )
    assert pi.status == "requires_payment_method"
    assert pi.automatic_payment_methods.enabled is True
    assert pi.client_secret.startswith(f"{pi.id}_secret_")
    assert _keys(pi) == set(stripe_fixtures["payment_intent"]) - {"managed_payments"}
    pi = client.v1.payment_intents.update(pi.id, params={"payment_method": _default_pm(customer)})
    assert pi.status == "requires_confirmation"
    pi = client.v1.payment_intents.confirm(pi.id)
    assert (pi.status, pi.amount_received, pi.last_payment_error) == ("succeeded", 2500, None)
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.status, charge.paid, charge.captured) == ("succeeded", True, True)
    assert (charge.amount, charge.amount_captured, charge.amount_refunded) == (2500, 2500, 0)
    assert (charge.payment_intent, charge.customer) == (pi.id, customer.id)
    assert charge.payment_method == _default_pm(customer)
    assert charge.description == "Order #1001"
    assert charge.metadata.to_dict() == {"order": "1001"}
    assert charge.receipt_email == "grace@example.com"
    assert charge.receipt_number is None  # test mode sends no receipts on its own
    assert charge.receipt_url.startswith("https://pay.stripe.com/receipts/payment/")
    assert charge.balance_transaction.startswith("txn_")
    assert charge.outcome.type == "authorized"
    assert charge.outcome.network_status == "approved_by_network"
    assert charge.outcome.seller_message == "Payment complete."
    card = charge.payment_method_details.card
    assert (card.brand, card.last4, card.funding, card.country) == ("visa", "4242", "credit", "US")
    assert card.checks.cvc_check == "pass"
    assert _keys(charge) == set(stripe_fixtures["charge"]) - {"refunds"}
    created = _events(client, "payment_intent.created", pi.id)
    succeeded = _events(client, "payment_intent.succeeded", pi.id)
    charged = _events(client, "charge.succeeded", charge.id)
    assert len(created) == len(succeeded) == len(charged) == 1
    assert succeeded[0].request.id is not None  # made by an API request


def test_confirming_with_a_declining_card_answers_402_and_keeps_the_attempt(client: Any) -> None:
    customer = _customer(client, payment_method="pm_card_chargeCustomerFail")
    with pytest.raises(stripe.CardError) as info:
        client.v1.payment_intents.create(
            params={
                "amount": 1999,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": _default_pm(customer),
                "confirm": True,
                "off_session": True,
            }
        )
    error = info.value
    assert error.http_status == 402
    assert (error.code, error.error.decline_code) == ("card_declined", "generic_decline")
    assert error.user_message == "Your card was declined."
    embedded = error.error.payment_intent
    assert embedded.status == "requires_payment_method"
    assert embedded.payment_method is None
    charge_id = error.error.charge
    assert embedded.latest_charge == charge_id
    assert embedded.last_payment_error.charge == charge_id
    assert embedded.last_payment_error.payment_method.id == _default_pm(customer)
    # The failed charge, the intent and their events are recorded all the same.
    pi = client.v1.payment_intents.retrieve(embedded.id)
    assert pi.last_payment_error.type == "card_error"
    assert pi.last_payment_error.decline_code == "generic_decline"
    charge = client.v1.charges.retrieve(charge_id)
    assert (charge.status, charge.paid, charge.captured) == ("failed", False, False)
    assert (charge.failure_code, charge.failure_message) == (
        "card_declined",
        "Your card was declined.",
    )
    assert charge.balance_transaction is None
    assert charge.outcome.type == "issuer_declined"
    assert charge.outcome.reason == "generic_decline"
    assert charge.outcome.network_status == "declined_by_network"
    assert len(_events(client, "charge.failed", charge_id)) == 1
    assert len(_events(client, "payment_intent.payment_failed", pi.id)) == 1
    # A new card saves the day.
    pi = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert pi.status == "succeeded" and pi.latest_charge != charge_id


@pytest.mark.parametrize(
    ("magic", "decline_code", "message"),
    [
        (
            "pm_card_visa_chargeDeclinedInsufficientFunds",
            "insufficient_funds",
            "Your card has insufficient funds.",
        ),
        ("pm_card_chargeDeclinedExpiredCard", None, "Your card has expired."),
        ("pm_card_chargeDeclinedIncorrectCvc", None, "Your card's security code is incorrect."),
    ],
)
def test_decline_table_cards_decline_at_charge_time_without_a_customer(
    client: Any, magic: str, decline_code: str | None, message: str
) -> None:
    with pytest.raises(stripe.CardError) as info:
        client.v1.payment_intents.create(
            params={"amount": 5000, "currency": "eur", "payment_method": magic, "confirm": True}
        )
    assert info.value.error.decline_code == decline_code
    assert info.value.user_message == message
    charge = client.v1.charges.retrieve(info.value.error.charge)
    assert charge.failure_message == message
    assert charge.outcome.reason == (decline_code or info.value.code)
    assert charge.customer is None


def test_unknown_card_number_declines_in_test_mode(client: Any) -> None:
    pm = client.v1.payment_methods.create(
        params={
            "type": "card",
            "card": {"number": "4111111111111111", "exp_month": 6, "exp_year": 2031},
        }
    )
    with pytest.raises(stripe.CardError) as info:
        client.v1.payment_intents.create(
            params={"amount": 900, "currency": "usd", "payment_method": pm.id, "confirm": True}
        )
    assert info.value.error.decline_code == "test_mode_live_card"


def test_payment_method_rules_on_intents(client: Any) -> None:
    owner, stranger = _customer(client), _customer(client)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.create(
            params={"amount": 700, "currency": "usd", "payment_method": _default_pm(owner)}
        )
    assert info.value.param == "payment_method"
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.payment_intents.create(
            params={
                "amount": 700,
                "currency": "usd",
                "customer": stranger.id,
                "payment_method": _default_pm(owner),
            }
        )
    # A payment method used without a customer is spent.
    pm = client.v1.payment_methods.create(params={"type": "card", "card": {"token": "tok_visa"}})
    client.v1.payment_intents.create(
        params={"amount": 700, "currency": "usd", "payment_method": pm.id, "confirm": True}
    )
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.create(
            params={"amount": 700, "currency": "usd", "payment_method": pm.id, "confirm": True}
        )
    assert "may not be used again" in str(info.value.user_message)


def test_setup_future_usage_attaches_the_card(client: Any) -> None:
    customer = _customer(client, payment_method=None)
    pi = client.v1.payment_intents.create(
        params={
            "amount": 1200,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": "pm_card_mastercard",
            "setup_future_usage": "off_session",
            "confirm": True,
        }
    )
    assert pi.status == "succeeded"
    assert client.v1.payment_methods.retrieve(pi.payment_method).customer == customer.id


def test_payment_intent_validation(client: Any) -> None:
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.create(params={"amount": 10, "currency": "usd"})
    assert (info.value.param, info.value.code) == ("amount", "amount_too_small")
    assert "Amount must be at least $0.50 usd" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.create(params={"amount": 1000})
    assert (info.value.param, info.value.code) == ("currency", "parameter_missing")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.create(
            params={"amount": 1000, "currency": "usd", "customer": "cus_missing"}
        )
    assert (info.value.http_status, info.value.code) == (404, "resource_missing")
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.create(
            params={"amount": 1000, "currency": "usd", "payment_method": "pm_card_nosuchcard"}
        )
    assert info.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.create(
            params={"amount": 1000, "currency": "usd", "payment_method_types": ["ideal"]}
        )
    assert info.value.param == "payment_method_types"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.retrieve("pi_missing")
    assert info.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.confirm(
            client.v1.payment_intents.create(params={"amount": 1000, "currency": "usd"}).id
        )
    assert info.value.code == "payment_intent_unexpected_state"


def test_cancel_and_state_errors(client: Any) -> None:
    pi = client.v1.payment_intents.create(params={"amount": 3000, "currency": "gbp"})
    canceled = client.v1.payment_intents.cancel(pi.id, params={"cancellation_reason": "abandoned"})
    assert (canceled.status, canceled.cancellation_reason) == ("canceled", "abandoned")
    assert canceled.canceled_at is not None
    assert len(_events(client, "payment_intent.canceled", pi.id)) == 1
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert info.value.code == "payment_intent_unexpected_state"
    paid = client.v1.payment_intents.create(
        params={
            "amount": 3000,
            "currency": "gbp",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.cancel(paid.id)
    assert "status of succeeded" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.update(paid.id, params={"amount": 100})
    assert info.value.code == "payment_intent_unexpected_state"
    # Metadata and receipt email stay editable; the charge learns the new address.
    paid = client.v1.payment_intents.update(
        paid.id, params={"metadata": {"crm": "42"}, "receipt_email": "late@example.com"}
    )
    assert paid.metadata.crm == "42"
    assert client.v1.charges.retrieve(paid.latest_charge).receipt_email == "late@example.com"
    assert len(_events(client, "charge.updated", paid.latest_charge)) == 1


def test_lists_filter_by_customer_payment_intent_and_created(client: Any) -> None:
    customer = _customer(client)
    intents = [
        client.v1.payment_intents.create(
            params={
                "amount": 1000 + i,
                "currency": "usd",
                "customer": customer.id,
                "payment_method": _default_pm(customer),
                "confirm": True,
            }
        )
        for i in range(3)
    ]
    listed = client.v1.payment_intents.list(params={"customer": customer.id})
    assert [pi.id for pi in listed.data] == [pi.id for pi in reversed(intents)]
    charges = client.v1.charges.list(params={"customer": customer.id, "limit": 2})
    assert len(charges.data) == 2 and charges.has_more
    by_pi = client.v1.charges.list(params={"payment_intent": intents[0].id})
    assert [c.id for c in by_pi.data] == [intents[0].latest_charge]
    later = client.v1.charges.list(
        params={"customer": customer.id, "created": {"gt": intents[-1].created}}
    )
    assert later.data == []
    everything = [
        c.id for c in client.v1.charges.list(params={"customer": customer.id}).auto_paging_iter()
    ]
    assert len(everything) == 3


def test_charge_update_emits_charge_updated(client: Any) -> None:
    pi = client.v1.payment_intents.create(
        params={
            "amount": 4200,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )
    charge = client.v1.charges.update(
        pi.latest_charge,
        params={"description": "Annual plan", "metadata": {"ledger": "L-9"}},
    )
    assert (charge.description, charge.metadata.ledger) == ("Annual plan", "L-9")
    (event,) = _events(client, "charge.updated", charge.id)
    assert event.data.previous_attributes.to_dict() == {
        "description": None,
        "metadata": {"ledger": None},
    }
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.charges.update(charge.id, params={"amount": 1})
    assert info.value.param == "amount"


def test_legacy_charges_with_tokens(client: Any) -> None:
    charge = client.v1.charges.create(
        params={"amount": 1500, "currency": "usd", "source": "tok_amex", "description": "Legacy"}
    )
    assert (charge.status, charge.payment_intent) == ("succeeded", None)
    assert charge.source.object == "card" and charge.source.brand == "American Express"
    assert charge.payment_method == charge.source.id
    with pytest.raises(stripe.CardError) as info:
        client.v1.charges.create(
            params={"amount": 1500, "currency": "usd", "source": "tok_chargeDeclined"}
        )
    failed = client.v1.charges.retrieve(info.value.error.charge)
    assert failed.status == "failed"
    with pytest.raises(stripe.CardError) as info:
        client.v1.charges.create(
            params={"amount": 1500, "currency": "usd", "customer": _customer(client).id}
        )
    assert info.value.code == "missing"


# -- refunds ---------------------------------------------------------------------------------


def _paid(client: Any, amount: int = 5000) -> Any:
    customer = _customer(client)
    return client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "customer": customer.id,
            "payment_method": _default_pm(customer),
            "confirm": True,
        }
    )


def test_partial_and_full_refunds(client: Any, stripe_fixtures: dict[str, dict[str, Any]]) -> None:
    pi = _paid(client, 5000)
    first = client.v1.refunds.create(
        params={"charge": pi.latest_charge, "amount": 1500, "reason": "requested_by_customer"}
    )
    assert (first.status, first.amount, first.payment_intent) == ("succeeded", 1500, pi.id)
    assert (first.customer, first.payment_method) == (pi.customer, pi.payment_method)
    assert first.destination_details.type == "card"
    assert _keys(first) == set(stripe_fixtures["refund"])
    charge = client.v1.charges.retrieve(pi.latest_charge)
    assert (charge.amount_refunded, charge.refunded) == (1500, False)
    (event,) = _events(client, "charge.refunded", charge.id)
    assert event.data.previous_attributes.to_dict() == {"amount_refunded": 0}
    assert len(_events(client, "refund.created", first.id)) == 1
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create(params={"charge": charge.id, "amount": 4000})
    assert info.value.param == "amount"
    assert "Refund amount ($40.00) is greater than unrefunded amount on charge ($35.00)" in str(
        info.value.user_message
    )
    rest = client.v1.refunds.create(params={"payment_intent": pi.id})
    assert rest.amount == 3500
    charge = client.v1.charges.retrieve(charge.id)
    assert (charge.amount_refunded, charge.refunded) == (5000, True)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create(params={"charge": charge.id})
    assert info.value.code == "charge_already_refunded"
    listed = client.v1.refunds.list(params={"charge": charge.id})
    assert [r.id for r in listed.data] == [rest.id, first.id]
    assert [r.id for r in client.v1.refunds.list(params={"payment_intent": pi.id}).data] == [
        rest.id,
        first.id,
    ]


def test_charge_refunds_list_is_includable(client: Any) -> None:
    pi = _paid(client, 3000)
    refund = client.v1.refunds.create(params={"charge": pi.latest_charge, "amount": 100})
    plain = client.v1.charges.retrieve(pi.latest_charge)
    assert "refunds" not in _keys(plain)  # not returned by default since 2022-11-15
    expanded = client.v1.charges.retrieve(pi.latest_charge, params={"expand": ["refunds"]})
    assert expanded.refunds.url == f"/v1/charges/{pi.latest_charge}/refunds"
    assert [r.id for r in expanded.refunds.data] == [refund.id]
    listed = client.v1.charges.list(params={"payment_intent": pi.id, "expand": ["data.refunds"]})
    assert listed.data[0].refunds.data[0].id == refund.id


def test_refund_update_cancel_and_errors(client: Any) -> None:
    pi = _paid(client, 2000)
    refund = client.v1.refunds.create(params={"charge": pi.latest_charge, "amount": 500})
    updated = client.v1.refunds.update(refund.id, params={"metadata": {"ticket": "T-1"}})
    assert updated.metadata.ticket == "T-1"
    assert len(_events(client, "refund.updated", refund.id)) == 1
    (event,) = _events(client, "charge.refund.updated", refund.id)
    assert event.data.previous_attributes.to_dict() == {"metadata": {"ticket": None}}
    expanded = client.v1.charges.retrieve(pi.latest_charge, params={"expand": ["refunds"]})
    assert expanded.refunds.data[0].metadata.ticket == "T-1"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.cancel(refund.id)
    assert "requires_action" in str(info.value.user_message)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.retrieve("re_missing")
    assert info.value.http_status == 404
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create(params={"amount": 100})
    assert info.value.param == "charge"
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.refunds.create(params={"charge": pi.latest_charge, "reason": "because"})
    assert info.value.param == "reason"


def test_failed_charges_cannot_be_refunded(client: Any) -> None:
    with pytest.raises(stripe.CardError) as info:
        client.v1.payment_intents.create(
            params={
                "amount": 800,
                "currency": "usd",
                "payment_method": "pm_card_visa_chargeDeclined",
                "confirm": True,
            }
        )
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"charge": info.value.error.charge})
    assert refused.value.code == "charge_not_refundable"
    with pytest.raises(stripe.InvalidRequestError) as refused:
        client.v1.refunds.create(params={"payment_intent": info.value.error.payment_intent.id})
    assert refused.value.code == "charge_not_refundable"


# -- idempotency, modes, versions --------------------------------------------------------------


def test_idempotent_requests_replay_success_and_decline(client: Any, server: SimServer) -> None:
    key = f"order-{uuid.uuid4().hex}"
    params = {"amount": 2100, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    first = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    again = client.v1.payment_intents.create(params=params, options={"idempotency_key": key})
    assert first.id == again.id
    assert len(_events(client, "payment_intent.created", first.id)) == 1
    declined = {**params, "payment_method": "pm_card_visa_chargeDeclined"}
    key = f"order-{uuid.uuid4().hex}"
    with pytest.raises(stripe.CardError) as one:
        client.v1.payment_intents.create(params=declined, options={"idempotency_key": key})
    with pytest.raises(stripe.CardError) as two:
        client.v1.payment_intents.create(params=declined, options={"idempotency_key": key})
    assert one.value.error.charge == two.value.error.charge
    assert len(_events(client, "charge.failed", one.value.error.charge)) == 1


def test_live_mode_receipts_are_numbered(server: SimServer) -> None:
    live = server.client(server.live_key)
    pi = live.v1.payment_intents.create(
        params={
            "amount": 1000,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "receipt_email": "buyer@example.com",
        }
    )
    charge = live.v1.charges.retrieve(pi.latest_charge)
    assert charge.livemode is True
    assert charge.receipt_number is not None and "-" in charge.receipt_number


def test_invoice_payments_render_charge_invoice_in_legacy_versions(client: Any) -> None:
    customer = _customer(client)
    client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": 1800, "currency": "usd"}
    )
    invoice = client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    invoice = client.v1.invoices.pay(client.v1.invoices.finalize_invoice(invoice.id).id)
    assert invoice.status == "paid"
    (charge,) = client.v1.charges.list(params={"customer": customer.id}).data
    assert charge.receipt_email == customer.email
    assert "invoice" not in _keys(charge)
    old = client.v1.charges.retrieve(charge.id, options={"stripe_version": "2024-06-20"})
    assert old.invoice == invoice.id
    intent = client.v1.payment_intents.retrieve(
        charge.payment_intent, options={"stripe_version": "2024-06-20"}
    )
    assert intent.invoice == invoice.id


def test_confirming_an_invoice_intent_pays_the_invoice(client: Any) -> None:
    customer = _customer(client, payment_method=None)
    client.v1.invoice_items.create(
        params={"customer": customer.id, "amount": 2600, "currency": "usd"}
    )
    invoice = client.v1.invoices.create(
        params={"customer": customer.id, "pending_invoice_items_behavior": "include"}
    )
    invoice = client.v1.invoices.finalize_invoice(invoice.id)
    with pytest.raises(stripe.StripeError):
        client.v1.invoices.pay(invoice.id)  # nothing to charge yet
    (pi,) = client.v1.payment_intents.list(params={"customer": customer.id}).data
    assert (pi.status, pi.amount, pi.latest_charge) == ("requires_payment_method", 2600, None)
    with pytest.raises(stripe.InvalidRequestError) as info:
        client.v1.payment_intents.cancel(pi.id)
    assert "created by an invoice" in str(info.value.user_message)
    pi = client.v1.payment_intents.confirm(pi.id, params={"payment_method": "pm_card_visa"})
    assert pi.status == "succeeded"
    invoice = client.v1.invoices.retrieve(invoice.id)
    assert (invoice.status, invoice.amount_paid) == ("paid", 2600)


# -- the contract the invoices module relies on -----------------------------------------------


def test_collect_contract(server: SimServer) -> None:
    sim = server.sim
    ctx = sim.context()
    client = server.client()
    customer = _customer(client)
    invoice = {"id": "in_contract_1"}
    with sim.db:
        pi, charge = payments.collect(
            sim,
            ctx,
            customer=customer.id,
            amount=4900,
            currency="usd",
            payment_method=None,
            description="Subscription creation",
            invoice=invoice,
            automatic=True,
        )
    assert pi["status"] == "succeeded" and charge is not None
    assert pi["_invoice"] == charge["_invoice"] == "in_contract_1"
    assert charge["payment_method"] == _default_pm(customer)
    assert charge["receipt_email"] == customer.email
    assert charge["description"] == "Subscription creation"
    (event,) = _events(client, "payment_intent.succeeded", pi["id"])
    assert event.request.id is None  # Stripe did it on its own
    # A customer with nothing to charge: the intent waits for a payment method.
    bare = _customer(client, payment_method=None)
    with sim.db:
        pi, charge = payments.collect(
            sim,
            ctx,
            customer=bare.id,
            amount=4900,
            currency="usd",
            payment_method=None,
            description=None,
            invoice=None,
            automatic=True,
        )
    assert (pi["status"], charge) == ("requires_payment_method", None)
    # Without an invoice default, the first attached card pays.
    first = client.v1.payment_methods.attach("pm_card_amex", params={"customer": bare.id})
    client.v1.payment_methods.attach("pm_card_visa", params={"customer": bare.id})
    with sim.db:
        pi, charge = payments.collect(
            sim,
            ctx,
            customer=bare.id,
            amount=4900,
            currency="usd",
            payment_method=None,
            description=None,
            invoice=None,
            automatic=False,
            created=1_700_000_000,
        )
    assert charge is not None and charge["payment_method"] == first.id
    assert pi["created"] == charge["created"] == 1_700_000_000
    # A declining card: a failed charge, the intent back to requires_payment_method.
    failing = client.v1.payment_methods.attach(
        "pm_card_chargeCustomerFail", params={"customer": bare.id}
    )
    with sim.db:
        pi, charge = payments.collect(
            sim,
            ctx,
            customer=bare.id,
            amount=4900,
            currency="usd",
            payment_method=failing.id,
            description=None,
            invoice=None,
            automatic=True,
        )
    assert charge is not None and charge["status"] == "failed"
    assert pi["status"] == "requires_payment_method"
    assert pi["last_payment_error"]["decline_code"] == "generic_decline"
    assert ctx.acct == f"{DEFAULT_ACCOUNT}:test"
