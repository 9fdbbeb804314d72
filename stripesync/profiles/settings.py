"""Per-source profile settings: how a Stripe account's customers become profiles.

Stored as JSON in the source's ``profile_settings`` column (``stripesync source set``, the
REST API later), read back through `ProfileSettings.from_json`, which refuses anything it
does not understand with a message naming the bad value: a typo in a setting must never
silently fall back to a default that changes every MRR figure.

The JSON form (every key optional; ``{}`` is the defaults)::

    {
      "kind": "users" | "accounts",
      "link_key": "app_user_id" | null,
      "create_missing": true,
      "subscription_mode": "single" | "multiple",
      "revenue": {"churn_at_cancellation_request": false,
                  "subtract_repeating_discounts": false,
                  "subtract_once_discounts": false,
                  "reporting_currency": "eur" | null,
                  "exchange_rates": {"usd": "0.92"}},
      "stages": {"status_stages": {"trialing": "trial", ...},
                 "precedence": ["customer", "trial", "churn"],
                 "no_subscription_stage": "lead",
                 "deleted_stage": "churn"}
    }
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from stripesync.errors import ConfigError, NotFound
from stripesync.profiles.identity import ProfileKind
from stripesync.profiles.stages import StageRules
from stripesync.profiles.traits import SubscriptionMode
from stripesync.revenue import RevenueRules

__all__ = [
    "ProfileSettings",
    "load_profile_settings",
    "save_profile_settings",
]

_TOP_KEYS = ("kind", "link_key", "create_missing", "subscription_mode", "revenue", "stages")
_REVENUE_FLAGS = (
    "churn_at_cancellation_request",
    "subtract_repeating_discounts",
    "subtract_once_discounts",
)
_REVENUE_KEYS = (*_REVENUE_FLAGS, "reporting_currency", "exchange_rates")
_STAGE_KEYS = ("status_stages", "precedence", "no_subscription_stage", "deleted_stage")


@dataclass(frozen=True, kw_only=True)
class ProfileSettings:
    """One source's profile settings (seed 002 and 004's questions, MRR.md's switches).

    ``kind``
        Whether the source's customers are *users* (a person pays) or *accounts* (a
        company pays). Profiles are keyed by kind and link id.
    ``link_key``
        The metadata key holding the app's own id (on the customer, else on its
        subscriptions, invoices or charges); None links by Stripe customer id.
    ``create_missing``
        On: a customer whose profile does not exist creates it. Off: only profiles that
        exist already (created through the API, `store.create_profile`) are enriched;
        other customers stay unlinked, with the reason.
    ``subscription_mode``
        ``single`` or ``multiple`` (docs/traits.md).
    ``revenue``
        The MRR rules (MRR.md) for this source's figures.
    ``stages``
        Subscription status → lifecycle stage mapping (seed 004).
    """

    kind: ProfileKind = "accounts"
    link_key: str | None = None
    create_missing: bool = True
    subscription_mode: SubscriptionMode = "single"
    revenue: RevenueRules = field(default_factory=RevenueRules)
    stages: StageRules = field(default_factory=StageRules)

    def __post_init__(self) -> None:
        if self.kind not in ("users", "accounts"):
            raise ConfigError(f"profile kind is {self.kind!r}; use 'users' or 'accounts'")
        if self.subscription_mode not in ("single", "multiple"):
            raise ConfigError(
                f"subscription mode is {self.subscription_mode!r}; use 'single' or 'multiple'"
            )
        if self.link_key is not None:
            key = self.link_key.strip()
            if not key:
                raise ConfigError(
                    "the link key is empty; name the metadata key holding your own id, "
                    "or leave it unset to link by Stripe customer id"
                )
            if len(key) > 40:
                # Stripe's own limit on metadata key length.
                raise ConfigError(f"link key {key!r} is longer than Stripe's 40 characters")
            object.__setattr__(self, "link_key", key)
        if not isinstance(self.create_missing, bool):
            raise ConfigError(f"create_missing is {self.create_missing!r}; use true or false")

    # -- JSON ---------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        rules = self.revenue
        stages = self.stages
        return {
            "kind": self.kind,
            "link_key": self.link_key,
            "create_missing": self.create_missing,
            "subscription_mode": self.subscription_mode,
            "revenue": {
                "churn_at_cancellation_request": rules.churn_at_cancellation_request,
                "subtract_repeating_discounts": rules.subtract_repeating_discounts,
                "subtract_once_discounts": rules.subtract_once_discounts,
                "reporting_currency": rules.reporting_currency,
                "exchange_rates": {k: str(v) for k, v in sorted(rules.exchange_rates.items())},
            },
            "stages": {
                "status_stages": dict(sorted(stages.status_stages.items())),
                "precedence": list(stages.precedence),
                "no_subscription_stage": stages.no_subscription_stage,
                "deleted_stage": stages.deleted_stage,
            },
        }

    @classmethod
    def from_json(cls, raw: Any, *, where: str = "profile settings") -> ProfileSettings:
        """Parse and validate the stored JSON; `ConfigError` naming the bad key otherwise."""
        if raw is None:
            return cls()
        data = _object(raw, where)
        _known(data, _TOP_KEYS, where)
        values: dict[str, Any] = {}
        if "kind" in data:
            values["kind"] = _choice(data["kind"], ("users", "accounts"), f"{where}.kind")
        if "link_key" in data:
            key = data["link_key"]
            if key is not None and not isinstance(key, str):
                raise ConfigError(f"{where}.link_key is {key!r}; give a metadata key or null")
            values["link_key"] = key
        if "create_missing" in data:
            values["create_missing"] = _bool(data["create_missing"], f"{where}.create_missing")
        if "subscription_mode" in data:
            values["subscription_mode"] = _choice(
                data["subscription_mode"], ("single", "multiple"), f"{where}.subscription_mode"
            )
        if "revenue" in data:
            values["revenue"] = _revenue(data["revenue"], f"{where}.revenue")
        if "stages" in data:
            values["stages"] = _stages(data["stages"], f"{where}.stages")
        return cls(**values)

    def with_changes(self, **changes: Any) -> ProfileSettings:
        """A copy with top-level fields and revenue fields changed (``None`` = unchanged).

        Revenue fields may be given by their `RevenueRules` names; ``reporting_currency``
        of ``""`` unsets it.
        """
        top = {k: v for k, v in changes.items() if k in _TOP_KEYS and v is not None}
        rule_changes = {k: v for k, v in changes.items() if k in _REVENUE_KEYS and v is not None}
        unknown = sorted(set(changes) - set(_TOP_KEYS) - set(_REVENUE_KEYS))
        if unknown:
            raise ConfigError(f"unknown profile setting {', '.join(unknown)}")
        if "link_key" in top and top["link_key"] == "":
            top["link_key"] = None
        if rule_changes:
            current = self.revenue
            merged: dict[str, Any] = {
                "churn_at_cancellation_request": current.churn_at_cancellation_request,
                "subtract_repeating_discounts": current.subtract_repeating_discounts,
                "subtract_once_discounts": current.subtract_once_discounts,
                "reporting_currency": current.reporting_currency,
                "exchange_rates": dict(current.exchange_rates),
            }
            merged.update(rule_changes)
            if merged["reporting_currency"] == "":
                merged["reporting_currency"] = None
            top["revenue"] = _revenue(merged, "revenue")
        return replace(self, **top)


# -- validation helpers -----------------------------------------------------------------


def _object(raw: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a JSON object, not {type(raw).__name__}")
    return raw


def _known(data: Mapping[str, Any], keys: tuple[str, ...], where: str) -> None:
    unknown = sorted(str(k) for k in data if k not in keys)
    if unknown:
        raise ConfigError(
            f"{where} has unknown key {', '.join(map(repr, unknown))}; known: {', '.join(keys)}"
        )


def _choice(value: Any, allowed: tuple[str, ...], where: str) -> str:
    if value not in allowed:
        raise ConfigError(f"{where} is {value!r}; use {' or '.join(map(repr, allowed))}")
    return cast(str, value)


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where} is {value!r}; use true or false")
    return value


def _revenue(raw: Any, where: str) -> RevenueRules:
    data = _object(raw, where)
    _known(data, _REVENUE_KEYS, where)
    flags = {name: _bool(data[name], f"{where}.{name}") for name in _REVENUE_FLAGS if name in data}
    currency = data.get("reporting_currency")
    if currency is not None and (not isinstance(currency, str) or len(currency.strip()) != 3):
        raise ConfigError(
            f"{where}.reporting_currency is {currency!r}; give a three-letter ISO code "
            "such as 'eur', or null"
        )
    rates = data.get("exchange_rates") or {}
    rates = _object(rates, f"{where}.exchange_rates")
    checked: dict[str, Decimal | str] = {}
    for code, value in rates.items():
        if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
            raise ConfigError(
                f"{where}.exchange_rates[{code!r}] is {value!r}; give a decimal such as '0.92'"
            )
        checked[str(code)] = value if isinstance(value, Decimal) else str(value)
    return RevenueRules(
        **flags,
        reporting_currency=currency.strip().lower() if isinstance(currency, str) else None,
        exchange_rates=checked,
    )


def _stages(raw: Any, where: str) -> StageRules:
    data = _object(raw, where)
    _known(data, _STAGE_KEYS, where)
    values: dict[str, Any] = {}
    if "status_stages" in data:
        mapping = _object(data["status_stages"], f"{where}.status_stages")
        for status, stage in mapping.items():
            if not isinstance(stage, str) or not stage:
                raise ConfigError(
                    f"{where}.status_stages[{status!r}] is {stage!r}; give a stage name"
                )
        values["status_stages"] = dict(mapping)
    if "precedence" in data:
        order = data["precedence"]
        if not isinstance(order, list) or not all(isinstance(s, str) and s for s in order):
            raise ConfigError(f"{where}.precedence is {order!r}; give a list of stage names")
        values["precedence"] = tuple(order)
    elif "status_stages" in data:
        # A custom mapping with new stage names: rank them in the order first mapped,
        # after the default ranking of the stages it keeps.
        default = StageRules().precedence
        mapped = list(dict.fromkeys(values["status_stages"].values()))
        values["precedence"] = tuple(
            [s for s in default if s in mapped] + [s for s in mapped if s not in default]
        )
    if "no_subscription_stage" in data:
        stage = data["no_subscription_stage"]
        if stage is not None and not isinstance(stage, str):
            raise ConfigError(f"{where}.no_subscription_stage is {stage!r}; give a name or null")
        values["no_subscription_stage"] = stage
    if "deleted_stage" in data:
        stage = data["deleted_stage"]
        if not isinstance(stage, str) or not stage:
            raise ConfigError(f"{where}.deleted_stage is {stage!r}; give a stage name")
        values["deleted_stage"] = stage
    return StageRules(**values)


# -- storage ----------------------------------------------------------------------------


def _sources_table() -> sa.Table:
    from stripesync.store.schema import sources

    return sources


_LOAD: list[Any] = []


def load_profile_settings(conn: Connection, source_id: int) -> ProfileSettings:
    """The source's settings; `NotFound` for an unknown source id."""
    if not _LOAD:
        # Built once: every recompute reads the settings (a webhook's included).
        sources = _sources_table()
        _LOAD.append(
            sa.select(sources.c.name, sources.c.profile_settings).where(
                sources.c.id == sa.bindparam("source_id")
            )
        )
    row = conn.execute(_LOAD[0], {"source_id": source_id}).first()
    if row is None:
        raise NotFound(f"no source with id {source_id}; `stripesync sources` lists them")
    return ProfileSettings.from_json(
        row.profile_settings or {}, where=f"profile settings of source {row.name!r}"
    )


def save_profile_settings(conn: Connection, source_id: int, settings: ProfileSettings) -> None:
    sources = _sources_table()
    from stripesync.store.types import utcnow

    conn.execute(
        sa.update(sources)
        .where(sources.c.id == source_id)
        .values(profile_settings=settings.to_json(), updated_at=utcnow())
    )
