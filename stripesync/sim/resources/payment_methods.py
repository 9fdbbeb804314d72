"""Payment methods: Stripe's test cards, the magic ``pm_card_*`` ids, attach and detach.

Which card declines, and when, follows Stripe's testing guide (docs.stripe.com/testing,
"Declined payments"): the cards of its decline table (4000000000000002 generic decline,
...9995 insufficient funds, ...9987 lost, ...9979 stolen, ...0069 expired, ...0127
incorrect CVC, ...0119 processing error, ...6975 velocity limit) *cannot be attached to a
customer*: attaching one answers the card's decline as a 402 ``card_error``. Used without
a customer (a PaymentIntent with only a payment method, a one-off charge with a token),
they decline at charge time. 4000000000000341 (``pm_card_chargeCustomerFail``,
``tok_chargeCustomerFail``) attaches and then fails every charge with ``generic_decline``.
The older aliases (``pm_card_chargeDeclined``, ``pm_card_chargeDeclinedInsufficientFunds``,
...) name the same cards as the ``pm_card_visa_chargeDeclined*`` ids.

A magic id (``pm_card_visa``, ``tok_visa``) used wherever a payment method is accepted
creates a fresh ``pm_`` object cloned from the test card, as Stripe does; the simulator
accepts them in live mode too, so generated live data can use them. Raw card numbers are
accepted (Stripe requires a special permission for that); a Luhn-valid number that is not
a Stripe test card declines with ``test_mode_live_card`` in test mode, as Stripe's does.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from stripesync.sim import forms
from stripesync.sim.core import Ctx, Simulator, route
from stripesync.sim.db import Page
from stripesync.sim.errors import SimAPIError, invalid, missing, required
from stripesync.sim.resources.common import check_params, emit_updated

# -- test cards ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Decline:
    """How an issuer (or Stripe) refuses a card: the error and the charge's outcome."""

    code: str
    decline_code: str | None
    message: str
    seller_message: str
    advice_code: str | None = None
    param: str | None = None
    network_status: str = "declined_by_network"
    outcome_type: str = "issuer_declined"


def _bank_said(code: str) -> str:
    return f"The bank returned the decline code `{code}`."


DECLINES: dict[str, Decline] = {
    "generic_decline": Decline(
        "card_declined",
        "generic_decline",
        "Your card was declined.",
        "The bank did not return any further details with this decline.",
    ),
    "insufficient_funds": Decline(
        "card_declined",
        "insufficient_funds",
        "Your card has insufficient funds.",
        _bank_said("insufficient_funds"),
        advice_code="try_again_later",
    ),
    "lost_card": Decline(
        "card_declined",
        "lost_card",
        "Your card was declined.",
        _bank_said("lost_card"),
        advice_code="do_not_try_again",
    ),
    "stolen_card": Decline(
        "card_declined",
        "stolen_card",
        "Your card was declined.",
        _bank_said("stolen_card"),
        advice_code="do_not_try_again",
    ),
    "card_velocity_exceeded": Decline(
        "card_declined",
        "card_velocity_exceeded",
        "Your card was declined for making repeated attempts too frequently or exceeding "
        "its amount limit.",
        _bank_said("card_velocity_exceeded"),
        advice_code="try_again_later",
    ),
    "expired_card": Decline(
        "expired_card",
        None,
        "Your card has expired.",
        _bank_said("expired_card"),
        advice_code="confirm_card_data",
        param="exp_month",
    ),
    "incorrect_cvc": Decline(
        "incorrect_cvc",
        None,
        "Your card's security code is incorrect.",
        _bank_said("incorrect_cvc"),
        advice_code="confirm_card_data",
        param="cvc",
    ),
    "processing_error": Decline(
        "processing_error",
        None,
        "An error occurred while processing your card. Try again in a little bit.",
        _bank_said("processing_error"),
        advice_code="try_again_later",
    ),
    "test_mode_live_card": Decline(
        "card_declined",
        "test_mode_live_card",
        "Your card was declined. Your request was in test mode, but used a non test (live) "
        "card. For a list of valid test cards, visit: https://stripe.com/docs/testing.",
        "This charge request was in test mode, but did not use a Stripe test card number. "
        "For the list of these numbers, see stripe.com/docs/testing",
        network_status="not_sent_to_network",
        outcome_type="invalid",
    ),
}


