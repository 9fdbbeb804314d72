"""Profiles in the store, on SQLite and PostgreSQL: linking, merging, re-linking, unmerging,
create-missing, stages with history, and recomputes that touch only what changed."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from stripesync.errors import ConfigError, InvalidInput, NotFound
from stripesync.profiles.recompute import (
    rebuild,
    recompute_customers,
    refresh_after_apply,
    unmerge,
)
from stripesync.profiles.settings import ProfileSettings, load_profile_settings
from stripesync.profiles.stages import StageRules
from stripesync.profiles.store import (
    create_profile,
    customers_of,
    drop_override,
    find_profile,
    list_profiles,
    merges_of,
    paid_invoices,
    profile_customers,
    stage_history_of,
)
from stripesync.profiles.traits import SINGLE_SUBSCRIPTION_TRAITS
from stripesync.revenue import RevenueRules
from stripesync.store import Store
from stripesync.store.schema import sources
from tests.profiles.factories import make_product
from tests.profiles_store.helpers import (
    PERIOD,
    account,
    add_source,
    catalog,
    profile_rows,
    put,
    ts,
)

KEY = "app_user_id"
AT = datetime(2026, 3, 15, 12, tzinfo=UTC)


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    opened = Store.open(database_url)
    yield opened
    opened.close()


def _settings(**changes: object) -> ProfileSettings:
    return ProfileSettings(link_key=KEY).with_changes(**changes)


def _refresh(store: Store, *results: object) -> None:
    refresh_after_apply(store, results, at=AT)  # type: ignore[arg-type]


def test_a_customer_becomes_a_profile_with_traits_mrr_stage_and_renewal(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    result = put(store, source, product, price, *account("cus_A1", price=price, quantity=2))
    assert result.customers == {(source, "cus_A1")}
    _refresh(store, result)
    with store.read() as conn:
        (profile,) = list_profiles(conn)
        assert profile.kind == "accounts" and profile.link_id == "cus_A1"
        assert profile.created_via == "sync"
        assert profile.mrr == {"usd": 9800} and profile.arr == {"usd": 117600}
        assert profile.paying and profile.stage == "customer"
        assert profile.renewal_at == datetime.fromtimestamp(PERIOD[1], UTC)
        traits = profile.traits
        assert traits["renewal_date"] == traits["current_period_end"] == "2026-04-01T00:00:00Z"
        assert traits["subscription_paying_count"] == 1 and traits["all_mrr"] == 9800
        assert traits["metadata"] == {} and traits["product_name"] == "Pro"
        assert traits["customer_ids"] == ["cus_A1"]
        # The card comes from the charge's payment method details.
        assert traits["card_brand"] and traits["card_expiration"]
        assert paid_invoices(conn, profile.id)[0]["amount_paid"] == 9800
        assert find_profile(conn, "cus_A1").id == profile.id
        assert find_profile(conn, f"accounts:{profile.link_id}").id == profile.id
        assert find_profile(conn, str(profile.id)).id == profile.id


def test_metadata_keys_become_traits_and_link_ids(store: Store) -> None:
    source = add_source(store, "acme", _settings(kind="users"))
    product, price = catalog()
    objects = account("cus_M1", price=price, metadata={KEY: " usr_7 ", "Plan Tier": "gold"})
    _refresh(store, put(store, source, product, price, *objects))
    with store.read() as conn:
        profile = find_profile(conn, "users:usr_7")
        assert profile.traits["metadata_plan_tier"] == "gold"
        assert customers_of(conn, profile.id)[0]["link_source"] == "customer.metadata"


def test_the_link_id_falls_back_to_the_subscription_then_the_customer_id(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    tagged = account("cus_S1", price=price, sub_metadata={KEY: "org_9"})
    untagged = account("cus_S2", price=price)
    _refresh(store, put(store, source, product, price, *tagged, *untagged))
    with store.read() as conn:
        assert customers_of(conn, find_profile(conn, "org_9").id)[0]["link_source"] == (
            "subscription.metadata"
        )
        assert find_profile(conn, "cus_S2").link_id == "cus_S2"


def test_two_customers_with_one_link_id_merge_visibly_and_unmerge(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    first = put(
        store, source, product, price, *account("cus_B1", price=price, metadata={KEY: "u1"})
    )
    _refresh(store, first)
    second = put(store, source, *account("cus_B2", price=price, metadata={KEY: "u1"}, quantity=3))
    _refresh(store, second)
    with store.read() as conn:
        (profile,) = list_profiles(conn)
        assert profile.customers == 2 and profile.mrr == {"usd": 4 * 4900}
        assert profile.traits["subscription_paying_count"] == 2
        assert sorted(profile.traits["customer_ids"]) == ["cus_B1", "cus_B2"]
        (merge,) = merges_of(conn, profile.id)
        assert merge["added"][0]["customer_id"] == "cus_B2"
        assert {c["customer_id"] for c in customers_of(conn, profile.id)} == {"cus_B1", "cus_B2"}

    unmerge(store, merge["id"], at=AT)
    with store.read() as conn:
        found = {p.link_id: p for p in list_profiles(conn)}
        assert set(found) == {"u1", "cus_B2"}
        assert found["u1"].mrr == {"usd": 4900} and found["cus_B2"].mrr == {"usd": 3 * 4900}
        assert merges_of(conn, found["u1"].id)[0]["undone_at"] is not None
    # Pinned: the next recompute does not merge them again.
    recompute_customers(store, source, ["cus_B1", "cus_B2"], at=AT)
    assert {p.link_id for p in profile_rows(store) if p.status == "active"} == {"u1", "cus_B2"}
    with pytest.raises(InvalidInput, match="already undone"):
        unmerge(store, merge["id"])
    with pytest.raises(NotFound):
        unmerge(store, 999_999)
    # Unpinned, the link id decides again: merged, and the spare profile retired.
    assert drop_override(store, source, "cus_B2")
    recompute_customers(store, source, ["cus_B2"], at=AT)
    active = [p for p in profile_rows(store) if p.status == "active"]
    assert [(p.link_id, p.customers) for p in active] == [("u1", 2)]


def test_customers_of_two_sources_merge_on_their_link_id(store: Store) -> None:
    live = add_source(store, "live", _settings())
    test = add_source(store, "test", _settings())
    product, price = catalog()
    _refresh(
        store,
        put(store, live, product, price, *account("cus_L1", price=price, metadata={KEY: "u5"})),
    )
    _refresh(
        store,
        put(store, test, product, price, *account("cus_T1", price=price, metadata={KEY: "u5"})),
    )
    with store.read() as conn:
        (profile,) = list_profiles(conn)
        assert {(c["source"], c["customer_id"]) for c in customers_of(conn, profile.id)} == {
            ("live", "cus_L1"),
            ("test", "cus_T1"),
        }
        assert len(merges_of(conn, profile.id)) == 1


def test_a_changed_link_id_relinks_without_duplicates(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    objects = account("cus_R1", price=price, metadata={KEY: "old"})
    _refresh(store, put(store, source, product, price, *objects))
    renamed = copy.deepcopy(objects[0])
    renamed["metadata"] = {KEY: "new"}
    _refresh(store, put(store, source, renamed))
    rows = profile_rows(store)
    assert [(p.link_id, p.status) for p in rows] == [("old", "retired"), ("new", "active")]
    assert rows[0].merged_into == rows[1].id
    assert rows[1].customers == 1 and rows[1].mrr == {"usd": 4900}


def test_create_missing_off_enriches_only_profiles_the_app_created(store: Store) -> None:
    source = add_source(store, "acme", _settings(create_missing=False, kind="users"))
    product, price = catalog()
    result = put(
        store, source, product, price, *account("cus_C1", price=price, metadata={KEY: "u8"})
    )
    refreshed = refresh_after_apply(store, result, at=AT)
    assert refreshed.skipped and "creating missing profiles is off" in refreshed.skipped[0][1]
    assert profile_rows(store) == []
    with store.read() as conn:
        row = conn.execute(sa.select(profile_customers)).one()
        assert row.state == "skipped" and row.profile_id is None

    made = create_profile(store, "users", "u8", {"plan": "team"})
    assert made.created_via == "api" and made.customers == 0
    recompute_customers(store, source, ["cus_C1"], at=AT)
    with store.read() as conn:
        profile = find_profile(conn, "users:u8")
        assert profile.id == made.id and profile.created_via == "api"
        assert profile.mrr == {"usd": 4900} and profile.app_traits == {"plan": "team"}
        assert profile.as_json()["traits"]["app"] == {"plan": "team"}
    # An app-made profile outlives its customers' re-link (it is the app's, not ours).
    renamed = account("cus_C1", price=price, metadata={KEY: "u9"})[0]
    _refresh(store, put(store, source, renamed))
    with store.read() as conn:
        kept = find_profile(conn, "users:u8")
        assert kept.status == "active" and kept.customers == 0 and kept.mrr == {}
    with pytest.raises(InvalidInput):
        create_profile(store, "teams", "x")  # type: ignore[arg-type]


def test_multiple_mode_leaves_out_single_subscription_traits(store: Store) -> None:
    source = add_source(store, "acme", _settings(subscription_mode="multiple"))
    product, price = catalog()
    _refresh(store, put(store, source, product, price, *account("cus_X1", price=price)))
    with store.read() as conn:
        traits = list_profiles(conn)[0].traits
    assert not SINGLE_SUBSCRIPTION_TRAITS & set(traits)
    assert traits["all_mrr"] == 4900 and traits["renewal_date"] == "2026-04-01T00:00:00Z"


def test_stage_history_has_the_moments_stripe_dates(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    trial = (ts(2026, 3, 1), ts(2026, 3, 15))
    objects = account("cus_T9", price=price, status="trialing", trial=trial, created=trial[0])
    _refresh(store, put(store, source, product, price, *objects))
    with store.read() as conn:
        profile = list_profiles(conn)[0]
        assert profile.stage == "trial" and profile.mrr == {}
    converted = copy.deepcopy(objects[1])
    converted["status"] = "active"
    _refresh(store, put(store, source, converted))
    with store.read() as conn:
        profile = list_profiles(conn)[0]
        history = stage_history_of(conn, profile.id)
    assert profile.stage == "customer" and profile.mrr == {"usd": 4900}
    assert history == [
        {"from": None, "to": "trial", "at": "2026-03-01T00:00:00Z"},
        {"from": "trial", "to": "customer", "at": "2026-03-15T00:00:00Z"},
    ]
    assert profile.stage_since == datetime.fromtimestamp(trial[1], UTC)


def test_the_stage_mapping_is_a_setting(store: Store) -> None:
    rules = StageRules(
        status_stages={"trialing": "trial", "active": "paying", "past_due": "at_risk"},
        precedence=("paying", "at_risk", "trial"),
        no_subscription_stage=None,
    )
    settings = ProfileSettings(link_key=KEY, stages=rules)
    source = add_source(store, "acme", settings)
    product, price = catalog()
    late = account("cus_P1", price=price, status="past_due")
    _refresh(store, put(store, source, product, price, *late))
    with store.read() as conn:
        assert list_profiles(conn)[0].stage == "at_risk"
        assert load_profile_settings(conn, source).stages.status_stages["past_due"] == "at_risk"


def test_a_recompute_touches_only_the_profiles_it_must(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    objects = [account(f"cus_Q{i}", price=price) for i in range(3)]
    _refresh(store, put(store, source, product, price, *[o for a in objects for o in a]))
    before = {p.link_id: p.updated_at for p in profile_rows(store)}
    upgraded = copy.deepcopy(objects[1][1])
    upgraded["items"]["data"][0]["quantity"] = 5
    result = put(store, source, upgraded)
    assert result.customers == {(source, "cus_Q1")}
    refreshed = refresh_after_apply(store, result, at=AT)
    assert refreshed.customers == 1 and len(refreshed.profiles) == 1
    after = {p.link_id: p for p in profile_rows(store)}
    assert after["cus_Q1"].mrr == {"usd": 5 * 4900}
    assert after["cus_Q0"].updated_at == before["cus_Q0"]
    assert after["cus_Q2"].updated_at == before["cus_Q2"]


def test_a_renamed_product_reaches_the_customers_using_it(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    _refresh(store, put(store, source, product, price, *account("cus_N1", price=price)))
    renamed = make_product("Pro 2026", product_id=product["id"])
    result = put(store, source, renamed)
    assert result.catalog == {(source, "product", product["id"])}
    _refresh(store, result)
    with store.read() as conn:
        assert list_profiles(conn)[0].traits["product_name"] == "Pro 2026"


def test_a_customer_gone_from_the_raw_store_is_detached(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    _refresh(store, put(store, source, product, price, *account("cus_G1", price=price)))
    result = recompute_customers(store, source, ["cus_G1", "cus_nowhere"], at=AT)
    assert result.missing == 1 and result.customers == 1


def test_reporting_currency_converts_profile_mrr(store: Store) -> None:
    settings = _settings(reporting_currency="eur", exchange_rates={"usd": "0.5"})
    source = add_source(store, "acme", settings)
    product, price = catalog()
    _refresh(store, put(store, source, product, price, *account("cus_E1", price=price)))
    with store.read() as conn:
        profile = list_profiles(conn)[0]
    assert profile.reporting_currency == "eur" and profile.reporting_mrr == 2450
    assert profile.mrr == {"usd": 4900}


def test_rebuild_agrees_with_recompute_and_changes_nothing_the_second_time(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    objects = [
        o
        for i in range(5)
        for o in account(f"cus_K{i}", price=price, metadata={KEY: f"u{i % 3}"}, quantity=i + 1)
    ]
    _refresh(store, put(store, source, product, price, *objects))
    first = {p.link_id: (p.mrr, p.stage, p.customers) for p in profile_rows(store)}
    result = rebuild(store, at=AT)
    assert result.customers == 5 and result.created == 0 and result.merges == 0
    assert result.stage_changes == 0 and result.movements_written == 0
    assert {p.link_id: (p.mrr, p.stage, p.customers) for p in profile_rows(store)} == first
    with pytest.raises(NotFound):
        rebuild(store, 4242)


def test_bad_stored_settings_are_a_clear_error(store: Store) -> None:
    source = add_source(store, "acme")
    with store.write() as conn:
        conn.execute(
            sa.update(sources)
            .where(sources.c.id == source)
            .values(profile_settings={"kind": "teams"})
        )
    with pytest.raises(ConfigError, match="kind is 'teams'"):
        recompute_customers(store, source, ["cus_1"])


def test_settings_round_trip_in_the_source_row(store: Store) -> None:
    settings = ProfileSettings(
        kind="users",
        link_key="uid",
        create_missing=False,
        subscription_mode="multiple",
        revenue=RevenueRules(
            churn_at_cancellation_request=True,
            subtract_once_discounts=True,
            reporting_currency="eur",
            exchange_rates={"usd": "0.92"},
        ),
    )
    source = add_source(store, "acme", settings)
    with store.read() as conn:
        assert load_profile_settings(conn, source) == settings


def test_a_link_id_only_on_invoices_or_charges_is_found_in_a_large_batch(store: Store) -> None:
    source = add_source(store, "acme", _settings())
    product, price = catalog()
    objects = [o for i in range(20) for o in account(f"cus_F{i:02d}", price=price)]
    tagged = account("cus_Finv", price=price)
    tagged[2]["metadata"] = {KEY: "from_invoice"}
    charged = account("cus_Fch", price=price)
    charged[3]["metadata"] = {KEY: "from_charge"}
    put(store, source, product, price, *objects, *tagged, *charged)
    rebuild(store, at=AT, batch_size=50)
    with store.read() as conn:
        assert customers_of(conn, find_profile(conn, "from_invoice").id)[0]["link_source"] == (
            "invoice.metadata"
        )
        assert find_profile(conn, "from_charge").traits["customer_id"] == "cus_Fch"
        assert find_profile(conn, "cus_F07").customers == 1
