"""Secrets at rest: Stripe keys and webhook secrets encrypted with Fernet, shown masked.

The encryption key is ``STRIPESYNC_SECRET_KEY``; when unset, one is generated once into
``DATA_DIR/secret.key`` (mode 0600) and reused. Losing that file means reconnecting the
sources: the stored keys cannot be read without it, by design.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from stripesync.errors import ConfigError
from stripesync.settings import Settings

__all__ = ["SecretBox", "mask", "secret_box"]

KEY_FILE = "secret.key"
KEY_PREFIXES = ("sk_live_", "sk_test_", "rk_live_", "rk_test_", "whsec_", "pk_live_", "pk_test_")


def mask(secret: str) -> str:
    """``rk_live_51H…9f2a`` → ``rk_live_…9f2a``: the kind and the last four characters.

    Enough to tell keys apart in a list, never enough to use one.
    """
    secret = secret.strip()
    prefix = next((p for p in KEY_PREFIXES if secret.startswith(p)), "")
    if len(secret) - len(prefix) < 12:
        return f"{prefix}…"
    return f"{prefix}…{secret[-4:]}"


class SecretBox:
    """Encrypts and decrypts short secrets with one Fernet key."""

    def __init__(self, key: bytes) -> None:
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "STRIPESYNC_SECRET_KEY is not a Fernet key (URL-safe base64 of 32 bytes); "
                "generate one with `stripesync secret-key`"
            ) from exc

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str, *, what: str = "a stored secret") -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ConfigError(
                f"cannot decrypt {what} with the current secret key; restore the "
                "STRIPESYNC_SECRET_KEY (or DATA_DIR/secret.key) that encrypted it, or "
                "reconnect the source with `stripesync connect`"
            ) from exc


def _load_or_create_key_file(path: Path) -> bytes:
    if path.exists():
        key = path.read_bytes().strip()
        if not key:
            raise ConfigError(f"{path} is empty; delete it to generate a new key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    # O_EXCL: two processes starting at once must not both write a different key.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_bytes().strip()
    try:
        os.write(fd, key + b"\n")
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)
    return key


def secret_box(settings: Settings) -> SecretBox:
    """The box for these settings: their secret_key, else DATA_DIR/secret.key."""
    if settings.secret_key is not None:
        return SecretBox(settings.secret_key.get_secret_value().strip().encode())
    return SecretBox(_load_or_create_key_file(settings.data_dir / KEY_FILE))