@dataclass(frozen=True)
class TestCard:
    number: str
    brand: str
    funding: str = "credit"
    country: str = "US"
    #: Decline on every charge (a key of DECLINES), or None.
    decline: str | None = None
    #: False for the cards Stripe refuses to attach (its decline table).
    attachable: bool = True


_CARDS = (
    TestCard("4242424242424242", "visa"),
    TestCard("4000056655665556", "visa", "debit"),
    TestCard("5555555555554444", "mastercard"),
    TestCard("2223003122003222", "mastercard"),
    TestCard("5200828282828210", "mastercard", "debit"),
    TestCard("5105105105105100", "mastercard", "prepaid"),
    TestCard("378282246310005", "amex"),
    TestCard("371449635398431", "amex"),
    TestCard("6011111111111117", "discover"),
    TestCard("6011000990139424", "discover"),
    TestCard("6011981111111113", "discover", "debit"),
    TestCard("3056930009020004", "diners"),
    TestCard("36227206271667", "diners"),
    TestCard("3566002020360505", "jcb"),
    TestCard("6200000000000005", "unionpay"),
    TestCard("4000000360000006", "visa", country="AU"),
    TestCard("4000000760000002", "visa", country="BR"),
    TestCard("4000001240000000", "visa", country="CA"),
    TestCard("4000002500000003", "visa", country="FR"),
    TestCard("4000002760000016", "visa", country="DE"),
    TestCard("4000003920000003", "visa", country="JP"),
    TestCard("4000008260000000", "visa", country="GB"),
    TestCard("4000000000000002", "visa", decline="generic_decline", attachable=False),
    TestCard("4000000000009995", "visa", decline="insufficient_funds", attachable=False),
    TestCard("4000000000009987", "visa", decline="lost_card", attachable=False),
    TestCard("4000000000009979", "visa", decline="stolen_card", attachable=False),
    TestCard("4000000000000069", "visa", decline="expired_card", attachable=False),
    TestCard("4000000000000127", "visa", decline="incorrect_cvc", attachable=False),
    TestCard("4000000000000119", "visa", decline="processing_error", attachable=False),
    TestCard("4000000000006975", "visa", decline="card_velocity_exceeded", attachable=False),
    TestCard("4000000000000341", "visa", decline="generic_decline"),
)
TEST_CARDS: dict[str, TestCard] = {card.number: card for card in _CARDS}

#: The names after ``pm_card_`` / ``tok_`` and the test card each one stands for.
MAGIC_NAMES: dict[str, str] = {
    "visa": "4242424242424242",
    "us": "4242424242424242",
    "visa_debit": "4000056655665556",
    "mastercard": "5555555555554444",
    "mastercard_debit": "5200828282828210",
    "mastercard_prepaid": "5105105105105100",
    "amex": "378282246310005",
    "discover": "6011111111111117",
    "diners": "3056930009020004",
    "jcb": "3566002020360505",
    "unionpay": "6200000000000005",
    "au": "4000000360000006",
    "br": "4000000760000002",
    "ca": "4000001240000000",
    "fr": "4000002500000003",
    "de": "4000002760000016",
    "jp": "4000003920000003",
    "gb": "4000008260000000",
    "chargeDeclined": "4000000000000002",
    "visa_chargeDeclined": "4000000000000002",
    "chargeDeclinedInsufficientFunds": "4000000000009995",
    "visa_chargeDeclinedInsufficientFunds": "4000000000009995",
    "chargeDeclinedLostCard": "4000000000009987",
    "visa_chargeDeclinedLostCard": "4000000000009987",
    "chargeDeclinedStolenCard": "4000000000009979",
    "visa_chargeDeclinedStolenCard": "4000000000009979",
    "chargeDeclinedExpiredCard": "4000000000000069",
    "visa_chargeDeclinedExpiredCard": "4000000000000069",
    "chargeDeclinedIncorrectCvc": "4000000000000127",
    "visa_chargeDeclinedIncorrectCvc": "4000000000000127",
    "chargeDeclinedProcessingError": "4000000000000119",
    "visa_chargeDeclinedProcessingError": "4000000000000119",
    "visa_chargeDeclinedVelocityLimitExceeded": "4000000000006975",
    "chargeCustomerFail": "4000000000000341",
    "visa_chargeCustomerFail": "4000000000000341",
}

