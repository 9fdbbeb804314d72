"""``POST /webhooks/stripe/{source}``: Stripe's deliveries (and ``stripe listen``'s).

In order, and nothing is stored unless every step passes:

1. the body is read up to ``webhook_max_body_bytes``: a larger one is refused 413 before
   more than the limit is read (a ``Content-Length`` over it, without reading at all);
2. ``Stripe-Signature`` is checked on the raw bytes against each signing secret of the
   source (the registered endpoint's, and any set with ``stripesync webhook-secret``,
   two or more while a secret is rolled), with the SDK's scheme and a
   ``webhook_tolerance_seconds`` window: unsigned, forged or stale requests get 401, a
   malformed header or body 400;
3. the event goes into the ledger, deduplicated by id, and the answer is 200, whatever
   the event's type: a 4xx would make Stripe retry for three days and then disable the
   endpoint. Applying it is a job that runs after the answer.
"""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response

from stripesync.sync.webhooks import (
    MalformedWebhook,
    PayloadTooLarge,
    SignatureExpired,
    SignatureInvalid,
    ledger_row,
    verify_event,
)
from stripesync.web.deps import Services
from stripesync.web.intake import Receiving

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter(tags=["webhooks"])

_RECEIVED = b'{"received":true}'
#: A delivery the cached secrets reject re-reads them, at most this often (seconds).
_RELOAD_AFTER = 0.5


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) one longer than ``limit`` before reading past it."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            raise MalformedWebhook("the Content-Length header is not a number") from None
        if size > limit:
            raise _too_large(limit)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the webhook body is larger than {limit:,} bytes (STRIPESYNC_WEBHOOK_MAX_BODY_BYTES)"
    )


async def receive_stripe_webhook(request: Request) -> Response:
    """Verify, store and acknowledge one Stripe event; it is applied after the answer.

    A plain Starlette route (no dependency injection, no validation layer): it is the one
    hot path of the app, and everything it needs is the raw request.
    """
    source = str(request.path_params["source"])
    services: Services = request.app.state.services
    settings = services.settings
    body = await read_body(request, settings.webhook_max_body_bytes)
    header = request.headers.get("stripe-signature")
    directory = services.directory
    target = directory.cached(source)
    if target is None:
        target = await asyncio.to_thread(directory.load, source)
    try:
        event = verify_event(
            body, header, target.secrets, tolerance=settings.webhook_tolerance_seconds
        )
    except (SignatureInvalid, SignatureExpired):
        # A secret set a moment ago may not be in the cache yet: look once more.
        if _fresh(target):
            raise
        target = await asyncio.to_thread(directory.load, source)
        event = verify_event(
            body, header, target.secrets, tolerance=settings.webhook_tolerance_seconds
        )
    if bool(event.get("livemode", False)) != target.livemode:
        mode = "live" if event.get("livemode") else "test"
        raise MalformedWebhook(
            f"a {mode}-mode event was sent to source {target.name!r}, which is in the other "
            "mode; point each mode's endpoint (or `stripe listen`) at its own source"
        )
    await services.writer.put(ledger_row(target.source_id, event, via="webhook"))
    return Response(_RECEIVED, media_type="application/json")


def _fresh(target: Receiving) -> bool:
    return time.monotonic() - target.loaded_at < _RELOAD_AFTER


router.add_route("/webhooks/stripe/{source}", receive_stripe_webhook, methods=["POST"])
