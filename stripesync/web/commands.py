"""``stripesync serve`` and ``stripesync webhook-secret``."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stripesync.errors import InvalidInput
from stripesync.settings import load_settings

console = Console()

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd])\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on (default STRIPESYNC_HOST).")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="Port to listen on (default STRIPESYNC_PORT).")
    ] = None,
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Worker processes (the app keeps no state).")
    ] = 1,
    access_log: Annotated[bool, typer.Option(help="Log every request.")] = False,
) -> None:
    """Serve the webhook receiver (and poll each source every interval) until stopped."""
    import uvicorn

    from stripesync.store import Store

    settings = load_settings()
    # Migrate once here, not in each worker at the same moment.
    Store.open(settings.resolved_database_url).close()
    bind_host = host or settings.host
    bind_port = port or settings.port
    console.print(
        f"stripesync serving on http://{bind_host}:{bind_port} ({workers} worker(s)); "
        f"webhooks at /webhooks/stripe/SOURCE"
    )
    processor = None
    if workers > 1:
        # Receivers only store; one process of its own applies (no GIL shared with them).
        import multiprocessing

        from stripesync.web.app import RECEIVE_ONLY, run_processor

        os.environ[RECEIVE_ONLY] = "1"
        processor = multiprocessing.get_context("spawn").Process(
            target=run_processor, name="stripesync-processor", daemon=True
        )
        processor.start()
    try:
        uvicorn.run(
            "stripesync.web.app:create_app",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=workers,
            log_level=settings.log_level.lower(),
            access_log=access_log,
            proxy_headers=True,
            server_header=False,
            timeout_graceful_shutdown=10,
        )
    finally:
        if processor is not None:
            processor.terminate()
            processor.join(timeout=30)


def _duration(value: str) -> timedelta:
    match = _DURATION.match(value.lower())
    if match is None:
        raise InvalidInput(f"--keep-previous {value!r} is not a duration; use 0s, 30m, 24h, 7d")
    return timedelta(seconds=int(match.group(1)) * _UNITS[match.group(2)])


def webhook_secret(
    name: Annotated[str, typer.Argument(help="The source whose webhooks it signs.")],
    secret: Annotated[
        str | None,
        typer.Argument(
            help="The signing secret (whsec_…); asked for (hidden) when left out, so it "
            "stays out of the shell's history."
        ),
    ] = None,
    rotate: Annotated[
        bool,
        typer.Option(
            "--rotate",
            help="It replaces the others (a secret rolled in the Dashboard): they keep "
            "working for --keep-previous, then expire.",
        ),
    ] = False,
    keep_previous: Annotated[
        str, typer.Option(help="With --rotate: how long the previous secrets stay valid.")
    ] = "24h",
    show: Annotated[bool, typer.Option("--list", help="Only list the secrets, masked.")] = False,
    clear: Annotated[
        bool, typer.Option("--clear", help="Forget the secrets set with this command.")
    ] = False,
) -> None:
    """Set the secret that signs a source's webhooks: `stripe listen`'s, or a rolled one.

    A registered endpoint's secret is stored on connect; this adds another (``stripe
    listen --forward-to http://HOST:PORT/webhooks/stripe/NAME`` prints its own), or with
    --rotate replaces them after a grace period. Secrets are stored encrypted and only
    ever shown masked.
    """
    from stripesync.secrets import secret_box
    from stripesync.store import Store
    from stripesync.sync.sources import get_source
    from stripesync.sync.webhooks import add_secret, clear_secrets, list_secrets

    settings = load_settings()
    store = Store.open(settings.resolved_database_url)
    try:
        source = get_source(store, name)
        if clear:
            removed = clear_secrets(store, source)
            console.print(f"Forgot {removed} webhook secret(s) of {name}.")
        elif not show:
            if secret is None:
                secret = typer.prompt("Webhook signing secret (whsec_…)", hide_input=True)
            hint = add_secret(
                store,
                secret_box(settings),
                source,
                secret,
                rotate=rotate,
                keep_previous=_duration(keep_previous),
            )
            what = "now signs" if rotate else "also signs"
            console.print(f"{hint} {what} the webhooks of {name}.")
        table = Table(title=f"Webhook signing secrets of {name}")
        for column in ("secret", "origin", "added", "expires"):
            table.add_column(column)
        for info in list_secrets(store, get_source(store, name)):
            table.add_row(
                escape(info.hint),
                info.origin,
                f"{info.created_at:%Y-%m-%d %H:%M} UTC",
                f"{info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else "never",
            )
        console.print(table)
    finally:
        store.close()


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("webhook-secret")(webhook_secret)