DISPLAY_BRANDS = {
    "amex": "american_express",
    "diners": "diners_club",
    "unionpay": "union_pay",
    "unknown": "other",
}


def magic_number(value: str) -> str | None:
    """The test card behind ``pm_card_<name>`` or ``tok_<name>``, else None."""
    for prefix in ("pm_card_", "tok_"):
        if value.startswith(prefix):
            return MAGIC_NAMES.get(value[len(prefix) :])
    return None


def luhn_ok(number: str) -> bool:
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for i, char in enumerate(reversed(number)):
        digit = int(char)
        if i % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def brand_of(number: str) -> str:
    if number.startswith("4"):
        return "visa"
    if number[:2] in ("34", "37"):
        return "amex"
    if "51" <= number[:2] <= "55" or "2221" <= number[:4] <= "2720":
        return "mastercard"
    if number.startswith(("6011", "65")) or "644" <= number[:3] <= "649":
        return "discover"
    if "3528" <= number[:4] <= "3589":
        return "jcb"
    if number.startswith(("36", "38", "39")) or "300" <= number[:3] <= "305":
        return "diners"
    if number.startswith("62"):
        return "unionpay"
    return "unknown"


def test_card(number: str) -> TestCard | None:
    return TEST_CARDS.get(number)


def card_decline(ctx: Ctx, instrument: dict[str, Any]) -> Decline | None:
    """How charging this payment method (or legacy card) ends, by its card number."""
    number = str(instrument.get("_number") or "")
    card = TEST_CARDS.get(number)
    if card is None:
        return None if ctx.livemode else DECLINES["test_mode_live_card"]
    return DECLINES[card.decline] if card.decline else None


def card_error(decline: Decline, *, commit: bool = False, **extra: Any) -> SimAPIError:
    """The 402 Stripe answers for a declined card; ``extra`` adds ``charge``, ... ."""
    return SimAPIError(
        402,
        decline.message,
        type="card_error",
        code=decline.code,
        decline_code=decline.decline_code,
        param=decline.param,
        extra={k: v for k, v in extra.items() if v is not None},
        commit=commit,
    )


def _card_input_error(code: str, message: str, param: str) -> SimAPIError:
    return SimAPIError(402, message, type="card_error", code=code, param=param)


# -- building payment methods -----------------------------------------------------------

ADDRESS_FIELDS = ("city", "country", "line1", "line2", "postal_code", "state")


def empty_billing_details() -> dict[str, Any]:
    return {
        "address": {f: None for f in ADDRESS_FIELDS},
        "email": None,
        "name": None,
        "phone": None,
        "tax_id": None,
    }


def _apply_billing(details: dict[str, Any], value: Any, param: str = "billing_details") -> None:
    if value == "":
        details.clear()
        details.update(empty_billing_details())
        return
    if not isinstance(value, dict):
        raise invalid(f"Invalid hash: {param} must be a hash", param=param)
    for key, item in value.items():
        if key == "address":
            if item == "":
                details["address"] = {f: None for f in ADDRESS_FIELDS}
                continue
            if not isinstance(item, dict):
                raise invalid(f"Invalid hash: {param}[address]", param=f"{param}[address]")
            for field_name, field_value in item.items():
                if field_name not in ADDRESS_FIELDS:
                    raise invalid(
                        f"Received unknown parameter: {param}[address][{field_name}]",
                        param=f"{param}[address][{field_name}]",
                    )
                details["address"][field_name] = field_value or None
        elif key in ("email", "name", "phone", "tax_id"):
            details[key] = item or None
        else:
            raise invalid(f"Received unknown parameter: {param}[{key}]", param=f"{param}[{key}]")


