"""One typed settings object: ``STRIPESYNC_*`` environment variables, then a TOML file.

Every field is documented in docs/settings.md; a test fails when one is not.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from stripesync.errors import ConfigError

PLACEHOLDER_SECRETS = {"changeme", "change-me", "secret", "password", "xxx", ""}


def _config_file() -> Path:
    return Path(os.environ.get("STRIPESYNC_CONFIG", "stripesync.toml"))


class Settings(BaseSettings):
    """stripesync's settings. Environment variables win over the TOML file."""

    model_config = SettingsConfigDict(
        env_prefix="STRIPESYNC_",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = Field(
        default=Path(".stripesync"),
        description="Folder for the embedded SQLite database, the generated secret key and the simulator's state.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL of the store. Empty: SQLite at DATA_DIR/stripesync.db. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db.",
    )
    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that encrypts Stripe keys and webhook secrets at rest (Fernet, urlsafe "
        "base64 of 32 bytes). Unset: generated once into DATA_DIR/secret.key.",
    )
    public_url: str = Field(
        default="",
        description="Public https URL of `stripesync serve`; when set, connecting a source "
        "registers a Stripe webhook endpoint at PUBLIC_URL/webhooks/stripe/{source}.",
    )
    host: str = Field(default="127.0.0.1", description="Address `stripesync serve` listens on.")
    port: int = Field(
        default=8000, ge=1, le=65535, description="Port `stripesync serve` listens on."
    )
    log_level: str = Field(default="INFO", description="Python logging level name.")
    webhook_max_body_bytes: int = Field(
        default=1_048_576,
        ge=1024,
        description="Largest webhook body accepted; larger requests get 413.",
    )
    webhook_tolerance_seconds: int = Field(
        default=300,
        ge=1,
        description="How old a webhook's Stripe-Signature timestamp may be.",
    )
    stripe_max_network_retries: int = Field(
        default=3,
        ge=0,
        le=10,
        description="Retries the Stripe SDK makes on connection errors, 409 and 5xx answers.",
    )
    stripe_budget_live: float = Field(
        default=95.0,
        gt=0,
        description="Requests/s stripesync allows itself per live-mode source (Stripe: 100).",
    )
    stripe_budget_test: float = Field(
        default=23.0,
        gt=0,
        description="Requests/s stripesync allows itself per test-mode source (Stripe: 25).",
    )
    stripe_budget_endpoint: float = Field(
        default=23.0,
        gt=0,
        description="Requests/s stripesync allows itself per Stripe endpoint (Stripe: 25).",
    )
    sync_workers: int = Field(
        default=64,
        ge=1,
        le=512,
        description="Threads importing slices concurrently during a backfill.",
    )

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        upper = value.upper()
        if upper not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise ValueError(
                f"log level {value!r} is not one of DEBUG, INFO, WARNING, ERROR, CRITICAL"
            )
        return upper

    @field_validator("secret_key")
    @classmethod
    def _no_placeholder(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip().lower() in PLACEHOLDER_SECRETS:
            raise ValueError(
                "STRIPESYNC_SECRET_KEY is a placeholder; generate one with "
                "`stripesync secret-key` or leave it unset"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=_config_file())
        return (init_settings, env_settings, toml)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'stripesync.db').as_posix()}"


def load_settings(**overrides: Any) -> Settings:
    """Build the settings, turning validation errors into one clear ConfigError."""
    from pydantic import ValidationError

    path = _config_file()
    if "STRIPESYNC_CONFIG" in os.environ and not path.exists():
        raise ConfigError(
            f"STRIPESYNC_CONFIG names {path}, which does not exist; fix the path or unset it"
        )
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(
            f"invalid settings ({problems}); see docs/settings.md for each STRIPESYNC_* variable"
        ) from exc
    except Exception as exc:  # a TOML syntax error, say
        raise ConfigError(f"cannot read settings from {path}: {exc}") from exc


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
