"""Webhook endpoints: the secret is returned once, on creation, as Stripe does."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from stripesync.sim import forms, versions
from stripesync.sim.core import Ctx, Simulator, route
from stripesync.sim.errors import SimAPIError, required
from stripesync.sim.resources.common import check_params, deleted_stub

PARAMS = {"api_version", "connect", "description", "enabled_events", "metadata", "url", "disabled"}


def _url(value: Any) -> str:
    parsed = urlparse(str(value))
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise SimAPIError(
            400, f"Invalid URL: {value}. URLs must begin with http:// or https://", param="url"
        )
    return str(value)


def _events(params: dict[str, Any]) -> list[str]:
    events = forms.as_list(params, "enabled_events")
    if not events:
        raise required("enabled_events")
    for i, name in enumerate(events):
        if not isinstance(name, str) or (name != "*" and "." not in name):
            raise SimAPIError(
                400, f"Invalid enabled_events[{i}]: {name}", param=f"enabled_events[{i}]"
            )
    return events


@route("POST", "/v1/webhook_endpoints", resource="webhook_endpoints")
def create(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, PARAMS - {"disabled"})
    if not params.get("url"):
        raise required("url")
    version = params.get("api_version") or None
    if version is not None:
        try:
            versions.is_legacy(version)
        except ValueError:
            raise SimAPIError(400, f"Invalid api_version: {version}", param="api_version") from None
    endpoint = {
        "id": sim.new_id("we"),
        "object": "webhook_endpoint",
        "api_version": version,
        "application": None,
        "created": sim.now(),
        "description": params.get("description") or None,
        "enabled_events": _events(params),
        "livemode": ctx.livemode,
        "metadata": forms.as_metadata(params),
        "status": "enabled",
        "url": _url(params["url"]),
        "_secret": "whsec_" + sim.random_chars(32),
        "_old_secrets": [],
    }
    sim.save(ctx, endpoint)
    sim.invalidate_endpoints(ctx.acct)
    return {**endpoint, "secret": endpoint["_secret"]}


@route("GET", "/v1/webhook_endpoints/{endpoint_id}", resource="webhook_endpoints")
def retrieve(sim: Simulator, ctx: Ctx, params: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    return sim.get(ctx, endpoint_id, kind="webhook endpoint", object_type="webhook_endpoint")


@route("POST", "/v1/webhook_endpoints/{endpoint_id}", resource="webhook_endpoints")
def update(sim: Simulator, ctx: Ctx, params: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    check_params(params, PARAMS - {"api_version", "connect"})
    endpoint = sim.get(ctx, endpoint_id, kind="webhook endpoint", object_type="webhook_endpoint")
    if "url" in params:
        endpoint["url"] = _url(params["url"])
    if "enabled_events" in params:
        endpoint["enabled_events"] = _events(params)
    if "description" in params:
        endpoint["description"] = params["description"] or None
    if "metadata" in params:
        endpoint["metadata"] = forms.as_metadata(params, endpoint["metadata"])
    if "disabled" in params:
        endpoint["status"] = "disabled" if forms.as_bool(params, "disabled") else "enabled"
    sim.save(ctx, endpoint)
    sim.invalidate_endpoints(ctx.acct)
    return endpoint


@route("DELETE", "/v1/webhook_endpoints/{endpoint_id}", resource="webhook_endpoints")
def delete(sim: Simulator, ctx: Ctx, params: dict[str, Any], endpoint_id: str) -> dict[str, Any]:
    endpoint = sim.get(ctx, endpoint_id, kind="webhook endpoint", object_type="webhook_endpoint")
    sim.db.mark_deleted(ctx.acct, endpoint_id)
    sim.invalidate_endpoints(ctx.acct)
    return deleted_stub(endpoint)


@route("GET", "/v1/webhook_endpoints", resource="webhook_endpoints")
def list_(sim: Simulator, ctx: Ctx, params: dict[str, Any]) -> dict[str, Any]:
    check_params(params, {"ending_before", "limit", "starting_after"})
    return sim.paginate(ctx, params, "webhook_endpoint", "/v1/webhook_endpoints")


def roll_secret(sim: Simulator, ctx: Ctx, endpoint_id: str, *, expires_in: int = 86400) -> str:
    """Roll the signing secret; the old one keeps signing until it expires (two ``v1``)."""
    import time

    endpoint = sim.get(ctx, endpoint_id, kind="webhook endpoint", object_type="webhook_endpoint")
    endpoint["_old_secrets"] = [
        *endpoint.get("_old_secrets", []),
        {"secret": endpoint["_secret"], "expires": time.time() + expires_in},
    ]
    endpoint["_secret"] = "whsec_" + sim.random_chars(32)
    sim.save(ctx, endpoint)
    sim.invalidate_endpoints(ctx.acct)
    return str(endpoint["_secret"])