def fingerprint(ctx: Ctx, number: str) -> str:
    """Stable per account and card number, as Stripe's fingerprints are."""
    digest = hashlib.sha256(f"{ctx.account}:{number}".encode()).digest()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:16])


def _expiry(sim: Simulator, card: dict[str, Any]) -> tuple[int, int]:
    now = datetime.fromtimestamp(sim.now(), UTC)
    try:
        month = int(card.get("exp_month", ""))
    except (TypeError, ValueError):
        raise _card_input_error(
            "invalid_expiry_month", "Your card's expiration month is invalid.", "exp_month"
        ) from None
    try:
        year = int(card.get("exp_year", ""))
    except (TypeError, ValueError):
        raise _card_input_error(
            "invalid_expiry_year", "Your card's expiration year is invalid.", "exp_year"
        ) from None
    if year < 100:
        year += 2000
    if not 1 <= month <= 12:
        raise _card_input_error(
            "invalid_expiry_month", "Your card's expiration month is invalid.", "exp_month"
        )
    if year < now.year or year > now.year + 50:
        raise _card_input_error(
            "invalid_expiry_year", "Your card's expiration year is invalid.", "exp_year"
        )
    if year == now.year and month < now.month:
        raise _card_input_error(
            "invalid_expiry_month", "Your card's expiration month is invalid.", "exp_month"
        )
    return month, year


def new_payment_method(
    sim: Simulator,
    ctx: Ctx,
    number: str,
    *,
    exp_month: int | None = None,
    exp_year: int | None = None,
    cvc_given: bool = True,
    billing_details: dict[str, Any] | None = None,
    metadata: dict[str, str] | None = None,
    created: int | None = None,
) -> dict[str, Any]:
    """A card payment method (not saved). Test cards keep their documented brand/country."""
    now = created if created is not None else sim.now()
    if exp_month is None or exp_year is None:
        # Stripe's magic cards expire a year from now, in the current month.
        today = datetime.fromtimestamp(now, UTC)
        exp_month, exp_year = today.month, today.year + 1
    known = TEST_CARDS.get(number)
    brand = known.brand if known else brand_of(number)
    return {
        "id": sim.new_id("pm"),
        "object": "payment_method",
        "allow_redisplay": "unspecified",
        "billing_details": billing_details or empty_billing_details(),
        "card": {
            "brand": brand,
            "checks": {
                "address_line1_check": None,
                "address_postal_code_check": None,
                "cvc_check": "unchecked" if cvc_given else None,
            },
            "country": known.country if known else "US",
            "display_brand": DISPLAY_BRANDS.get(brand, brand),
            "exp_month": exp_month,
            "exp_year": exp_year,
            "fingerprint": fingerprint(ctx, number),
            "funding": known.funding if known else "credit",
            "generated_from": None,
            "last4": number[-4:],
            "networks": {"available": [brand], "preferred": None},
            "regulated_status": "unregulated",
            "three_d_secure_usage": {"supported": True},
            "wallet": None,
        },
        "created": now,
        "customer": None,
        "customer_account": None,
        "livemode": ctx.livemode,
        "metadata": metadata or {},
        "type": "card",
        "_number": number,
    }


def save(sim: Simulator, ctx: Ctx, pm: dict[str, Any]) -> dict[str, Any]:
    return sim.save(ctx, pm)


def from_magic(
    sim: Simulator, ctx: Ctx, magic: str, *, created: int | None = None
) -> dict[str, Any] | None:
    """A fresh saved payment method cloned from ``pm_card_*``/``tok_*``, else None."""
    number = magic_number(magic)
    if number is None:
        return None
    return save(sim, ctx, new_payment_method(sim, ctx, number, created=created))


