"""``stripesync connect | sources | disconnect | sync | status | migrate``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from stripesync.errors import StripeSyncError, TransientError
from stripesync.secrets import secret_box
from stripesync.settings import Settings, load_settings
from stripesync.store import Store, current_revision, head_revision, masked_url, upgrade
from stripesync.stripe_api.permissions import PermissionReport

console = Console()
err_console = Console(stderr=True)


def _store(settings: Settings, *, migrate: bool = True) -> Store:
    return Store.open(
        settings.resolved_database_url,
        migrate=migrate,
        pool_size=min(20, settings.sync_workers),
        max_overflow=max(10, settings.sync_workers // 2),
    )


def permissions_table(report: PermissionReport, key_hint: str) -> Table:
    table = Table(title=f"Permissions of {key_hint}")
    table.add_column("permission")
    table.add_column("needed for")
    table.add_column("status")
    for check in report.checks:
        p = check.permission
        purpose = "import" if p.access == "read" else "webhooks"
        if check.granted:
            status = "[green]granted[/]"
        elif p.required:
            status = "[bold red]missing (required)[/]"
        else:
            status = f"[yellow]missing[/]: {escape(p.without)}"
        table.add_row(p.name, purpose, status)
    return table


def connect(
    name: Annotated[str, typer.Option("--name", help="A name for this Stripe account.")],
    api_key: Annotated[
        str,
        typer.Option(
            "--api-key",
            help="Restricted (rk_…) or secret (sk_…) key; stored encrypted, shown masked.",
        ),
    ],
    api_base: Annotated[
        str | None,
        typer.Option(help="Stripe-compatible API server (default https://api.stripe.com)."),
    ] = None,
    start_date: Annotated[
        str,
        typer.Option(help="Import objects created from YYYY-MM-DD, `all` history, or `now`."),
    ] = "all",
    interval: Annotated[
        str, typer.Option(help="How often to sync when no webhook arrives: 30m, 1h, 1d.")
    ] = "1h",
    mode: Annotated[
        str | None,
        typer.Option(help="`test` or `live`: refuse a key of the other mode."),
    ] = None,
) -> None:
    """Connect a Stripe account: check the key's permissions, then store it encrypted."""
    from stripesync.sync.sources import ConnectRequest, probe, save_source

    request = ConnectRequest.parse(
        name=name,
        api_key=api_key,
        api_base=api_base,
        start_date=start_date,
        interval=interval,
        mode=mode,
    )
    settings = load_settings()
    box = secret_box(settings)
    store = _store(settings)
    try:
        report = probe(store, request, settings)
        console.print(permissions_table(report, request.key_hint))
        saved = save_source(store, box, request, report, settings)
    finally:
        store.close()
    source = saved.source
    console.print(
        f"[green]Connected[/] {source.name}: {source.mode} mode, key {source.key_hint}, "
        f"{source.api_base}, {source.start_label()}, every {request.interval_seconds // 60}m"
    )
    for note in saved.notes:
        console.print(f"  {escape(note)}")
    console.print(f"Import its history with `stripesync sync {source.name}`.")


def sources_cmd() -> None:
    """List the connected Stripe accounts (keys masked)."""
    from stripesync.sync.sources import list_sources

    settings = load_settings()
    store = _store(settings)
    try:
        found = list_sources(store)
    finally:
        store.close()
    if not found:
        console.print("No sources yet: `stripesync connect --name N --api-key K` adds one.")
        return
    table = Table(title="Sources")
    for column in ("name", "status", "mode", "key", "api base", "start", "interval", "updates"):
        table.add_column(column)
    for s in found:
        updates = "polling" if s.polling_only or not s.webhook_endpoint_id else "webhooks"
        table.add_row(
            s.name,
            s.status,
            s.mode,
            s.key_hint,
            s.api_base,
            s.start_label(),
            f"{s.interval_seconds // 60}m",
            updates,
        )
    console.print(table)


def disconnect_cmd(
    name: Annotated[str, typer.Argument(help="The source to disconnect.")],
    purge: Annotated[
        bool, typer.Option("--purge", help="Also delete every object imported from it.")
    ] = False,
) -> None:
    """Disconnect a source: forget its key, remove its webhook endpoint (--purge: its data)."""
    from stripesync.sync.sources import disconnect

    settings = load_settings()
    store = _store(settings)
    try:
        result = disconnect(store, settings, secret_box(settings), name, purge=purge)
    finally:
        store.close()
    console.print(f"Disconnected {result.name}{' and purged its data' if result.purged else ''}.")
    for note in result.notes:
        console.print(f"  {escape(note)}")


