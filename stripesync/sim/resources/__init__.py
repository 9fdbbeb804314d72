"""One module per Stripe resource; importing this package registers every route."""

from stripesync.sim.resources import (  # noqa: F401
    billing_routes,
    catalog,
    customers,
    events,
    webhook_endpoints,
)
