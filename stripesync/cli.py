"""The ``stripesync`` command line (Typer + Rich).

Commands live next to the code they drive: each feature package exposes
``register(app)`` and this module only assembles them, so the tree still shows the
architecture (``sim`` commands in ``stripesync.sim.commands``, sources and sync in
``stripesync.sync.commands``, ...).
"""

from __future__ import annotations

import importlib
import logging
import sys

import typer
from rich.console import Console

from stripesync.errors import StripeSyncError

app = typer.Typer(
    name="stripesync",
    help="Stripe accounts as living customer profiles: sync, traits, MRR, segments.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True)

#: Feature modules that add commands; a module that is not there yet is skipped.
COMMAND_MODULES = (
    "stripesync.sim.commands",
    "stripesync.sync.commands",
    "stripesync.profiles.commands",
    "stripesync.web.commands",
    "stripesync.demo",
)


def _register_all() -> None:
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


@app.command("secret-key")
def secret_key() -> None:
    """Print a new random key for STRIPESYNC_SECRET_KEY."""
    from cryptography.fernet import Fernet

    console.print(Fernet.generate_key().decode())


@app.command("version")
def version() -> None:
    """Print stripesync's version and the Stripe API version it pins."""
    import stripe

    from stripesync import __version__

    console.print(
        f"stripesync {__version__} (stripe-python {stripe.VERSION}, API {stripe.api_version})"
    )


_register_all()


def main() -> None:
    """Entry point: StripeSyncError becomes one clear line on stderr and exit code 1."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except StripeSyncError as exc:
        from rich.markup import escape

        err_console.print(
            f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
