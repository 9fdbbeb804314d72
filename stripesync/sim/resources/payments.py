"""Payments: payment intents, the charges their confirmations make, and refunds.

A confirmation charges the payment method at once (``capture_method`` automatic): the
charge succeeds or fails by the test card (see ``payment_methods``), the intent becomes
``succeeded`` or goes back to ``requires_payment_method`` with ``last_payment_error``.
A declined confirmation answers HTTP 402 with a ``card_error`` that embeds the intent, as
Stripe does, and still keeps the failed charge and its events.

``collect`` is what invoices call to take a payment; ``create_refund`` what credit notes
call to refund one. The charge's ``refunds`` list is *includable*: since API version
2022-11-15 Stripe returns it only with ``expand[]=refunds`` (stored as ``_refunds``).
"""

from __future__ import annotations

import copy
import hashlib
import importlib
from typing import Any

from stripesync.sim import forms
from stripesync.sim.core import Ctx, Simulator, route
from stripesync.sim.errors import SimAPIError, invalid, missing, required
from stripesync.sim.resources import payment_methods as pms
from stripesync.sim.resources.common import (
    ZERO_DECIMAL,
    check_params,
    diff,
    emit_updated,
    ensure_currency,
)

#: What appears on card statements for the simulated account.
STATEMENT_DESCRIPTOR = "STRIPESYNC SIM"
#: Stripe's minimum charge amounts, in the currency's smallest unit.
MIN_AMOUNTS = {
    "usd": 50,
    "aud": 50,
    "brl": 50,
    "cad": 50,
    "chf": 50,
    "eur": 50,
    "inr": 50,
    "nzd": 50,
    "sgd": 50,
    "gbp": 30,
    "jpy": 50,
    "dkk": 250,
    "nok": 300,
    "sek": 300,
    "hkd": 400,
    "mxn": 1000,
}
MAX_AMOUNT = 99_999_999
SYMBOLS = {
    "usd": "$",
    "aud": "$",
    "cad": "$",
    "hkd": "$",
    "mxn": "$",
    "nzd": "$",
    "sgd": "$",
    "eur": "€",
    "gbp": "£",
    "jpy": "¥",
    "inr": "₹",
    "brl": "R$",
}
CANCELABLE = (
    "requires_payment_method",
    "requires_capture",
    "requires_confirmation",
    "requires_action",
    "processing",
)
CANCELLATION_REASONS = ("abandoned", "duplicate", "fraudulent", "requested_by_customer")
REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")


def money(amount: int, currency: str) -> str:
    """An amount as Stripe writes it in messages: ``$10.00``."""
    symbol = SYMBOLS.get(currency)
    value = f"{amount:,}" if currency in ZERO_DECIMAL else f"{amount / 100:,.2f}"
    return f"{symbol}{value}" if symbol else f"{value} {currency.upper()}"


def _amount(params: dict[str, Any], currency: str, name: str = "amount") -> int:
    amount = forms.as_int(params, name)
    if amount is None:
        raise required(name)
    minimum = MIN_AMOUNTS.get(currency, 50)
    if amount < minimum:
        raise invalid(
            f"Amount must be at least {money(minimum, currency)} {currency}",
            param=name,
            code="amount_too_small",
        )
    if amount > MAX_AMOUNT:
        raise invalid(
            f"Amount must be no more than {money(MAX_AMOUNT, currency)}",
            param=name,
            code="amount_too_large",
        )
    return amount


def _currency(params: dict[str, Any]) -> str:
    if not params.get("currency"):
        raise required("currency")
    return ensure_currency(params["currency"])


def _load_customer(sim: Simulator, ctx: Ctx, customer_id: Any, param: str) -> dict[str, Any]:
    customer = sim.db.get(ctx.acct, str(customer_id))
    if customer is None or customer.get("object") != "customer":
        raise missing(str(customer_id), param=param, kind="customer")
    return customer


def load_payment_intent(
    sim: Simulator, ctx: Ctx, pi_id: str, param: str = "intent"
) -> dict[str, Any]:
    return sim.get(ctx, pi_id, kind="payment_intent", param=param, object_type="payment_intent")


def load_charge(sim: Simulator, ctx: Ctx, charge_id: str, param: str = "id") -> dict[str, Any]:
    return sim.get(ctx, charge_id, kind="charge", param=param, object_type="charge")


def load_refund(sim: Simulator, ctx: Ctx, refund_id: str, param: str = "id") -> dict[str, Any]:
    return sim.get(ctx, refund_id, kind="refund", param=param, object_type="refund")


def _receipt_token(sim: Simulator) -> str:
    return sim.random_chars(96)


def _digits(sim: Simulator, n: int) -> str:
    return "".join(str(sim.rng.randrange(10)) for _ in range(n))


# -- payment intents ----------------------------------------------------------------------


def _configuration_id(ctx: Ctx) -> str:
    """The account's one payment method configuration (Stripe's default is per account)."""
    digest = hashlib.sha256(f"pmc:{ctx.acct}".encode()).hexdigest()
    return f"pmc_1Sim{digest[:20]}"


def new_payment_intent(
    sim: Simulator,
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    description: str | None = None,
    automatic_methods: bool = False,
    created: int | None = None,
) -> dict[str, Any]:
    pi_id = sim.new_id("pi")
    return {
        "id": pi_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_details": {"tip": {}},
        "amount_received": 0,
        "application": None,
        "application_fee_amount": None,
        "automatic_payment_methods": {"allow_redirects": "always", "enabled": True}
        if automatic_methods
        else None,
        "canceled_at": None,
        "cancellation_reason": None,
        "capture_method": "automatic_async",
        "client_secret": f"{pi_id}_secret_{sim.random_chars(25)}",
        "confirmation_method": "automatic",
        "created": created if created is not None else sim.now(),
        "currency": currency,
        "customer": customer,
        "customer_account": None,
        "description": description,
        "excluded_payment_method_types": None,
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": ctx.livemode,
        "metadata": {},
        "next_action": None,
        "on_behalf_of": None,
        "payment_method": None,
        "payment_method_configuration_details": {"id": _configuration_id(ctx), "parent": None}
        if automatic_methods
        else None,
        "payment_method_options": {
            "card": {
                "installments": None,
                "mandate_options": None,
                "network": None,
                "request_three_d_secure": "automatic",
            }
        },
        "payment_method_types": ["card"],
        "processing": None,
        "receipt_email": None,
        "review": None,
        "setup_future_usage": None,
        "shipping": None,
        "source": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": None,
        "status": "requires_payment_method",
        "transfer_data": None,
        "transfer_group": None,
        "_invoice": None,
    }


