"""The exceptions stripesync raises.

    StripeSyncError
    ├── TerminalError            retrying will not help; the message says what to fix
    │   ├── ConfigError          a setting, flag or file is wrong
    │   ├── NotFound             a source, profile, ... that does not exist
    │   ├── PermissionMissing    a restricted key lacks a permission the product needs
    │   └── InvalidInput         a request body, filter or argument is malformed
    └── TransientError           the engine may retry (network, 5xx, 429, lock timeouts)

Foreign exceptions (the Stripe SDK's, SQLAlchemy's) are mapped onto these in one place
each (`stripe_api.errors`, `store`), with ``raise ... from exc``.
"""

from __future__ import annotations


class StripeSyncError(Exception):
    """Root of every error stripesync raises on purpose."""

    #: A short machine-readable code, used in the REST API's error body.
    code = "error"
    #: HTTP status used when the error reaches the REST API.
    status = 500


class TerminalError(StripeSyncError):
    """Retrying will not help: the message names the bad value and the fix."""

    code = "terminal"
    status = 400


class TransientError(StripeSyncError):
    """A passing fault: the engine retries these, and only these."""

    code = "transient"
    status = 503


class ConfigError(TerminalError):
    code = "config"
    status = 400


class InvalidInput(TerminalError):
    code = "invalid_input"
    status = 400


class NotFound(TerminalError):
    code = "not_found"
    status = 404


class PermissionMissing(TerminalError):
    code = "permission_missing"
    status = 403