def resolve_payment_method(
    sim: Simulator, ctx: Ctx, pm_id_or_magic: str, *, param: str
) -> dict[str, Any]:
    """A stored payment method by id, or a fresh one for a magic test id (``pm_card_visa``).

    Legacy ``card_`` objects are answered as they are: they can pay like payment methods.
    Magic tokens (``tok_visa``) are accepted too, for ``POST /v1/invoices/{id}/pay
    source=tok_visa``, which hands them over as a payment method.
    """
    if not isinstance(pm_id_or_magic, str) or not pm_id_or_magic:
        raise invalid(f"Invalid string: {param}", param=param)
    if pm_id_or_magic.startswith(("pm_card_", "tok_")):
        fresh = from_magic(sim, ctx, pm_id_or_magic)
        if fresh is not None:
            return fresh
    obj = sim.db.get(ctx.acct, pm_id_or_magic)
    if obj is None or obj.get("object") not in ("payment_method", "card"):
        raise missing(pm_id_or_magic, param=param, kind="PaymentMethod")
    return obj


def _load(sim: Simulator, ctx: Ctx, pm_id: str, param: str = "payment_method") -> dict[str, Any]:
    obj = sim.db.get(ctx.acct, pm_id)
    if obj is None or obj.get("object") != "payment_method":
        raise missing(pm_id, param=param, kind="PaymentMethod")
    return obj


def _load_customer(sim: Simulator, ctx: Ctx, customer_id: str, param: str) -> dict[str, Any]:
    customer = sim.db.get(ctx.acct, customer_id)
    if customer is None or customer.get("object") != "customer":
        raise missing(customer_id, param=param, kind="customer")
    return customer


def attach(sim: Simulator, ctx: Ctx, pm: dict[str, Any], customer_id: str) -> dict[str, Any]:
    """Attach ``pm`` to a customer (``payment_method.attached``); Stripe's checks first.

    The cards of Stripe's decline table cannot be attached: the attempt answers their
    decline as a 402, and nothing is attached.
    """
    if pm.get("object") == "card":
        return pm  # legacy sources belong to their customer already
    if pm.get("customer") == customer_id:
        return pm
    if pm.get("customer") is not None:
        raise invalid(
            "The payment method you provided has already been attached to a customer.",
            param="payment_method",
        )
    if pm.get("_consumed"):
        raise invalid(
            "This PaymentMethod was previously used without being attached to a Customer or "
            "was detached from a Customer, and may not be used again.",
            param="payment_method",
        )
    _load_customer(sim, ctx, customer_id, "customer")
    card = TEST_CARDS.get(str(pm.get("_number") or ""))
    if card is not None and not card.attachable and card.decline:
        raise card_error(DECLINES[card.decline])
    pm["customer"] = customer_id
    checks = pm["card"]["checks"]
    if checks.get("cvc_check") == "unchecked":
        checks["cvc_check"] = "pass"  # attaching verifies the card with the issuer
    save(sim, ctx, pm)
    sim.emit(ctx, "payment_method.attached", pm)
    return pm


def detach(sim: Simulator, ctx: Ctx, pm: dict[str, Any], *, automatic: bool = False) -> None:
    """Detach from its customer; the customer's default is cleared; never usable again."""
    customer_id = pm.get("customer")
    if customer_id is None:
        raise invalid(
            "The payment method you provided is not attached to a customer so detachment is "
            "impossible.",
            param="payment_method",
        )
    pm["customer"] = None
    pm["_consumed"] = True
    save(sim, ctx, pm)
    customer = sim.db.get(ctx.acct, customer_id)
    if customer is not None and (
        customer.get("invoice_settings", {}).get("default_payment_method") == pm["id"]
    ):
        old = copy.deepcopy(customer)
        customer["invoice_settings"]["default_payment_method"] = None
        sim.save(ctx, customer, links={"email": customer.get("email")})
        emit_updated(sim, ctx, "customer.updated", old, customer, automatic=automatic)
    sim.emit(
        ctx,
        "payment_method.detached",
        pm,
        previous={"customer": customer_id},
        automatic=automatic,
    )