def save_payment_intent(sim: Simulator, ctx: Ctx, pi: dict[str, Any]) -> None:
    sim.save(ctx, pi)


def default_instrument(sim: Simulator, ctx: Ctx, customer: dict[str, Any]) -> dict[str, Any] | None:
    """What an invoice charges when nothing is named: the customer's invoice default, its
    default source, else its first attached card."""
    settings = customer.get("invoice_settings") or {}
    for ref in (settings.get("default_payment_method"), customer.get("default_source")):
        if isinstance(ref, dict):
            ref = ref.get("id")
        if isinstance(ref, str) and ref:
            obj = sim.db.get(ctx.acct, ref)
            if obj is not None and obj.get("object") in ("payment_method", "card"):
                return obj
    page = sim.db.list(ctx.acct, "payment_method", limit=100, customer=customer["id"])
    cards = [pm for pm in page.data if pm.get("type") == "card"]
    return cards[-1] if cards else None  # lists are newest first: the first attached


# -- charges ------------------------------------------------------------------------------

BRAND_NAMES = {
    "visa": "Visa",
    "mastercard": "MasterCard",
    "amex": "American Express",
    "discover": "Discover",
    "diners": "Diners Club",
    "jcb": "JCB",
    "unionpay": "UnionPay",
    "unknown": "Unknown",
}


def _card_facts(instrument: dict[str, Any]) -> dict[str, Any]:
    """Brand, last4, expiry, ... of a payment method or a legacy card, in one shape."""
    if instrument.get("object") == "card":
        brand = next((k for k, v in BRAND_NAMES.items() if v == instrument.get("brand")), "unknown")
        return {
            "brand": brand,
            "country": instrument.get("country"),
            "exp_month": instrument.get("exp_month"),
            "exp_year": instrument.get("exp_year"),
            "fingerprint": instrument.get("fingerprint"),
            "funding": instrument.get("funding"),
            "last4": instrument.get("last4"),
            "cvc_check": instrument.get("cvc_check"),
            "regulated_status": instrument.get("regulated_status"),
        }
    card = instrument["card"]
    return {
        "brand": card["brand"],
        "country": card["country"],
        "exp_month": card["exp_month"],
        "exp_year": card["exp_year"],
        "fingerprint": card["fingerprint"],
        "funding": card["funding"],
        "last4": card["last4"],
        "cvc_check": card["checks"].get("cvc_check"),
        "regulated_status": card.get("regulated_status"),
    }


def _billing_details(instrument: dict[str, Any]) -> dict[str, Any]:
    if instrument.get("object") == "card":
        return {
            "address": {
                "city": instrument.get("address_city"),
                "country": instrument.get("address_country"),
                "line1": instrument.get("address_line1"),
                "line2": instrument.get("address_line2"),
                "postal_code": instrument.get("address_zip"),
                "state": instrument.get("address_state"),
            },
            "email": None,
            "name": instrument.get("name"),
            "phone": None,
            "tax_id": None,
        }
    return copy.deepcopy(instrument.get("billing_details") or pms.empty_billing_details())


def _outcome(sim: Simulator, decline: pms.Decline | None) -> dict[str, Any]:
    if decline is None:
        return {
            "advice_code": None,
            "network_advice_code": None,
            "network_decline_code": None,
            "network_status": "approved_by_network",
            "reason": None,
            "risk_level": "normal",
            "risk_score": sim.rng.randrange(5, 65),
            "seller_message": "Payment complete.",
            "type": "authorized",
        }
    return {
        "advice_code": decline.advice_code,
        "network_advice_code": None,
        "network_decline_code": None,
        "network_status": decline.network_status,
        "reason": decline.decline_code or decline.code,
        "risk_level": "normal",
        "risk_score": sim.rng.randrange(5, 65),
        "seller_message": decline.seller_message,
        "type": decline.outcome_type,
    }


def _card_details(
    sim: Simulator, instrument: dict[str, Any], amount: int, decline: pms.Decline | None
) -> dict[str, Any]:
    facts = _card_facts(instrument)
    cvc = facts["cvc_check"]
    if cvc == "unchecked":
        cvc = "pass"
    if decline is not None and decline.code == "incorrect_cvc":
        cvc = "fail"
    ok = decline is None
    return {
        "card": {
            "amount_authorized": amount if ok else None,
            "authorization_code": _digits(sim, 6) if ok else None,
            "brand": facts["brand"],
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": cvc,
            },
            "country": facts["country"],
            "exp_month": facts["exp_month"],
            "exp_year": facts["exp_year"],
            "extended_authorization": {"status": "disabled"},
            "fingerprint": facts["fingerprint"],
            "funding": facts["funding"],
            "incremental_authorization": {"status": "unavailable"},
            "installments": None,
            "last4": facts["last4"],
            "mandate": None,
            "multicapture": {"status": "unavailable"},
            "network": facts["brand"],
            "network_token": {"used": False},
            "network_transaction_id": _digits(sim, 15) if ok else None,
            "overcapture": {"maximum_amount_capturable": amount, "status": "unavailable"},
            "regulated_status": facts["regulated_status"],
            "three_d_secure": None,
            "transaction_link_id": None,
            "wallet": None,
        },
        "type": "card",
    }


