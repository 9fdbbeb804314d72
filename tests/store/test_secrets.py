"""Secrets at rest: encrypted with the configured or generated key, shown masked."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from stripesync.errors import ConfigError
from stripesync.secrets import SecretBox, mask, secret_box
from stripesync.settings import load_settings


@pytest.mark.parametrize(
    ("secret", "shown"),
    [
        ("rk_live_51HxYzAbCdEfGhIjKlMn9f2a", "rk_live_…9f2a"),
        ("sk_test_51HxYzAbCdEfGhIjKlMnOPQR", "sk_test_…OPQR"),
        ("whsec_abcdefghijklmnopqrstu1234", "whsec_…1234"),
        ("sk_test_short", "sk_test_…"),
        ("something-else-entirely-1234", "…1234"),
    ],
)
def test_mask(secret: str, shown: str) -> None:
    assert mask(secret) == shown


def test_generated_key_file_is_private_and_reused(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path / "data")
    box = secret_box(settings)
    token = box.encrypt("rk_live_secret")
    assert "rk_live_secret" not in token
    key_file = tmp_path / "data" / "secret.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert secret_box(settings).decrypt(token) == "rk_live_secret"


def test_configured_key_wins_and_a_wrong_one_is_explained(tmp_path: Path) -> None:
    key = Fernet.generate_key().decode()
    settings = load_settings(data_dir=tmp_path, secret_key=key)
    token = secret_box(settings).encrypt("sk_test_x")
    assert not (tmp_path / "secret.key").exists()
    other = SecretBox(Fernet.generate_key())
    with pytest.raises(ConfigError, match="cannot decrypt the API key of source 'a'"):
        other.decrypt(token, what="the API key of source 'a'")


def test_a_malformed_key_is_a_config_error(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, secret_key="not-a-fernet-key")
    with pytest.raises(ConfigError, match="stripesync secret-key"):
        secret_box(settings)
