"""The Stripe SDK's exceptions, mapped onto stripesync's in one place (``raise ... from``).

    StripeSyncError
    ├── TerminalError
    │   ├── KeyRejected             401: wrong, revoked or mistyped key
    │   ├── PermissionMissing
    │   │   └── StripePermissionMissing   403 naming the restricted-key permission
    │   └── StripeRequestRefused    400 / 404 / other 4xx: a bug or an unsupported server
    └── TransientError
        ├── StripeUnreachable       connection refused, DNS, timeout
        ├── RateLimited             429 after our own retries
        └── StripeServerError       5xx after the SDK's retries

Every mapped error keeps ``http_status``, ``stripe_code`` and ``request_id`` so that the
sync error log can show them; messages name the key only masked.
"""

from __future__ import annotations

import re
from typing import Any

import stripe

from stripesync.errors import PermissionMissing, StripeSyncError, TerminalError, TransientError

__all__ = [
    "PERMISSION_LABELS",
    "KeyRejected",
    "RateLimited",
    "StripeError",
    "StripePermissionMissing",
    "StripeRequestRefused",
    "StripeServerError",
    "StripeUnreachable",
    "map_stripe_error",
    "permission_from_message",
]

DASHBOARD_HINT = "add it in the Stripe Dashboard → Developers → API keys"

#: Stripe's internal restricted-key permission codes (as its 403 messages name them),
#: by the name the Dashboard shows.
PERMISSION_LABELS = {
    "rak_customer": "Customers",
    "rak_product": "Products",
    "rak_plan": "Prices",
    "rak_price": "Prices",
    "rak_coupon": "Coupons",
    "rak_subscription": "Subscriptions",
    "rak_invoice": "Invoices",
    "rak_charge": "Charges",
    "rak_payment_intent": "Payment Intents",
    "rak_payment_method": "Payment Methods",
    "rak_refund": "Refunds",
    "rak_credit_note": "Credit Notes",
    "rak_event": "Events",
    "rak_webhook": "Webhook Endpoints",
    "rak_webhook_endpoint": "Webhook Endpoints",
}

_RAK = re.compile(r"\b(rak_[a-z_]+?)_(read|write)\b")


class StripeError(StripeSyncError):
    """Mixin data of every mapped Stripe error."""

    http_status: int | None = None
    stripe_code: str | None = None
    request_id: str | None = None

    def _attach(self, exc: Any) -> None:
        self.http_status = getattr(exc, "http_status", None)
        self.stripe_code = getattr(exc, "code", None)
        self.request_id = getattr(exc, "request_id", None)


class KeyRejected(StripeError, TerminalError):
    code = "stripe_key_rejected"
    status = 401


class StripePermissionMissing(StripeError, PermissionMissing):
    """403: the key lacks ``permission`` (a Dashboard label such as ``Invoices: Read``)."""

    permission: str | None = None


class StripeRequestRefused(StripeError, TerminalError):
    code = "stripe_request_refused"
    status = 502


class StripeUnreachable(StripeError, TransientError):
    code = "stripe_unreachable"


class RateLimited(StripeError, TransientError):
    code = "stripe_rate_limited"


class StripeServerError(StripeError, TransientError):
    code = "stripe_server_error"


def permission_from_message(message: str) -> str | None:
    """``'rak_invoice_read'`` in a 403 message → ``'Invoices: Read'``."""
    match = _RAK.search(message or "")
    if match is None:
        return None
    code, access = match.group(1), match.group(2)
    label = PERMISSION_LABELS.get(code) or code.removeprefix("rak_").replace("_", " ").title()
    return f"{label}: {access.title()}"


def _first_line(exc: Any) -> str:
    message = getattr(exc, "user_message", None) or str(exc) or type(exc).__name__
    message = re.sub(r"^Request req_\w+: ", "", str(message))
    return message.strip().splitlines()[0] if message.strip() else type(exc).__name__


def map_stripe_error(
    exc: stripe.StripeError, *, key_hint: str, api_base: str, what: str
) -> StripeError:
    """One stripesync error for one SDK error; ``what`` names the request ("GET /v1/...")."""
    message = _first_line(exc)
    mapped: StripeError
    if isinstance(exc, stripe.AuthenticationError):
        mapped = KeyRejected(
            f"Stripe rejected the key {key_hint} (401: {message}); it is wrong, revoked or "
            "mistyped: copy it again from the Stripe Dashboard → Developers → API keys"
        )
    elif isinstance(exc, stripe.PermissionError):
        permission = permission_from_message(str(exc))
        needed = f"`{permission}`" if permission else "a permission this request needs"
        mapped = StripePermissionMissing(
            f"key {key_hint} lacks {needed} ({what}); {DASHBOARD_HINT}"
        )
        mapped.permission = permission
    elif isinstance(exc, stripe.RateLimitError):
        mapped = RateLimited(
            f"Stripe kept answering 429 (rate limited) to {what} after every retry; another "
            "client may be using this account's budget; rerun `stripesync sync` to resume"
        )
    elif isinstance(exc, stripe.APIConnectionError):
        mapped = StripeUnreachable(
            f"cannot reach the Stripe API at {api_base} ({message}); check --api-base and "
            "the network"
        )
    elif isinstance(exc, stripe.APIError) or (getattr(exc, "http_status", None) or 0) >= 500:
        mapped = StripeServerError(
            f"Stripe answered {getattr(exc, 'http_status', None) or 'an error'} to {what} "
            f"after every retry ({message}); rerun `stripesync sync` to resume"
        )
    else:
        status = getattr(exc, "http_status", None)
        hint = ""
        if status == 404 and "Unrecognized request URL" in message:
            hint = f"; the server at {api_base} does not serve it: is it a Stripe-compatible API?"
        mapped = StripeRequestRefused(f"Stripe refused {what} ({status}: {message}){hint}")
    mapped._attach(exc)
    return mapped