def new_charge(
    sim: Simulator,
    ctx: Ctx,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    instrument: dict[str, Any],
    decline: pms.Decline | None,
    description: str | None = None,
    receipt_email: str | None = None,
    payment_intent: str | None = None,
    invoice: str | None = None,
    metadata: dict[str, str] | None = None,
    shipping: dict[str, Any] | None = None,
    statement_descriptor_suffix: str | None = None,
    transfer_group: str | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    charge_id = sim.new_id("ch")
    ok = decline is None
    legacy = instrument.get("object") == "card"
    return {
        "id": charge_id,
        "object": "charge",
        "amount": amount,
        "amount_captured": amount if ok else 0,
        "amount_refunded": 0,
        "application": None,
        "application_fee": None,
        "application_fee_amount": None,
        "balance_transaction": sim.new_id("txn") if ok else None,
        "billing_details": _billing_details(instrument),
        "calculated_statement_descriptor": (
            f"{STATEMENT_DESCRIPTOR}* {statement_descriptor_suffix}"[:22]
            if statement_descriptor_suffix
            else STATEMENT_DESCRIPTOR
        ),
        "captured": ok,
        "created": created if created is not None else sim.now(),
        "currency": currency,
        "customer": customer,
        "description": description,
        "disputed": False,
        "failure_balance_transaction": None,
        "failure_code": decline.code if decline else None,
        "failure_message": decline.message if decline else None,
        "fraud_details": {},
        "livemode": ctx.livemode,
        "metadata": dict(metadata or {}),
        "on_behalf_of": None,
        "outcome": _outcome(sim, decline),
        "paid": ok,
        "payment_intent": payment_intent,
        "payment_method": instrument["id"],
        "payment_method_details": _card_details(sim, instrument, amount, decline),
        "receipt_email": receipt_email,
        # Stripe numbers a receipt when it sends one; test mode sends none on its own.
        "receipt_number": f"{_digits(sim, 4)}-{_digits(sim, 4)}"
        if ok and receipt_email and ctx.livemode
        else None,
        "receipt_url": f"https://pay.stripe.com/receipts/payment/{_receipt_token(sim)}",
        "refunded": False,
        "review": None,
        "shipping": copy.deepcopy(shipping),
        "source": _public_copy(instrument) if legacy else None,
        "source_transfer": None,
        "statement_descriptor": None,
        "statement_descriptor_suffix": statement_descriptor_suffix,
        "status": "succeeded" if ok else "failed",
        "transfer_data": None,
        "transfer_group": transfer_group,
        "_invoice": invoice,
        "_refunds": {
            "object": "list",
            "data": [],
            "has_more": False,
            "url": f"/v1/charges/{charge_id}/refunds",
        },
    }


def _public_copy(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: copy.deepcopy(v) for k, v in obj.items() if not k.startswith("_")}


def save_charge(sim: Simulator, ctx: Ctx, charge: dict[str, Any]) -> None:
    sim.save(
        ctx,
        charge,
        links={
            "payment_intent": charge.get("payment_intent"),
            "transfer_group": charge.get("transfer_group"),
        },
    )


def _payment_error(
    decline: pms.Decline, charge: dict[str, Any], instrument: dict[str, Any]
) -> dict[str, Any]:
    error: dict[str, Any] = {
        "advice_code": decline.advice_code,
        "charge": charge["id"],
        "code": decline.code,
        "decline_code": decline.decline_code,
        "doc_url": f"https://stripe.com/docs/error-codes/{decline.code.replace('_', '-')}",
        "message": decline.message,
        "param": decline.param,
        "type": "card_error",
    }
    if instrument.get("object") == "card":
        error["source"] = _public_copy(instrument)
    else:
        error["payment_method"] = _public_copy(instrument)
        error["payment_method_type"] = "card"
    return {k: v for k, v in error.items() if v is not None}


def attempt(
    sim: Simulator,
    ctx: Ctx,
    pi: dict[str, Any],
    instrument: dict[str, Any],
    *,
    receipt_email: str | None,
    automatic: bool = False,
    created: int | None = None,
) -> dict[str, Any]:
    """Charge the intent's amount to ``instrument``; updates and saves the intent."""
    decline = pms.card_decline(ctx, instrument)
    charge = new_charge(
        sim,
        ctx,
        amount=pi["amount"],
        currency=pi["currency"],
        customer=pi.get("customer"),
        instrument=instrument,
        decline=decline,
        description=pi.get("description"),
        receipt_email=receipt_email,
        payment_intent=pi["id"],
        invoice=pi.get("_invoice"),
        metadata=pi.get("metadata"),
        shipping=pi.get("shipping"),
        statement_descriptor_suffix=pi.get("statement_descriptor_suffix"),
        transfer_group=pi.get("transfer_group"),
        created=created,
    )
    save_charge(sim, ctx, charge)
    pi["latest_charge"] = charge["id"]
    if decline is None:
        pi["status"] = "succeeded"
        pi["amount_received"] = pi["amount"]
        pi["last_payment_error"] = None
        pi["payment_method"] = instrument["id"]
        if instrument.get("object") == "payment_method" and instrument.get("customer") is None:
            if pi.get("setup_future_usage") and pi.get("customer"):
                pms.attach(sim, ctx, instrument, pi["customer"])
            else:
                # Stripe: a payment method used without a customer cannot be used again.
                instrument["_consumed"] = True
                pms.save(sim, ctx, instrument)
    else:
        pi["status"] = "requires_payment_method"
        pi["payment_method"] = None
        pi["last_payment_error"] = _payment_error(decline, charge, instrument)
    save_payment_intent(sim, ctx, pi)
    ok = decline is None
    sim.emit(
        ctx,
        "charge.succeeded" if ok else "charge.failed",
        charge,
        automatic=automatic,
        created=created,
    )
    sim.emit(
        ctx,
        "payment_intent.succeeded" if ok else "payment_intent.payment_failed",
        pi,
        automatic=automatic,
        created=created,
    )
    return charge


def collect(
    sim: Simulator,
    ctx: Ctx,
    *,
    customer: str,
    amount: int,
    currency: str,
    payment_method: str | None,
    description: str | None,
    invoice: dict[str, Any] | None,
    automatic: bool,
    created: int | None = None,
    payment_intent: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Take a payment for an invoice: a payment intent confirmed at once.

    ``payment_method`` None uses the customer's invoice default, its default source, else
    its first attached card; with none the intent stays ``requires_payment_method`` and
    no charge is made. ``automatic`` marks what Stripe did on its own (events without a
    request). ``payment_intent``, the invoice's earlier intent that has not succeeded, is
    confirmed again instead of making a new one (a retry). Returns (payment_intent,
    charge or None), both saved.
    """
    cust = _load_customer(sim, ctx, customer, "customer")
    if payment_method:
        instrument: dict[str, Any] | None = pms.resolve_payment_method(
            sim, ctx, payment_method, param="payment_method"
        )
    else:
        instrument = default_instrument(sim, ctx, cust)
    if payment_intent is not None:
        pi = payment_intent
        pi["amount"] = amount
    else:
        pi = new_payment_intent(
            sim,
            ctx,
            amount=amount,
            currency=currency,
            customer=cust["id"],
            description=description,
            created=created,
        )
        pi["_invoice"] = invoice["id"] if invoice else None
    if instrument is not None:
        pi["payment_method"] = instrument["id"]
        pi["status"] = "requires_confirmation"
    save_payment_intent(sim, ctx, pi)
    if payment_intent is None:
        sim.emit(ctx, "payment_intent.created", pi, automatic=automatic, created=created)
    if instrument is None:
        return pi, None
    charge = attempt(
        sim,
        ctx,
        pi,
        instrument,
        receipt_email=cust.get("email"),
        automatic=automatic,
        created=created,
    )
    return pi, charge


def _declined(sim: Simulator, ctx: Ctx, pi: dict[str, Any]) -> SimAPIError:
    """The 402 of a declined confirmation; the charge and events it made are kept."""
    error = dict(pi["last_payment_error"] or {})
    return SimAPIError(
        402,
        str(error.get("message")),
        type="card_error",
        code=error.get("code"),
        decline_code=error.get("decline_code"),
        param=error.get("param"),
        extra={
            k: v
            for k, v in {
                "advice_code": error.get("advice_code"),
                "charge": error.get("charge"),
                "payment_intent": sim.render(ctx, pi, expand=[]),
                "payment_method": error.get("payment_method"),
                "source": error.get("source"),
            }.items()
            if v is not None
        },
        commit=True,
    )


def _check_usable(pi: dict[str, Any], instrument: dict[str, Any], param: str) -> None:
    if instrument.get("object") != "payment_method":
        return
    owner = instrument.get("customer")
    if owner is not None and pi.get("customer") is None:
        raise invalid(
            f"The provided PaymentMethod {instrument['id']} is attached to a Customer. To use "
            "it, provide the Customer ID in the `customer` parameter of this PaymentIntent.",
            param=param,
        )
    if owner is not None and owner != pi.get("customer"):
        raise invalid(
            f"The provided PaymentMethod {instrument['id']} belongs to Customer {owner}, not "
            f"to Customer {pi.get('customer')} of this PaymentIntent.",
            param=param,
        )
    if owner is None and instrument.get("_consumed"):
        raise invalid(
            "The provided PaymentMethod was previously used with a PaymentIntent without "
            "Customer attachment, shared with a connected account without Customer attachment, "
            "or was detached from a Customer. It may not be used again. To use a PaymentMethod "
            "multiple times, you must attach it to a Customer first.",
            param=param,
        )


def _unexpected_state(message: str) -> SimAPIError:
    return SimAPIError(400, message, code="payment_intent_unexpected_state")


def _confirm(sim: Simulator, ctx: Ctx, pi: dict[str, Any]) -> dict[str, Any]:
    if pi["status"] == "succeeded":
        raise _unexpected_state(
            "You cannot confirm this PaymentIntent because it has already succeeded after "
            "being previously confirmed."
        )
    if pi["status"] not in ("requires_payment_method", "requires_confirmation", "requires_action"):
        raise _unexpected_state(
            f"You cannot confirm this PaymentIntent because it has a status of {pi['status']}. "
            "Only a PaymentIntent with one of the following statuses may be confirmed: "
            "requires_payment_method, requires_confirmation, requires_action."
        )
    if not pi.get("payment_method"):
        raise _unexpected_state(
            "You cannot confirm this PaymentIntent because it's missing a payment method. You "
            "can either update the PaymentIntent with a payment method and then confirm it "
            "again, or confirm it again directly with a payment method."
        )
    instrument = pms.resolve_payment_method(
        sim, ctx, str(pi["payment_method"]), param="payment_method"
    )
    _check_usable(pi, instrument, "payment_method")
    charge = attempt(sim, ctx, pi, instrument, receipt_email=pi.get("receipt_email"))
    if pi["status"] != "succeeded":
        raise _declined(sim, ctx, pi)
    if pi.get("_invoice"):
        _invoice_intent_succeeded(sim, ctx, pi, charge)
    return pi


def _invoice_intent_succeeded(
    sim: Simulator, ctx: Ctx, pi: dict[str, Any], charge: dict[str, Any]
) -> None:
    """An invoice's intent confirmed by the client (``default_incomplete``) pays the invoice."""
    try:
        invoices = importlib.import_module("stripesync.sim.resources.invoices")
    except ModuleNotFoundError:
        return
    hook = getattr(invoices, "payment_intent_succeeded", None)
    if hook is not None:
        hook(sim, ctx, pi, charge)


def _set_payment_method(
    sim: Simulator, ctx: Ctx, pi: dict[str, Any], params: dict[str, Any]
) -> None:
    if params.get("payment_method_data"):
        data = forms.as_dict(params, "payment_method_data") or {}
        pm = pms.create_from_params(sim, ctx, data, prefix="payment_method_data")
        pi["payment_method"] = pm["id"]
    elif "payment_method" in params:
        ref = params["payment_method"]
        if ref in ("", None):
            pi["payment_method"] = None
        else:
            pm = pms.resolve_payment_method(sim, ctx, str(ref), param="payment_method")
            _check_usable(pi, pm, "payment_method")
            pi["payment_method"] = pm["id"]
    else:
        return
    if pi["status"] in ("requires_payment_method", "requires_confirmation"):
        pi["status"] = (
            "requires_confirmation" if pi["payment_method"] else "requires_payment_method"
        )


def _shipping(value: Any) -> dict[str, Any] | None:
    if value in ("", None):
        return None
    if not isinstance(value, dict):
        raise invalid("Invalid hash: shipping", param="shipping")
    if not value.get("name"):
        raise required("shipping[name]")
    address = value.get("address") or {}
    if not isinstance(address, dict):
        raise invalid("Invalid hash: shipping[address]", param="shipping[address]")
    return {
        "address": {f: address.get(f) or None for f in pms.ADDRESS_FIELDS},
        "carrier": value.get("carrier") or None,
        "name": value["name"],
        "phone": value.get("phone") or None,
        "tracking_number": value.get("tracking_number") or None,
    }


def _apply_common(pi: dict[str, Any], params: dict[str, Any]) -> None:
    for name in ("description", "receipt_email", "transfer_group"):
        if name in params:
            pi[name] = forms.as_str(params, name) or None
    if "metadata" in params:
        pi["metadata"] = forms.as_metadata(params, pi.get("metadata"))
    if "shipping" in params:
        pi["shipping"] = _shipping(params["shipping"])
    if "setup_future_usage" in params:
        value = params["setup_future_usage"]
        pi["setup_future_usage"] = (
            None
            if value == ""
            else forms.as_enum(params, "setup_future_usage", ("off_session", "on_session"))
        )
    if params.get("statement_descriptor"):
        raise invalid(
            "The `statement_descriptor` parameter is not supported for the `card` payment "
            "method type. Please use `statement_descriptor_suffix` instead.",
            param="statement_descriptor",
        )
    if "statement_descriptor_suffix" in params:
        suffix = forms.as_str(params, "statement_descriptor_suffix") or None
        if suffix is not None and len(suffix) > 22:
            raise invalid(
                "Invalid statement_descriptor_suffix: must be at most 22 characters",
                param="statement_descriptor_suffix",
            )
        pi["statement_descriptor_suffix"] = suffix


def _payment_method_types(params: dict[str, Any]) -> list[str]:
    types = [str(t) for t in forms.as_list(params, "payment_method_types")]
    for kind in types:
        if kind != "card":
            raise invalid(
                f"The payment method type provided: {kind} is invalid. Please ensure the "
                "provided type is activated in your dashboard "
                "(https://dashboard.stripe.com/account/payments/settings) and your account is "
                "enabled for any preview features that you are trying to use.",
                param="payment_method_types",
            )
    return types


PI_CREATE_PARAMS = {
    "amount",
    "application_fee_amount",
    "automatic_payment_methods",
    "capture_method",
    "confirm",
    "confirmation_method",
    "confirmation_token",
    "currency",
    "customer",
    "customer_account",
    "description",
    "error_on_requires_action",
    "excluded_payment_method_types",
    "mandate",
    "mandate_data",
    "metadata",
    "off_session",
    "on_behalf_of",
    "payment_method",
    "payment_method_configuration",
    "payment_method_data",
    "payment_method_options",
    "payment_method_types",
    "radar_options",
    "receipt_email",
    "return_url",
    "setup_future_usage",
    "shipping",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
    "transfer_group",
    "use_stripe_sdk",
}
PI_CONFIRM_PARAMS = {
    "capture_method",
    "confirmation_token",
    "error_on_requires_action",
    "mandate",
    "mandate_data",
    "off_session",
    "payment_method",
    "payment_method_data",
    "payment_method_options",
    "payment_method_types",
    "radar_options",
    "receipt_email",
    "return_url",
    "setup_future_usage",
    "shipping",
    "use_stripe_sdk",
}
PI_UPDATE_PARAMS = {
    "amount",
    "application_fee_amount",
    "capture_method",
    "currency",
    "customer",
    "customer_account",
    "description",
    "excluded_payment_method_types",
    "metadata",
    "payment_method",
    "payment_method_configuration",
    "payment_method_data",
    "payment_method_options",
    "payment_method_types",
    "receipt_email",
    "setup_future_usage",
    "shipping",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
    "transfer_group",
}


def _capture_method(params: dict[str, Any], current: str) -> str:
    value = forms.as_enum(
        params, "capture_method", ("automatic", "automatic_async", "manual"), current
    )
    if value == "manual":
        raise invalid(
            "capture_method=manual (separate authorization and capture) is not simulated; "
            "use automatic or automatic_async.",
            param="capture_method",
        )
    return str(value)


@route("POST", "/v1/payment_intents", resource="payment_intents")
def create_payment_intent(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, PI_CREATE_PARAMS)
    currency = _currency(params)
    amount = _amount(params, currency)
    customer_id = params.get("customer") or None
    if customer_id is not None:
        customer_id = _load_customer(sim, ctx, customer_id, "customer")["id"]
    types = _payment_method_types(params)
    apm = forms.as_dict(params, "automatic_payment_methods")
    if types and apm:
        raise invalid(
            "You may only specify one of these parameters: automatic_payment_methods, "
            "payment_method_types.",
            param="automatic_payment_methods",
        )
    automatic_methods = not types and (apm is None or forms.as_bool(apm, "enabled", True) is True)
    pi = new_payment_intent(
        sim,
        ctx,
        amount=amount,
        currency=currency,
        customer=customer_id,
        automatic_methods=automatic_methods,
    )
    if automatic_methods and apm and apm.get("allow_redirects"):
        pi["automatic_payment_methods"]["allow_redirects"] = forms.as_enum(
            apm, "allow_redirects", ("always", "never"), "always"
        )
    pi["capture_method"] = _capture_method(params, pi["capture_method"])
    pi["confirmation_method"] = forms.as_enum(
        params, "confirmation_method", ("automatic", "manual"), "automatic"
    )
    _apply_common(pi, params)
    _set_payment_method(sim, ctx, pi, params)
    confirm = forms.as_bool(params, "confirm", False)
    if params.get("off_session") not in (None, "", "false") and not confirm:
        raise invalid("You can only use `off_session` when `confirm` is true.", param="off_session")
    save_payment_intent(sim, ctx, pi)
    sim.emit(ctx, "payment_intent.created", pi)
    if confirm:
        return _confirm(sim, ctx, pi)
    return pi


@route("GET", "/v1/payment_intents/{pi_id}", resource="payment_intents")
def retrieve_payment_intent(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], pi_id: str
) -> dict[str, Any]:
    return load_payment_intent(sim, ctx, pi_id)


@route("POST", "/v1/payment_intents/{pi_id}", resource="payment_intents")
def update_payment_intent(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], pi_id: str
) -> dict[str, Any]:
    check_params(params, PI_UPDATE_PARAMS)
    pi = load_payment_intent(sim, ctx, pi_id)
    settled = pi["status"] in ("succeeded", "canceled", "processing")
    money_params = {
        "amount",
        "currency",
        "customer",
        "payment_method",
        "payment_method_data",
        "payment_method_types",
        "setup_future_usage",
        "capture_method",
    }
    touched = sorted(money_params & set(params))
    if settled and touched:
        raise _unexpected_state(
            f"You cannot update `{touched[0]}` on this PaymentIntent because it has a status "
            f"of {pi['status']}."
        )
    if "currency" in params:
        pi["currency"] = _currency(params)
    if "amount" in params:
        pi["amount"] = _amount(params, pi["currency"])
    if params.get("customer"):
        customer = _load_customer(sim, ctx, params["customer"], "customer")
        if pi.get("customer") not in (None, customer["id"]):
            raise invalid(
                "You cannot change the customer of a PaymentIntent once it is set.",
                param="customer",
            )
        pi["customer"] = customer["id"]
    if "payment_method_types" in params:
        types = _payment_method_types(params)
        if types:
            pi["payment_method_types"] = types
            pi["automatic_payment_methods"] = None
            pi["payment_method_configuration_details"] = None
    if "capture_method" in params:
        pi["capture_method"] = _capture_method(params, pi["capture_method"])
    old_receipt = pi.get("receipt_email")
    _apply_common(pi, params)
    _set_payment_method(sim, ctx, pi, params)
    save_payment_intent(sim, ctx, pi)
    if pi.get("receipt_email") != old_receipt and pi.get("latest_charge"):
        # Stripe sends the receipt of a paid intent to the new address: the charge knows it.
        charge = sim.db.get(ctx.acct, str(pi["latest_charge"]))
        if charge is not None and charge.get("status") == "succeeded":
            old = copy.deepcopy(charge)
            charge["receipt_email"] = pi["receipt_email"]
            save_charge(sim, ctx, charge)
            emit_updated(sim, ctx, "charge.updated", old, charge)
    return pi


