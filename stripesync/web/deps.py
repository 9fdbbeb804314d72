"""What route handlers may ask for (`Annotated` dependencies, one alias per resource).

They are ``async``: FastAPI runs a plain ``def`` dependency in a thread, a cost the
webhook receiver pays on every request for nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from stripesync.jobs import InProcessRunner
from stripesync.secrets import SecretBox
from stripesync.settings import Settings
from stripesync.store import Store
from stripesync.sync.webhooks import Coalescer
from stripesync.web.intake import LedgerWriter, SourceDirectory

__all__ = ["Services", "ServicesDep", "SettingsDep", "StoreDep"]


@dataclass
class Services:
    """The process-wide objects of one running app (built in its lifespan)."""

    settings: Settings
    store: Store
    box: SecretBox
    runner: InProcessRunner
    coalescer: Coalescer
    directory: SourceDirectory
    writer: LedgerWriter


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_store(request: Request) -> Store:
    services: Services = request.app.state.services
    return services.store


async def get_settings(request: Request) -> Settings:
    services: Services = request.app.state.services
    return services.settings


ServicesDep = Annotated[Services, Depends(get_services)]
StoreDep = Annotated[Store, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