def sync_cmd(
    name: Annotated[
        str | None, typer.Argument(help="The source to sync (default: every connected one).")
    ] = None,
    poll_only: Annotated[
        bool, typer.Option("--poll-only", help="Only poll the events (no history import).")
    ] = False,
) -> None:
    """Import (or resume importing) the history of one source or all of them, then poll
    their events (what webhooks missed)."""
    from stripesync.sync.backfill import BackfillOptions, failure_message, run_backfill
    from stripesync.sync.polling import poll_step
    from stripesync.sync.progress import BackfillProgress, summary_table
    from stripesync.sync.sources import get_source, list_sources

    settings = load_settings()
    store = _store(settings)
    try:
        targets = (
            [get_source(store, name)]
            if name is not None
            else list_sources(store, include_disconnected=False)
        )
        if not targets:
            console.print("No sources yet: `stripesync connect --name N --api-key K` adds one.")
            return
        failures: list[StripeSyncError] = []
        for source in targets:
            if poll_only:
                failures.extend(poll_step(console, store, settings, source))
                continue
            try:
                with BackfillProgress(
                    console, f"Syncing {source.name} ({source.mode}, {source.key_hint})"
                ) as progress:
                    summary = run_backfill(
                        store,
                        settings,
                        source,
                        options=BackfillOptions.from_settings(settings),
                        on_progress=progress.update,
                    )
            except KeyboardInterrupt:
                raise TransientError(
                    f"sync of {source.name!r} interrupted; what was imported is kept: rerun "
                    f"`stripesync sync {source.name}` to resume"
                ) from None
            console.print(summary_table(summary))
            if not summary.ok:
                failures.append(failure_message(summary))
            failures.extend(poll_step(console, store, settings, source))
        if failures:
            if len(failures) == 1:
                raise failures[0]
            raise type(failures[0])(" | ".join(str(f) for f in failures))
    finally:
        store.close()


def status_cmd(
    name: Annotated[str | None, typer.Argument(help="Only this source.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Show each source's streams: state, counts, slices and last error."""
    from stripesync.sync.health import health, print_health
    from stripesync.sync.sources import get_source
    from stripesync.sync.status import status

    settings = load_settings()
    store = _store(settings)
    try:
        if name is not None:
            get_source(store, name, active=False)
        report = status(store, name)
        healths = {h["source"]: h for h in health(store, name)}
    finally:
        store.close()
    for src in report:
        src["health"] = healths.get(src["source"])
    if as_json:
        typer.echo(json.dumps({"sources": report}, indent=2))
        return
    if not report:
        console.print("No sources yet: `stripesync connect --name N --api-key K` adds one.")
        return
    colors = {"done": "green", "failed": "bold red", "interrupted": "bold red", "running": "cyan"}
    for src in report:
        run = src["last_run"]
        run_text = (
            "never synced" if run is None else f"last run {run['state']} ({run['started_at']})"
        )
        table = Table(
            title=f"{src['source']} ({src['status']}, {src['mode']}, {src['key']}): {run_text}"
        )
        for column in ("stream", "state", "objects", "slices", "finished", "last error / note"):
            table.add_column(column, overflow="fold")
        for st in src["streams"]:
            color = colors.get(st["state"], "white")
            problem = st["last_error"] if st["state"] in ("failed", "interrupted") else None
            table.add_row(
                st["stream"],
                f"[{color}]{st['state']}[/]",
                f"{st['objects']:,}",
                f"{st['slices_done']}/{st['slices_total']}",
                st["finished_at"] or "",
                escape(problem or st["note"] or ""),
            )
        console.print(table)
        if src["health"] is not None:
            print_health(console, src["health"])


def migrate_cmd() -> None:
    """Upgrade the database schema to this version of stripesync (also done on start)."""
    settings = load_settings()
    store = _store(settings, migrate=False)
    try:
        before = current_revision(store.engine)
        after = upgrade(store.engine)
    finally:
        store.close()
    where = masked_url(settings.resolved_database_url)
    if before == after:
        console.print(f"{where}: schema already at revision {after} (head {head_revision()}).")
    else:
        console.print(
            f"{where}: schema upgraded from {before or 'an empty database'} to revision {after}."
        )


def register(app: typer.Typer) -> None:
    app.command("connect")(connect)
    app.command("sources")(sources_cmd)
    app.command("disconnect")(disconnect_cmd)
    app.command("sync")(sync_cmd)
    app.command("status")(status_cmd)
    app.command("migrate")(migrate_cmd)