@route("POST", "/v1/payment_intents/{pi_id}/confirm", resource="payment_intents")
def confirm_payment_intent(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], pi_id: str
) -> dict[str, Any]:
    check_params(params, PI_CONFIRM_PARAMS)
    pi = load_payment_intent(sim, ctx, pi_id)
    if pi["status"] in ("succeeded", "canceled"):
        return _confirm(sim, ctx, pi)  # answers the state error
    if "receipt_email" in params:
        pi["receipt_email"] = forms.as_str(params, "receipt_email") or None
    if "capture_method" in params:
        pi["capture_method"] = _capture_method(params, pi["capture_method"])
    if "payment_method_types" in params:
        types = _payment_method_types(params)
        if types:
            pi["payment_method_types"] = types
    _apply_common(pi, {k: v for k, v in params.items() if k in ("shipping", "setup_future_usage")})
    _set_payment_method(sim, ctx, pi, params)
    return _confirm(sim, ctx, pi)


@route("POST", "/v1/payment_intents/{pi_id}/cancel", resource="payment_intents")
def cancel_payment_intent(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], pi_id: str
) -> dict[str, Any]:
    check_params(params, {"cancellation_reason"})
    pi = load_payment_intent(sim, ctx, pi_id)
    if pi["status"] not in CANCELABLE:
        raise _unexpected_state(
            f"You cannot cancel this PaymentIntent because it has a status of {pi['status']}. "
            "Only a PaymentIntent with one of the following statuses may be canceled: "
            "requires_payment_method, requires_capture, requires_confirmation, "
            "requires_action, processing."
        )
    if pi.get("_invoice"):
        raise _unexpected_state(
            "You cannot cancel this PaymentIntent because it was created by an invoice. "
            "Void the invoice instead."
        )
    pi["status"] = "canceled"
    pi["canceled_at"] = sim.now()
    pi["cancellation_reason"] = forms.as_enum(
        params, "cancellation_reason", CANCELLATION_REASONS, None
    )
    save_payment_intent(sim, ctx, pi)
    sim.emit(ctx, "payment_intent.canceled", pi)
    return pi


