"""Which permissions a key has, found by cheap probes that change nothing.

Restricted keys fail with unclear errors when a permission is missing, usually deep into
an import. Connecting a source asks up front instead: a ``GET`` list with ``limit=1`` per
read permission, and for Webhook Endpoints: Write a ``POST`` to an endpoint id that
cannot exist (``we_stripesync_probe``): 404 means the key may write (Stripe checked the
permission, then found nothing to update), 403 means it may not. Nothing is created.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stripesync.stripe_api.client import StripeAPI
from stripesync.stripe_api.errors import StripePermissionMissing, StripeRequestRefused

__all__ = ["PERMISSIONS", "Permission", "PermissionCheck", "PermissionReport", "check_permissions"]

WEBHOOK_PROBE_ID = "we_stripesync_probe"


@dataclass(frozen=True)
class Permission:
    """One restricted-key permission, as the Stripe Dashboard names it."""

    resource: str  # customers, invoices, ... (the simulator's and our streams' name)
    label: str  # Customers, Invoices, ...
    access: str  # read | write
    method: str
    path: str
    #: Required permissions refuse the connection when missing; optional ones say
    #: what will not happen instead.
    required: bool = True
    without: str = ""

    @property
    def name(self) -> str:
        return f"{self.label}: {self.access.title()}"


def _read(resource: str, label: str, path: str, *, without: str = "") -> Permission:
    return Permission(resource, label, "read", "get", path, required=not without, without=without)


#: What the product needs: the issue's list, plus Plans and Credit Notes, which Stripe
#: lists as their own permissions on some accounts (their streams are skipped if missing).
PERMISSIONS: tuple[Permission, ...] = (
    _read("customers", "Customers", "/v1/customers"),
    _read("subscriptions", "Subscriptions", "/v1/subscriptions"),
    _read("invoices", "Invoices", "/v1/invoices"),
    _read("charges", "Charges", "/v1/charges"),
    _read("payment_intents", "Payment Intents", "/v1/payment_intents"),
    _read("refunds", "Refunds", "/v1/refunds"),
    _read("products", "Products", "/v1/products"),
    _read("prices", "Prices", "/v1/prices"),
    _read("coupons", "Coupons", "/v1/coupons"),
    _read("events", "Events", "/v1/events"),
    _read("plans", "Plans", "/v1/plans", without="legacy plans are not imported"),
    _read(
        "credit_notes", "Credit Notes", "/v1/credit_notes", without="credit notes are not imported"
    ),
    Permission(
        "webhook_endpoints",
        "Webhook Endpoints",
        "write",
        "post",
        f"/v1/webhook_endpoints/{WEBHOOK_PROBE_ID}",
        required=False,
        without="no webhooks: changes arrive by polling the Events API only",
    ),
)


@dataclass(frozen=True)
class PermissionCheck:
    permission: Permission
    granted: bool


@dataclass
class PermissionReport:
    checks: list[PermissionCheck] = field(default_factory=list)

    @property
    def missing(self) -> list[Permission]:
        return [c.permission for c in self.checks if not c.granted]

    @property
    def missing_required(self) -> list[Permission]:
        return [p for p in self.missing if p.required]

    def granted(self, resource: str, access: str = "read") -> bool:
        for check in self.checks:
            if check.permission.resource == resource and check.permission.access == access:
                return check.granted
        return False

    @property
    def webhooks(self) -> bool:
        return self.granted("webhook_endpoints", "write")

    def as_json(self) -> dict[str, Any]:
        """``{"Customers: Read": "granted", ...}``: what is kept with the source."""
        return {c.permission.name: "granted" if c.granted else "missing" for c in self.checks}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PermissionReport:
        by_name = {p.name: p for p in PERMISSIONS}
        return cls(
            [
                PermissionCheck(by_name[name], state == "granted")
                for name, state in data.items()
                if name in by_name
            ]
        )


def _probe(api: StripeAPI, permission: Permission) -> bool:
    params: dict[str, Any] = {"limit": 1} if permission.method == "get" else {}
    try:
        api.request(permission.method, permission.path, params)
    except StripePermissionMissing:
        return False
    except StripeRequestRefused as exc:
        # For the write probe, any answer but 401/403 means the permission check passed.
        if permission.access == "write" and exc.http_status in (400, 404):
            return True
        raise
    return True


def check_permissions(api: StripeAPI) -> PermissionReport:
    """Probe every permission; a rejected key or unreachable server raises at the first.

    ``api`` should fail fast (short timeout, no retries): this runs while a person waits.
    """
    report = PermissionReport()
    for permission in PERMISSIONS:
        report.checks.append(PermissionCheck(permission, _probe(api, permission)))
    return report
