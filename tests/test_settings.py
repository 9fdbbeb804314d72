"""Settings: every one documented, bad values refused with a clear message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from stripesync.errors import ConfigError
from stripesync.settings import Settings, load_settings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "settings.md"


def test_every_setting_is_documented() -> None:
    documented = set(re.findall(r"^\| `(\w+)` \|", DOCS.read_text(), flags=re.M))
    assert documented == set(Settings.model_fields)


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPESYNC_PORT", "9001")
    monkeypatch.setenv("STRIPESYNC_LOG_LEVEL", "debug")
    settings = load_settings()
    assert settings.port == 9001
    assert settings.log_level == "DEBUG"


def test_toml_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "conf.toml"
    config.write_text('port = 9100\ndatabase_url = "sqlite:///x.db"\n')
    monkeypatch.setenv("STRIPESYNC_CONFIG", str(config))
    settings = load_settings()
    assert settings.port == 9100
    assert settings.resolved_database_url == "sqlite:///x.db"


def test_bad_values_name_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("STRIPESYNC_PORT", "99999")
    with pytest.raises(ConfigError, match="port"):
        load_settings()
    monkeypatch.delenv("STRIPESYNC_PORT")
    monkeypatch.setenv("STRIPESYNC_SECRET_KEY", "changeme")
    with pytest.raises(ConfigError, match="placeholder"):
        load_settings()
    monkeypatch.delenv("STRIPESYNC_SECRET_KEY")
    config = tmp_path / "typo.toml"
    config.write_text("prot = 1\n")
    monkeypatch.setenv("STRIPESYNC_CONFIG", str(config))
    with pytest.raises(ConfigError, match="prot"):
        load_settings()
    monkeypatch.setenv("STRIPESYNC_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_default_database_is_sqlite_in_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STRIPESYNC_DATA_DIR", "/tmp/ss-data")
    assert load_settings().resolved_database_url == "sqlite:////tmp/ss-data/stripesync.db"