def cancel_for_invoice(
    sim: Simulator, ctx: Ctx, pi_id: str, *, automatic: bool = False
) -> dict[str, Any] | None:
    """Cancel an invoice's open payment intent (the invoice was voided or paid otherwise)."""
    pi = sim.db.get(ctx.acct, pi_id)
    if pi is None or pi.get("object") != "payment_intent" or pi["status"] not in CANCELABLE:
        return None
    pi["status"] = "canceled"
    pi["canceled_at"] = sim.now()
    pi["cancellation_reason"] = "void_invoice"
    save_payment_intent(sim, ctx, pi)
    sim.emit(ctx, "payment_intent.canceled", pi, automatic=automatic)
    return pi


@route("GET", "/v1/payment_intents", resource="payment_intents")
def list_payment_intents(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {"created", "customer", "customer_account", "ending_before", "limit", "starting_after"},
    )
    return sim.paginate(
        ctx,
        params,
        "payment_intent",
        "/v1/payment_intents",
        created=forms.created_filter(params),
        customer=params.get("customer") or None,
    )


# -- charges (routes) ---------------------------------------------------------------------


def legacy_card(sim: Simulator, ctx: Ctx, number: str) -> dict[str, Any]:
    """A ``card_`` object (the Sources-era shape) for a one-off charge with a token."""
    pm = pms.new_payment_method(sim, ctx, number)
    card = pm["card"]
    return {
        "id": sim.new_id("card"),
        "object": "card",
        "address_city": None,
        "address_country": None,
        "address_line1": None,
        "address_line1_check": None,
        "address_line2": None,
        "address_state": None,
        "address_zip": None,
        "address_zip_check": None,
        "allow_redisplay": "unspecified",
        "brand": BRAND_NAMES.get(card["brand"], "Unknown"),
        "country": card["country"],
        "customer": None,
        "cvc_check": "pass",
        "dynamic_last4": None,
        "exp_month": card["exp_month"],
        "exp_year": card["exp_year"],
        "fingerprint": card["fingerprint"],
        "funding": card["funding"],
        "last4": card["last4"],
        "metadata": {},
        "name": None,
        "regulated_status": card["regulated_status"],
        "tokenization_method": None,
        "wallet": None,
        "_number": number,
    }


