"""stripesync: Stripe accounts as living customer profiles.

The public surface is what ``__all__`` lists; everything else may change.
"""

from stripesync.errors import (
    ConfigError,
    InvalidInput,
    NotFound,
    PermissionMissing,
    StripeSyncError,
    TerminalError,
    TransientError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "InvalidInput",
    "NotFound",
    "PermissionMissing",
    "StripeSyncError",
    "TerminalError",
    "TransientError",
    "__version__",
]
