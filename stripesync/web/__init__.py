"""The HTTP face of stripesync: `stripesync serve` (FastAPI on uvicorn).

Today it receives Stripe's webhooks (``POST /webhooks/stripe/{source}``); the REST API
and the pages come as more routers in `stripesync.web.routes`, one module per resource.
"""

from stripesync.web.app import create_app

__all__ = ["create_app"]