CHARGE_CREATE_PARAMS = {
    "amount",
    "application_fee",
    "application_fee_amount",
    "capture",
    "currency",
    "customer",
    "description",
    "metadata",
    "on_behalf_of",
    "radar_options",
    "receipt_email",
    "shipping",
    "source",
    "statement_descriptor",
    "statement_descriptor_suffix",
    "transfer_data",
    "transfer_group",
}


@route("POST", "/v1/charges", resource="charges")
def create_charge(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    """The legacy Charges API: a token or the customer's default source, no intent."""
    check_params(params, CHARGE_CREATE_PARAMS)
    currency = _currency(params)
    amount = _amount(params, currency)
    if forms.as_bool(params, "capture", True) is False:
        raise invalid(
            "capture=false (separate authorization and capture) is not simulated.",
            param="capture",
        )
    customer: dict[str, Any] | None = None
    if params.get("customer"):
        customer = _load_customer(sim, ctx, params["customer"], "customer")
    source = params.get("source") or None
    instrument: dict[str, Any] | None = None
    if source is not None:
        number = pms.magic_number(str(source)) if str(source).startswith("tok_") else None
        if number is not None:
            instrument = legacy_card(sim, ctx, number)
            sim.save(ctx, instrument)
        else:
            found = sim.db.get(ctx.acct, str(source))
            if found is None or found.get("object") != "card":
                raise missing(str(source), param="source", kind="source")
            instrument = found
    elif customer is not None and customer.get("default_source"):
        found = sim.db.get(ctx.acct, str(customer["default_source"]))
        instrument = found if found is not None and found.get("object") == "card" else None
    if instrument is None:
        if customer is None:
            raise invalid("Must provide source or customer.", param="source")
        raise SimAPIError(
            402,
            "Cannot charge a customer that has no active card",
            type="card_error",
            code="missing",
            param="card",
        )
    if params.get("statement_descriptor"):
        raise invalid(
            "The `statement_descriptor` parameter is not supported for card charges. Please "
            "use `statement_descriptor_suffix` instead.",
            param="statement_descriptor",
        )
    decline = pms.card_decline(ctx, instrument)
    charge = new_charge(
        sim,
        ctx,
        amount=amount,
        currency=currency,
        customer=customer["id"] if customer else None,
        instrument=instrument,
        decline=decline,
        description=forms.as_str(params, "description") or None,
        receipt_email=forms.as_str(params, "receipt_email") or None,
        metadata=forms.as_metadata(params),
        shipping=_shipping(params.get("shipping")),
        statement_descriptor_suffix=forms.as_str(params, "statement_descriptor_suffix") or None,
        transfer_group=forms.as_str(params, "transfer_group") or None,
    )
    save_charge(sim, ctx, charge)
    sim.emit(ctx, "charge.succeeded" if decline is None else "charge.failed", charge)
    if decline is not None:
        raise pms.card_error(
            decline, commit=True, charge=charge["id"], advice_code=decline.advice_code
        )
    return charge


@route("GET", "/v1/charges/{charge_id}", resource="charges")
def retrieve_charge(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], charge_id: str
) -> dict[str, Any]:
    return load_charge(sim, ctx, charge_id, param="charge")


