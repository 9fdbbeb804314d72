"""Link ids from metadata (customer, subscription, invoice, charge) and the linking planner."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from stripesync.errors import InvalidInput
from stripesync.profiles import (
    Attach,
    CreateProfile,
    CustomerRef,
    Detach,
    LinkId,
    LinkPlan,
    MergeRecord,
    ProfileOrigin,
    ProfileRef,
    Relink,
    Resolution,
    RetireProfile,
    Skip,
    link_id,
    plan_links,
    plan_unmerge,
)
from tests.profiles.factories import (
    CUSTOMER_ID,
    MARCH,
    Obj,
    make_charge,
    make_customer,
    make_deleted_customer,
    make_invoice,
    make_item,
    make_price,
    make_subscription,
    realistic_account,
    ts,
)

KEY = "accountId"


def plain_sub(*, created: int, metadata: Mapping[str, str] | None = None) -> Obj:
    price = make_price(2000, product="prod_LinkTest0001")
    return make_subscription([make_item(price, period=MARCH)], created=created, metadata=metadata)


# -- link_id ----------------------------------------------------------------------------


def test_without_a_key_the_customer_id_links() -> None:
    account = realistic_account()
    found = link_id(account.customer, account.subscriptions, [], [], key=None)
    assert found == LinkId(CUSTOMER_ID, "customer.id")
    assert found == (CUSTOMER_ID, "customer.id")  # a plain (value, source) pair too


def test_customer_metadata_comes_first() -> None:
    account = realistic_account()
    account.subscription("active")["metadata"][KEY] = "acct_from_subscription"
    found = link_id(
        account.customer, account.subscriptions, account.invoices, account.charges, key=KEY
    )
    assert found == ("acct_42", "customer.metadata")


def test_subscription_metadata_when_the_customer_has_none() -> None:
    older = plain_sub(created=ts(2025, 1, 1), metadata={KEY: "acct_old"})
    newer = plain_sub(created=ts(2025, 6, 1), metadata={KEY: "acct_new"})
    untagged = plain_sub(created=ts(2025, 9, 1))
    customer = make_customer(metadata={"unrelated": "x"})
    found = link_id(customer, [older, untagged, newer], [], [], key=KEY)
    # The newest tagged subscription wins: re-tagging is done on new objects.
    assert found == ("acct_new", "subscription.metadata")


def test_subscription_metadata_copied_onto_a_legacy_invoice() -> None:
    """The subscription itself is not synced; its invoice carries a copy of its metadata."""
    sub = plain_sub(created=ts(2025, 1, 1), metadata={KEY: "acct_9"})
    invoice = make_invoice(sub, total=2000, created=ts(2025, 1, 1), legacy=True)
    assert invoice["subscription_details"]["metadata"] == {KEY: "acct_9"}
    found = link_id(make_customer(), [], [invoice], [], key=KEY)
    assert found == ("acct_9", "subscription.metadata")


def test_invoice_metadata() -> None:
    sub = plain_sub(created=ts(2025, 1, 1))
    invoice = make_invoice(sub, total=2000, created=ts(2025, 2, 1), metadata={KEY: "acct_inv"})
    found = link_id(make_customer(), [sub], [invoice], [], key=KEY)
    assert found == ("acct_inv", "invoice.metadata")


def test_charge_metadata_and_blank_values() -> None:
    sub = plain_sub(created=ts(2025, 1, 1), metadata={KEY: "   "})
    charge = make_charge(amount=2000, created=ts(2025, 2, 1), metadata={KEY: " acct_ch "})
    found = link_id(make_customer(metadata={KEY: ""}), [sub], [], [charge], key=KEY)
    assert found == ("acct_ch", "charge.metadata")


def test_other_customers_objects_never_lend_their_id() -> None:
    stranger = make_charge(
        amount=2000, created=ts(2025, 2, 1), customer="cus_Stranger00001", metadata={KEY: "x"}
    )
    found = link_id(make_customer(), [], [], [stranger], key=KEY)
    assert found == (CUSTOMER_ID, "customer.id")


def test_a_deleted_customer_keeps_its_link_through_its_subscriptions() -> None:
    sub = plain_sub(created=ts(2025, 1, 1), metadata={KEY: "acct_42"})
    sub["status"] = "canceled"
    found = link_id(make_deleted_customer(), [sub], [], [], key=KEY)
    assert found == ("acct_42", "subscription.metadata")
    assert link_id(make_deleted_customer(), [], [], [], key=KEY) == (CUSTOMER_ID, "customer.id")


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInput, match="metadata key is empty"):
        link_id(make_customer(), [], [], [], key="")
    customer = make_customer()
    del customer["id"]
    with pytest.raises(InvalidInput, match="no id"):
        link_id(customer, [], [], [], key=KEY)


# -- the planner ------------------------------------------------------------------------

LIVE = "acct_live"
TEST = "acct_test"
A = CustomerRef(LIVE, "cus_A000000000001")
B = CustomerRef(LIVE, "cus_B000000000002")
C = CustomerRef(TEST, "cus_C000000000003")


def accounts(profile_id: str) -> ProfileRef:
    return ProfileRef("accounts", profile_id)


def res(link: str | None, *, create: bool = True, kind: str = "accounts") -> Resolution:
    return Resolution(link, kind, create_missing=create, link_source="customer.metadata")  # type: ignore[arg-type]


def apply(plan: LinkPlan) -> dict[CustomerRef, ProfileRef]:
    return dict(plan.mapping)


def test_two_customers_with_one_link_id_share_one_new_profile() -> None:
    plan = plan_links({}, {A: res("acct_42"), B: res("acct_42")})
    target = accounts("acct_42")
    assert plan.actions == (
        CreateProfile(target),
        Attach(A, target, "customer.metadata"),
        Attach(B, target, "customer.metadata"),
    )
    assert plan.mapping == {A: target, B: target}
    assert plan.merges == (MergeRecord(target, (A, B), ((A, None), (B, None))),)


def test_customers_from_two_sources_merge() -> None:
    current = {A: accounts("acct_42")}
    plan = plan_links(current, {C: res("acct_42")}, existing={accounts("acct_42"): "sync"})
    assert plan.actions == (Attach(C, accounts("acct_42"), "customer.metadata"),)
    assert plan.merges[0].customers == (A, C)
    assert plan.merges[0].added == ((C, None),)


def test_users_and_accounts_never_merge() -> None:
    plan = plan_links({}, {A: res("u_1", kind="users"), B: res("u_1", kind="accounts")})
    assert plan.mapping == {A: ProfileRef("users", "u_1"), B: ProfileRef("accounts", "u_1")}
    assert plan.merges == ()


def test_attaching_to_a_profile_made_through_the_api_is_not_a_merge() -> None:
    existing = {accounts("acct_42"): "api"}
    plan = plan_links({}, {A: res("acct_42", create=False)}, existing=existing)
    assert plan.actions == (Attach(A, accounts("acct_42"), "customer.metadata"),)
    assert plan.merges == ()


def test_create_missing_off_skips_customers_without_a_profile() -> None:
    plan = plan_links({}, {A: res("acct_404", create=False)}, existing=[accounts("acct_42")])
    (skip,) = plan.actions
    assert isinstance(skip, Skip)
    assert (skip.customer, skip.profile) == (A, accounts("acct_404"))
    assert "creating missing profiles is off" in skip.reason
    assert plan.mapping == {}


def test_a_changed_link_id_relinks_without_a_duplicate() -> None:
    """Metadata added later: the customer leaves the profile keyed by its customer id."""
    fallback = accounts(A.customer_id)
    current = {A: fallback}
    plan = plan_links(current, {A: res("acct_42")}, existing={fallback: "sync"})
    target = accounts("acct_42")
    assert plan.actions == (
        CreateProfile(target),
        Relink(A, fallback, target, "customer.metadata"),
        RetireProfile(fallback, merged_into=target),
    )
    assert plan.mapping == {A: target}


def test_a_relink_never_retires_a_profile_of_the_app() -> None:
    current = {A: accounts("acct_1")}
    existing = {accounts("acct_1"): "api", accounts("acct_2"): "api"}
    plan = plan_links(current, {A: res("acct_2")}, existing=existing)
    assert plan.actions == (Relink(A, accounts("acct_1"), accounts("acct_2"), "customer.metadata"),)


def test_a_relink_to_a_missing_profile_with_create_missing_off_detaches() -> None:
    current = {A: accounts("acct_1")}
    plan = plan_links(current, {A: res("acct_2", create=False)}, existing=[accounts("acct_1")])
    kinds = [type(action) for action in plan.actions]
    assert kinds == [Skip, Detach]
    assert plan.mapping == {}


def test_detach() -> None:
    current = {A: accounts("acct_42"), B: accounts("acct_42")}
    plan = plan_links(current, {B: res(None)}, existing={accounts("acct_42"): "sync"})
    assert plan.actions == (Detach(B, accounts("acct_42"), "the customer is no longer linked"),)
    assert plan.mapping == {A: accounts("acct_42")}


def test_planning_again_after_applying_changes_nothing() -> None:
    resolved = {A: res("acct_42"), B: res("acct_42"), C: res("acct_7")}
    first = plan_links({}, resolved)
    existing: dict[ProfileRef, ProfileOrigin] = {p: "sync" for p in first.mapping.values()}
    second = plan_links(apply(first), resolved, existing=existing)
    assert second.actions == () and second.merges == ()
    assert second.mapping == first.mapping


def test_inputs_are_not_mutated() -> None:
    current = {A: accounts(A.customer_id)}
    overrides = {B: accounts("acct_pinned")}
    plan_links(current, {A: res("acct_42"), B: res(None)}, overrides=overrides)
    assert current == {A: accounts(A.customer_id)}
    assert overrides == {B: accounts("acct_pinned")}


# -- unmerge ----------------------------------------------------------------------------


def test_unmerge_returns_customers_where_they_were_and_keeps_them_apart() -> None:
    # B lived on its own fallback profile; then it got tagged acct_42, where A already is.
    current = {A: accounts("acct_42"), B: accounts(B.customer_id)}
    existing = {accounts("acct_42"): "api", accounts(B.customer_id): "sync"}
    merge = plan_links(current, {B: res("acct_42")}, existing=existing)
    assert merge.merges == (
        MergeRecord(accounts("acct_42"), (A, B), ((B, accounts(B.customer_id)),)),
    )
    assert RetireProfile(accounts(B.customer_id), accounts("acct_42")) in merge.actions
    # The store retired B's old profile; unmerging brings it back.
    after_merge = {accounts("acct_42"): "api"}
    undo = plan_unmerge(merge.merges[0], merge.mapping, existing=after_merge)
    assert undo.actions == (
        CreateProfile(accounts(B.customer_id)),
        Relink(B, accounts("acct_42"), accounts(B.customer_id), "unmerge"),
    )
    assert undo.mapping == current
    assert undo.overrides == {B: accounts(B.customer_id)}
    assert undo.merges == ()
    # The next sync resolves acct_42 for B again, and the pin keeps it apart.
    resync = plan_links(
        undo.mapping,
        {A: res("acct_42"), B: res("acct_42")},
        existing={accounts("acct_42"): "api", accounts(B.customer_id): "sync"},
        overrides=undo.overrides,
    )
    assert resync.actions == () and resync.merges == ()
    # Dropping the pin lets the link id merge them again.
    remerge = plan_links(
        undo.mapping,
        {B: res("acct_42")},
        existing={accounts("acct_42"): "api", accounts(B.customer_id): "sync"},
    )
    assert remerge.merges[0].customers == (A, B)


def test_unmerging_a_profile_created_for_the_merge_keeps_its_first_customer() -> None:
    merge = plan_links({}, {A: res("acct_42"), C: res("acct_42")})
    undo = plan_unmerge(merge.merges[0], merge.mapping, existing={accounts("acct_42"): "sync"})
    assert undo.mapping == {A: accounts("acct_42"), C: accounts(C.customer_id)}
    assert undo.overrides == {C: accounts(C.customer_id)}
    assert not any(isinstance(action, RetireProfile) for action in undo.actions)


def test_unmerge_leaves_customers_that_moved_on() -> None:
    merge = plan_links({A: accounts("acct_42")}, {B: res("acct_42")})
    moved = {**merge.mapping, B: accounts("acct_99")}
    undo = plan_unmerge(merge.merges[0], moved, existing=[accounts("acct_42"), accounts("acct_99")])
    assert undo.actions == ()
    assert undo.mapping == moved


def test_a_pinned_customer_follows_its_pin_even_to_a_missing_profile() -> None:
    overrides = {A: accounts("acct_pinned")}
    plan = plan_links({}, {A: res("acct_42", create=False)}, overrides=overrides)
    assert plan.actions == (
        CreateProfile(accounts("acct_pinned")),
        Attach(A, accounts("acct_pinned"), "override"),
    )
