"""One router per resource; `ROUTERS` is what the app includes, in order."""

from __future__ import annotations

from fastapi import APIRouter

from stripesync.web.routes import webhooks

ROUTERS: tuple[APIRouter, ...] = (webhooks.router,)

__all__ = ["ROUTERS"]