CHARGE_UPDATE_PARAMS = {
    "customer",
    "description",
    "fraud_details",
    "metadata",
    "receipt_email",
    "shipping",
    "transfer_group",
}


@route("POST", "/v1/charges/{charge_id}", resource="charges")
def update_charge(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], charge_id: str
) -> dict[str, Any]:
    check_params(params, CHARGE_UPDATE_PARAMS)
    charge = load_charge(sim, ctx, charge_id, param="charge")
    old = copy.deepcopy(charge)
    for name in ("description", "receipt_email", "transfer_group"):
        if name in params:
            charge[name] = forms.as_str(params, name) or None
    if "metadata" in params:
        charge["metadata"] = forms.as_metadata(params, charge.get("metadata"))
    if "shipping" in params:
        charge["shipping"] = _shipping(params["shipping"])
    if params.get("customer"):
        customer = _load_customer(sim, ctx, params["customer"], "customer")
        if charge.get("customer") not in (None, customer["id"]):
            raise invalid(
                "This charge already belongs to a customer; its customer cannot be changed.",
                param="customer",
            )
        charge["customer"] = customer["id"]
    if "fraud_details" in params:
        details = forms.as_dict(params, "fraud_details") or {}
        report = details.get("user_report")
        if report not in ("", "fraudulent", "safe"):
            raise invalid(
                "Invalid fraud_details[user_report]: must be one of fraudulent, safe",
                param="fraud_details[user_report]",
            )
        charge["fraud_details"] = {"user_report": report} if report else {}
    save_charge(sim, ctx, charge)
    emit_updated(sim, ctx, "charge.updated", old, charge)
    return charge


@route("GET", "/v1/charges", resource="charges")
def list_charges(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {
            "created",
            "customer",
            "ending_before",
            "limit",
            "payment_intent",
            "starting_after",
            "transfer_group",
        },
    )
    links = {
        key: str(params[key]) for key in ("payment_intent", "transfer_group") if params.get(key)
    }
    return sim.paginate(
        ctx,
        params,
        "charge",
        "/v1/charges",
        created=forms.created_filter(params),
        customer=params.get("customer") or None,
        links=links or None,
    )


# -- refunds ------------------------------------------------------------------------------


def new_refund(
    sim: Simulator,
    ctx: Ctx,
    charge: dict[str, Any],
    amount: int,
    *,
    reason: str | None,
    metadata: dict[str, str],
    created: int | None = None,
) -> dict[str, Any]:
    return {
        "id": sim.new_id("re"),
        "object": "refund",
        "amount": amount,
        "balance_transaction": sim.new_id("txn"),
        "charge": charge["id"],
        "created": created if created is not None else sim.now(),
        "currency": charge["currency"],
        "customer": charge.get("customer"),
        "customer_account": None,
        "destination_details": {
            "card": {
                "reference": None,
                "reference_status": "pending",
                "reference_type": "acquirer_reference_number",
                "type": "refund",
            },
            "type": "card",
        },
        "metadata": metadata,
        "payment_intent": charge.get("payment_intent"),
        "payment_method": charge.get("payment_method"),
        "reason": reason,
        "receipt_number": None,
        "source_transfer_reversal": None,
        "status": "succeeded",
        "transfer_reversal": None,
    }


def save_refund(sim: Simulator, ctx: Ctx, refund: dict[str, Any]) -> None:
    sim.save(
        ctx,
        refund,
        links={"charge": refund["charge"], "payment_intent": refund.get("payment_intent")},
    )


def refundable_charge(sim: Simulator, ctx: Ctx, pi: dict[str, Any]) -> dict[str, Any]:
    """The succeeded charge of a payment intent, or Stripe's 400."""
    charge_id = pi.get("latest_charge")
    charge = sim.db.get(ctx.acct, str(charge_id)) if charge_id else None
    if pi.get("status") != "succeeded" or charge is None:
        raise invalid(
            f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
            param="payment_intent",
            code="charge_not_refundable",
        )
    return charge


