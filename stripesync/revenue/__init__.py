"""Revenue: MRR, ARR, paying and trialing counts, movements and rates (MRR.md).

Pure functions of Stripe objects and a :class:`RevenueRules`; the store and the profile
builder call them, the tests exercise them directly.
"""

from stripesync.revenue.mrr import (
    COUNTING_STATUSES,
    AppliedDiscount,
    CustomerRevenue,
    IgnoredDiscount,
    ItemLine,
    Movement,
    MrrExplanation,
    SubscriptionRevenue,
    arpu,
    arr_from_exact,
    classify_movement,
    customer_revenue,
    explain_subscription_mrr,
    fx_movement,
    gross_mrr_churn_rate,
    net_mrr_churn_rate,
    round_half_up,
    subscriber_churn_rate,
    subscription_arr,
    subscription_mrr,
    to_reporting_currency,
)
from stripesync.revenue.rules import MissingExchangeRate, RevenueRules, minor_unit_exponent
from stripesync.revenue.shapes import StripeShapeError, months_per_period

__all__ = [
    "COUNTING_STATUSES",
    "AppliedDiscount",
    "CustomerRevenue",
    "IgnoredDiscount",
    "ItemLine",
    "MissingExchangeRate",
    "Movement",
    "MrrExplanation",
    "RevenueRules",
    "StripeShapeError",
    "SubscriptionRevenue",
    "arpu",
    "arr_from_exact",
    "classify_movement",
    "customer_revenue",
    "explain_subscription_mrr",
    "fx_movement",
    "gross_mrr_churn_rate",
    "minor_unit_exponent",
    "months_per_period",
    "net_mrr_churn_rate",
    "round_half_up",
    "subscriber_churn_rate",
    "subscription_arr",
    "subscription_mrr",
    "to_reporting_currency",
]
