"""The settings that pick a side where the revenue references disagree (MRR.md).

MRR.md names a default for every contested corner (scheduled cancellations, which coupon
durations reduce MRR, the reporting currency) and a setting for the other behaviour;
:class:`RevenueRules` is those settings, nothing else, so one value can be stored with a
computed figure and explain it later.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction

from stripesync.errors import ConfigError

# Stripe's own list of currencies whose amounts carry no minor unit, and of those carrying
# three decimals (https://docs.stripe.com/currencies). ISK, HUF and TWD are zero-decimal in
# ISO 4217 but Stripe's API keeps two decimals for them, so they are not listed.
ZERO_DECIMAL_CURRENCIES = frozenset(
    {
        "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga",
        "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf",
    }
)  # fmt: skip
THREE_DECIMAL_CURRENCIES = frozenset({"bhd", "jod", "kwd", "omr", "tnd"})


def minor_unit_exponent(currency: str) -> int:
    """Decimal places of the currency's minor unit as Stripe counts them."""
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


class MissingExchangeRate(ConfigError):
    """A reporting currency is set but the rate table lacks a currency that has MRR."""

    code = "missing_exchange_rate"

    def __init__(self, currency: str, reporting_currency: str) -> None:
        self.currency = currency
        self.reporting_currency = reporting_currency
        super().__init__(
            f"no exchange rate for {currency.upper()} in exchange_rates, needed to report "
            f"in {reporting_currency.upper()}; add {currency!r}: <{reporting_currency.upper()} "
            f"per 1 {currency.upper()}> to the rate table, or unset reporting_currency"
        )

    def __reduce__(self) -> tuple[type[MissingExchangeRate], tuple[str, str]]:
        # Exceptions pickle through their args (the message); rebuild from the fields so
        # the error survives a process boundary.
        return type(self), (self.currency, self.reporting_currency)


def _normalize_rates(raw: Mapping[str, Decimal | str]) -> dict[str, Decimal]:
    rates: dict[str, Decimal] = {}
    for currency, value in raw.items():
        if not isinstance(currency, str) or not currency:
            raise ConfigError(f"exchange_rates key {currency!r} is not a currency code")
        try:
            # Floats go through str() so 0.92 means 0.92, not its binary neighbour.
            rate = Decimal(value if isinstance(value, Decimal) else str(value))
        except InvalidOperation:
            raise ConfigError(
                f"exchange_rates[{currency!r}] is {value!r}; give a decimal such as '0.92'"
            ) from None
        if not rate.is_finite() or rate <= 0:
            raise ConfigError(
                f"exchange_rates[{currency!r}] is {value!r}; a rate must be a positive number"
            )
        code = currency.lower()
        if code in rates and rates[code] != rate:
            raise ConfigError(f"exchange_rates gives {code.upper()} two different rates")
        rates[code] = rate
    return rates


@dataclass(frozen=True, kw_only=True)
class RevenueRules:
    """How stripesync turns subscriptions into MRR where MRR.md lets the operator choose.

    The defaults follow Stripe's Billing analytics as MRR.md writes them down; every
    figure the revenue package computes takes one of these, so a stored figure can be
    reproduced with the rules it was computed under.

    Fields:

    ``churn_at_cancellation_request``
        Rule 3. Off (default): a subscription with ``cancel_at_period_end`` or a
        ``cancel_at`` keeps counting until Stripe changes its status. On (Stripe's
        classic behaviour): it gives 0 from the moment a cancellation is scheduled.
    ``subtract_repeating_discounts``
        Rule 6. Also subtract coupons with ``duration = repeating`` (until their
        ``end``). ``forever`` coupons are always subtracted.
    ``subtract_once_discounts``
        Rule 6. Also subtract coupons with ``duration = once`` while Stripe still shows
        them on the subscription.
    ``reporting_currency``
        Rule 8. A lowercase ISO code (``"usd"``); when set, customer totals are also
        converted into it. None keeps MRR per currency only.
    ``exchange_rates``
        Rule 8. How many major units of the reporting currency one major unit of each
        other currency is worth (``{"eur": "1.08"}`` when 1 EUR = 1.08 USD). Minor-unit
        differences (JPY has none, KWD has three decimals) are handled for you. Keys are
        case-insensitive; values are decimals or decimal strings, never floats in spirit.
        The reporting currency itself always converts at 1. The rules keep their own
        normalized copy (lowercase keys, Decimal values), so later changes to the mapping
        passed in do not leak into figures computed with them.
    """

    churn_at_cancellation_request: bool = False
    subtract_repeating_discounts: bool = False
    subtract_once_discounts: bool = False
    reporting_currency: str | None = None
    exchange_rates: Mapping[str, Decimal | str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        rates = _normalize_rates(self.exchange_rates)
        reporting = self.reporting_currency
        if reporting is not None:
            if not isinstance(reporting, str) or not reporting.strip():
                raise ConfigError(f"reporting_currency {reporting!r} is not a currency code")
            reporting = reporting.strip().lower()
            if rates.get(reporting, Decimal(1)) != 1:
                raise ConfigError(
                    f"exchange_rates gives the reporting currency {reporting.upper()} the rate "
                    f"{rates[reporting]}; it converts at 1, remove it or change it to 1"
                )
        object.__setattr__(self, "exchange_rates", rates)
        object.__setattr__(self, "reporting_currency", reporting)

    def subtracts(self, duration: object) -> bool:
        """Whether a coupon with this ``duration`` reduces MRR (rule 6)."""
        if duration == "forever":
            return True
        if duration == "repeating":
            return self.subtract_repeating_discounts
        if duration == "once":
            return self.subtract_once_discounts
        return False

    def conversion_factor(self, currency: str) -> Fraction:
        """Reporting-currency minor units per minor unit of ``currency``.

        Raises :class:`MissingExchangeRate` when the table has no rate for it, and
        :class:`ConfigError` when no reporting currency is set.
        """
        reporting = self.reporting_currency
        if reporting is None:
            raise ConfigError("no reporting_currency is set; set one to convert MRR")
        code = currency.lower()
        if code == reporting:
            return Fraction(1)
        rate = self.exchange_rates.get(code)
        if rate is None:
            raise MissingExchangeRate(code, reporting)
        shift = minor_unit_exponent(reporting) - minor_unit_exponent(code)
        return Fraction(Decimal(rate)) * Fraction(10) ** shift