def create_refund(
    sim: Simulator,
    ctx: Ctx,
    charge: dict[str, Any],
    *,
    amount: int | None = None,
    reason: str | None = None,
    metadata: dict[str, str] | None = None,
    automatic: bool = False,
    created: int | None = None,
) -> dict[str, Any]:
    """Refund (part of) a charge: ``refund.created`` and ``charge.refunded``.

    ``amount`` None refunds what is left. Raises Stripe's 400s when nothing can be refunded.
    """
    if charge.get("status") != "succeeded":
        raise invalid(
            f"Charge {charge['id']} has a status of {charge.get('status')} and cannot be "
            "refunded; only succeeded charges can be refunded.",
            param="charge",
            code="charge_not_refundable",
        )
    left = int(charge["amount_captured"]) - int(charge["amount_refunded"])
    if left <= 0:
        raise invalid(
            f"Charge {charge['id']} has already been refunded.",
            param="charge",
            code="charge_already_refunded",
        )
    if amount is None:
        amount = left
    if amount <= 0:
        raise invalid("Invalid positive integer", param="amount")
    if amount > left:
        raise invalid(
            f"Refund amount ({money(amount, charge['currency'])}) is greater than unrefunded "
            f"amount on charge ({money(left, charge['currency'])})",
            param="amount",
        )
    refund = new_refund(
        sim, ctx, charge, amount, reason=reason, metadata=metadata or {}, created=created
    )
    save_refund(sim, ctx, refund)
    old = copy.deepcopy(charge)
    charge["amount_refunded"] = int(charge["amount_refunded"]) + amount
    charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
    embedded = charge["_refunds"]
    embedded["data"].insert(0, copy.deepcopy(refund))
    save_charge(sim, ctx, charge)
    sim.emit(ctx, "refund.created", refund, automatic=automatic, created=created)
    sim.emit(
        ctx,
        "charge.refunded",
        charge,
        previous=diff(old, charge),
        automatic=automatic,
        created=created,
    )
    return refund


REFUND_CREATE_PARAMS = {
    "amount",
    "charge",
    "currency",
    "customer",
    "instructions_email",
    "metadata",
    "origin",
    "payment_intent",
    "reason",
    "refund_application_fee",
    "reverse_transfer",
}


@route("POST", "/v1/refunds", resource="refunds")
def create_refund_route(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, REFUND_CREATE_PARAMS)
    charge_id = params.get("charge") or None
    pi_id = params.get("payment_intent") or None
    if charge_id is None and pi_id is None:
        raise invalid(
            "One of the following params should be provided for this request: charge or "
            "payment_intent.",
            param="charge",
        )
    if charge_id is not None:
        charge = load_charge(sim, ctx, str(charge_id), param="charge")
        if pi_id is not None and charge.get("payment_intent") != pi_id:
            raise invalid(
                f"The charge {charge_id} does not belong to the PaymentIntent {pi_id}.",
                param="payment_intent",
            )
    else:
        pi = load_payment_intent(sim, ctx, str(pi_id), param="payment_intent")
        charge = refundable_charge(sim, ctx, pi)
    amount = forms.as_int(params, "amount")
    if amount is not None and amount <= 0:
        raise invalid("Invalid positive integer", param="amount")
    reason = forms.as_enum(params, "reason", REFUND_REASONS)
    return create_refund(
        sim, ctx, charge, amount=amount, reason=reason, metadata=forms.as_metadata(params)
    )


@route("GET", "/v1/refunds/{refund_id}", resource="refunds")
def retrieve_refund(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], refund_id: str
) -> dict[str, Any]:
    return load_refund(sim, ctx, refund_id, param="refund")


def _sync_embedded(sim: Simulator, ctx: Ctx, refund: dict[str, Any]) -> None:
    charge = sim.db.get(ctx.acct, refund["charge"])
    if charge is None:
        return
    data = charge["_refunds"]["data"]
    charge["_refunds"]["data"] = [
        copy.deepcopy(refund) if r.get("id") == refund["id"] else r for r in data
    ]
    save_charge(sim, ctx, charge)


@route("POST", "/v1/refunds/{refund_id}", resource="refunds")
def update_refund(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], refund_id: str
) -> dict[str, Any]:
    check_params(params, {"metadata"})
    refund = load_refund(sim, ctx, refund_id, param="refund")
    old = copy.deepcopy(refund)
    if "metadata" in params:
        refund["metadata"] = forms.as_metadata(params, refund.get("metadata"))
    save_refund(sim, ctx, refund)
    _sync_embedded(sim, ctx, refund)
    if emit_updated(sim, ctx, "refund.updated", old, refund) is not None:
        emit_updated(sim, ctx, "charge.refund.updated", old, refund)
    return refund


@route("POST", "/v1/refunds/{refund_id}/cancel", resource="refunds")
def cancel_refund(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], refund_id: str
) -> dict[str, Any]:
    check_params(params, set())
    refund = load_refund(sim, ctx, refund_id, param="refund")
    if refund["status"] != "requires_action":
        raise invalid(
            f"Refund {refund_id} cannot be canceled because it has a status of "
            f"{refund['status']}. Only refunds with a status of requires_action can be canceled.",
            param="refund",
        )
    return refund  # card refunds never wait for action in the simulator


@route("GET", "/v1/refunds", resource="refunds")
def list_refunds(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(
        params,
        {"charge", "created", "ending_before", "limit", "payment_intent", "starting_after"},
    )
    links = {key: str(params[key]) for key in ("charge", "payment_intent") if params.get(key)}
    return sim.paginate(
        ctx,
        params,
        "refund",
        "/v1/refunds",
        created=forms.created_filter(params),
        links=links or None,
    )


@route("GET", "/v1/charges/{charge_id}/refunds", resource="charges")
def list_charge_refunds(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], charge_id: str
) -> dict[str, Any]:
    check_params(params, {"ending_before", "limit", "starting_after"})
    load_charge(sim, ctx, charge_id, param="charge")
    return sim.paginate(
        ctx, params, "refund", f"/v1/charges/{charge_id}/refunds", links={"charge": charge_id}
    )


@route("GET", "/v1/charges/{charge_id}/refunds/{refund_id}", resource="charges")
def retrieve_charge_refund(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], charge_id: str, refund_id: str
) -> dict[str, Any]:
    load_charge(sim, ctx, charge_id, param="charge")
    refund = load_refund(sim, ctx, refund_id, param="refund")
    if refund["charge"] != charge_id:
        raise missing(refund_id, param="refund", kind="refund")
    return refund
