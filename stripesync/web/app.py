"""The app factory: `create_app(settings=None, store=None)`, one error shape, the lifespan.

Every error leaves as one JSON shape, whatever raised it (a stripesync error, an HTTP
error, a validation error, a bug)::

    {"error": {"status": 401, "code": "signature_invalid", "message": "..."}}

The lifespan builds what requests share (`stripesync.web.deps.Services`): the store,
the job runner that applies events after they are answered, the receiver's group
commit, and the scheduler that polls each source every interval. The app keeps no state
of its own: any number of processes may serve the same database.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from stripesync import __version__
from stripesync.errors import StripeSyncError
from stripesync.jobs import InProcessRunner
from stripesync.secrets import secret_box
from stripesync.settings import Settings, load_settings
from stripesync.store import Store
from stripesync.sync.polling import Scheduler
from stripesync.sync.webhooks import Coalescer
from stripesync.web.deps import Services
from stripesync.web.intake import LedgerWriter, SourceDirectory
from stripesync.web.routes import ROUTERS

__all__ = ["create_app", "handle_exception"]

log = logging.getLogger(__name__)

#: Threads applying events, refetching and polling in a serving process.
JOB_WORKERS = 4
#: Set by `stripesync serve --workers N` (N > 1) in its receiving processes: one separate
#: process (`run_processor`) applies the events, so receiving never waits for it.
RECEIVE_ONLY = "_STRIPESYNC_RECEIVE_ONLY"


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse(
        {"error": {"status": status, "code": code, "message": message}},
        status_code=status,
        headers=headers,
    )


async def handle_exception(request: Request, exc: Exception) -> Response:
    """The one error handler: every failure becomes the same JSON shape."""
    if isinstance(exc, StripeSyncError):
        if exc.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _error(exc.status, exc.code, str(exc))
    if isinstance(exc, StarletteHTTPException):
        try:
            phrase = HTTPStatus(exc.status_code).phrase
        except ValueError:
            phrase = "error"
        code = phrase.lower().replace(" ", "_").replace("-", "_")
        return _error(exc.status_code, code, str(exc.detail), getattr(exc, "headers", None))
    if isinstance(exc, RequestValidationError):
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err.get('loc', ()))}: {err.get('msg')}"
            for err in exc.errors()
        )
        return _error(400, "invalid_input", problems or "invalid request")
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _error(500, "internal_error", "internal error; the server log has the details")


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    *,
    scheduler: bool = True,
) -> FastAPI:
    """The stripesync app. Without arguments it reads the settings (``STRIPESYNC_*``) and
    opens the store itself (what ``stripesync serve`` does, once per worker process).
    ``scheduler=False`` leaves polling to ``stripesync sync`` (tests, benchmarks)."""
    receive_only = os.environ.get(RECEIVE_ONLY) == "1"

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        cfg = settings or load_settings()
        opened = store or Store.open(cfg.resolved_database_url)
        box = secret_box(cfg)
        runner = InProcessRunner(
            {"store": opened, "settings": cfg, "box": box}, max_workers=JOB_WORKERS
        )
        coalescer = Coalescer(runner.defer)
        runner.context.resources["coalescer"] = coalescer

        def committed(source_ids: set[int]) -> None:
            if receive_only:
                return  # the processor process finds them in the ledger
            for source_id in source_ids:
                coalescer.kick("webhooks.process", source_id)

        writer = LedgerWriter(opened, committed)
        services = Services(
            settings=cfg,
            store=opened,
            box=box,
            runner=runner,
            coalescer=coalescer,
            directory=SourceDirectory(opened, box),
            writer=writer,
        )
        app.state.services = services
        await writer.start()
        ticker = Scheduler(runner.context) if scheduler and not receive_only else None
        if ticker is not None:
            ticker.start()
        try:
            yield
        finally:
            if ticker is not None:
                ticker.stop()
            await writer.stop()
            runner.shutdown()
            if store is None:
                opened.close()

    app = FastAPI(
        title="stripesync",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    for kind in (StripeSyncError, StarletteHTTPException, RequestValidationError, Exception):
        app.add_exception_handler(kind, handle_exception)
    for router in ROUTERS:
        app.include_router(router)
    return app


def run_processor(*, tick: float = 0.05) -> None:
    """The processing process of ``stripesync serve --workers N``: applies stored events,
    runs refetches and polls, until SIGTERM. Receivers only store; this finds their
    events in the ledger within ``tick`` seconds."""
    settings = load_settings()
    store = Store.open(settings.resolved_database_url)
    box = secret_box(settings)
    runner = InProcessRunner(
        {"store": store, "settings": settings, "box": box}, max_workers=JOB_WORKERS
    )
    coalescer = Coalescer(runner.defer)
    runner.context.resources["coalescer"] = coalescer
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    scheduler = Scheduler(runner.context, tick=tick)
    try:
        while not stop.is_set():
            try:
                scheduler.run_once()
            except Exception:
                log.exception("processor tick failed")
            stop.wait(tick)
    finally:
        runner.shutdown()
        store.close()