# -- routes -------------------------------------------------------------------------------

CREATE_PARAMS = {
    "allow_redisplay",
    "billing_details",
    "card",
    "customer",
    "metadata",
    "payment_method",
    "radar_options",
    "type",
}
UPDATE_PARAMS = {"allow_redisplay", "billing_details", "card", "metadata"}
REDISPLAY = ("always", "limited", "unspecified")


def create_from_params(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], *, prefix: str = ""
) -> dict[str, Any]:
    """A card payment method from ``type=card&card[...]`` (also ``payment_method_data``)."""
    kind = params.get("type")
    if not kind:
        raise required(f"{prefix}[type]" if prefix else "type")
    if kind != "card":
        raise invalid(
            f"The payment method type provided: {kind} is invalid. The simulator supports "
            "`card` payment methods.",
            param=f"{prefix}[type]" if prefix else "type",
        )
    card_param = f"{prefix}[card]" if prefix else "card"
    card = forms.as_dict(params, "card")
    if not card:
        raise required(card_param)
    billing = empty_billing_details()
    if "billing_details" in params:
        _apply_billing(billing, params["billing_details"])
    metadata = forms.as_metadata(params)
    token = card.get("token")
    if token:
        number = magic_number(str(token)) if str(token).startswith("tok_") else None
        if number is None:
            raise missing(str(token), param=f"{card_param}[token]", kind="token")
        pm = new_payment_method(sim, ctx, number, billing_details=billing, metadata=metadata)
    else:
        for unknown in set(card) - {"number", "exp_month", "exp_year", "cvc", "networks"}:
            raise invalid(
                f"Received unknown parameter: {card_param}[{unknown}]",
                param=f"{card_param}[{unknown}]",
            )
        raw = str(card.get("number") or "").replace(" ", "")
        if not raw:
            raise required(f"{card_param}[number]")
        if not luhn_ok(raw):
            raise _card_input_error("incorrect_number", "Your card number is incorrect.", "number")
        if not card.get("exp_month"):
            raise required(f"{card_param}[exp_month]")
        if not card.get("exp_year"):
            raise required(f"{card_param}[exp_year]")
        month, year = _expiry(sim, card)
        cvc = card.get("cvc")
        if cvc not in (None, "") and (not str(cvc).isdigit() or not 3 <= len(str(cvc)) <= 4):
            raise _card_input_error("invalid_cvc", "Your card's security code is invalid.", "cvc")
        pm = new_payment_method(
            sim,
            ctx,
            raw,
            exp_month=month,
            exp_year=year,
            cvc_given=cvc not in (None, ""),
            billing_details=billing,
            metadata=metadata,
        )
    if "allow_redisplay" in params:
        pm["allow_redisplay"] = forms.as_enum(params, "allow_redisplay", REDISPLAY, "unspecified")
    return save(sim, ctx, pm)


@route("POST", "/v1/payment_methods", resource="payment_methods")
def create(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, CREATE_PARAMS)
    if params.get("payment_method") or params.get("customer"):
        raise invalid(
            "Cloning payment methods to connected accounts is not supported by the simulator.",
            param="payment_method" if params.get("payment_method") else "customer",
        )
    return create_from_params(sim, ctx, params)


@route("GET", "/v1/payment_methods/{pm_id}", resource="payment_methods")
def retrieve(sim: Simulator, ctx: Ctx, params: dict[str, Any], pm_id: str) -> dict[str, Any]:
    return _load(sim, ctx, pm_id, param="payment_method")


