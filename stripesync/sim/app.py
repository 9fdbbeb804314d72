"""The simulator's HTTP face: Stripe's wire protocol over a Starlette app.

Authentication (Bearer or Basic, as the SDK sends), ``Stripe-Version``,
``Idempotency-Key``, form bodies, query strings for GET, the realism knobs (rate limits,
latency, transient 5xx) and the ``/_sim`` control endpoints.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from stripesync.sim import forms
from stripesync.sim.core import Simulator
from stripesync.sim.errors import SimAPIError
from stripesync.sim.ratelimit import RateLimiter
from stripesync.sim.webhooks import Deliverer


def _json(status: int, body: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )


def _api_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except Exception:
            return ""
        return decoded.split(":", 1)[0]
    return ""


def create_app(
    sim: Simulator, *, deliver_webhooks: bool = True, clock_speed: float = 0.0
) -> Starlette:
    """The simulator app; ``clock_speed`` > 0 runs simulated time (live activity)."""
    limiter = RateLimiter()
    deliverer = Deliverer(sim)

    async def api(request: Request) -> Response:
        path = request.url.path
        key = _api_key(request)
        if not key:
            return _json(
                401,
                {
                    "error": {
                        "message": "You did not provide an API key. You need to provide your API "
                        "key in the Authorization header, using Bearer auth (e.g. "
                        "'Authorization: Bearer YOUR_SECRET_KEY').",
                        "type": "invalid_request_error",
                    }
                },
            )
        knobs = sim.knobs
        try:
            raw = (await request.body()).decode()
            query = forms.parse(request.url.query) if request.url.query else {}
            params = forms.parse(raw) if raw and request.method != "GET" else {}
            params = {**query, **params}
        except SimAPIError as exc:
            return _json(exc.status, exc.body())
        except UnicodeDecodeError:
            return _json(400, SimAPIError(400, "Request body is not valid UTF-8.").body())
        if knobs.latency_ms:
            await asyncio.sleep(knobs.latency_ms / 1000.0)
        try:
            ctx = sim.context(key)
        except SimAPIError as exc:
            return _json(exc.status, exc.body())
        matched = sim.match_route(request.method, path)
        if knobs.rate_limits:
            try:
                if knobs.burst_429_rate and sim.rng.random() < knobs.burst_429_rate:
                    from stripesync.sim.ratelimit import rate_limited

                    raise rate_limited()
                limiter.check(
                    ctx.acct,
                    ctx.livemode,
                    f"{request.method} {matched.template if matched else path}",
                    live_limit=knobs.rate_limit_live,
                    test_limit=knobs.rate_limit_test,
                    endpoint_limit=knobs.rate_limit_endpoint,
                )
            except SimAPIError as exc:
                return _json(exc.status, exc.body())
        if knobs.error_rate and sim.rng.random() < knobs.error_rate:
            return _json(
                500,
                SimAPIError(
                    500,
                    "An unknown error occurred while processing your request.",
                    type="api_error",
                ).body(),
            )
        status, body, headers = sim.request(
            request.method,
            path,
            params,
            key=key,
            stripe_version=request.headers.get("stripe-version"),
            idempotency_key=request.headers.get("idempotency-key"),
        )
        if request.method == "POST" and status < 400:
            deliverer.wake()
        return _json(status, body, headers)

    async def sim_state(request: Request) -> Response:
        acct = request.query_params.get("acct")

        async def stream() -> AsyncIterator[bytes]:
            for row in sim.export_state(acct):
                yield (json.dumps(row, separators=(",", ":")) + "\n").encode()

        return StreamingResponse(stream(), media_type="application/x-ndjson")

    async def sim_info(request: Request) -> Response:
        return _json(
            200,
            {
                "now": sim.now(),
                "keys": sim.keys(),
                "counts": sim.db.counts(),
                "knobs": vars(sim.knobs),
            },
        )

    async def sim_keys(request: Request) -> Response:
        try:
            body = await request.json()
            key = sim.create_key(
                body.get("account") or sim.context().account,
                livemode=bool(body.get("livemode", False)),
                permissions=body.get("permissions"),
            )
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            return _json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
        return _json(200, {"key": key})

    async def sim_accounts(request: Request) -> Response:
        try:
            body = await request.json() if await request.body() else {}
            account = sim.create_account(api_version=body.get("api_version"))
            keys = {
                "test": sim.create_key(account, livemode=False),
                "live": sim.create_key(account, livemode=True),
            }
        except (ValueError, TypeError, json.JSONDecodeError) as exc:
            return _json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
        return _json(200, {"account": account, "keys": keys})

    async def sim_knobs(request: Request) -> Response:
        try:
            body = await request.json()
            for name, value in body.items():
                if not hasattr(sim.knobs, name):
                    raise ValueError(f"unknown knob {name!r}")
                current = getattr(sim.knobs, name)
                setattr(sim.knobs, name, type(current)(value))
        except (ValueError, TypeError, json.JSONDecodeError, AttributeError) as exc:
            return _json(400, {"error": {"message": str(exc), "type": "invalid_request_error"}})
        return _json(200, vars(sim.knobs))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(deliverer.run()) if deliver_webhooks else None
        clock_task = _clock_task(sim, deliverer, clock_speed)
        try:
            yield
        finally:
            if clock_task is not None:
                clock_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await clock_task
            if task is not None:
                deliverer.stop()
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await deliverer.aclose()

    routes = [
        Route("/_sim/state", sim_state, methods=["GET"]),
        Route("/_sim/info", sim_info, methods=["GET"]),
        Route("/_sim/keys", sim_keys, methods=["POST"]),
        Route("/_sim/accounts", sim_accounts, methods=["POST"]),
        Route("/_sim/knobs", sim_knobs, methods=["POST"]),
        *_extra_sim_routes(sim, deliverer),
        Route("/v1/{path:path}", api, methods=["GET", "POST", "DELETE"]),
    ]

    async def on_error(request: Request, exc: Exception) -> Response:
        # Never a traceback: Stripe answers api_error with a message.
        return JSONResponse(
            {
                "error": {
                    "message": "An unknown error occurred while processing your request.",
                    "type": "api_error",
                }
            },
            status_code=500,
        )

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={Exception: on_error})
    app.state.sim = sim
    app.state.deliverer = deliverer
    return app


def _extra_sim_routes(sim: Simulator, deliverer: Deliverer) -> list[Route]:
    """Control routes added by later features (the clock); see ``stripesync.sim.clock``."""
    try:
        from stripesync.sim.clock import routes as clock_routes
    except ImportError:
        return []
    return list(clock_routes(sim, deliverer))


def _clock_task(sim: Simulator, deliverer: Deliverer, speed: float) -> asyncio.Task[None] | None:
    """Runs the simulated clock when a speed is set (see ``stripesync.sim.clock``)."""
    if speed <= 0:
        return None
    from stripesync.sim.clock import run_clock

    return asyncio.create_task(run_clock(sim, deliverer, speed))