@route("POST", "/v1/payment_methods/{pm_id}", resource="payment_methods")
def update(sim: Simulator, ctx: Ctx, params: dict[str, Any], pm_id: str) -> dict[str, Any]:
    check_params(params, UPDATE_PARAMS)
    pm = _load(sim, ctx, pm_id, param="payment_method")
    if pm.get("customer") is None:
        raise invalid(
            "You must save this PaymentMethod to a customer before you can update it.",
            param="payment_method",
        )
    old = copy.deepcopy(pm)
    if "billing_details" in params:
        _apply_billing(pm["billing_details"], params["billing_details"])
    if "card" in params:
        card = forms.as_dict(params, "card") or {}
        for key in card:
            if key not in ("exp_month", "exp_year", "networks"):
                raise invalid(f"Received unknown parameter: card[{key}]", param=f"card[{key}]")
        if "exp_month" in card or "exp_year" in card:
            month, year = _expiry(
                sim,
                {
                    "exp_month": card.get("exp_month", pm["card"]["exp_month"]),
                    "exp_year": card.get("exp_year", pm["card"]["exp_year"]),
                },
            )
            pm["card"]["exp_month"], pm["card"]["exp_year"] = month, year
    if "metadata" in params:
        pm["metadata"] = forms.as_metadata(params, pm.get("metadata"))
    if "allow_redisplay" in params:
        pm["allow_redisplay"] = forms.as_enum(params, "allow_redisplay", REDISPLAY, "unspecified")
    save(sim, ctx, pm)
    emit_updated(sim, ctx, "payment_method.updated", old, pm)
    return pm


@route("POST", "/v1/payment_methods/{pm_id}/attach", resource="payment_methods")
def attach_route(sim: Simulator, ctx: Ctx, params: dict[str, Any], pm_id: str) -> dict[str, Any]:
    check_params(params, {"customer", "customer_account"})
    customer_id = params.get("customer")
    if not customer_id:
        raise required("customer")
    _load_customer(sim, ctx, str(customer_id), "customer")
    pm = resolve_payment_method(sim, ctx, pm_id, param="payment_method")
    if pm.get("object") != "payment_method":
        raise missing(pm_id, param="payment_method", kind="PaymentMethod")
    return attach(sim, ctx, pm, str(customer_id))


@route("POST", "/v1/payment_methods/{pm_id}/detach", resource="payment_methods")
def detach_route(sim: Simulator, ctx: Ctx, params: dict[str, Any], pm_id: str) -> dict[str, Any]:
    check_params(params, set())
    pm = _load(sim, ctx, pm_id, param="payment_method")
    detach(sim, ctx, pm)
    return pm


LIST_PARAMS = {"customer", "customer_account", "ending_before", "limit", "starting_after", "type"}


def _list(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], url: str, customer: str | None
) -> dict[str, Any]:
    kind = params.get("type")
    if kind not in (None, "", "card"):
        # Only cards exist in the simulator: any other type lists nothing.
        return sim.list_response(ctx, url, Page([], False))
    allow = params.get("allow_redisplay")
    listing = sim.paginate(ctx, params, "payment_method", url, customer=customer)
    if allow:
        listing["data"] = [pm for pm in listing["data"] if pm.get("allow_redisplay") == allow]
    return listing


@route("GET", "/v1/payment_methods", resource="payment_methods")
def list_(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, LIST_PARAMS)
    customer = params.get("customer") or None
    if customer is not None:
        _load_customer(sim, ctx, str(customer), "customer")
    return _list(sim, ctx, params, "/v1/payment_methods", customer)


@route("GET", "/v1/customers/{customer_id}/payment_methods", resource="payment_methods")
def list_for_customer(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], customer_id: str
) -> dict[str, Any]:
    check_params(params, {"allow_redisplay", "ending_before", "limit", "starting_after", "type"})
    _load_customer(sim, ctx, customer_id, "customer")
    return _list(sim, ctx, params, f"/v1/customers/{customer_id}/payment_methods", customer_id)


@route("GET", "/v1/customers/{customer_id}/payment_methods/{pm_id}", resource="payment_methods")
def retrieve_for_customer(
    sim: Simulator, ctx: Ctx, params: dict[str, Any], customer_id: str, pm_id: str
) -> dict[str, Any]:
    _load_customer(sim, ctx, customer_id, "customer")
    pm = _load(sim, ctx, pm_id, param="payment_method")
    if pm.get("customer") != customer_id:
        raise missing(pm_id, param="payment_method", kind="PaymentMethod")
    return pm
